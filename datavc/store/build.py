"""Building a snapshot: the tree entries of a folder's files, their new chunks stored.

Files are read one after another, in path order, while the pack writer's threads hash,
compress and store the chunks of earlier ones. A file whose content the caller knows already
(the stat cache says it is unchanged, and its chunks are in the store) is not read at all.
Small files are read whole and their chunks handed over in batches; large files are read a
block at a time, so memory does not grow with a file's size.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..format.chunker import Chunker
from ..format.hashing import FileHash, content_hash, file_hasher
from ..format.paths import check_paths
from ..format.tree import FileEntry
from .chunkstore import ChunkStore
from .files import LocalFile, Progress, file_mode
from .packwriter import Encoded, PackWriter

if TYPE_CHECKING:
    # concurrent.futures (with logging) costs ~10 ms to import: imported where threads start,
    # so that status and ls do not pay for it
    from concurrent.futures import Future

WHOLE_READ_LIMIT = 8 * 1024 * 1024

# Given a file's stat, the hash and recipe of the same content seen before, if known.
Reuse = Callable[[LocalFile], FileEntry | None]


@dataclass(slots=True)
class _Pending:
    """A file whose chunks (and hash) are still being computed by the writer's threads."""

    path: str
    mode: int
    size: int
    hash: Future[bytes] | None  # None: a one-chunk file, whose hash is its chunk's id
    parts: list[_Part]

    def done(self) -> bool:
        for p in self.parts:  # (asked at every file handed in, of the oldest waiting)
            if not p.batch.done():
                return False
        return self.hash is None or self.hash.done()

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
    finished: bool = False  # the future is done (asking it takes its lock)

    def add(self, pieces: Sequence[bytes | memoryview]) -> _Part:
        part = _Part(self, len(self.pieces), tuple(len(p) for p in pieces))
        self.pieces += pieces
        self.size += sum(part.lengths)
        return part

    def submit(self, writer: PackWriter) -> None:
        self.future = writer.submit(self.pieces)
        self.pieces = []

    def done(self) -> bool:
        if not self.finished:
            self.finished = self.future is not None and self.future.done()
        return self.finished


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
    with open(open_source(f.abspath), "rb", buffering=0) as fh:
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


def file_chunks(path: str, chunker: Chunker) -> Iterator[memoryview]:
    """Every chunk of a file, cut as ``add`` cuts it; each view is valid until the next."""
    with open(open_source(path), "rb", buffering=0) as fh:
        for _, views in _blocks(fh, chunker):
            yield from views


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


_NOATIME = getattr(os, "O_NOATIME", 0)


def open_source(path: str) -> int:
    """A workspace file opened to be read, without updating its access time where the
    system allows it (Linux's ``O_NOATIME``, for the file's owner; as restic's backup
    does). With ``relatime``, the default, the first read of a file written since its last
    read updates its atime, which dirties its inode: the first add of 1,000,000 new files
    spent 1.1-1.4 s more system time without this (docs/PERFORMANCE.md)."""
    if _NOATIME:
        try:
            return os.open(path, os.O_RDONLY | _NOATIME)
        except OSError:  # EPERM: not the owner (or a file system that refuses the flag):
            pass  # a plain open, whose error (if any) is the one to report
    return os.open(path, os.O_RDONLY)


def _read_whole(path: str, size: int) -> bytes:
    """A small file's bytes with plain os calls (a few microseconds less per file than
    ``open``, which counts with a million files); reads to EOF even if it grew."""
    fd = open_source(path)
    try:
        blocks = []
        while block := os.read(fd, max(size, 1 << 16)):
            blocks.append(block)
    finally:
        os.close(fd)
    return blocks[0] if len(blocks) == 1 else b"".join(blocks)


class Builder:
    """Makes tree entries for files handed in one at a time, in path order, and gives them
    back in that order as they are ready: files read one after another while earlier
    files' chunks are still being stored. ``extra``: anything the caller wants back with
    the entry."""

    def __init__(self, store: ChunkStore, writer: PackWriter, progress: Progress) -> None:
        self.chunker = Chunker(store.config.chunker)
        self.writer = writer
        self.progress = progress
        self._waiting: deque[tuple[LocalFile, _Pending | FileEntry, Any]] = deque()
        self._batch = _Batch([])

    @property
    def idle(self) -> bool:
        """Whether no file handed in is still being read or waits to be given back."""
        return not self._waiting and not self._batch.pieces

    def put(
        self, f: LocalFile, known: FileEntry | None, extra: Any = None
    ) -> list[tuple[LocalFile, FileEntry, Any]]:
        """Hand in a file: ``known``, its entry if its content is known already (it is not
        read). The entries ready now, in order."""
        waiting, batch = self._waiting, self._batch
        if known is not None:
            entry = FileEntry(f.path, file_mode(f.mode), known.size, known.hash, known.chunks)
            waiting.append((f, entry, extra))
            self.progress.advance(f.size)
        else:
            if f.size > WHOLE_READ_LIMIT and batch.pieces:  # its chunks go after the batch's
                batch.submit(self.writer)
                batch = self._batch = _Batch([])
            pending = chunk_file(f, self.chunker, self.writer, self.progress, batch)
            waiting.append((f, pending, extra))
        if batch.pieces and (
            batch.size >= BATCH or max(len(batch.pieces), len(waiting)) >= BATCH_PIECES
        ):  # full, or files wait behind it (those known already, when few files changed)
            batch.submit(self.writer)
            self._batch = _Batch([])
        ready = []
        while waiting and (isinstance(waiting[0][1], FileEntry) or waiting[0][1].done()):
            ready.append(_settled(*waiting.popleft()))
        return ready

    def drain(self) -> Iterator[tuple[LocalFile, FileEntry, Any]]:
        """Every entry still being made, in order (waiting for them)."""
        if self._batch.pieces or self._waiting:  # (an empty file's part waits on it too)
            self._batch.submit(self.writer)
            self._batch = _Batch([])
        while self._waiting:
            yield _settled(*self._waiting.popleft())


def _settled(
    f: LocalFile, item: _Pending | FileEntry, extra: Any
) -> tuple[LocalFile, FileEntry, Any]:
    return f, (item if isinstance(item, FileEntry) else item.entry()), extra


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
    builder = Builder(store, writer, progress)
    entries: list[FileEntry] = []

    def settle(ready: Iterable[tuple[LocalFile, FileEntry, Any]]) -> None:
        for f, e, _ in ready:
            entries.append(e)
            if settled is not None:
                settled(f, e)

    files.reverse()
    while files:
        f = files.pop()
        known = reuse(f)
        if known is not None and not all(store.has_chunk(c) for c, _ in known.chunks):
            known = None
        settle(builder.put(f, known))
    settle(builder.drain())
    return entries
