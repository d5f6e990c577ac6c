"""``datavc.open``: a read-only fsspec filesystem over one snapshot.

Files are streamed: opening one file reads the version record (which holds the tree root)
and one page, and a read fetches only the chunks it covers (neighbouring chunks in one
ranged read, found through the page's location hints). Tree pages are kept for the process
(:data:`datavc.store.trees.PAGES`, 64 MiB at most): every file opened in a page after the
first, and every copy of the filesystem unpickled in the same worker, reads no page again.
The filesystem pickles as (store URL, storage options, version record), so PyTorch
DataLoader and Dask workers rebuild it, and it reconnects to the store after a fork.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from typing import Any

from fsspec.spec import AbstractFileSystem

from ..errors import BadInput, IsAFolder, NotAFolder, NotARepository, PathNotFound, ReadOnly
from ..format.record import VersionRecord
from ..format.spec import parse_spec
from ..format.tree import FileEntry, TreeRoot
from ..lineage.tracking import note_open, pinned
from ..store import (
    reader,  # noqa: F401 - loaded with the filesystem, not on its first read
    versions,
)
from ..store.chunkstore import ChunkStore
from ..store.files import LocalFile, NoProgress, hash_path
from ..store.materialize import materialize
from ..store.retry import RetryPolicy
from ..store.trees import PAGES, find_entry, iter_entries
from ..workspace.config import DOT, find_root, load_config, resolve_store_url, retry_from_env
from ..workspace.core import Workspace, open_store
from .file import DatavcFile

PROTOCOL = "datavc"


def open(
    spec: str, store: str | None = None, storage_options: dict[str, Any] | None = None
) -> DatavcFileSystem:
    """Open ``NAME@VERSION`` (vN, latest, a tag, a snapshot prefix) as a read-only filesystem."""
    return DatavcFileSystem(spec, store=store, storage_options=storage_options)


def _locate_store(
    store: str | None, storage_options: dict[str, Any] | None
) -> tuple[str, dict[str, Any], str | None, RetryPolicy]:
    """Store URL, options, cache folder and retry policy: argument, then DATAVC_STORE (with
    the environment's DATAVC_TIMEOUT and DATAVC_RETRIES), then the workspace's config."""
    root = find_root(os.getcwd())
    options = dict(storage_options or {})
    if store:
        return resolve_store_url(store, os.getcwd()), options, None, retry_from_env()
    if os.environ.get("DATAVC_STORE"):
        url = resolve_store_url(os.environ["DATAVC_STORE"], os.getcwd())
        return url, options, None, retry_from_env()
    if root is None:
        raise NotARepository(
            "no store: pass store=URL, set DATAVC_STORE, or run inside a datavc workspace"
        )
    cfg = load_config(root)
    cache = os.path.join(root, DOT, "cache")
    return cfg.store, {**cfg.storage_options, **options}, cache, cfg.retry


class DatavcFileSystem(AbstractFileSystem):  # type: ignore[misc]
    """A read-only view of one snapshot. Paths are relative to the dataset's root."""

    protocol = PROTOCOL
    root_marker = ""
    cachable = False

    def __init__(
        self,
        spec: str | None = None,
        *,
        store: str | None = None,
        storage_options: dict[str, Any] | None = None,
        record: VersionRecord | None = None,
        retry: RetryPolicy | None = None,
        asynchronous: bool = False,
        loop: Any = None,
        use_listings_cache: bool = True,
        listings_expiry_time: float | None = None,
        max_paths: int | None = None,
        skip_instance_cache: bool = False,
    ) -> None:
        """``asynchronous`` and ``loop`` (this filesystem is synchronous: fsspec and zarr
        wrap it), ``use_listings_cache``, ``listings_expiry_time``, ``max_paths`` (a
        snapshot never changes: its listing is always cached) and ``skip_instance_cache``
        are fsspec's standard arguments, accepted and ignored."""
        super().__init__()
        if spec is None and record is None:
            raise BadInput("datavc.open needs a spec such as NAME@v3")
        url, options, cache_dir, located = _locate_store(store, storage_options)
        self.store_url = url
        self.store_options = options
        self.store_retry = retry or located
        self.chunks: ChunkStore = open_store(url, options, cache_dir, self.store_retry)
        if record is None:
            record = self._resolve(spec or "")
            note_open(url, record.name, record.version, record.tree)  # a run records it
        self.record = record
        self.snapshot = record.tree
        self.kind = record.kind
        self.spec = spec
        # fsspec strips every path it is given with _strip_protocol; on an instance, strip
        # and also refuse a datavc:// URL that names another snapshot.
        self._strip_protocol = self._path  # type: ignore[method-assign]
        self._entries: dict[str, FileEntry] | None = None
        self._children: dict[str, set[str]] = {}

    def _resolve(self, text: str) -> VersionRecord:
        """Store-side specs resolve in the store; a bare NAME or NAME@git:REV inside a
        workspace follows its pointer file (outside one, a bare NAME is the latest)."""
        spec = parse_spec(text)
        pin = pinned(self.store_url, spec.name) if spec.kind not in ("number", "git") else None
        if pin is not None:  # datavc reproduce: the version the recorded run opened
            rec = versions.read_version(self.chunks, spec.name, pin[0])
            if rec.tree != pin[1]:
                raise BadInput(f"{spec.name}@v{pin[0]} is no longer the snapshot the run read")
            return rec
        root = find_root(os.getcwd())
        if root is not None and spec.kind in ("none", "git"):
            return Workspace(root, store=self.chunks).resolve(spec)
        if spec.kind == "git":
            raise BadInput(f"{text}: git revisions need a datavc workspace in a git repository")
        return versions.resolve(self.chunks, spec)

    def to_dict(self, *, include_password: bool = True) -> dict[str, Any]:
        """What ``to_json`` writes: the version pinned as ``NAME@vN`` (a number names one
        version for good: never reused, and a forgotten one is refused), the store and its
        options (with their passwords unless ``include_password`` is False)."""
        options = dict(self.store_options)
        if not include_password:
            for key in ("password", "secret", "key", "token"):
                options.pop(key, None)
        return {
            "cls": f"{type(self).__module__}:{type(self).__name__}",
            "protocol": PROTOCOL,
            "args": [f"{self.record.name}@v{self.record.version}"],
            "store": self.store_url,
            "storage_options": options,
        }

    def __reduce__(self) -> Any:
        state = (self.store_url, self.store_options, self.record, self.spec, self.store_retry)
        return (_rebuild, state)

    # -- metadata -------------------------------------------------------------------

    @property
    def tree(self) -> TreeRoot:
        return self.record.root

    def _all(self) -> dict[str, FileEntry]:
        """Every entry, and each folder's children (built once, in one pass)."""
        if self._entries is None:
            # pages are checked sorted, none twice (load_page): no path can hide another
            entries = {e.path: e for e in iter_entries(self.chunks, self.tree, cache=PAGES)}
            children: dict[str, set[str]] = {"": set()}
            for p in entries:
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

    def _path(self, path: Any) -> str:
        """A path of this snapshot; a full URL must name this filesystem's own spec."""
        text = str(path)
        if text.startswith(f"{PROTOCOL}://") and self.spec is not None:
            spec = text[len(PROTOCOL) + 3 :].split("/", 1)[0]
            if spec != self.spec:
                raise BadInput(f"{text} is not in this filesystem, which shows {self.spec}")
        return type(self)._strip_protocol(text)

    def entry(self, path: str) -> FileEntry:
        path = self._path(path)
        if self._entries is not None:
            found = self._entries.get(path)
        else:
            found = find_entry(self.chunks, self.tree, path, PAGES)
        if found is None:
            raise self._not_a_file(path)
        return found

    def _not_a_file(self, path: str) -> Exception:
        """The error for a path that names no file: a folder, a path through a file, or
        nothing (the listing is read to tell, on this error path only)."""
        entries = self._all()
        if path in self._children:
            return IsAFolder(f"{path or '/'} is a folder of the snapshot, not a file")
        parts = path.split("/")
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in entries:
                return NotAFolder(f"{'/'.join(parts[:i])} is a file: {path} cannot be in it")
        return PathNotFound(path)

    @classmethod
    def _strip_protocol(cls, path: Any) -> str:
        """A path of the snapshot, normalised as LocalFileSystem does: ``./a``, ``a//b``
        and ``a/../b`` name ``a`` and ``b``; a ``..`` above the root names nothing."""
        text = str(path)
        if text.startswith(f"{PROTOCOL}://"):
            text = text[len(PROTOCOL) + 3 :]
            text = text.split("/", 1)[1] if "/" in text else ""
        parts: list[str] = []
        for part in text.split("/"):
            if part == "..":
                if not parts:
                    raise PathNotFound(f"{text} (above the snapshot's root)")
                parts.pop()
            elif part not in ("", "."):
                parts.append(part)
        return "/".join(parts)

    @staticmethod
    def _get_kwargs_from_urls(path: str) -> dict[str, Any]:
        if path.startswith(f"{PROTOCOL}://"):
            return {"spec": path[len(PROTOCOL) + 3 :].split("/", 1)[0]}
        return {}

    def _info_of(self, path: str) -> dict[str, Any]:
        e = self._all().get(path)
        when = self._committed().timestamp()
        if e is None:
            return {"name": path, "size": 0, "type": "directory", "created": when, "mtime": when}
        return {
            "name": e.path,
            "size": e.size,
            "type": "file",
            "mode": e.mode,
            "blake3": e.hash.hex(),
            "created": when,  # the version's commit time: every file of a snapshot has it
            "mtime": when,
        }

    def _committed(self) -> datetime:
        """When the version was committed (its record's time, UTC)."""
        try:
            return datetime.strptime(self.record.time, "%Y-%m-%dT%H:%M:%SZ").replace(
                tzinfo=timezone.utc
            )
        except ValueError:
            return datetime.fromtimestamp(0, timezone.utc)  # a record's time is free text

    def created(self, path: str) -> datetime:
        self.info(path)
        return self._committed()

    def modified(self, path: str) -> datetime:
        self.info(path)
        return self._committed()

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        path = self._path(path)
        if path in self._all() or path in self._children:
            return self._info_of(path)
        raise PathNotFound(path)

    def ls(self, path: str = "", detail: bool = True, **kwargs: Any) -> list[Any]:
        path = self._path(path)
        entries = self._all()
        if path in entries:
            names = [path]
        elif path in self._children:
            names = sorted(self._children[path])
        else:
            raise PathNotFound(path)
        return [self._info_of(n) for n in names] if detail else names

    # -- reading --------------------------------------------------------------------

    def _open(self, path: str, mode: str = "rb", **kwargs: Any) -> DatavcFile:
        if mode != "rb":
            raise ReadOnly(f"datavc snapshots are read-only (mode {mode!r})")
        return DatavcFile(self, self.entry(path))

    def cat_file(
        self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any
    ) -> bytes:
        with self._open(path) as f:
            size = f.size
            start = 0 if start is None else (start if start >= 0 else max(0, size + start))
            end = size if end is None else (end if end >= 0 else max(0, size + end))
            f.seek(start)
            data: bytes = f.read(max(0, end - start))
            return data

    def materialize(self, dest: str) -> int:
        """Write the snapshot into ``dest`` exactly (extra files removed); return files written."""
        entries = list(self._all().values())

        def unchanged(local: LocalFile, e: FileEntry) -> bool:
            return local.size == e.size and hash_path(local.abspath, local.size) == e.hash

        return materialize(self.chunks, entries, dest, self.kind, unchanged, NoProgress())

    # read-only: every write is a PermissionError (ReadOnly), as fsspec's callers expect
    def _rm(self, path: str) -> None:
        raise ReadOnly("datavc snapshots are read-only")

    def rm_file(self, path: str) -> None:
        raise ReadOnly("datavc snapshots are read-only")

    def rm(self, path: Any, recursive: bool = False, maxdepth: int | None = None) -> None:
        raise ReadOnly("datavc snapshots are read-only")

    def mkdir(self, path: str, create_parents: bool = True, **kwargs: Any) -> None:
        raise ReadOnly("datavc snapshots are read-only")

    def makedirs(self, path: str, exist_ok: bool = False) -> None:
        raise ReadOnly("datavc snapshots are read-only")

    def cp_file(self, path1: str, path2: str, **kwargs: Any) -> None:
        raise ReadOnly("datavc snapshots are read-only")

    def mv(self, path1: Any, path2: Any, **kwargs: Any) -> None:
        raise ReadOnly("datavc snapshots are read-only")


def _rebuild(
    url: str,
    options: dict[str, Any],
    record: VersionRecord,
    spec: str | None = None,
    retry: RetryPolicy | None = None,
) -> DatavcFileSystem:
    fs = DatavcFileSystem(store=url, storage_options=options, record=record, retry=retry)
    fs.spec = spec
    return fs
