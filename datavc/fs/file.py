"""One file of a snapshot, opened for reading: seekable, and fetching only the chunks each
read covers (neighbouring chunks in one ranged read). Chunks read are kept for the process
(:data:`datavc.store.reader.CHUNKS`, 64 MiB at most), shared by every file and filesystem
in it: a re-read, or a read of a neighbouring byte range, reads nothing from the store."""

from __future__ import annotations

import bisect
import weakref
from itertools import accumulate
from typing import TYPE_CHECKING, Any

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


def workers(fs: DatavcFileSystem) -> int:
    return LOCAL_WORKERS if fs.chunks.backend.is_local else REMOTE_WORKERS


class Layout:
    """Where each chunk of a file starts; which chunks a byte range covers."""

    def __init__(self, entry: FileEntry) -> None:
        self.entry = entry
        self.starts = [0, *accumulate(length for _, length in entry.chunks)][:-1]

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

    def read(self, fs: DatavcFileSystem, start: int | None, end: int | None) -> bytes:
        """Bytes ``[start, end)`` (fsspec's conventions), through the process's chunk cache."""
        start, end = self.clip(start, end)
        if start >= end:
            return b""
        ids = self.span(start, end)
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
        super().__init__(
            fs,
            path,
            mode="rb",
            block_size="default" if block_size is None else block_size,
            cache_type=cache_type or "none",
            cache_options=cache_options,
            size=entry.size,
        )
        # fsspec's cache calls back the bound method self._fetch_range: a reference cycle
        # that would keep the file until the next gc pass. Through a weak reference, the
        # file goes as soon as its last holder lets go, which is also what the exit hook
        # watches for (datavc.fs.native).
        self.cache.fetcher = _Fetcher(self)
        native.watch(self)

    def _fetch_range(self, start: int, end: int) -> bytes:
        return self.layout.read(self.fs, start, end)


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
