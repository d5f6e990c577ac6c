"""Snapshots: build a tree from files, materialize a tree into a folder, diff two trees.

Materializing is exact: every path is checked before anything is written; files are written
to a temporary name beside their target, checked against their hash, then renamed into place;
files that are not in the snapshot are removed last. An error part-way leaves every file either
as it was or complete.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from stat import S_ISDIR, S_ISLNK, S_ISREG
from typing import TYPE_CHECKING, Any, Protocol

from .atomic import UMASK
from .chunker import Chunker
from .chunkstore import ChunkStore, Encoded, PackWriter
from .errors import BadInput, IntegrityError, PathNotFound, UnsafePath
from .hashing import FileHash, content_hash, file_hasher
from .paths import check_paths
from .tree import (
    MODE_EXEC,
    MODE_FILE,
    FileEntry,
    PageRef,
    TreeRoot,
    decode_page,
    encode_page,
    find_in_page,
    split_pages,
)

if TYPE_CHECKING:
    # concurrent.futures (with logging) costs ~10 ms to import: imported where threads start,
    # so that status and ls do not pay for it
    from concurrent.futures import Future

WHOLE_READ_LIMIT = 8 * 1024 * 1024
TMP_PREFIX = ".datavc-tmp-"
STREAM_MIN = 1 << 20  # smaller files are read with their neighbours; larger ones streamed


class Progress(Protocol):
    def advance(self, n: int) -> None: ...


class NoProgress:
    def advance(self, n: int) -> None:
        pass


@dataclass(slots=True)
class LocalFile:
    """A file found in the workspace, with the stat fields the stat cache keys on. Not
    changed once made (not frozen: a frozen dataclass takes 4x as long to build, which is
    most of a scan of many files).

    ``base`` is the folder ``path`` is relative to: one string shared by every file of a
    scan (a million files should not mean a million absolute paths in memory)."""

    path: str
    base: str
    size: int
    mode: int
    mtime_ns: int
    ctime_ns: int
    inode: int

    @property
    def abspath(self) -> str:
        return os.path.join(self.base, self.path)


# Given a file's stat, the hash and recipe of the same content seen before, if known.
Reuse = Callable[[LocalFile], FileEntry | None]


def scan(root: str, kind: str, odd: list[str] | None = None) -> list[LocalFile]:
    """The regular files of a dataset path, sorted by snapshot path.

    Symlinks and special files are an error, unless ``odd`` is given to collect them.
    """
    try:
        st = os.lstat(root)
    except FileNotFoundError:
        raise PathNotFound(root) from None
    if kind == "file":
        if not S_ISREG(st.st_mode):
            raise BadInput(f"{root} is not a regular file")
        return [_local(os.path.basename(root), os.path.dirname(root), st)]
    if not S_ISDIR(st.st_mode):
        raise BadInput(f"{root} is not a folder")
    found: list[LocalFile] = []
    _walk(root, root, "", found, odd)
    found.sort(key=lambda f: f.path)  # code-point order: the byte order of valid UTF-8
    return found


def _walk(base: str, abspath: str, rel: str, out: list[LocalFile], odd: list[str] | None) -> None:
    with os.scandir(abspath) as it:
        for e in it:
            name = e.name
            if not name.isascii():
                _check_utf8(e.path)
            st = e.stat(follow_symlinks=False)
            mode = st.st_mode
            if S_ISREG(mode):
                out.append(_local(rel + name, base, st))
            elif S_ISDIR(mode):
                _walk(base, e.path, f"{rel}{name}/", out, odd)
            elif odd is not None:
                odd.append(rel + name)
            elif S_ISLNK(mode):
                raise BadInput(f"{e.path} is a symbolic link: datavc tracks regular files only")
            else:
                raise BadInput(f"{e.path} is not a regular file")


def _check_utf8(path: str) -> None:
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        shown = path.encode("utf-8", "backslashreplace").decode()
        raise BadInput(f"{shown}: file name is not valid UTF-8") from None


def _local(rel: str, base: str, st: os.stat_result) -> LocalFile:
    return LocalFile(rel, base, st.st_size, st.st_mode, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def file_mode(st_mode: int) -> int:
    return MODE_EXEC if st_mode & 0o111 else MODE_FILE


# -- building ---------------------------------------------------------------------------


@dataclass(slots=True)
class _Pending:
    """A file whose chunks (and hash) are still being computed by the writer's threads."""

    path: str
    mode: int
    size: int
    hash: Future[bytes] | None  # None: a one-chunk file, whose hash is its chunk's id
    parts: list[_Part]

    def done(self) -> bool:
        return all(p.batch.done() for p in self.parts) and (self.hash is None or self.hash.done())

    def entry(self) -> FileEntry:
        recipe = tuple((enc.cid, n) for p in self.parts for enc, n in p.encoded())
        digest = FileHash(self.hash.result() if self.hash is not None else recipe[0][0])
        return FileEntry(self.path, self.mode, self.size, digest, recipe)


