"""Local pack files written and read around the page cache where the OS allows it.

Packs are written once, fsynced, and rarely read right away, so on Linux their bytes go to
disk with ``O_DIRECT`` from one aligned buffer: the kernel then neither copies them into the
page cache nor has to write them back later. On this project's 2-core test machine a
buffered write of 1 GiB cost 0.5-6 s of kernel CPU (it varies with the dirty-page load);
a direct one 0.1-0.2 s. Where ``O_DIRECT`` is refused (tmpfs, other systems), the same
buffer is written the ordinary way.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import mmap
import os
from collections.abc import Iterable

ALIGN = 4096  # offsets and lengths of direct writes: a multiple of any disk's logical block
BUFFER = 8 << 20
O_DIRECT: int = getattr(os, "O_DIRECT", 0)
NOWAIT: int = getattr(os, "RWF_NOWAIT", 0)


class AppendFile:
    """Writes the bytes given to :meth:`writelines` to ``fd`` (a new, empty file), in
    ``BUFFER``-sized writes; :meth:`close` writes the rest and closes ``fd``."""

    def __init__(self, fd: int, direct: bool = True) -> None:
        self._fd = fd
        self._buf = mmap.mmap(-1, BUFFER)  # page-aligned, as direct writes need
        self._view = memoryview(self._buf)
        self._fill = 0
        self.size = 0  # bytes given so far
        self.direct = direct and O_DIRECT != 0 and _set_direct(fd, True)  # writing directly now
        self.direct_bytes = 0  # bytes that went to the file directly

    def writelines(self, parts: Iterable[bytes | memoryview]) -> None:
        for part in parts:
            data = memoryview(part).cast("B")
            self.size += len(data)
            while data:
                n = min(len(data), BUFFER - self._fill)
                self._view[self._fill : self._fill + n] = data[:n]
                self._fill += n
                data = data[n:]
                if self._fill == BUFFER:
                    self._write(self._view)
                    self._fill = 0

    def close(self) -> None:
        """Write what is buffered (the tail that is not a whole block goes through the
        page cache) and close the file. The caller fsyncs it if it must be durable."""
        if self._fd < 0:
            return
        try:
            whole = self._fill - self._fill % ALIGN
            if whole:
                self._write(self._view[:whole])
            if whole < self._fill:
                if self.direct:
                    _set_direct(self._fd, False)
                    self.direct = False
                self._write(self._view[whole : self._fill])
            self._fill = 0
        finally:
            fd, self._fd = self._fd, -1
            os.close(fd)
            with contextlib.suppress(BufferError):  # a failed write's traceback holds a view
                self._view.release()
                self._buf.close()

    def __enter__(self) -> AppendFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _write(self, view: memoryview) -> None:
        while view:
            try:
                n = os.write(self._fd, view)
            except OSError as err:
                if not (self.direct and err.errno == errno.EINVAL):
                    raise
                _set_direct(self._fd, False)  # the filesystem took the flag, not the write
                self.direct = False
                continue
            view = view[n:]
            if self.direct:
                self.direct_bytes += n
            if self.direct and n % ALIGN:  # a short write left the offset unaligned
                _set_direct(self._fd, False)
                self.direct = False


def _set_direct(fd: int, on: bool) -> bool:
    """Turn ``O_DIRECT`` on or off for ``fd``; False if the filesystem refuses it."""
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    try:
        fcntl.fcntl(fd, fcntl.F_SETFL, flags | O_DIRECT if on else flags & ~O_DIRECT)
    except OSError as err:
        if err.errno == errno.EINVAL:
            return False
        raise
    return True


def open_direct(path: str) -> tuple[int, bool]:
    """Open ``path`` for reading with ``O_DIRECT`` if the filesystem takes it: (fd, direct)."""
    if O_DIRECT:
        try:
            return os.open(path, os.O_RDONLY | O_DIRECT), True
        except OSError as err:
            if err.errno != errno.EINVAL:
                raise
    return os.open(path, os.O_RDONLY), False


def read_into(fd: int, start: int, end: int, buf: mmap.mmap) -> memoryview | None:
    """Bytes ``[start, end)`` of the file, read into ``buf`` (page-aligned, at least
    ``end - start + 2 * ALIGN`` long) with whole aligned blocks, as ``O_DIRECT`` needs; a
    view into ``buf``. None if the file ends before ``end``."""
    first = start - start % ALIGN
    view = memoryview(buf)[: -(-end // ALIGN) * ALIGN - first]
    got = 0
    while got < end - first:
        n = os.preadv(fd, [view[got:]], first + got)
        if n == 0:
            return None
        got += n
    return view[start - first : end - first]


def read_cached(fd: int, start: int, end: int, buf: mmap.mmap) -> memoryview | None:
    """Bytes ``[start, end)`` copied from the page cache into ``buf`` through ``fd`` (a
    buffered descriptor), as a view into ``buf``; None unless all of them are cached
    (``RWF_NOWAIT``: a read that would wait for the disk is refused) or where the flag is
    not supported. A refused read still starts the kernel's readahead of the range: after
    one, read that file with :func:`read_into`, or its bytes come from the disk twice."""
    if not NOWAIT:
        return None
    view = memoryview(buf)[: end - start]
    try:
        if os.preadv(fd, [view], start, NOWAIT) == end - start:
            return view
    except OSError:  # BlockingIOError: not all cached; or not supported here
        pass
    return None
