"""Materializing a snapshot: make a folder equal a tree, exactly.

Every path is checked before anything is written; files are fetched and checked against
their hash into a staging folder beside the target (:mod:`.fetch`), then renamed into place;
files that are not in the snapshot are removed. An error part-way leaves every file either
as it was or complete.

The snapshot comes a tree page at a time and the folder is scanned in the same (path) order
beside it, so memory grows with a page and a folder's listing, not with the number of files:
what the second phase will do with each path (rename a staged file into place, fix a kept
file's mode, remove a file the snapshot does not have) is written to a plan file in the
staging folder and read back in order. The sets of folders kept along the way grow with the
number of folders.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from stat import S_ISDIR
from typing import BinaryIO

from ..errors import BadInput, UnsafePath
from ..format.hashing import ChunkId
from ..format.packfile import Location
from ..format.paths import SortedPathCheck, check_paths, cut_short
from ..format.tree import NO_HINTS, FileEntry
from .chunkstore import ChunkStore
from .fetch import Fetch, fetch_all, fetch_file
from .files import TMP_PREFIX, LocalFile, Progress, iter_scan, local_file, scan

Page = tuple[list[FileEntry], Mapping[ChunkId, Location]]
"""A tree page's entries (in path order) and the places of their chunks (its hints)."""


def as_pages(entries: Iterable[FileEntry]) -> list[Page]:
    """Entries in any order as one page with no hints (their chunks found in the index)."""
    return [(sorted(entries, key=lambda e: e.path), NO_HINTS)]


def materialize(
    store: ChunkStore,
    pages: Iterable[Page],
    dest: str,
    kind: str,
    unchanged: Callable[[LocalFile, FileEntry], bool],
    progress: Progress,
    placed: Callable[[], None] | None = None,
    prune: bool = True,
) -> int:
    """Make ``dest`` equal the snapshot whose ``pages`` (in path order) are given; return
    the number of files written. Without ``prune``, the pages may hold a part of the
    snapshot (a shard that other processes write the rest of, at once): files not among
    them are left alone.

    Two phases: every file to write is first fetched and verified into a staging folder
    beside ``dest``; only then are files renamed into place and extra files removed. A
    failure in the first phase (a bad path, a damaged chunk, an unreachable store) leaves
    ``dest`` untouched. ``unchanged(local, entry)`` says whether a file already in place
    has the entry's content (the caller answers from its stat cache or by hashing).

    ``placed()`` runs right after the second phase (the caller records what ``dest`` now
    holds). An interrupt (Ctrl-C) that comes during the second phase or ``placed`` is held
    until both are done, then raised: ``dest`` is never left half one version and half
    another, and never disagrees with what the caller recorded.
    """
    _refuse_symlink(dest)
    parent = os.path.dirname(os.path.abspath(dest))
    os.makedirs(parent, exist_ok=True)
    _remove_stale_stages(parent)
    import tempfile

    stage = tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{os.getpid()}-{_host()}-", dir=parent)
    try:
        if kind == "file":
            entry, hints = _only_entry(pages)
            staged = _stage_file(store, entry, hints, dest, stage, unchanged, progress)
            with interrupts_held():
                if staged is not None:
                    os.replace(staged, dest)
                if placed is not None:
                    placed()
            return 0 if staged is None else 1
        with open(os.path.join(stage, "plan"), "w+b") as plan_file:
            plan = _Plan(plan_file, stage, unchanged)
            fetch_all(store, plan.staged(pages, dest, prune), progress)
            plan_file.seek(0)
            with interrupts_held():
                plan.place(dest, prune)
                if placed is not None:
                    placed()
        progress.advance(plan.kept_bytes)
        return plan.fetched
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _only_entry(pages: Iterable[Page]) -> tuple[FileEntry, Mapping[ChunkId, Location]]:
    """A single-file snapshot's entry (its one page's only one), with its page's hints:
    without them the file's chunks would be looked up in the index, loaded first (a
    listing and a read of every index object)."""
    found: list[tuple[FileEntry, Mapping[ChunkId, Location]]] = []
    for entries, hints in pages:
        found.extend((e, hints) for e in entries[:2])
        if len(found) > 1:
            break
    if len(found) != 1:
        raise BadInput(f"a file snapshot must hold one file, not {len(found)}")
    check_paths([found[0][0].path])
    return found[0]