@dataclass(slots=True)
class _Batch:
    """Chunks handed to the writer's threads as one task: the chunks of many small files
    (one hand-off per file costs about as much as hashing it), or of part of a large one."""

    pieces: list[bytes | memoryview]
    size: int = 0
    future: Future[list[Encoded]] | None = None

    def add(self, pieces: Sequence[bytes | memoryview]) -> _Part:
        part = _Part(self, len(self.pieces), tuple(len(p) for p in pieces))
        self.pieces += pieces
        self.size += sum(part.lengths)
        return part

    def submit(self, writer: PackWriter) -> None:
        self.future = writer.submit(self.pieces)
        self.pieces = []

    def done(self) -> bool:
        return self.future is not None and self.future.done()


@dataclass(slots=True)
class _Part:
    """A file's chunks in a batch: from ``start``, one per length."""

    batch: _Batch
    start: int
    lengths: tuple[int, ...]

    def encoded(self) -> zip[tuple[Encoded, int]]:
        assert self.batch.future is not None
        done = self.batch.future.result()[self.start : self.start + len(self.lengths)]
        return zip(done, self.lengths, strict=True)


BATCH = 1 << 20  # chunks of small files handed to the writer's threads together
HASH_HERE = 1 << 20  # a multi-chunk file smaller than this is hashed where it is read
BATCH_PIECES = 1024  # and at most this many, or files waiting (memory, with tiny files)


def chunk_file(
    f: LocalFile, chunker: Chunker, writer: PackWriter, progress: Progress, batch: _Batch
) -> _Pending:
    """Read and cut one file, handing its chunks and its whole-file hash to the writer's
    threads. A small file's chunks join ``batch`` (the caller submits it); a large file
    is streamed, so memory does not grow with the file's size."""
    mode = file_mode(f.mode)
    hasher = file_hasher()
    if f.size <= WHOLE_READ_LIMIT:
        data = _read_whole(f.abspath, f.size)
        small = 0 < len(data) <= chunker.params.min_size  # surely one chunk: skip the cutter
        cut: list[bytes | memoryview] = [data] if small else list(chunker.cut(data))
        progress.advance(len(data))
        part = batch.add(cut)
        if len(cut) == 1:  # one chunk: its id is the file hash, computed once
            return _Pending(f.path, mode, len(data), None, [part])
        if len(data) < HASH_HERE:  # hashing it here is quicker than handing it over
            from concurrent.futures import Future

            digest: Future[bytes] = Future()
            digest.set_result(content_hash(data))
        else:
            writer.hash_in_order(hasher, [data])
            digest = writer.digest(hasher)
        return _Pending(f.path, mode, len(data), digest, [part])
    parts: list[_Part] = []
    size = 0
    with open(f.abspath, "rb", buffering=0) as fh:
        for block, views in _blocks(fh, chunker):
            for start in range(0, len(views), BATCH_CHUNKS):
                own = _Batch([])
                parts.append(own.add(views[start : start + BATCH_CHUNKS]))
                own.submit(writer)
            writer.hash_in_order(hasher, [block])
            size += len(block)
            progress.advance(len(block))
    return _Pending(f.path, mode, size, writer.digest(hasher), parts)


