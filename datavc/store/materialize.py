"""Materializing a snapshot: make a folder equal a tree, exactly.

Every path is checked before anything is written; files are fetched and checked against
their hash into a staging folder beside the target, then renamed into place; files that are
not in the snapshot are removed last. An error part-way leaves every file either as it was
or complete.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from stat import S_ISDIR
from typing import TYPE_CHECKING

from ..errors import BadInput, IntegrityError, UnsafePath
from ..format.hashing import file_hasher
from ..format.paths import check_paths
from ..format.tree import FileEntry
from .atomic import UMASK
from .chunkstore import ChunkStore
from .files import TMP_PREFIX, LocalFile, Progress, scan

if TYPE_CHECKING:
    from concurrent.futures import Future  # imported where threads start (see build.py)

STREAM_MIN = 1 << 20  # smaller files are read with their neighbours; larger ones streamed


def materialize(
    store: ChunkStore,
    entries: list[FileEntry],
    dest: str,
    kind: str,
    unchanged: Callable[[LocalFile, FileEntry], bool],
    progress: Progress,
    placed: Callable[[], None] | None = None,
    prune: bool = True,
) -> int:
    """Make ``dest`` equal the snapshot; return the number of files written. Without
    ``prune``, ``entries`` may be a part of the snapshot (a shard that other processes
    write the rest of, at once): files not among them are left alone.

    Two phases: every file to write is first fetched and verified into a staging folder
    beside ``dest``; only then are files renamed into place and extra files removed. A
    failure in the first phase (a damaged chunk, an unreachable store) leaves ``dest``
    untouched. ``unchanged(local, entry)`` says whether a file already in place has the
    entry's content (the caller answers from its stat cache or by hashing).

    ``placed()`` runs right after the second phase (the caller records what ``dest`` now
    holds). An interrupt (Ctrl-C) that comes during the second phase or ``placed`` is held
    until both are done, then raised: ``dest`` is never left half one version and half
    another, and never disagrees with what the caller recorded.
    """
    check_paths(e.path for e in entries)
    if kind == "file" and len(entries) != 1:
        raise BadInput(f"a file snapshot must hold one file, not {len(entries)}")
    _refuse_symlink(dest)
    parent = os.path.dirname(os.path.abspath(dest))
    os.makedirs(parent, exist_ok=True)
    _remove_stale_stages(parent)
    import tempfile

    stage = tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{os.getpid()}-{_host()}-", dir=parent)
    try:
        if kind == "file":
            staged = _stage_file(store, entries[0], dest, stage, unchanged, progress)
            with interrupts_held():
                if staged is not None:
                    os.replace(staged, dest)
                if placed is not None:
                    placed()
            return 0 if staged is None else 1
        present, odd = _present(dest)
        todo = [e for e in entries if not _in_place(present.get(e.path), e, unchanged)]
        _fetch_all(store, [(os.path.join(stage, str(i)), e) for i, e in enumerate(todo)], progress)
        with interrupts_held():
            _place(dest, entries, present, odd, todo, stage, prune)
            if placed is not None:
                placed()
        progress.advance(sum(e.size for e in entries) - sum(e.size for e in todo))
        return len(todo)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


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


def _fetch_all(store: ChunkStore, todo: list[tuple[str, FileEntry]], progress: Progress) -> None:
    """Write each entry's content to its path (folders made as needed), checked.

    Small files are read a run of neighbouring chunks at a time (a snapshot's small files
    sit in pack order, so one ranged read serves many files) and handed in groups to two
    threads that check each file's hash and write it (creating a file is mostly kernel
    time, and two run at once); large files are streamed one at a time."""
    from concurrent.futures import ThreadPoolExecutor

    small = [(path, e) for path, e in todo if e.size < STREAM_MIN]
    folders: set[str] = set()
    ids = (c for _, e in small for c, _ in e.chunks)
    with (
        contextlib.closing(store.read_chunks(ids, verify=False)) as chunks,
        ThreadPoolExecutor(WRITERS, thread_name_prefix="datavc-write") as pool,
    ):
        writes: deque[Future[None]] = deque()
        group: list[tuple[str, list[bytes | memoryview], FileEntry]] = []
        group_bytes = 0
        try:
            for path, e in small:
                _make_parent(path, folders)
                group.append((path, [next(chunks) for _ in e.chunks], e))
                group_bytes += e.size
                if len(group) >= GROUP_FILES or group_bytes >= GROUP_BYTES:
                    writes.append(pool.submit(_write_files, group, progress))
                    group, group_bytes = [], 0
                    while len(writes) > 2 * WRITERS:
                        writes.popleft().result()
            writes.append(pool.submit(_write_files, group, progress))
            while writes:
                writes.popleft().result()
        except _Damaged as damaged:  # name the damaged pack: read the file's chunks checked
            for _ in store.read_chunks(c for c, _ in damaged.entry.chunks):
                pass
            raise damaged.error from None
        finally:
            for future in writes:
                future.cancel()
    for path, e in todo:
        if e.size >= STREAM_MIN:
            _make_parent(path, folders)
            fetch_file(store, e, path, progress)


WRITERS = 2
GROUP_FILES = 64
GROUP_BYTES = 4 << 20


class _Damaged(Exception):
    def __init__(self, entry: FileEntry, error: IntegrityError) -> None:
        self.entry, self.error = entry, error


def _write_files(
    group: list[tuple[str, list[bytes | memoryview], FileEntry]], progress: Progress
) -> None:
    """Check each file's content against its hash, then write it."""
    for path, parts, e in group:
        hasher = file_hasher()
        for part in parts:
            hasher.update(part)
        got = hasher.digest()
        if got != e.hash:
            error = IntegrityError(f"file {e.path}", e.hash.hex(), got.hex(), what="file content")
            raise _Damaged(e, error)
        _write_file(path, parts, e)
        progress.advance(e.size)