PATH_MAX = 4096  # Linux's, with the NUL: a longer path fails in the second phase (ENAMETOOLONG)
_RECORD = struct.Struct("<BQH")  # what to do, staged file number, path length (then the path)
_PLACE, _KEEP, _KEEP_EXEC, _REMOVE = range(4)  # _KEEP*: a kept file whose mode is wrong


@dataclass
class _Plan:
    """The second phase's work, path by path, in a file (see the module's docstring)."""

    out: BinaryIO
    stage: str
    unchanged: Callable[[LocalFile, FileEntry], bool]
    fetched: int = 0
    kept_bytes: int = 0

    def __post_init__(self) -> None:
        self.folders: set[str] = set()  # the snapshot's folders
        self.odd: list[str] = []  # what the scan found that is not a regular file

    def staged(self, pages: Iterable[Page], dest: str, prune: bool) -> Iterator[Fetch]:
        """Merge the pages with a scan of ``dest`` (a shard, not pruning, looks up its own
        paths only): check each path, note what to do with it, and yield the files to
        fetch (their staging path, entry and page hints)."""
        check = SortedPathCheck()
        local: _Scan | _Look = _Scan(dest, self.odd) if prune else _Look(dest)
        last_folder = None
        room = PATH_MAX - 1 - len(os.fsencode(dest)) - 1  # (the NUL, the "/" after dest)
        for entries, hints in pages:
            for e in entries:
                check.add(e.path)
                if len(e.path) > room // 4 and len(e.path.encode()) > room:
                    where = f"too long to write under {dest} (PATH_MAX)"
                    raise UnsafePath(cut_short(e.path), where)
                folder = e.path.rpartition("/")[0]
                if folder != last_folder:
                    self._add_folders(folder)
                    last_folder = folder
                for extra in local.before(e.path):
                    self._note(_REMOVE, 0, extra.path)
                have = local.take(e.path)
                if have is not None and self.unchanged(have, e):
                    if bool(have.mode & 0o111) != e.executable:  # else nothing to do
                        self._note(_KEEP_EXEC if e.executable else _KEEP, 0, e.path)
                    self.kept_bytes += e.size
                    continue
                n = self.fetched
                self.fetched += 1
                self._note(_PLACE, n, e.path)
                yield os.path.join(self.stage, str(n)), e, hints
        for extra in local.before(None):
            self._note(_REMOVE, 0, extra.path)

    def _add_folders(self, folder: str) -> None:
        while folder and folder not in self.folders:
            self.folders.add(folder)
            folder = folder.rpartition("/")[0]

    def _note(self, op: int, n: int, path: str) -> None:
        raw = path.encode()
        self.out.write(_RECORD.pack(op, n, len(raw)) + raw)

    def _records(self) -> Iterator[tuple[int, int, str]]:
        read = self.out.read
        while head := read(_RECORD.size):
            op, n, size = _RECORD.unpack(head)
            yield op, n, read(size).decode()

    def place(self, dest: str, prune: bool) -> None:
        """Second phase: rename the fetched files into place, fix modes, remove the rest
        (with ``prune``)."""
        if os.path.lexists(dest) and not os.path.isdir(dest):
            os.unlink(dest)  # a file where the dataset's folder belongs
        os.makedirs(dest, exist_ok=True)
        if prune:  # symlinks, specials; a shard leaves what is in the way to _prepare_parent
            for path in self.odd:
                _remove(os.path.join(dest, *path.split("/")))
        ready: set[str] = set()  # folders made or checked in this pass
        made: set[str] = set()  # those made now: nothing is in the way in them
        for op, n, path in self._records():
            target = os.path.join(dest, *path.split("/"))
            if op == _PLACE:
                _prepare_parent(dest, path, ready, made)
                parent = path.rpartition("/")[0]
                if parent not in made and os.path.isdir(target) and not os.path.islink(target):
                    _remove(target)
                os.replace(os.path.join(self.stage, str(n)), target)
            elif op == _REMOVE:
                if prune:
                    _remove(target)
            else:
                _set_mode(target, op == _KEEP_EXEC)
        if prune:
            _prune_empty_dirs(dest, self.folders)


class _Scan:
    """A path-ordered scan of the folder being replaced, taken a path at a time."""

    def __init__(self, dest: str, odd: list[str]) -> None:
        files: Iterator[LocalFile] = iter(())
        if os.path.isdir(dest) and not os.path.islink(dest):
            files = iter_scan(dest, "dir", odd)
        self._files = files
        self.head = next(files, None)

    def before(self, path: str | None) -> Iterator[LocalFile]:
        """The files before ``path`` (None: all that are left)."""
        while self.head is not None and (path is None or self.head.path < path):
            f = self.head
            self.head = next(self._files, None)
            yield f

    def take(self, path: str) -> LocalFile | None:
        """The file at ``path``, if the scan is there."""
        f = self.head
        if f is None or f.path != path:
            return None
        self.head = next(self._files, None)
        return f