BLOCK = 2 << 20  # a large file is read this much at a time (measured: 1-2 MiB beat 8)
BATCH_CHUNKS = 16  # chunks of a large file handed to the writer's threads at a time


def _blocks(
    fh: Any, chunker: Chunker, size: int = BLOCK
) -> Iterator[tuple[memoryview, list[memoryview]]]:
    """Read a file a block at a time and cut it: each block with its chunks, views into
    it (so no chunk is copied). A block's last chunk may only end because the block does:
    it is cut again at the start of the next block, so the cuts are those of the whole file.
    A block's buffer is reused once no view into it is left (see :class:`_Buffers`)."""
    buffers = _Buffers(size + chunker.params.max_size)
    carry = memoryview(b"")
    while True:
        buf = buffers.get()
        view = memoryview(buf)[: len(carry) + size]
        view[: len(carry)] = carry
        end = len(carry)
        del carry
        while end < len(view) and (n := fh.readinto(view[end:])):
            end += n
        eof = end < len(view)
        cut = list(chunker.cut(view[:end]))
        carry = cut.pop() if not eof and cut else memoryview(b"")
        if cut:
            done = sum(len(c) for c in cut)
            yield view[:done], cut
        del view, cut
        if eof:
            return


class _Buffers:
    """Equal buffers for :func:`_blocks`, each reused once nothing refers to it any more (a
    bytearray that still has a view cannot be resized: the test). A new 2 MiB buffer per
    block cost ~10% of adding a large file's CPU, to zero it and fault its pages in. Up to
    ``KEEP`` are kept, so there are never more than were in use at once (or ``KEEP``)."""

    KEEP = 32

    def __init__(self, size: int) -> None:
        self.size = size
        self._used: deque[bytearray] = deque()  # oldest first: usually the first to be free

    def get(self) -> bytearray:
        for i, buf in enumerate(self._used):
            if _unshared(buf):
                del self._used[i]
                break
        else:
            buf = bytearray(self.size)
            if len(self._used) >= self.KEEP:
                self._used.popleft()  # still in use: freed when its last view goes
        self._used.append(buf)
        return buf


def _unshared(buf: bytearray) -> bool:
    """True if no view of ``buf`` exists: resizing a bytearray that has one is refused."""
    try:
        buf.append(0)
    except BufferError:
        return False
    del buf[-1]
    return True


def _read_whole(path: str, size: int) -> bytes:
    """A small file's bytes with plain os calls (a few microseconds less per file than
    ``open``, which counts with a million files); reads to EOF even if it grew."""
    fd = os.open(path, os.O_RDONLY)
    try:
        blocks = []
        while block := os.read(fd, max(size, 1 << 16)):
            blocks.append(block)
    finally:
        os.close(fd)
    return blocks[0] if len(blocks) == 1 else b"".join(blocks)


def build_entries(
    files: list[LocalFile],
    store: ChunkStore,
    writer: PackWriter,
    reuse: Reuse,
    progress: Progress,
    settled: Callable[[LocalFile, FileEntry], None] | None = None,
) -> list[FileEntry]:
    """A tree entry per file; files whose content is known already are not read. Files are
    read one after another while earlier files' chunks are still being stored.

    ``files`` is emptied as it is used (with a million files, their stat results need not
    outlive their entries); ``settled(file, entry)`` is called as each entry is made."""
    check_paths(f.path for f in files)
    chunker = Chunker(store.config.chunker)
    entries: list[FileEntry] = []
    waiting: deque[tuple[LocalFile, _Pending | FileEntry]] = deque()

    def settle(f: LocalFile, item: _Pending | FileEntry) -> None:
        e = item if isinstance(item, FileEntry) else item.entry()
        entries.append(e)
        if settled is not None:
            settled(f, e)

    batch = _Batch([])
    files.reverse()
    while files:
        f = files.pop()
        known = reuse(f)
        if known is not None and all(store.has_chunk(c) for c, _ in known.chunks):
            entry = FileEntry(f.path, file_mode(f.mode), known.size, known.hash, known.chunks)
            waiting.append((f, entry))
            progress.advance(f.size)
        else:
            if f.size > WHOLE_READ_LIMIT and batch.pieces:  # its chunks go after the batch's
                batch.submit(writer)
                batch = _Batch([])
            waiting.append((f, chunk_file(f, chunker, writer, progress, batch)))
        if batch.pieces and (
            batch.size >= BATCH or max(len(batch.pieces), len(waiting)) >= BATCH_PIECES
        ):  # full, or files wait behind it (those known already, when few files changed)
            batch.submit(writer)
            batch = _Batch([])
        while waiting and (isinstance(waiting[0][1], FileEntry) or waiting[0][1].done()):
            settle(*waiting.popleft())
    batch.submit(writer)
    while waiting:
        settle(*waiting.popleft())
    return entries