def _make_parent(path: str, made: set[str]) -> None:
    folder = os.path.dirname(path)
    if folder not in made:
        os.makedirs(folder, exist_ok=True)
        made.add(folder)


def _write_file(path: str, parts: list[bytes | memoryview], e: FileEntry) -> None:
    """Create ``path`` with ``parts`` as its content and the entry's mode."""
    mode = _mode(e)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        _write_parts(fd, parts)
        if mode & UMASK:  # the umask took bits the snapshot's mode has
            os.fchmod(fd, mode)
    finally:
        os.close(fd)


def _present(dest: str) -> tuple[dict[str, LocalFile], list[str]]:
    """Regular files already in ``dest``, and the paths of anything else found there."""
    if not os.path.isdir(dest) or os.path.islink(dest):
        return {}, []
    odd: list[str] = []
    return {f.path: f for f in scan(dest, "dir", odd)}, odd


def _in_place(
    local: LocalFile | None, e: FileEntry, unchanged: Callable[[LocalFile, FileEntry], bool]
) -> bool:
    return local is not None and unchanged(local, e)


def _place(
    dest: str,
    entries: list[FileEntry],
    present: dict[str, LocalFile],
    odd: list[str],
    todo: list[FileEntry],
    stage: str,
    prune: bool = True,
) -> None:
    """Second phase: rename the fetched files into place, fix modes, remove the rest
    (with ``prune``)."""
    if os.path.lexists(dest) and not os.path.isdir(dest):
        os.unlink(dest)  # a file where the dataset's folder belongs
    os.makedirs(dest, exist_ok=True)
    folders = _folders_of(e.path for e in entries)
    if prune:  # a shard (not pruning) leaves it to _prepare_parent, checked as it goes:
        # what its scan saw in the way may be another shard's folder by now
        for path in odd + [p for p in present if p in folders]:
            _remove(os.path.join(dest, *path.split("/")))  # symlinks, specials, files in the way
            present.pop(path, None)
    ready: set[str] = set()  # folders made or checked in this pass
    made: set[str] = set()  # those made now: nothing is in the way in them
    for i, e in enumerate(todo):
        target = os.path.join(dest, *e.path.split("/"))
        _prepare_parent(dest, e.path, ready, made)
        parent = e.path.rpartition("/")[0]
        if parent not in made and os.path.isdir(target) and not os.path.islink(target):
            _remove(target)
        os.replace(os.path.join(stage, str(i)), target)
    fetched = {e.path for e in todo}
    for e in entries:
        if e.path not in fetched:
            _set_mode(os.path.join(dest, *e.path.split("/")), e)
    if not prune:
        return
    wanted = {e.path for e in entries}
    for path in sorted(set(present) - wanted, reverse=True):
        _remove(os.path.join(dest, *path.split("/")))
    _prune_empty_dirs(dest, folders)


