"""Index rows kept in local files, so that memory does not grow with a store's chunk count:
a big index object loaded by a writer, and the sorted runs an upload of millions of chunks
spills (:class:`~datavc.format.newrows.NewRows`).

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

from ..errors import IntegrityError, ObjectNotFound
from ..format.hashing import file_hasher
from ..format.packfile import INDEX_ROW, index_row_at
from .backend import Backend

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
        at = index_row_at(data, cid)
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


DOWNLOAD_BLOCK = 8 << 20


def local_copy(
    backend: Backend, cache: Backend | None, key: str, oid: str, size: int, spool: str | None
) -> tuple[str, bool]:
    """A local file holding object ``key`` (``size`` bytes), checked against its id
    ``oid``: a local store's own file, the cache's, or a copy downloaded a block at a time
    and kept in the cache; and whether it is a temporary copy the caller deletes. A damaged
    cache copy is deleted. Raises ObjectNotFound or IntegrityError."""
    for candidate, where in _local_copies(backend, cache, key, size):
        if _file_id(candidate) == oid:
            return candidate, False
        if where is cache:  # a damaged copy: replaced by the store's below
            with contextlib.suppress(ObjectNotFound, OSError):
                where.delete(key)
    copy = _download(backend, key, size, spool)
    try:
        got = _file_id(copy)
        if got != oid:
            raise IntegrityError(key, oid, got)
        if cache is not None:  # kept, as read_object keeps what it reads
            with contextlib.suppress(OSError):
                cache.put_path(key, copy, move=True)
                return cache.path(key), False
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(copy)
        raise
    return copy, True


def _local_copies(
    backend: Backend, cache: Backend | None, key: str, size: int
) -> Iterator[tuple[str, Backend]]:
    """Local files that may hold ``key`` whole: the cache's, and a local store's."""
    for where in (cache, backend):
        if where is not None and where.is_local:
            path = where.path(key)
            with contextlib.suppress(OSError):
                if os.path.getsize(path) == size:
                    yield path, where


def _download(backend: Backend, key: str, size: int, spool: str | None) -> str:
    """``key`` copied to a temporary file a block at a time (never whole in memory)."""
    import tempfile

    fd, path = tempfile.mkstemp(prefix=".tmp-index-", dir=spool)
    try:
        with os.fdopen(fd, "wb") as f:
            for start in range(0, size, DOWNLOAD_BLOCK):
                f.write(backend.read_range(key, start, min(size, start + DOWNLOAD_BLOCK)))
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise
    return path


def _file_id(path: str) -> str:
    """The BLAKE3 of a file, read a block at a time."""
    hasher = file_hasher()
    with open(path, "rb") as f:
        while block := f.read(DOWNLOAD_BLOCK):
            hasher.update(block)
    return hasher.hexdigest()
