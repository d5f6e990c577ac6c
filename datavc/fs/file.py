"""One file of a snapshot, opened for reading: seekable, and fetching only the chunks each
read covers (neighbouring chunks in one ranged read); the last few chunks read are kept."""

from __future__ import annotations

import bisect
import weakref
from collections import OrderedDict
from typing import TYPE_CHECKING

from fsspec.spec import AbstractBufferedFile

from ..format.tree import FileEntry
from . import native

if TYPE_CHECKING:
    from .filesystem import DatavcFileSystem


class DatavcFile(AbstractBufferedFile):  # type: ignore[misc]
    """A seekable file that fetches only the chunks each read covers."""

    def __init__(self, fs: DatavcFileSystem, entry: FileEntry) -> None:
        self.entry = entry
        self._starts: list[int] = []
        pos = 0
        for _, length in entry.chunks:
            self._starts.append(pos)
            pos += length
        self._decoded: OrderedDict[int, bytes] = OrderedDict()
        super().__init__(fs, entry.path, mode="rb", cache_type="none", size=entry.size)
        # fsspec's cache calls back the bound method self._fetch_range: a reference cycle
        # that would keep the file (and its decoded chunks) until the next gc pass. Through
        # a weak reference, the file goes as soon as its last holder lets go, which is also
        # what the exit hook watches for (datavc.fs.native).
        self.cache.fetcher = _Fetcher(self)
        native.watch(self)

    def _chunk(self, i: int) -> bytes:
        data = self._decoded.get(i)
        if data is None:
            return b""
        self._decoded.move_to_end(i)
        return data

    def _fetch_range(self, start: int, end: int) -> bytes:
        end = min(end, self.entry.size)
        if start >= end:
            return b""
        first = bisect.bisect_right(self._starts, start) - 1
        last = bisect.bisect_right(self._starts, end - 1) - 1
        missing = [i for i in range(first, last + 1) if i not in self._decoded]
        if missing:
            lo, hi = missing[0], missing[-1]
            ids = [self.entry.chunks[i][0] for i in range(lo, hi + 1)]
            for i, data in zip(range(lo, hi + 1), self.fs.chunks.read_chunks(ids), strict=True):
                self._decoded[i] = data
                self._decoded.move_to_end(i)
        blob = b"".join(self._chunk(i) for i in range(first, last + 1))
        while len(self._decoded) > max(8, last - first + 1):
            self._decoded.popitem(last=False)
        offset = self._starts[first]
        return blob[start - offset : end - offset]


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