def write_tree(store: ChunkStore, entries: list[FileEntry]) -> TreeRoot:
    """Write the pages and return the root (its id is the snapshot id; the root itself is
    stored in the version record). Every chunk named must be in the store already."""
    pages: list[PageRef] = []
    for page in split_pages(entries):
        data, content = encode_page(page, store.locate_stored)
        pid = store.write_object("trees", data)
        size = sum(e.size for e in page)
        pages.append(PageRef(pid, page[0].path, page[-1].path, len(page), size, content))
    return TreeRoot(len(entries), sum(e.size for e in entries), tuple(pages))


# -- reading trees ----------------------------------------------------------------------


def load_page(store: ChunkStore, page: PageRef, hints: bool = True) -> list[FileEntry]:
    """A page's entries; its chunks' location hints go to the store (unless ``hints`` is
    False: the caller reads no chunks), so reading a file needs no index."""
    data = store.read_object("trees", page.id)
    entries, found = decode_page(data, f"trees/{page.id}", page.content, hints)
    if found:
        store.add_hints(found)
    return entries


def iter_entries(store: ChunkStore, root: TreeRoot, hints: bool = True) -> Iterator[FileEntry]:
    for page in root.pages:
        yield from load_page(store, page, hints)


def find_entry(store: ChunkStore, root: TreeRoot, path: str) -> FileEntry | None:
    """One file's entry: the one page that can hold it is read, only that entry decoded."""
    for page in root.pages_for(path):
        data = store.read_object("trees", page.id)
        entry, hints = find_in_page(data, f"trees/{page.id}", page.content, path)
        if entry is not None:
            store.add_hints(hints)
            return entry
    return None


@dataclass(frozen=True, slots=True)
class TreeDiff:
    added: tuple[str, ...]
    removed: tuple[str, ...]
    modified: tuple[str, ...]

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.modified)


def diff_entries(old: Iterable[FileEntry], new: Iterable[FileEntry]) -> TreeDiff:
    before = {e.path: (e.hash, e.mode) for e in old}
    after = {e.path: (e.hash, e.mode) for e in new}
    return TreeDiff(
        tuple(sorted(p for p in after if p not in before)),
        tuple(sorted(p for p in before if p not in after)),
        tuple(sorted(p for p in after if p in before and after[p] != before[p])),
    )


def diff_trees(
    store: ChunkStore, old: TreeRoot | None, new: TreeRoot
) -> Iterator[tuple[str, FileEntry]]:
    """What changed from ``old`` (None: empty) to ``new``, in path order: ("added", entry),
    ("removed", entry) or ("modified", new entry); a new mode counts as a change.

    Pages with the same content id in both trees hold the same entries, so they are skipped
    unread; the rest are merged one page at a time, so memory does not grow with the
    number of files."""
    common = {p.content for p in new.pages} & {p.content for p in old.pages} if old else set()
    before = _entries_of(store, [p for p in old.pages if p.content not in common] if old else [])
    after = _entries_of(store, [p for p in new.pages if p.content not in common])
    return merge_entries(before, after)