class _Look:
    """A shard's look at the folder: each path of its own, nothing else (``before`` and
    ``take`` as :class:`_Scan` has them). Other shards' writers fill the folder meanwhile,
    so a scan of it would be racing them."""

    def __init__(self, dest: str) -> None:
        self.dest = dest

    def before(self, path: str | None) -> Iterator[LocalFile]:
        return iter(())

    def take(self, path: str) -> LocalFile | None:
        return local_file(self.dest, path)


def _stage_file(
    store: ChunkStore,
    e: FileEntry,
    hints: Mapping[ChunkId, Location],
    dest: str,
    stage: str,
    unchanged: Callable[[LocalFile, FileEntry], bool],
    progress: Progress,
) -> str | None:
    """A single-file snapshot's file, fetched into ``stage`` (its chunks found through
    ``hints``, its page's); None if ``dest`` holds it already (its mode set)."""
    if os.path.isdir(dest):
        raise BadInput(f"{dest} is a folder, but the snapshot is a single file")
    if os.path.isfile(dest) and unchanged(scan(dest, "file")[0], e):
        _set_mode(dest, e.executable)
        progress.advance(e.size)
        return None
    tmp = os.path.join(stage, "file")
    fetch_file(store, e, tmp, progress, hints)
    return tmp


def _set_mode(target: str, executable: bool) -> None:
    if bool(os.stat(target).st_mode & 0o111) != executable:
        os.chmod(target, 0o755 if executable else 0o644)


@contextlib.contextmanager
def interrupts_held() -> Iterator[None]:
    """Hold SIGINT (Ctrl-C) back while the block runs, and raise it as KeyboardInterrupt
    when the block has ended (unless the block raised). Signals reach only the main thread,
    so elsewhere nothing needs holding."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.SIG_DFL if previous is None else previous)
    if caught:
        raise KeyboardInterrupt


def _host() -> str:
    """This machine, in staging folders' names: on a shared filesystem, another host's
    process ids say nothing here (its writers' stages must not be taken for dead ones)."""
    import hashlib
    import socket

    return hashlib.blake2s(socket.gethostname().encode(), digest_size=4).hexdigest()


def _remove_stale_stages(parent: str) -> None:
    """Remove staging folders left by checkouts of this host whose process is gone
    (killed, crashed). A name without a host part is from an older datavc: this host's."""
    for name in os.listdir(parent):
        if not name.startswith(TMP_PREFIX):
            continue
        parts = name[len(TMP_PREFIX) :].split("-")
        pid = parts[0]
        if len(parts) > 2 and parts[1] != _host():
            continue  # another host's writer, perhaps alive
        if not pid.isdigit() or _alive(int(pid)):
            continue
        _remove(os.path.join(parent, name))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _refuse_symlink(dest: str) -> None:
    if os.path.islink(dest):
        raise UnsafePath(dest, "the dataset path is a symbolic link")


def _prepare_parent(dest: str, path: str, ready: set[str], made: set[str]) -> None:
    """Create the folders above ``path``; a symlink or file in the way is removed, not
    followed. Folders in ``ready`` were done already; those made are added to ``made``."""
    rel = ""
    for part in path.split("/")[:-1]:
        rel = f"{rel}/{part}" if rel else part
        if rel in ready:
            continue
        current = os.path.join(dest, *rel.split("/"))
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            _make_folder(current, rel, made)
        else:
            if not S_ISDIR(st.st_mode):
                with contextlib.suppress(FileNotFoundError):  # another shard's writer did
                    os.unlink(current)
                _make_folder(current, rel, made)
        ready.add(rel)


def _make_folder(current: str, rel: str, made: set[str]) -> None:
    """Make a folder; one made at the same moment by another shard's writer will do."""
    try:
        os.mkdir(current)
        made.add(rel)
    except FileExistsError:
        if not os.path.isdir(current) or os.path.islink(current):
            raise


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)


def _prune_empty_dirs(dest: str, keep: set[str]) -> None:
    for current, _dirs, _files in os.walk(dest, topdown=False):
        if current == dest:
            continue
        rel = os.path.relpath(current, dest).replace(os.sep, "/")
        if rel not in keep and not os.listdir(current):
            os.rmdir(current)
