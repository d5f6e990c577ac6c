"""The workspace: add, commit, checkout, status, log, ls, and version-spec resolution.

A workspace is a folder with ``.datavc/config.toml`` (usually a Git repo's top). Datasets are
known by their pointer files (``PATH.datavc``, committed) and by what ``add`` staged in
``.datavc/state/staged/<name>.json`` (not committed). Commands that change the workspace hold
an exclusive lock on ``.datavc/state/lock`` for their whole run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from . import versions
from .atomic import write_text_atomic
from .backend import Backend
from .chunker import ChunkerParams
from .chunkstore import DEFAULT_PACK_TARGET, ChunkStore, StoreConfig
from .config import (
    DEFAULT_STORE,
    DOT,
    Config,
    find_root,
    load_config,
    require_root,
    write_config,
)
from .errors import (
    BadInput,
    CorruptObject,
    DatasetNotFound,
    PathNotFound,
    UnsafePath,
    UsageError,
    VersionNotFound,
)
from .gitfiles import git, git_author, ignore_path, workspace_lock
from .hashing import FileHash, ObjectId, hash_path
from .paths import check_name
from .pointer import HEADER as POINTER_HEADER
from .pointer import SUFFIX, Pointer, decode_pointer, encode_pointer
from .record import CommitStats, VersionRecord
from .snapshot import (
    LocalFile,
    NoProgress,
    Progress,
    TreeDiff,
    build_entries,
    diff_entries,
    diff_trees,
    file_mode,
    iter_entries,
    materialize,
    merge_entries,
    scan,
    write_tree,
)
from .spec import VersionSpec, parse_spec
from .statcache import StatCache
from .tree import FileEntry, TreeRoot, root_doc, root_from_doc, snapshot_id


@dataclass(frozen=True, slots=True)
class Staged:
    """What ``add`` recorded and ``commit`` will publish."""

    name: str
    path: str
    kind: str
    tree: ObjectId
    files: int
    bytes: int
    new_bytes: int
    new_chunks: int
    new_objects: int
    nonce: str  # the commit's nonce, fixed at add: a retried commit is recognised
    root: TreeRoot  # the snapshot's tree root (its pages are in the store)

    def to_json(self) -> dict[str, object]:
        doc = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        doc["root"] = root_doc(self.root)
        return doc


@dataclass(frozen=True, slots=True)
class Dataset:
    name: str
    path: str  # relative to the workspace root, "/" separated
    kind: str
    pointer: Pointer | None
    staged: Staged | None


@dataclass(frozen=True, slots=True)
class AddResult:
    dataset: Dataset
    staged: Staged
    diff: TreeDiff


@dataclass(frozen=True, slots=True)
class CheckoutResult:
    name: str
    version: int
    path: str
    written: int
    files: int


@dataclass(frozen=True, slots=True)
class Status:
    name: str
    path: str
    state: str  # "clean", "staged", "modified", "missing", "new"
    diff: TreeDiff
    detail: str


class ProgressFactory:
    """Makes a progress sink for a labelled amount of work (the CLI shows bars)."""

    def __call__(self, label: str, total: int) -> Progress:
        return NoProgress()

    def close(self) -> None:
        pass


def open_store(url: str, storage_options: dict[str, object], cache_dir: str | None) -> ChunkStore:
    backend = Backend(url, dict(storage_options))
    cache = None
    if cache_dir is not None and not backend.is_local:
        cache = Backend(cache_dir)
    return ChunkStore.open(backend, cache)


def init_workspace(
    root: str,
    store: str | None,
    force: bool = False,
    pack_target: int = DEFAULT_PACK_TARGET,
) -> tuple[str, ChunkStore]:
    """Write the config and create (or join) the store; return the store's URL.

    Refuses to re-point an existing workspace unless ``force``."""
    root = os.path.abspath(root)
    if find_root(root) == root and not force:
        raise UsageError(
            f"{root} is already a datavc workspace (store: {load_config(root).store}); "
            "use --force to point it at another store"
        )
    url = store or DEFAULT_STORE
    if "://" not in url and os.path.isabs(url) is False and store is not None:
        url = os.path.relpath(os.path.abspath(url), root)
    resolved = url if "://" in url else os.path.normpath(os.path.join(root, url))
    backend = Backend(resolved)
    chunks = ChunkStore.create(backend, StoreConfig(ChunkerParams(), pack_target))
    write_config(root, url)
    return resolved, chunks


class Workspace:
    def __init__(
        self, root: str, progress: ProgressFactory | None = None, store: ChunkStore | None = None
    ) -> None:
        self.root = root
        self.dot = os.path.join(root, DOT)
        self.state = os.path.join(self.dot, "state")
        self.progress = progress or ProgressFactory()
        self._config: Config | None = None
        self._store = store

    @classmethod
    def find(cls, start: str = ".", progress: ProgressFactory | None = None) -> Workspace:
        return cls(require_root(start), progress)

    @property
    def config(self) -> Config:
        if self._config is None:
            self._config = load_config(self.root)
        return self._config

    @property
    def store(self) -> ChunkStore:
        if self._store is None:
            cfg = self.config
            self._store = open_store(
                cfg.store, cfg.storage_options, os.path.join(self.dot, "cache")
            )
        return self._store

    # -- datasets -------------------------------------------------------------------

    def rel(self, path: str) -> str:
        """A user path as a workspace-relative "/" path; refuses paths outside the workspace."""
        rel = os.path.relpath(os.path.abspath(path), self.root)
        if rel in (".", "..") or rel.startswith(".." + os.sep):
            raise BadInput(f"{path} is outside the workspace {self.root}")
        parts = rel.split(os.sep)
        if parts[0] in (".git", DOT):
            raise BadInput(f"{path} is inside {parts[0]}: datavc cannot track it")
        rel = "/".join(parts)
        self.check_parents(rel)
        return rel

    def check_parents(self, rel: str) -> None:
        """No folder between the workspace root and a dataset may be a symbolic link:
        data and pointer files must never be written outside the workspace."""
        current = self.root
        for part in rel.split("/")[:-1]:
            current = os.path.join(current, part)
            if os.path.islink(current):
                raise UnsafePath(rel, f"{current} is a symbolic link")

    def abs(self, rel: str) -> str:
        return os.path.join(self.root, *rel.split("/"))

    def datasets(self) -> dict[str, Dataset]:
        found: dict[str, Dataset] = {}
        for rel, pointer in self._pointers():
            found[pointer.name] = Dataset(pointer.name, rel, pointer.kind, pointer, None)
        for staged in self._staged_all():
            current = found.get(staged.name)
            known = current.pointer if current else None
            found[staged.name] = Dataset(staged.name, staged.path, staged.kind, known, staged)
        return found

    def dataset(self, name: str) -> Dataset:
        ds = self.datasets().get(name)
        if ds is None:
            raise DatasetNotFound(name)
        return ds

    def _pointers(self) -> Iterator[tuple[str, Pointer]]:
        seen: dict[str, str] = {}
        for current, dirs, files in os.walk(self.root):
            rel_dir = os.path.relpath(current, self.root)
            prefix = "" if rel_dir == "." else rel_dir.replace(os.sep, "/") + "/"
            tracked = {f[: -len(SUFFIX)] for f in files if f.endswith(SUFFIX)}
            dirs[:] = sorted(d for d in dirs if d not in (".git", DOT) and d not in tracked)
            for f in sorted(files):
                if not f.endswith(SUFFIX):
                    continue
                with open(os.path.join(current, f), encoding="utf-8", errors="replace") as fh:
                    text = fh.read(1 << 16)
                if not text.startswith(POINTER_HEADER):
                    continue  # some other tool's file that happens to end in .datavc
                pointer = decode_pointer(text, prefix + f)
                rel = prefix + f[: -len(SUFFIX)]
                if pointer.name in seen:
                    raise BadInput(
                        f"dataset {pointer.name!r} is tracked twice: {seen[pointer.name]} and {rel}"
                    )
                seen[pointer.name] = rel
                yield rel, pointer

    def _staged_path(self, name: str) -> str:
        return os.path.join(self.state, "staged", f"{name}.json")

    def _staged_all(self) -> list[Staged]:
        folder = os.path.join(self.state, "staged")
        if not os.path.isdir(folder):
            return []
        out = []
        for f in sorted(os.listdir(folder)):
            if f.endswith(".json"):
                out.append(_read_staged(os.path.join(folder, f)))
        return out

    def _write_json(self, path: str, doc: object) -> None:
        write_text_atomic(path, json.dumps(doc, indent=1))

    def stat_cache(self, name: str, files: Sequence[LocalFile] = ()) -> StatCache:
        return StatCache(os.path.join(self.state, "stat", f"{name}.cache"), files)

    def tree_entries(self, root: TreeRoot, hints: bool = False) -> list[FileEntry]:
        """A snapshot's entries; ``hints``: keep the pages' chunk locations (to read the
        chunks next without loading the index)."""
        return list(iter_entries(self.store, root, hints))

    def _reference_tree(self, ds: Dataset) -> ObjectId | None:
        """The snapshot the workspace copy is compared with: staged, else the pointer's."""
        if ds.staged is not None:
            return ds.staged.tree
        return ds.pointer.snapshot if ds.pointer else None

    def _reference_root(self, ds: Dataset) -> TreeRoot | None:
        if ds.staged is not None:
            return ds.staged.root
        if ds.pointer is not None:
            return self.pointed(ds.pointer, ds.path + SUFFIX).root
        return None

    def _reference_entries(self, ds: Dataset) -> list[FileEntry]:
        root = self._reference_root(ds)
        return self.tree_entries(root) if root is not None else []

    # -- add ------------------------------------------------------------------------

    def add(self, path: str, name: str | None = None) -> AddResult:
        with workspace_lock(self.state):
            return self._add(path, name)

    def _add(self, path: str, name: str | None) -> AddResult:
        rel = self.rel(path)
        absolute = self.abs(rel)
        if not os.path.lexists(absolute):
            raise PathNotFound(path)
        kind = "dir" if os.path.isdir(absolute) and not os.path.islink(absolute) else "file"
        existing = {d.path: d for d in self.datasets().values()}
        if name is None:
            name = existing[rel].name if rel in existing else _default_name(rel, kind)
        check_name(name)
        known = self.datasets().get(name)
        if known is not None and known.path != rel:
            raise BadInput(f"dataset {name!r} already tracks {known.path}; pick another --name")
        if rel in existing and existing[rel].name != name:
            raise BadInput(f"{rel} is already tracked as {existing[rel].name!r}")
        self._check_nesting(rel, existing)
        files = scan(absolute, kind)
        ds = known or Dataset(name, rel, kind, None, None)
        reference = self._reference_root(ds)
        cache = self.stat_cache(name, files)
        cache.load()  # before build_entries empties the scan list
        store = self.store
        previous = _Cursor(iter_entries(store, reference, hints=False) if reference else iter(()))
        bar = self.progress(f"adding {rel}", sum(f.size for f in files))
        try:
            with store.new_writer() as writer:
                reuse = functools.partial(_reuse, cache, previous)

                def put(f: LocalFile, e: FileEntry) -> None:
                    cache.put(f, e.hash)

                entries = build_entries(files, store, writer, reuse, bar, put)  # empties files
                stats = writer.finish()
        finally:
            self.progress.close()
        cache.retain((e.path for e in entries), len(entries))  # each got a row as it settled
        root = write_tree(store, entries)
        tree = snapshot_id(root)
        cache.mark(tree)
        cache.save()
        carried = ds.staged if ds.staged else None
        staged = Staged(
            name,
            rel,
            kind,
            tree,
            len(entries),
            sum(e.size for e in entries),
            stats.new_bytes + (carried.new_bytes if carried else 0),
            stats.new_chunks + (carried.new_chunks if carried else 0),
            stats.new_objects + (carried.new_objects if carried else 0),
            _nonce(),
            root,
        )
        if ds.pointer is not None and ds.pointer.snapshot == tree:
            self._unstage(name)
        else:
            self._write_json(self._staged_path(name), staged.to_json())
        ignore_path(self.root, rel)
        changes: dict[str, list[str]] = {"added": [], "removed": [], "modified": []}
        old = iter_entries(store, reference, hints=False) if reference else iter(())
        for kind, e in merge_entries(old, iter(entries)):  # the new entries are in memory
            changes[kind].append(e.path)
        diff = TreeDiff(*(tuple(changes[k]) for k in ("added", "removed", "modified")))
        return AddResult(ds, staged, diff)

    def _check_nesting(self, rel: str, existing: dict[str, Dataset]) -> None:
        for other in existing:
            if other != rel and (rel.startswith(other + "/") or other.startswith(rel + "/")):
                raise BadInput(f"{rel} overlaps the tracked dataset at {other}")

    def _unstage(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._staged_path(name))

    # -- commit ---------------------------------------------------------------------

    def commit(
        self, names: list[str], message: str, all_tracked: bool = False
    ) -> tuple[list[VersionRecord], list[str]]:
        """Publish a version of each named (or every) dataset with staged changes.

        Returns the new records and the names that had nothing to commit.
        """
        try:
            message.encode("utf-8")
        except UnicodeEncodeError:
            raise BadInput("the commit message is not valid UTF-8") from None
        with workspace_lock(self.state):
            if all_tracked:
                for ds in list(self.datasets().values()):
                    wanted = not names or ds.name in names
                    if wanted and os.path.lexists(self.abs(ds.path)):
                        self._add(ds.path, ds.name)
            known = self.datasets()
            for n in names:
                if n not in known:
                    raise DatasetNotFound(n)
            chosen = [known[n] for n in names] if names else list(known.values())
            published, unchanged = [], []
            for ds in chosen:
                if ds.staged is None:
                    unchanged.append(ds.name)
                    continue
                published.append(self._publish(ds, ds.staged, message))
            return published, unchanged

    def _publish(self, ds: Dataset, staged: Staged, message: str) -> VersionRecord:
        record = VersionRecord(
            name=ds.name,
            version=0,
            kind=staged.kind,
            tree=staged.tree,
            parent=ds.pointer.version if ds.pointer else None,
            message=message,
            author=git_author(self.root),
            time=_utc_now(),
            git_head=git(self.root, "rev-parse", "HEAD"),
            nonce=staged.nonce or _nonce(),
            root=staged.root,
            stats=CommitStats(
                staged.files, staged.bytes, staged.new_bytes, staged.new_chunks, staged.new_objects
            ),
        )
        record = versions.publish_version(self.store, record)
        self._write_pointer(staged.path, record)
        self._unstage(ds.name)
        return record

    def _write_pointer(self, rel: str, rec: VersionRecord) -> None:
        pointer = Pointer(
            rec.name, rec.kind, rec.version, rec.tree, rec.stats.files, rec.stats.bytes
        )
        write_text_atomic(self.abs(rel) + SUFFIX, encode_pointer(pointer))

    # -- resolving specs ------------------------------------------------------------

    def resolve(self, spec: VersionSpec) -> VersionRecord:
        """Resolve a spec; a bare NAME means what its pointer file says."""
        if spec.kind == "git":
            return self._resolve_git(spec)
        if spec.kind == "none":
            ds = self.datasets().get(spec.name)
            if ds is not None and ds.pointer is not None:
                return self.pointed(ds.pointer, ds.path + SUFFIX)
        return versions.resolve(self.store, spec)

    def pointed(self, pointer: Pointer, where: str) -> VersionRecord:
        """The version a pointer file names, checked against its snapshot id."""
        rec = versions.read_version(self.store, pointer.name, pointer.version)
        if rec.tree != pointer.snapshot:
            raise BadInput(
                f"{where} names snapshot {pointer.snapshot[:12]} but {pointer.name}@v"
                f"{pointer.version} in the store is snapshot {rec.tree[:12]}"
            )
        return rec

    def _resolve_git(self, spec: VersionSpec) -> VersionRecord:
        ds = self.dataset(spec.name)
        if git(self.root, "rev-parse", "--git-dir") is None:
            raise UsageError(f"{spec}: this workspace is not a git repository")
        top = git(self.root, "rev-parse", "--show-toplevel") or self.root
        rel_in_git = os.path.relpath(self.abs(ds.path) + SUFFIX, top).replace(os.sep, "/")
        text = git(self.root, "show", "--end-of-options", f"{spec.value}:{rel_in_git}")
        if text is None:
            raise VersionNotFound(spec.name, f"git:{spec.value}")
        return self.pointed(decode_pointer(text, f"{spec.value}:{rel_in_git}"), str(spec))

    # -- checkout -------------------------------------------------------------------

    def checkout(self, specs: list[str], force: bool = False) -> list[CheckoutResult]:
        with workspace_lock(self.state):
            known = self.datasets()
            plan: list[tuple[Dataset, VersionRecord]] = []
            if not specs:
                for ds in known.values():
                    if ds.pointer is not None:
                        plan.append((ds, self.pointed(ds.pointer, ds.path + SUFFIX)))
            for text in specs:
                spec = parse_spec(text)
                if spec.name not in known:
                    raise DatasetNotFound(spec.name)
                if any(ds.name == spec.name for ds, _ in plan):
                    raise BadInput(f"dataset {spec.name!r} is named twice")
                plan.append((known[spec.name], self.resolve(spec)))
            loaded = [(ds, rec, self.tree_entries(rec.root, hints=True)) for ds, rec in plan]
            if not force:
                for ds, _, entries in loaded:
                    self._refuse_unsaved(ds, entries)
            return [self._checkout_one(ds, rec, entries) for ds, rec, entries in loaded]

    def _refuse_unsaved(self, ds: Dataset, target: list[FileEntry]) -> None:
        """Refuse to lose content found in no committed version of the dataset: files in
        the workspace, and files of a snapshot that was added but not committed."""
        needed = self._local_hashes(ds)
        if ds.staged is not None:
            for e in self.tree_entries(ds.staged.root):
                needed.setdefault(f"{e.path} (added, not committed)", e.hash)
        saved = {e.hash for e in target}
        for root in self._trees_to_compare(ds):
            if all(h in saved for h in needed.values()):
                return
            saved |= {e.hash for e in self.tree_entries(root)}
        for path, digest in needed.items():
            if digest not in saved:
                raise UsageError(
                    f"{ds.path}/{path} has changes that are not stored in any committed "
                    f"version: run 'datavc add {ds.path}' and commit, or checkout with "
                    "--force to discard them"
                )

    def _local_hashes(self, ds: Dataset) -> dict[str, FileHash]:
        absolute = self.abs(ds.path)
        if not os.path.lexists(absolute) or os.path.islink(absolute):
            return {}  # nothing there, or a symlink that materialize refuses
        kind = "dir" if os.path.isdir(absolute) else "file"
        cache = self.stat_cache(ds.name)
        local = {f.path: self._hash_of(cache, f) for f in scan(absolute, kind, odd=[])}
        cache.save()
        return local

    def _trees_to_compare(self, ds: Dataset) -> Iterator[TreeRoot]:
        """The pointer's snapshot, then every version of the dataset, newest first.

        A staged (added, not committed) snapshot does not count: checkout would drop it."""
        if ds.pointer is not None:
            yield self.pointed(ds.pointer, ds.path + SUFFIX).root
        for n in reversed(versions.version_numbers(self.store, ds.name)):
            yield versions.read_version(self.store, ds.name, n).root

    def _hash_of(self, cache: StatCache, f: LocalFile) -> FileHash:
        known = cache.get(f)
        if known is not None:
            return known
        digest = hash_path(f.abspath, f.size)
        cache.put(f, digest)
        return digest

    def _checkout_one(
        self, ds: Dataset, rec: VersionRecord, entries: list[FileEntry]
    ) -> CheckoutResult:
        self.check_parents(ds.path)
        if rec.kind != ds.kind and os.path.lexists(self.abs(ds.path)):
            raise BadInput(
                f"{rec.name}@v{rec.version} is a {rec.kind}, but {ds.path} is a {ds.kind}"
            )
        cache = self.stat_cache(ds.name)
        absolute = self.abs(ds.path)

        def unchanged(local: LocalFile, e: FileEntry) -> bool:
            return local.size == e.size and self._hash_of(cache, local) == e.hash

        bar = self.progress(f"checkout {rec.name}@v{rec.version}", sum(e.size for e in entries))
        try:
            written = materialize(self.store, entries, absolute, rec.kind, unchanged, bar)
        finally:
            self.progress.close()
            cache.save()
        hashes = {e.path: e.hash for e in entries}
        for f in scan(absolute, rec.kind):
            cache.put(f, hashes[f.path])
        cache.retain({e.path for e in entries})
        cache.mark(rec.tree)
        cache.save()
        if (
            ds.pointer is None
            or ds.pointer.version != rec.version
            or ds.pointer.snapshot != rec.tree
        ):
            self._write_pointer(ds.path, rec)
        self._unstage(ds.name)
        ignore_path(self.root, ds.path)
        return CheckoutResult(ds.name, rec.version, ds.path, written, len(entries))

    # -- status, log, ls --------------------------------------------------------------

    def status(self) -> list[Status]:
        return [
            self._status_one(ds) for ds in sorted(self.datasets().values(), key=lambda d: d.path)
        ]

    def _status_one(self, ds: Dataset) -> Status:
        absolute = self.abs(ds.path)
        ref = self._reference_tree(ds)
        empty = TreeDiff((), (), ())
        if not os.path.lexists(absolute):
            return Status(
                ds.name, ds.path, "missing", empty, "not in the workspace: run datavc checkout"
            )
        local = scan(absolute, ds.kind)
        cache = self.stat_cache(ds.name, local)
        diff = empty
        if ref is None or cache.matches != ref or not cache.covers(local):
            entries = self._reference_entries(ds)
            current = [
                FileEntry(f.path, _mode(f), f.size, self._hash_of(cache, f), ()) for f in local
            ]
            diff = diff_entries(entries, current)
            cache.mark(ref if diff.empty else None)
            cache.save()
        if not diff.empty:
            return Status(ds.name, ds.path, "modified", diff, "changed since add: run datavc add")
        if ds.staged is not None and ds.pointer is None:
            return Status(ds.name, ds.path, "new", diff, "added, not committed yet")
        if ds.staged is not None and ds.pointer is not None:
            staged_diff = diff_entries(
                self.tree_entries(self.pointed(ds.pointer, ds.path + SUFFIX).root),
                self.tree_entries(ds.staged.root),
            )
            return Status(ds.name, ds.path, "staged", staged_diff, "added, not committed yet")
        return Status(
            ds.name, ds.path, "clean", diff, f"matches v{ds.pointer.version if ds.pointer else '?'}"
        )

    def log(self, name: str) -> list[VersionRecord]:
        numbers = versions.version_numbers(self.store, name)
        if not numbers:
            _ = self.store.config  # no store at all: say that, not "no such dataset"
            raise DatasetNotFound(name)
        return [versions.read_version(self.store, name, n) for n in reversed(numbers)]

    def ls(self, text: str) -> tuple[VersionRecord, Iterator[FileEntry]]:
        """A snapshot's entries in path order, read one page at a time."""
        rec = self.resolve(parse_spec(text))
        return rec, iter_entries(self.store, rec.root, hints=False)

    def diff(
        self, text: str, against: str | None = None
    ) -> tuple[VersionRecord | None, VersionRecord, Iterator[tuple[str, FileEntry]]]:
        """Changes from ``text``'s parent version to ``text``, or from ``text`` to
        ``against``; returns (old record or None for "nothing", new record, changes)."""
        first = self.resolve(parse_spec(text))
        if against is None:
            old, new = None, first
            if first.parent is not None:
                old = versions.read_version(self.store, first.name, first.parent)
        else:
            old, new = first, self.resolve(parse_spec(against))
        return old, new, diff_trees(self.store, old.root if old else None, new.root)


