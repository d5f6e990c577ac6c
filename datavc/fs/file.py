"""One file of a snapshot, opened for reading: seekable, and fetching only the chunks each
read covers (neighbouring chunks in one ranged read). Chunks read are kept for the process
(:data:`datavc.store.reader.CHUNKS`, 64 MiB at most), shared by every file and filesystem
in it: a re-read, or a read of a neighbouring byte range, reads nothing from the store."""

from __future__ import annotations

import bisect
import weakref
from itertools import accumulate
from typing import TYPE_CHECKING, Any

from fsspec.caching import BaseCache
from fsspec.spec import AbstractBufferedFile

from ..format.hashing import ChunkId
from ..format.tree import FileEntry
from ..store.reader import CHUNKS
from . import native

if TYPE_CHECKING:
    from .filesystem import DatavcFileSystem

LOCAL_WORKERS, REMOTE_WORKERS = 1, 8
"""Ranged reads in flight for one read or one batch of ``cat_ranges``: a local store's are
page-cache copies, and threads only contend for the GIL (2,000 random 4 KiB ranges of a
256 MiB file: 88 ms with one, 147-212 ms with 2-8); a remote store's wait on the network."""


WHOLE_BYTES = 1 << 20
"""A file of up to this many bytes read whole is read with as few ranged reads as its
chunks allow, and not kept in :data:`CHUNKS` (a DataLoader's epoch reads each file once)."""


AHEAD_BYTES = 16 << 20
"""The most a sequential reader of a remote store's file has fetched ahead of it."""


def workers(fs: DatavcFileSystem) -> int:
    return LOCAL_WORKERS if fs.chunks.backend.is_local else REMOTE_WORKERS


class Layout:
    """Where each chunk of a file starts; which chunks a byte range covers."""

    __slots__ = ("_starts", "entry")

    def __init__(self, entry: FileEntry) -> None:
        self.entry = entry
        self._starts: list[int] | None = None

    @property
    def starts(self) -> list[int]:
        """Each chunk's offset in the file (worked out on the first read that needs it)."""
        if self._starts is None:
            self._starts = [0, *accumulate(length for _, length in self.entry.chunks)][:-1]
        return self._starts

    def _bounds(self, start: int, end: int) -> tuple[int, int]:
        return (
            bisect.bisect_right(self.starts, start) - 1,
            bisect.bisect_right(self.starts, end - 1) - 1,
        )

    def span(self, start: int, end: int) -> list[ChunkId]:
        """The ids of the chunks under ``[start, end)`` (``0 <= start < end <= size``)."""
        first, last = self._bounds(start, end)
        return [self.entry.chunks[i][0] for i in range(first, last + 1)]

    def cut(self, start: int, end: int, chunks: dict[ChunkId, bytes]) -> bytes:
        """Bytes ``[start, end)`` from the chunks under them."""
        first, last = self._bounds(start, end)
        offset = self.starts[first]
        if first == last:
            return chunks[self.entry.chunks[first][0]][start - offset : end - offset]
        parts = [memoryview(chunks[self.entry.chunks[i][0]]) for i in range(first, last + 1)]
        parts[0] = parts[0][start - offset :]
        parts[-1] = parts[-1][: end - self.starts[last]]
        return b"".join(parts)  # one copy: the ends cut as views

    def read(
        self, fs: DatavcFileSystem, start: int | None, end: int | None, ahead: int = 0
    ) -> bytes:
        """Bytes ``[start, end)`` (fsspec's conventions), through the process's chunk cache;
        the chunks of the ``ahead`` bytes after them are fetched with them (a sequential
        reader's next reads then find them in the cache)."""
        start, end = self.clip(start, end)
        if start >= end:
            return b""
        chunks = self.entry.chunks
        whole = end - start == self.entry.size and end <= WHOLE_BYTES  # a small file read whole
        if len(chunks) == 1:
            data = fs.chunks.reader.read_one(chunks[0][0], CHUNKS, keep=not whole)
            return data if whole else data[start:end]
        if whole:
            return fs.chunks.reader.read_whole([cid for cid, _ in chunks])
        ids = self.span(start, end)
        if ahead and end < self.entry.size:
            ids += self.span(end, min(self.entry.size, end + ahead))
        if len(ids) == 1:  # a small file, or a small read
            got = {ids[0]: fs.chunks.read_one(ids[0], CHUNKS)}
        else:
            got = fs.chunks.read_many(ids, workers(fs), 0, CHUNKS)
        return self.cut(start, end, got)

    def clip(self, start: int | None, end: int | None) -> tuple[int, int]:
        """fsspec's range arguments (None, negative from the end) as ``0 <= start <= end``."""
        size = self.entry.size
        start = 0 if start is None else (start if start >= 0 else max(0, size + start))
        end = size if end is None else (end if end >= 0 else max(0, size + end))
        return min(start, size), max(min(start, size), min(end, size))