def merge_entries(
    before: Iterator[FileEntry], after: Iterator[FileEntry]
) -> Iterator[tuple[str, FileEntry]]:
    """The changes between two entry streams sorted by path (see :func:`diff_trees`)."""
    a, b = next(before, None), next(after, None)
    while a is not None or b is not None:
        if a is not None and (b is None or a.path < b.path):
            yield "removed", a
            a = next(before, None)
        elif b is not None and (a is None or b.path < a.path):
            yield "added", b
            b = next(after, None)
        elif a is not None and b is not None:
            if (a.hash, a.mode) != (b.hash, b.mode):
                yield "modified", b
            a, b = next(before, None), next(after, None)


def _entries_of(store: ChunkStore, pages: list[PageRef]) -> Iterator[FileEntry]:
    for page in pages:
        yield from load_page(store, page, hints=False)


# -- materializing ----------------------------------------------------------------------


def materialize(
    store: ChunkStore,
    entries: list[FileEntry],
    dest: str,
    kind: str,
    unchanged: Callable[[LocalFile, FileEntry], bool],
    progress: Progress,
) -> int:
    """Make ``dest`` equal the snapshot; return the number of files written.

    Two phases: every file to write is first fetched and verified into a staging folder
    beside ``dest``; only then are files renamed into place and extra files removed. A
    failure in the first phase (a damaged chunk, an unreachable store) leaves ``dest``
    untouched. ``unchanged(local, entry)`` says whether a file already in place has the
    entry's content (the caller answers from its stat cache or by hashing).
    """
    check_paths(e.path for e in entries)
    if kind == "file" and len(entries) != 1:
        raise BadInput(f"a file snapshot must hold one file, not {len(entries)}")
    _refuse_symlink(dest)
    parent = os.path.dirname(os.path.abspath(dest))
    os.makedirs(parent, exist_ok=True)
    _remove_stale_stages(parent)
    import tempfile

    stage = tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{os.getpid()}-", dir=parent)
    try:
        if kind == "file":
            return _materialize_file(store, entries[0], dest, stage, unchanged, progress)
        present, odd = _present(dest)
        todo = [e for e in entries if not _in_place(present.get(e.path), e, unchanged)]
        _fetch_all(store, [(os.path.join(stage, str(i)), e) for i, e in enumerate(todo)], progress)
        _place(dest, entries, present, odd, todo, stage)
        progress.advance(sum(e.size for e in entries) - sum(e.size for e in todo))
        return len(todo)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _remove_stale_stages(parent: str) -> None:
    """Remove staging folders left by checkouts whose process is gone (killed, crashed)."""
    for name in os.listdir(parent):
        if not name.startswith(TMP_PREFIX):
            continue
        pid = name[len(TMP_PREFIX) :].split("-", 1)[0]
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
) -> None:
    """Second phase: rename the fetched files into place, fix modes, remove the rest."""
    if os.path.lexists(dest) and not os.path.isdir(dest):
        os.unlink(dest)  # a file where the dataset's folder belongs
    os.makedirs(dest, exist_ok=True)
    folders = _folders_of(e.path for e in entries)
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


def _materialize_file(
    store: ChunkStore,
    e: FileEntry,
    dest: str,
    stage: str,
    unchanged: Callable[[LocalFile, FileEntry], bool],
    progress: Progress,
) -> int:
    if os.path.isdir(dest):
        raise BadInput(f"{dest} is a folder, but the snapshot is a single file")
    if os.path.isfile(dest) and unchanged(scan(dest, "file")[0], e):
        _set_mode(dest, e)
        progress.advance(e.size)
        return 0
    tmp = os.path.join(stage, "file")
    fetch_file(store, e, tmp, progress)
    os.replace(tmp, dest)
    return 1


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
            os.mkdir(current)
            made.add(rel)
        else:
            if not S_ISDIR(st.st_mode):
                os.unlink(current)
                os.mkdir(current)
                made.add(rel)
        ready.add(rel)


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