def _folders_of(paths: Iterable[str]) -> set[str]:
    folders: set[str] = set()
    for path in paths:
        parts = path.split("/")
        folders.update("/".join(parts[:i]) for i in range(1, len(parts)))
    return folders


def _stage_file(
    store: ChunkStore,
    e: FileEntry,
    dest: str,
    stage: str,
    unchanged: Callable[[LocalFile, FileEntry], bool],
    progress: Progress,
) -> str | None:
    """A single-file snapshot's file, fetched into ``stage``; None if ``dest`` holds it
    already (its mode set)."""
    if os.path.isdir(dest):
        raise BadInput(f"{dest} is a folder, but the snapshot is a single file")
    if os.path.isfile(dest) and unchanged(scan(dest, "file")[0], e):
        _set_mode(dest, e)
        progress.advance(e.size)
        return None
    tmp = os.path.join(stage, "file")
    fetch_file(store, e, tmp, progress)
    return tmp


def fetch_file(store: ChunkStore, e: FileEntry, tmp: str, progress: Progress) -> None:
    """Write one file's content to ``tmp``, check its hash and set its mode.

    A large file is streamed a run of chunks at a time (read ahead, hashed and written
    as it comes) and checked by its whole-file hash; if that hash is wrong, the file is
    fetched again chunk by chunk, which names the damaged pack."""
    if e.size >= STREAM_MIN:
        hasher = file_hasher()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(1, thread_name_prefix="datavc-write") as writer:

                def use(parts: list[memoryview]) -> None:
                    # one hand-off per run: a run of compressed chunks comes a chunk a part
                    written = writer.submit(_write_parts, fd, parts)
                    for part in parts:
                        hasher.update(part)  # while the run is written
                    written.result()

                store.stream_plain((c for c, _ in e.chunks), use)
        finally:
            os.close(fd)
        if hasher.digest() == e.hash:
            os.chmod(tmp, _mode(e))
            progress.advance(e.size)
            return
    hasher = file_hasher()
    with open(tmp, "wb") as out:
        for data in store.read_chunks(c for c, _ in e.chunks):
            hasher.update(data)
            out.write(data)
            progress.advance(len(data))
    got = hasher.digest()
    if got != e.hash:
        raise IntegrityError(f"file {e.path}", e.hash.hex(), got.hex(), what="file content")
    os.chmod(tmp, _mode(e))


WRITE_PIECE = 128 << 10


def _write_all(fd: int, data: bytes | memoryview) -> None:
    """Write all of ``data``, ``WRITE_PIECE`` bytes per call at most. Linux gives a buffered
    write page-cache folios as large as the write allows (up to 2 MiB), and large free
    blocks are the memory a VM's host takes back when it is free and is slow to touch
    again: on the test machine one 1 GiB file written 8 MiB at a time took 0.61-2.3 s
    (kernel time), 128 KiB at a time 0.41-0.46 s (dd, same file, alternating runs)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view[:WRITE_PIECE]) :]


def _mode(e: FileEntry) -> int:
    """The permission bits a checked-out file gets."""
    return 0o755 if e.executable else 0o644


def _write_parts(fd: int, parts: Sequence[bytes | memoryview]) -> None:
    for part in parts:
        _write_all(fd, part)


def _set_mode(target: str, e: FileEntry) -> None:
    want = _mode(e)
    current = os.stat(target).st_mode
    if bool(current & 0o111) != e.executable:
        os.chmod(target, want)


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