class _Cursor:
    """Walks a snapshot's entries in path order, for lookups made in path order."""

    def __init__(self, entries: Iterator[FileEntry]) -> None:
        self._entries = entries
        self._current = next(entries, None)

    def at(self, path: str) -> FileEntry | None:
        while self._current is not None and self._current.path < path:
            self._current = next(self._entries, None)
        current = self._current
        return current if current is not None and current.path == path else None


def _nonce() -> str:
    import uuid  # uuid and datetime are imported when a version is made, not by status

    return uuid.uuid4().hex


def _utc_now() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _reuse(cache: StatCache, previous: _Cursor, f: LocalFile) -> FileEntry | None:
    """The previous snapshot's entry for ``f`` if the stat cache says it is unchanged
    (files come in path order, so the previous snapshot is read one page at a time)."""
    known = cache.get(f)
    if known is None:
        return None
    e = previous.at(f.path)
    return e if e is not None and e.hash == known else None


def _mode(f: LocalFile) -> int:
    return file_mode(f.mode)


def _default_name(rel: str, kind: str) -> str:
    base = rel.rsplit("/", 1)[-1]
    if kind == "file" and "." in base.lstrip("."):
        base = base.rsplit(".", 1)[0]
    return base


def _read_staged(path: str) -> Staged:
    """Parse a staged-state file; a damaged one is reported, not a traceback."""
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
        root = root_from_doc(doc.pop("root"), path)
        staged = Staged(**doc, root=root)
        if snapshot_id(root) != staged.tree:
            raise TypeError("root does not match")
        ints = (staged.files, staged.bytes, staged.new_bytes, staged.new_chunks, staged.new_objects)
        if not all(isinstance(n, int) for n in ints) or staged.kind not in ("dir", "file"):
            raise TypeError("bad field")
        check_name(staged.name)
        return staged
    except (ValueError, TypeError, KeyError, UnicodeDecodeError, CorruptObject):
        raise BadInput(f"{path} is damaged: delete it and run 'datavc add' again") from None
