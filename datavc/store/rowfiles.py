"""Index rows kept in local files, so that memory does not grow with a store's chunk count:
a big index object loaded by a writer, and the sorted runs an upload of millions of chunks
spills (:class:`~datavc.format.indextable.NewRows`).

A file's rows are sorted by chunk id. Every ``STRIDE``-th row's first 8 bytes are kept in
memory (about 0.3 bytes a row); a chunk is found by a bisect over them and one ``pread`` of
the ``STRIDE`` rows that can hold it (7 KiB). A file whose rows are not sorted (damaged or
crafted) only hides entries, as an index object kept in memory does.
"""

from __future__ import annotations

import bisect
import contextlib
import os
import tempfile
import threading
from collections.abc import Iterable, Iterator

from ..format.packfile import INDEX_ROW

STRIDE = 128  # rows per sampled key: one pread of 6.8 KiB finds a chunk
READ = 1 << 20  # bytes read at a time when rows are streamed
ROW = INDEX_ROW.size


class FileRows:
    """``count`` sorted rows at ``start`` in the open file ``fd`` (owned: closed by
    :meth:`close` or when collected). Thread-safe (``pread`` has no shared offset)."""

    def __init__(self, fd: int, start: int, count: int, keys: list[bytes]) -> None:
        self._fd = fd
        self.start = start
        self.count = count
        self._keys = keys  # the first 8 bytes of rows 0, STRIDE, 2 x STRIDE, ...
        self._lock = threading.Lock()

    @classmethod
    def open(cls, path: str, start: int, count: int) -> FileRows:
        """The rows of the file at ``path`` (sampled in one pass over them)."""
        fd = os.open(path, os.O_RDONLY)
        try:
            keys: list[bytes] = []
            block = STRIDE * ROW * 64
            for at in range(0, count * ROW, block):
                data = os.pread(fd, min(block, count * ROW - at), start + at)
                if len(data) != min(block, count * ROW - at):
                    raise OSError(f"{path}: shorter than its rows")
                keys += [data[i : i + 8] for i in range(0, len(data), STRIDE * ROW)]
        except BaseException:
            os.close(fd)
            raise
        return cls(fd, start, count, keys)

    def find_raw(self, cid: bytes) -> bytes | None:
        """The row of ``cid``, or None: one bisect and one read."""
        k = max(0, bisect.bisect_right(self._keys, cid[:8]) - 1)
        # rows whose 8-byte prefix is cid's may begin in the stride before
        first = k - 1 if k and self._keys[k] == cid[:8] else k
        lo, hi = first * STRIDE, min(self.count, (k + 1) * STRIDE)
        data = os.pread(self._fd, (hi - lo) * ROW, self.start + lo * ROW)
        at = data.find(cid)
        while at >= 0 and at % ROW:
            at = data.find(cid, at + 1)
        return None if at < 0 else data[at : at + ROW]

    def raw_rows(self) -> Iterator[bytes]:
        """Every row, in file order, read a block at a time."""
        per = READ // ROW
        for first in range(0, self.count, per):
            n = min(per, self.count - first)
            data = os.pread(self._fd, n * ROW, self.start + first * ROW)
            if len(data) != n * ROW:
                raise OSError("a row file was cut short")
            for at in range(0, len(data), ROW):
                yield data[at : at + ROW]

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


def spill_rows(rows: Iterable[bytes], folder: str | None) -> FileRows:
    """Write sorted rows to a new temporary file in ``folder`` (deleted at once: it lives as
    long as its descriptor) and return them as :class:`FileRows`."""
    fd, path = tempfile.mkstemp(prefix=".tmp-rows-", dir=folder)
    try:
        os.unlink(path)
        keys: list[bytes] = []
        count = 0
        out = bytearray()
        for row in rows:
            if count % STRIDE == 0:
                keys.append(bytes(row[:8]))
            out += row
            count += 1
            if len(out) >= READ:
                _write_all(fd, out)
                out.clear()
        _write_all(fd, out)
    except BaseException:
        os.close(fd)
        raise
    return FileRows(fd, 0, count, keys)


def _write_all(fd: int, data: bytes | bytearray) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
