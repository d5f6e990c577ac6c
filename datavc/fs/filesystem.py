"""``datavc.open`` and ``datavc://``: a read-only fsspec filesystem over a store's snapshots.

Two shapes of one class:

- **Over the whole store** (``DatavcFileSystem(store=...)``, ``fsspec.filesystem("datavc")``
  and every ``datavc://NAME@SPEC/path`` URL): paths are ``NAME@SPEC/path`` for any dataset
  and version. A spec is resolved once per instance, and every path handed out names its
  version pinned as ``NAME@vN``, so a path read back later (a cache key, a Dask path
  column, a URL rebuilt by a client) names the same bytes. Instances are cached by fsspec,
  keyed on the store, its options and where the store was found.
- **Rooted at one snapshot** (``datavc.open("NAME@SPEC")``): paths are relative to the
  dataset's root; ``unstrip_protocol`` gives the full ``datavc://NAME@vN/path`` URL, and a
  full URL of the same version is accepted.

Files are streamed: opening one file reads the version record (which holds the tree root)
and one page, and a read fetches only the chunks it covers. Tree pages are kept for the
process (:data:`datavc.store.trees.PAGES`). The filesystem pickles as (store URL, options,
the versions it resolved), so DataLoader and Dask workers rebuild it without resolving
again, and it reconnects to the store after a fork.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from fsspec.spec import AbstractFileSystem

from ..errors import BadInput, IntegrityError, IsAFolder, PathNotFound, ReadOnly, StoreUnreachable
from ..format.hashing import ChunkId
from ..format.paths import valid_name
from ..format.record import VersionRecord
from ..format.spec import parse_spec
from ..format.tree import FileEntry, TreeRoot
from ..lineage.tracking import context, note_open, pinned
from ..store import (
    reader,  # noqa: F401 - loaded with the filesystem, not on its first read
    versions,
)
from ..store.chunkstore import ChunkStore
from ..store.files import LocalFile, NoProgress, hash_path
from ..store.materialize import Page, materialize
from ..store.reader import CHUNKS
from ..store.retry import RetryPolicy
from ..store.trees import decoded_pages
from ..workspace.config import find_root
from ..workspace.core import Workspace, open_store
from .file import DatavcFile, Layout, workers
from .locate import PROTOCOL, URL, Keyed, head, join, locate_store, normalise, split
from .snapshot import Snapshot

CAT_BATCH = 32 << 20  # cat_ranges: chunk bytes held at once, about


def open(
    spec: str, store: str | None = None, storage_options: dict[str, Any] | None = None
) -> DatavcFileSystem:
    """Open ``NAME@VERSION`` (vN, latest, a tag, a snapshot prefix) as a read-only filesystem."""
    return DatavcFileSystem(spec, store=store, storage_options=storage_options)


def check_shard(shard: Any) -> tuple[int, int]:
    """``shard`` as ``(i, n)`` with ``0 <= i < n``, or BadInput."""
    if not (
        isinstance(shard, tuple)
        and len(shard) == 2
        and all(type(x) is int for x in shard)
        and 0 <= shard[0] < shard[1]
    ):
        raise BadInput(f"shard must be a tuple (i, n) with 0 <= i < n, not {shard!r}")
    return shard[0], shard[1]


class DatavcFileSystem(AbstractFileSystem, metaclass=Keyed):  # type: ignore[misc]
    """A read-only view of a store's snapshots (``spec`` None), or of one snapshot."""

    protocol = PROTOCOL
    root_marker = ""
    cachable = True

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
        found_from: Any = None,
    ) -> None:
        """``asynchronous`` and ``loop`` (this filesystem is synchronous: fsspec and zarr
        wrap it), ``use_listings_cache``, ``listings_expiry_time``, ``max_paths`` (a
        snapshot never changes: its listing is always cached) and ``skip_instance_cache``
        are fsspec's standard arguments, accepted and ignored. ``found_from`` is set by the
        instance cache (its key), never by callers."""
        super().__init__()
        url, options, cache_dir, located = locate_store(store, storage_options)
        self.store_url = url
        self.store_options = options
        self.store_retry = retry or located
        self.chunks: ChunkStore = open_store(url, options, cache_dir, self.store_retry)
        self._resolved: dict[str, Snapshot] = {}  # a spec as written -> its snapshot
        self._noted: set[tuple[object, str]] = set()
        self._root: Snapshot | None = None
        self.spec = spec
        if record is None and spec is not None:
            record = self._resolve(spec)
        if record is not None:
            self._root = self._snapshot_of(record)
            if spec is not None:
                self._resolved[spec] = self._root
            self._note(self._root)
        # fsspec strips every path it is given with _strip_protocol; on an instance, the
        # spec a path names is resolved (and pinned) too
        self._strip_protocol = self._path  # type: ignore[method-assign]

    # -- versions -------------------------------------------------------------------

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

    def _snapshot_of(self, record: VersionRecord) -> Snapshot:
        """The one Snapshot of this instance for a version (shared by every spec naming it)."""
        pinned_spec = f"{record.name}@v{record.version}"
        known = self._resolved.get(pinned_spec)
        if known is None or known.record.tree != record.tree:
            known = self._resolved[pinned_spec] = Snapshot(self.chunks, record)
        return known

    def _version(self, spec: str) -> Snapshot:
        """The snapshot ``spec`` names, resolved once per instance."""
        snap = self._resolved.get(spec)
        if snap is None:
            snap = self._resolved[spec] = self._snapshot_of(self._resolve(spec))
        self._note(snap)
        return snap

    def _note(self, snap: Snapshot) -> None:
        """Tell the active run (if any) that this snapshot is read, once per run."""
        who = context()
        if who is not None and (who, snap.pinned) not in self._noted:
            self._noted.add((who, snap.pinned))
            rec = snap.record
            note_open(self.store_url, rec.name, rec.version, rec.tree)

    def invalidate_cache(self, path: str | None = None) -> None:
        """Forget the specs resolved (``latest`` and tags resolve again on next use); a
        rooted filesystem stays at its snapshot."""
        root = self._root
        self._resolved = {} if root is None else {root.pinned: root}
        if root is not None and self.spec is not None:
            self._resolved[self.spec] = root
        super().invalidate_cache(path)

    # -- paths ----------------------------------------------------------------------

    def _locate(self, path: Any) -> tuple[Snapshot | None, str]:
        """The snapshot a path is in and the path inside it; (None, "") for the root of a
        filesystem over the whole store."""
        text = str(path)
        if self._root is not None:
            if text.startswith(URL):
                spec, rel = split(text)
                if spec != self.spec and spec != self._root.pinned:
                    raise BadInput(f"{text} is not in this filesystem, which shows {self.spec}")
                return self._root, rel
            return self._root, normalise(text)
        spec, rel = split(text)
        if not spec:
            return None, ""
        return self._version(spec), rel

    def _outer(self, snap: Snapshot, rel: str) -> str:
        """The name this filesystem gives a path of a snapshot."""
        return rel if self._root is not None else join(snap.pinned, rel)

    def _listed(self, path: Any, snap: Snapshot, rel: str) -> str:
        """The name a listing gives a path: over the whole store, under the spec as the
        caller wrote it (pyarrow and zarr take a folder's children only under the folder's
        own name); the spec is resolved once per instance, so the name keeps its bytes for
        the instance's life and in every pickled copy."""
        return rel if self._root is not None else join(head(path), rel)

    def _renamed(self, path: Any, name: str) -> str:
        """A pinned name from fsspec's machinery, back under the spec ``path`` names."""
        if self._root is not None:
            return name
        written = head(path)
        pinned = self._path(written)
        if written == pinned or not (name == pinned or name.startswith(pinned + "/")):
            return name
        return written + name[len(pinned) :]

    def _path(self, path: Any) -> str:
        """fsspec's stripped path, with its version pinned (a rooted filesystem's own)."""
        snap, rel = self._locate(path)
        return rel if snap is None else self._outer(snap, rel)

    @classmethod
    def _strip_protocol(cls, path: Any) -> str:
        """Without an instance: the protocol taken off and the path inside the snapshot
        normalised; the spec is resolved (and pinned) by the instance."""
        spec, rel = split(path)
        return join(head(path), rel) if spec else ""  # the spec as written (%2F kept)

    @staticmethod
    def _get_kwargs_from_urls(path: str) -> dict[str, Any]:
        return {}  # a URL's spec is part of its path: one filesystem serves every version

    def unstrip_protocol(self, name: str) -> str:
        """The full URL of a path: ``datavc://NAME@vN/path``."""
        snap, rel = self._locate(name)
        return URL if snap is None else URL + join(snap.pinned, rel)

    def ukey(self, path: str) -> str:
        """A file's BLAKE3 (the same key means the same bytes, in any version); a folder's
        pinned URL. (``checksum`` hashes ``info``, which has both the pinned name and the
        BLAKE3.)"""
        snap, rel = self._locate(path)
        found = None if snap is None else snap.find(rel)
        if found is not None:
            return found.hash.hex()
        self.info(path)
        return self.unstrip_protocol(path)

    # -- compatibility: a rooted filesystem's snapshot ---------------------------------

    def _rooted(self) -> Snapshot:
        if self._root is None:
            raise BadInput("this filesystem shows every version: name one, as NAME@vN/path")
        return self._root

    @property
    def record(self) -> VersionRecord:
        return self._rooted().record

    @property
    def snapshot(self) -> str:
        return self._rooted().record.tree

    @property
    def kind(self) -> str:
        return self._rooted().record.kind

    @property
    def tree(self) -> TreeRoot:
        return self._rooted().record.root

    def entry(self, path: str) -> FileEntry:
        snap, rel = self._locate(path)
        if snap is None:
            raise self._root_folder()
        return snap.entry(rel)

    def _root_folder(self) -> Exception:
        return IsAFolder("the store's root is a folder of datasets, not a file")

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
            "args": [] if self._root is None else [self._root.pinned],
            "store": self.store_url,
            "storage_options": options,
        }

    def __reduce__(self) -> Any:
        records = [s.record for s in {id(s): s for s in self._resolved.values()}.values()]
        specs = {spec: s.pinned for spec, s in self._resolved.items()}
        root = None if self._root is None else self._root.record
        state = (self.store_url, self.store_options, self.store_retry, root, self.spec)
        return (_rebuild, (*state, records, specs))

    # -- metadata -------------------------------------------------------------------

    def _datasets(self) -> list[str]:
        return [n for n in versions.dataset_names(self.chunks) if valid_name(n)]

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        snap, rel = self._locate(path)
        if snap is None:
            return {"name": "", "size": 0, "type": "directory"}
        found = snap.info(rel)
        if found is None:
            raise PathNotFound(self._outer(snap, rel))
        return {**found, "name": self._listed(path, snap, rel)}

    def exists(self, path: str, **kwargs: Any) -> bool:
        """fsspec's answers False for any error; a damaged or unreachable store is raised,
        not taken for a path that is not there."""
        try:
            self.info(path, **kwargs)
        except (IntegrityError, StoreUnreachable):
            raise
        except Exception:
            return False
        return True

    def isfile(self, path: str) -> bool:
        """As :meth:`exists`: damage and an unreachable store are raised."""
        try:
            return bool(self.info(path)["type"] == "file")
        except (IntegrityError, StoreUnreachable):
            raise
        except Exception:
            return False

    def ls(self, path: str = "", detail: bool = True, **kwargs: Any) -> list[Any]:
        snap, rel = self._locate(path)
        if snap is None:  # the store's datasets, each a folder (its latest, or pointer)
            names = self._datasets()
            if not detail:
                return names
            return [{"name": n, "size": 0, "type": "directory"} for n in names]
        if snap.find(rel) is not None:
            rels = [rel]
        else:
            children = snap.children(rel)
            if children is None:
                raise PathNotFound(self._outer(snap, rel))
            rels = sorted(children)
        if not detail:
            return [self._listed(path, snap, r) for r in rels]
        return [{**(snap.info(r) or {}), "name": self._listed(path, snap, r)} for r in rels]

    def find(
        self,
        path: str,
        maxdepth: int | None = None,
        withdirs: bool = False,
        detail: bool = False,
        **kwargs: Any,
    ) -> Any:
        """fsspec's find, its names under the spec as ``path`` writes it (see ``ls``)."""
        found = super().find(path, maxdepth=maxdepth, withdirs=withdirs, detail=detail, **kwargs)
        if not detail:
            return [self._renamed(path, n) for n in found]
        out = {}
        for name, info in found.items():
            new = self._renamed(path, name)
            out[new] = {**info, "name": new}
        return out

    def created(self, path: str) -> datetime:
        snap, _ = self._locate(path)
        if snap is None:
            raise BadInput("the store's root is no version: it has no commit time")
        self.info(path)
        return snap.committed()

    def modified(self, path: str) -> datetime:
        return self.created(path)

    # -- reading --------------------------------------------------------------------

    def open(
        self,
        path: Any,
        mode: str = "rb",
        block_size: int | None = None,
        cache_options: dict[str, Any] | None = None,
        compression: str | None = None,
        **kwargs: Any,
    ) -> Any:
        """fsspec's open; a binary read goes straight to :meth:`_open`, which finds the
        path once (fsspec's finds it for ``_strip_protocol`` too)."""
        if mode == "rb" and compression is None:
            kwargs.pop("autocommit", None)
            return self._open(path, mode, block_size, cache_options=cache_options, **kwargs)
        return super().open(path, mode, block_size, cache_options, compression, **kwargs)

    def _open(
        self,
        path: str,
        mode: str = "rb",
        block_size: int | None = None,
        autocommit: bool = True,
        cache_options: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> DatavcFile:
        if mode != "rb":
            raise ReadOnly(f"datavc snapshots are read-only (mode {mode!r})")
        snap, rel = self._locate(path)
        if snap is None:
            raise self._root_folder()
        return DatavcFile(
            self,
            snap.entry(rel),
            self._outer(snap, rel),
            block_size=block_size,
            cache_type=kwargs.get("cache_type"),
            cache_options=cache_options,
        )

    def _layout(self, path: str) -> Layout:
        snap, rel = self._locate(path)
        if snap is None:
            raise self._root_folder()
        return Layout(snap.entry(rel))

    def cat_file(
        self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any
    ) -> bytes:
        return self._layout(path).read(self, start, end)

    def cat_ranges(
        self,
        paths: list[str],
        starts: list[int | None] | int | None,
        ends: list[int | None] | int | None,
        max_gap: int | None = None,
        on_error: str = "return",
        **kwargs: Any,
    ) -> list[bytes | Exception]:
        """Byte ranges of files, read together: each chunk under them read once, in pack
        order, neighbours (``max_gap`` bytes apart at most, default 0 on a local store and
        256 KiB on a remote one) in one ranged read, several reads in flight on a remote store, in
        batches of at most ``CAT_BATCH`` bytes of chunks (memory stays bounded)."""
        count = len(paths)
        starts_list = starts if isinstance(starts, list) else [starts] * count
        ends_list = ends if isinstance(ends, list) else [ends] * count
        if len(starts_list) != count or len(ends_list) != count:
            raise ValueError("cat_ranges needs as many starts and ends as paths")
        gap = max_gap if max_gap is not None else (0 if self.chunks.backend.is_local else 256 << 10)
        out: list[bytes | Exception] = [b""] * count
        layouts: dict[str, Layout] = {}
        todo: list[tuple[int, Layout, int, int, list[ChunkId]]] = []
        for i, (path, start, end) in enumerate(zip(paths, starts_list, ends_list, strict=True)):
            try:
                layout = layouts.get(path) or layouts.setdefault(path, self._layout(path))
                lo, hi = layout.clip(start, end)
                todo.append((i, layout, lo, hi, layout.span(lo, hi) if lo < hi else []))
            except Exception as err:
                if on_error == "raise":
                    raise
                out[i] = err
        batch: list[tuple[int, Layout, int, int, list[ChunkId]]] = []
        held = 0
        for item in sorted(todo, key=lambda t: (t[1].entry.path, t[2])):
            batch.append(item)
            held += item[3] - item[2] + (256 << 10)  # the range, and the chunks around it
            if held >= CAT_BATCH:
                self._cat_batch(batch, gap, on_error, out)
                batch, held = [], 0
        if batch:
            self._cat_batch(batch, gap, on_error, out)
        return out

    def _cat_batch(
        self,
        batch: list[tuple[int, Layout, int, int, list[ChunkId]]],
        gap: int,
        on_error: str,
        out: list[bytes | Exception],
    ) -> None:
        try:
            got = self.chunks.read_many(
                (cid for item in batch for cid in item[4]), workers(self), gap, CHUNKS
            )
        except Exception:
            if on_error == "raise":
                raise
            for item in batch:  # one at a time: each range gets its own answer
                try:
                    one = self.chunks.read_many(item[4], 1, 0, CHUNKS)
                    out[item[0]] = item[1].cut(item[2], item[3], one) if item[4] else b""
                except Exception as err:
                    out[item[0]] = err
            return
        for i, layout, lo, hi, ids in batch:
            out[i] = layout.cut(lo, hi, got) if ids else b""

    def materialize(self, dest: str, shard: tuple[int, int] | None = None) -> int:
        """Write the snapshot into ``dest`` exactly (extra files removed); return files
        written. ``shard=(i, n)``: only every n-th file from the i-th, in path order, and
        nothing removed, so that n processes (Dask workers) write a snapshot together."""
        snap = self._rooted()
        root = snap.record.root
        i, n = check_shard(shard) if shard is not None else (0, 1)
        if i >= root.files:
            return 0  # an empty shard (a snapshot of fewer files than shards)

        def pages() -> Iterator[Page]:  # a page at a time, in path order: never all entries
            first = 0  # the snapshot's number of the page's first file
            for page, (entries, hints) in zip(
                root.pages, decoded_pages(self.chunks, root.pages), strict=True
            ):
                if n > 1:
                    entries = entries[(i - first) % n :: n]
                first += page.files
                yield entries, hints

        def unchanged(local: LocalFile, e: FileEntry) -> bool:
            return local.size == e.size and hash_path(local.abspath, local.size) == e.hash

        kind, progress = snap.record.kind, NoProgress()
        prune = shard is None
        return materialize(self.chunks, pages(), dest, kind, unchanged, progress, None, prune)

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
    retry: RetryPolicy | None,
    root: VersionRecord | None,
    spec: str | None,
    records: list[VersionRecord],
    specs: dict[str, str],
) -> DatavcFileSystem:
    """An unpickled filesystem: the same store, pinned to the versions its parent resolved."""
    fs = DatavcFileSystem(
        store=url, storage_options=options, record=root, retry=retry, skip_instance_cache=True
    )
    fs.spec = spec
    for rec in records:
        fs._snapshot_of(rec)
    for written, pinned_spec in specs.items():
        if pinned_spec in fs._resolved:
            fs._resolved[written] = fs._resolved[pinned_spec]
    return fs