class DatavcFile(AbstractBufferedFile):  # type: ignore[misc]
    """A seekable file that fetches only the chunks each read covers. ``block_size`` and
    ``cache_type`` (fsspec's ``readahead``, ``bytes``, ``blockcache``, ...) are honoured;
    by default (``none``) every read goes to the process's chunk cache, then the store."""

    def __init__(
        self,
        fs: DatavcFileSystem,
        entry: FileEntry,
        path: str,
        block_size: int | None = None,
        cache_type: str | None = None,
        cache_options: dict[str, Any] | None = None,
    ) -> None:
        """``path`` is the name the filesystem gives the file (``NAME@vN/...`` over the
        whole store, relative in a rooted one)."""
        self.entry = entry
        self.layout = Layout(entry)
        if (cache_type or "none") == "none" and not cache_options:
            # What AbstractBufferedFile.__init__ sets for reading with no cache, set here:
            # opening many small files (a DataLoader epoch) pays for each part of an open.
            self.path, self.fs, self.mode = path, fs, "rb"
            self.kwargs: dict[str, Any] = {}
            sized = isinstance(block_size, int)  # or None, or fsspec's "default"
            self.blocksize = block_size if sized else self.DEFAULT_BLOCK_SIZE
            self.loc, self.size, self.autocommit, self.closed = 0, entry.size, True, False
            self.start = self.end = None
            self.cache = BaseCache(self.blocksize, _Fetcher(self), entry.size)
        else:
            super().__init__(
                fs,
                path,
                mode="rb",
                block_size="default" if block_size is None else block_size,
                cache_type=cache_type,
                cache_options=cache_options,
                size=entry.size,
            )
            self.cache.fetcher = _Fetcher(self)
        self._expect, self._window, self._until = -1, 0, 0  # see _read_ahead
        # fsspec's cache calls back the bound method self._fetch_range: a reference cycle
        # that would keep the file until the next gc pass. Through a weak reference, the
        # file goes as soon as its last holder lets go, which is also what the exit hook
        # watches for (datavc.fs.native).
        native.watch(self)

    def read(self, length: int | None = -1) -> bytes:
        """fsspec's read; with no cache, straight to the chunks (fsspec's also formats a
        debug line for each read)."""
        if type(self.cache) is not BaseCache:  # fsspec's caches, or a caching wrapper's
            return bytes(super().read(length))
        if self.closed:
            raise ValueError("I/O operation on closed file.")
        loc = self.loc
        end = self.size if length is None or length < 0 else min(self.size, loc + int(length))
        if end <= loc:
            return b""
        ahead = self._read_ahead(loc, end)
        out = self._fetch_range(loc, end, ahead)
        self.loc = loc + len(out)
        return out

    def _read_ahead(self, start: int, end: int) -> int:
        """How far past ``end`` to fetch: on a remote store, once small reads (under 1 MiB;
        a large one is fetched in parallel already) go on where the last one ended, a
        window that doubles from 1 MiB to :data:`AHEAD_BYTES`, fetched (in parallel ranged
        reads) when the reader is half-way through the last one."""
        sequential = start == self._expect and end - start < 1 << 20
        if not sequential or self.fs.chunks.backend.is_local:
            self._expect, self._window, self._until = end, 0, end
            return 0
        self._expect = end
        if end + self._window // 2 < self._until:
            return 0  # still well inside what was fetched
        self._window = min(AHEAD_BYTES, max(1 << 20, 2 * self._window))
        self._until = end + self._window
        return self._window

    def _fetch_range(self, start: int, end: int, ahead: int = 0) -> bytes:
        return self.layout.read(self.fs, start, end, ahead)


class _Fetcher:
    """``file._fetch_range`` without holding the file."""

    __slots__ = ("file",)

    def __init__(self, file: DatavcFile) -> None:
        self.file = weakref.ref(file)

    def __call__(self, start: int, end: int) -> bytes:
        file = self.file()
        if file is None:  # only the file calls its cache, so it is alive here
            raise ValueError("read of a file that has been released")
        return file._fetch_range(start, end)
