"""The workspace core: a folder's datasets, its store, and version specs resolved.

A workspace is a folder with ``.datavc/config.toml`` (usually a Git repo's top). Datasets are
known by their pointer files (``PATH.datavc``, committed) and by what ``add`` staged in
``.datavc/state/staged/<name>.json`` (not committed; read as untrusted: a damaged one is
reported as such, and its tree root must hash to the snapshot id it names). The commands
live in modules of their own (:mod:`.add`, :mod:`.commit`, :mod:`.checkout`,
:mod:`.status`, :mod:`.history`), each imported when it runs; :class:`Workspace` holds what
they share. Commands that change the workspace hold an exclusive lock on
``.datavc/state/lock`` for their whole run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import (
    BadInput,
    CorruptObject,
    DatasetNotFound,
    UnsafePath,
    UsageError,
    VersionNotFound,
)
from ..format.hashing import FileHash, ObjectId
from ..format.jsondoc import MAX_DOCUMENT, load_document
from ..format.paths import check_name, check_path, private_part
from ..format.pointer import HEADER as POINTER_HEADER
from ..format.pointer import (
    SUFFIX,
    Pointer,
    check_no_conflict,
    conflict_advice,
    conflict_line,
    conflict_sides,
    decode_pointer,
    encode_pointer,
)
from ..format.tree import FileEntry, TreeRoot
from ..format.treeroot import root_doc, root_from_doc, snapshot_id
from ..store.atomic import write_text_atomic
from ..store.files import LocalFile, NoProgress, Progress, file_mode, hash_path
from ..store.trees import iter_entries
from .config import DOT, Config, load_config, require_root
from .statcache import PathRows, SortedRows, StatCache

if TYPE_CHECKING:
    from ..format.record import DerivedFrom, VersionRecord
    from ..format.spec import VersionSpec
    from ..store.chunkstore import ChunkStore
    from ..store.fsckreport import Report
    from ..store.gc import GcReport
    from ..store.repair import RepairReport
    from ..store.retry import RetryPolicy
    from .add import AddResult
    from .checkout import CheckoutResult
    from .maintenance import ForgetResult
    from .status import Status


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


def write_staged(path: str, staged: Staged) -> None:
    write_text_atomic(path, json.dumps(staged.to_json(), indent=1))


def read_staged(path: str) -> Staged:
    """Parse a staged-state file; a damaged one is reported, not a traceback."""
    try:
        with open(path, "rb") as fh:
            doc = load_document(fh.read(MAX_DOCUMENT + 1))
        root = root_from_doc(doc.pop("root"), path)
        staged = Staged(**doc, root=root)
        if snapshot_id(root) != staged.tree:
            raise TypeError("root does not match")
        ints = (staged.files, staged.bytes, staged.new_bytes, staged.new_chunks, staged.new_objects)
        if not all(isinstance(n, int) for n in ints) or staged.kind not in ("dir", "file"):
            raise TypeError("bad field")
        check_name(staged.name)
        _check_dataset_path(staged.path, path)
        return staged
    except (ValueError, TypeError, KeyError, UnicodeDecodeError, CorruptObject):
        raise BadInput(f"{path} is damaged: delete it and run 'datavc add' again") from None


@dataclass(frozen=True, slots=True)
class Dataset:
    name: str
    path: str  # relative to the workspace root, "/" separated
    kind: str
    pointer: Pointer | None
    staged: Staged | None
    conflict: str | None = None  # its pointer file is in a merge conflict: what to do


class ProgressFactory:
    """Makes a progress sink for a labelled amount of work (the CLI shows bars)."""

    def __call__(self, label: str, total: int | None) -> Progress:
        """``total``: bytes to do (None: not known ahead)."""
        return NoProgress()

    def close(self) -> None:
        pass


def open_store(
    url: str,
    storage_options: dict[str, object],
    cache_dir: str | None,
    retry: RetryPolicy | None = None,
) -> ChunkStore:
    """The chunk store at ``url``, with a local cache in ``cache_dir`` if it is remote;
    ``retry``: how long a remote request may take, and how often it is tried again.

    The store modules are imported here, when a command first needs the store: ``status``
    of an unchanged folder never does."""
    from ..store.backend import Backend
    from ..store.chunkstore import ChunkStore

    backend = Backend(url, dict(storage_options), retry)
    cache = None
    if cache_dir is not None and not backend.is_local:
        cache = Backend(cache_dir)
    return ChunkStore.open(backend, cache)


class Workspace:
    """A workspace at ``root``: its datasets and store; the commands, each imported when it
    runs. The store is opened on first use (``store=``: one already open)."""

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
            cache = os.path.join(self.dot, "cache")
            self._store = open_store(cfg.store, cfg.storage_options, cache, cfg.retry)
            self._store.missing_hint = self._missing_store_hint
        return self._store

    def _missing_store_hint(self) -> str:
        from .remotes import missing_store_hint

        return missing_store_hint(self)

    # -- the commands, each in a module of its own -----------------------------------

    def add(self, path: str, name: str | None = None, client: Any = None) -> AddResult:
        from .add import add

        return add(self, path, name, client)

    def commit(
        self,
        names: list[str],
        message: str,
        all_tracked: bool = False,
        derived_from: tuple[DerivedFrom, ...] = (),
    ) -> tuple[list[VersionRecord], list[str]]:
        from .commit import commit

        return commit(self, names, message, all_tracked, derived_from)

    def checkout(self, specs: list[str], force: bool = False) -> list[CheckoutResult]:
        from .checkout import checkout

        return checkout(self, specs, force)

    def status(self) -> list[Status]:
        from .status import status

        return status(self)

    def log(self, name: str) -> list[VersionRecord]:
        from .history import log

        return log(self, name)

    def ls(self, text: str) -> tuple[VersionRecord, Iterator[FileEntry]]:
        from .history import ls

        return ls(self, text)

    def diff(
        self, text: str, against: str | None = None
    ) -> tuple[VersionRecord | None, VersionRecord, Iterator[tuple[str, FileEntry]]]:
        from .history import diff

        return diff(self, text, against)

    def tag(self, spec: str, name: str, force: bool = False) -> tuple[str, int, int | None]:
        from .tags import tag

        return tag(self, spec, name, force)

    def tags(self, dataset: str | None = None) -> dict[str, dict[str, int]]:
        from .tags import list_tags

        return list_tags(self, dataset)

    def delete_tag(self, dataset: str, name: str) -> int:
        from .tags import delete_tag

        return delete_tag(self, dataset, name)

    def fsck(self, specs: list[str], read_data: bool = False) -> Report:
        from .maintenance import fsck

        return fsck(self, specs, read_data)

    def forget(
        self, specs: list[str], keep_last: int | None = None, force: bool = False
    ) -> ForgetResult:
        from .maintenance import forget

        return forget(self, specs, keep_last, force)

    def repair(self, paths: list[str]) -> RepairReport:
        from .maintenance import repair

        return repair(self, paths)

    def gc(self, grace: float, dry_run: bool = False) -> GcReport:
        from .maintenance import collect

        return collect(self, grace, dry_run)

    # -- paths ------------------------------------------------------------------------

    def rel(self, path: str) -> str:
        """A user path as a workspace-relative "/" path; refuses paths outside the workspace."""
        rel = os.path.relpath(os.path.abspath(path), self.root)
        if rel in (".", "..") or rel.startswith(".." + os.sep):
            raise BadInput(f"{path} is outside the workspace {self.root}")
        rel = "/".join(rel.split(os.sep))
        inside = private_part(rel)
        if inside is not None:
            raise BadInput(f"{path} is inside {inside}: datavc cannot track it")
        try:
            check_path(rel)
        except UnsafePath as err:
            raise BadInput(f"{path} cannot be tracked: {err.reason}") from None
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

    # -- datasets -------------------------------------------------------------------

    def datasets(self) -> dict[str, Dataset]:
        found: dict[str, Dataset] = {}
        staged_all = list(self._staged_all())
        # a staged dataset's folder is not walked for pointer files (as a tracked one's is
        # not): a million files added and not yet committed cost no walk of them
        for rel, pointer, conflict in self._pointers({s.path for s in staged_all}):
            if isinstance(pointer, Pointer):
                found[pointer.name] = Dataset(pointer.name, rel, pointer.kind, pointer, None)
            else:
                found[pointer] = Dataset(pointer, rel, "dir", None, None, conflict)
        for staged in staged_all:
            current = found.get(staged.name)
            known = current.pointer if current else None
            conflict = current.conflict if current else None
            found[staged.name] = Dataset(
                staged.name, staged.path, staged.kind, known, staged, conflict
            )
        return found

    def dataset(self, name: str) -> Dataset:
        ds = self.datasets().get(name)
        if ds is None:
            raise DatasetNotFound(name)
        return ds

    def _pointers(
        self,
        skip: set[str] = frozenset(),  # type: ignore[assignment]
    ) -> Iterator[tuple[str, Pointer | str, str | None]]:
        """Each pointer file's dataset path and pointer; for one that git left in a merge
        conflict whose sides both name one dataset, that name and what to do about it (so
        that 'checkout NAME@vN' can resolve it); any other conflict is an error."""
        seen: dict[str, str] = {}
        for current, dirs, files in os.walk(self.root):
            rel_dir = os.path.relpath(current, self.root)
            prefix = "" if rel_dir == "." else rel_dir.replace(os.sep, "/") + "/"
            tracked = {f[: -len(SUFFIX)] for f in files if f.endswith(SUFFIX)}
            dirs[:] = sorted(
                d
                for d in dirs
                if private_part(d) is None and d not in tracked and prefix + d not in skip
            )
            for f in sorted(files):
                if not f.endswith(SUFFIX):
                    continue
                with open(os.path.join(current, f), encoding="utf-8", errors="replace") as fh:
                    text = fh.read(1 << 16)
                rel = prefix + f[: -len(SUFFIX)]
                number = conflict_line(text)  # git's markers can hide the header
                sides = conflict_sides(text) if number is not None else None
                if number is not None and sides is None:
                    check_no_conflict(text, prefix + f)  # raises, saying what to do
                if sides is None and not text.startswith(POINTER_HEADER):
                    continue  # some other tool's file that happens to end in .datavc
                _check_dataset_path(rel, prefix + f)
                pointer = decode_pointer(text, prefix + f) if sides is None else None
                name = pointer.name if pointer is not None else sides[0] if sides else ""
                if name in seen:
                    raise BadInput(f"dataset {name!r} is tracked twice: {seen[name]} and {rel}")
                seen[name] = rel
                if pointer is not None:
                    yield rel, pointer, None
                elif sides is not None and number is not None:
                    yield rel, name, conflict_advice(prefix + f, number, sides)

    def staged_path(self, name: str) -> str:
        return os.path.join(self.state, "staged", f"{name}.json")

    def _staged_all(self) -> list[Staged]:
        folder = os.path.join(self.state, "staged")
        if not os.path.isdir(folder):
            return []
        out = []
        for f in sorted(os.listdir(folder)):
            if f.endswith(".json"):
                out.append(read_staged(os.path.join(folder, f)))
        return out

    def unstage(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.staged_path(name))

    def write_pointer(self, rel: str, rec: VersionRecord) -> None:
        first = rec.root.pages[0].id if rec.root.pages else None
        pointer = Pointer(
            rec.name, rec.kind, rec.version, rec.tree, rec.stats.files, rec.stats.bytes, first
        )
        write_text_atomic(self.abs(rel) + SUFFIX, encode_pointer(pointer))

    # -- snapshots and local files ----------------------------------------------------

    def stat_cache(self, name: str) -> StatCache:
        return StatCache(os.path.join(self.state, "stat", f"{name}.cache"))

    def hash_of(self, rows: PathRows | SortedRows, f: LocalFile) -> FileHash:
        """A local file's hash: from the stat cache's rows if they have the file unchanged,
        else read (and put in the rows)."""
        known = rows.get(f)
        if known is not None:
            return known
        digest = hash_path(f.abspath, f.size)
        rows.put(f, file_mode(f.mode), digest)
        return digest

    def tree_entries(self, root: TreeRoot, hints: bool = False) -> list[FileEntry]:
        """A snapshot's entries; ``hints``: keep the pages' chunk locations (to read the
        chunks next without loading the index)."""
        return list(iter_entries(self.store, root, hints))

    def reference_tree(self, ds: Dataset) -> ObjectId | None:
        """The snapshot the workspace copy is compared with: staged, else the pointer's."""
        if ds.staged is not None:
            return ds.staged.tree
        return ds.pointer.snapshot if ds.pointer else None

    def reference_root(self, ds: Dataset) -> TreeRoot | None:
        if ds.staged is not None:
            return ds.staged.root
        if ds.pointer is not None:
            return self.pointed(ds.pointer, ds.path + SUFFIX).root
        return None

    def reference_entries(self, ds: Dataset) -> list[FileEntry]:
        root = self.reference_root(ds)
        return self.tree_entries(root) if root is not None else []

    # -- resolving specs ------------------------------------------------------------

    def resolve(self, spec: VersionSpec) -> VersionRecord:
        """Resolve a spec; a bare NAME means what its pointer file says."""
        from ..store import versions

        if spec.kind == "git":
            return self._resolve_git(spec)
        if spec.kind == "none":
            ds = self.datasets().get(spec.name)
            if ds is not None and ds.pointer is not None:
                return self.pointed(ds.pointer, ds.path + SUFFIX)
        return versions.resolve(self.store, spec)

    def derived_from(self, text: str) -> DerivedFrom:
        """A spec resolved to the version it names, as a derived-from link."""
        from ..format.record import DerivedFrom
        from ..format.spec import parse_spec

        rec = self.resolve(parse_spec(text))
        return DerivedFrom(rec.name, rec.version, rec.tree)

    def pointed(self, pointer: Pointer, where: str) -> VersionRecord:
        """The version a pointer file names, checked against its snapshot id."""
        from ..store import versions  # here: status of an unchanged folder reads no record

        rec = versions.read_version(self.store, pointer.name, pointer.version)
        if rec.tree != pointer.snapshot:
            raise BadInput(
                f"{where} names snapshot {pointer.snapshot[:12]} but {pointer.name}@v"
                f"{pointer.version} in the store is snapshot {rec.tree[:12]}"
            )
        return rec

    def _resolve_git(self, spec: VersionSpec) -> VersionRecord:
        from .git import git

        ds = self.dataset(spec.name)
        if git(self.root, "rev-parse", "--git-dir") is None:
            raise UsageError(f"{spec}: this workspace is not a git repository")
        top = git(self.root, "rev-parse", "--show-toplevel") or self.root
        rel_in_git = os.path.relpath(self.abs(ds.path) + SUFFIX, top).replace(os.sep, "/")
        text = git(self.root, "show", "--end-of-options", f"{spec.value}:{rel_in_git}")
        if text is None:
            raise VersionNotFound(spec.name, f"git:{spec.value}")
        return self.pointed(decode_pointer(text, f"{spec.value}:{rel_in_git}"), str(spec))


def _check_dataset_path(rel: str, where: str) -> None:
    """A dataset path read from a file (a pointer file's own path, or staged state) obeys
    the rules of a typed one: relative, inside the workspace, never into ``.git`` or
    ``.datavc`` at any depth, in any case. A pointer file arrives with ``git pull``: it is
    not trusted. ``where`` names the file in the error."""
    try:
        check_path(rel)
    except UnsafePath as err:
        raise UnsafePath(where, f"it would track {rel!r} ({err.reason})") from None
