"""One snapshot as the filesystem sees it: its record, its entries found page by page (or
listed once, with each folder's children), and the answers fsspec asks for (info, the error
for a path that names no file). Paths here are relative to the snapshot's root."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any

from ..errors import (
    CorruptObject,
    IsAFolder,
    NotAFolder,
    ObjectNotFound,
    PathNotFound,
)
from ..format.paths import check_depth
from ..format.record import VersionRecord
from ..format.tree import FileEntry
from ..store.chunkstore import ChunkStore
from ..store.trees import PAGES, iter_entries, lookup


@contextmanager
def _missing_is_damage() -> Iterator[None]:
    """A tree page the root names and the store lacks is damage, not an absent path:
    fsspec takes a FileNotFoundError (as ObjectNotFound is) for "no such file", so find,
    walk, exists and du would have seen an empty snapshot."""
    try:
        yield
    except ObjectNotFound as err:
        raise CorruptObject(err.key, "is missing from the store (a page of the tree)") from None


class Snapshot:
    """A version of a dataset, pinned: ``pinned`` is ``NAME@vN``, the form every path the
    filesystem hands out carries (a version number is never reused, and a forgotten one is
    refused, so the path names the same bytes for as long as it opens at all)."""

    def __init__(self, chunks: ChunkStore, record: VersionRecord) -> None:
        self.chunks = chunks
        self.record = record
        self.pinned = f"{record.name}@v{record.version}"
        self._entries: dict[str, FileEntry] | None = None
        self._children: dict[str, set[str]] = {}
        self._hinted: set[str] = set()  # pages whose location hints self.chunks has

    def all(self) -> dict[str, FileEntry]:
        """Every entry, and each folder's children (built once, in one pass)."""
        if self._entries is None:
            # pages are checked sorted, none twice (load_page): no path can hide another
            with _missing_is_damage():
                pages = iter_entries(self.chunks, self.record.root, cache=PAGES)
                entries = {e.path: e for e in pages}
            children: dict[str, set[str]] = {"": set()}
            for p in entries:
                check_depth(p)  # fsspec's walk recurses by folder
                child = p
                while child:
                    parent = child.rsplit("/", 1)[0] if "/" in child else ""
                    known = parent in children
                    children.setdefault(parent, set()).add(child)
                    if known:
                        break
                    child = parent
            self._entries, self._children = entries, children
        return self._entries

    def children(self, path: str) -> set[str] | None:
        """A folder's children, or None if ``path`` is no folder of the snapshot."""
        self.all()
        return self._children.get(path)

    def find(self, path: str) -> FileEntry | None:
        """The file at ``path``: from the listing when it was read, else through the pages."""
        if self._entries is not None:
            return self._entries.get(path)
        with _missing_is_damage():
            return lookup(self.chunks, self.record.root, path, self._hinted)

    def entry(self, path: str) -> FileEntry:
        found = self.find(path)
        if found is None:
            raise self.not_a_file(path)
        return found

    def not_a_file(self, path: str) -> Exception:
        """The error for a path that names no file: a folder, a path through a file, or
        nothing (the listing is read to tell, on this error path only)."""
        entries = self.all()
        if path in self._children:
            return IsAFolder(f"{path or '/'} is a folder of {self.pinned}, not a file")
        parts = path.split("/")
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in entries:
                return NotAFolder(f"{'/'.join(parts[:i])} is a file: {path} cannot be in it")
        return PathNotFound(f"{path} (in {self.pinned})")

    def info(self, path: str) -> dict[str, Any] | None:
        """fsspec's info of ``path`` (named relative to the root), or None if it is nothing."""
        when = self.committed().timestamp()
        e = self.all().get(path)
        if e is not None:
            return {
                "name": e.path,
                "size": e.size,
                "type": "file",
                "mode": e.mode,
                "blake3": e.hash.hex(),
                "created": when,  # the version's commit time: every file of a snapshot has it
                "mtime": when,
            }
        if path in self._children:
            return {"name": path, "size": 0, "type": "directory", "created": when, "mtime": when}
        return None

    def committed(self) -> datetime:
        """When the version was committed (its record's time, UTC)."""
        try:
            return datetime.strptime(self.record.time, "%Y-%m-%dT%H:%M:%SZ").replace(
                tzinfo=timezone.utc
            )
        except ValueError:
            return datetime.fromtimestamp(0, timezone.utc)  # a record's time is free text
