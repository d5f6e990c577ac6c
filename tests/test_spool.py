"""The pack spool file: what goes in comes out, with O_DIRECT or without it."""

from __future__ import annotations

import errno
import mmap
import os
import random
from pathlib import Path

import pytest

from datavc.store import spool
from datavc.store.spool import ALIGN, BUFFER, AppendFile


def _parts(seed: int) -> list[bytes]:
    rng = random.Random(seed)
    sizes = [1, ALIGN - 1, ALIGN, 3 * ALIGN + 7, BUFFER - 5, BUFFER + 9, 70_000, 13]
    return [rng.randbytes(n) for n in sizes]


def _write(path: Path, parts: list[bytes], direct: bool = True) -> AppendFile:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    f = AppendFile(fd, direct=direct)
    with f:
        f.writelines(parts[:3])
        f.writelines([memoryview(p) for p in parts[3:]])
    return f


@pytest.mark.parametrize("direct", [True, False])
def test_bytes_written_are_the_bytes_given(tmp_path: Path, direct: bool) -> None:
    parts = _parts(1)
    f = _write(tmp_path / "p", parts, direct)
    assert (tmp_path / "p").read_bytes() == b"".join(parts)
    assert f.size == sum(len(p) for p in parts)


def _takes_direct(folder: Path) -> bool:
    """Whether the filesystem of ``folder`` opens files with O_DIRECT (asked directly)."""
    path = folder / "probe"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | spool.O_DIRECT, 0o644)
    except OSError:
        return False
    finally:
        path.unlink(missing_ok=True)
    os.close(fd)
    return True


@pytest.mark.skipif(not spool.O_DIRECT, reason="no O_DIRECT on this system")
def test_direct_io_is_used_where_the_filesystem_allows_it(tmp_path: Path) -> None:
    """Where the filesystem takes O_DIRECT the file is written around the page cache; on
    tmpfs (which refuses it) the same bytes are written the ordinary way."""
    folders = [tmp_path]
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        shm = Path("/dev/shm") / f"datavc-test-{os.getpid()}"
        shm.mkdir()
        folders.append(shm)
    try:
        for folder in folders:
            parts = _parts(2)
            written = _write(folder / "p", parts)
            assert (written.direct_bytes > 0) == _takes_direct(folder), folder
            assert (folder / "p").read_bytes() == b"".join(parts)
    finally:
        for folder in folders[1:]:
            (folder / "p").unlink(missing_ok=True)
            folder.rmdir()


def test_a_refused_direct_write_falls_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A filesystem that takes the O_DIRECT flag but refuses the write (EINVAL) gets the
    same bytes through the page cache."""
    real_write = os.write
    refused = {"n": 0}

    def write(fd: int, data: memoryview) -> int:
        flags = spool.fcntl.fcntl(fd, spool.fcntl.F_GETFL)
        if flags & spool.O_DIRECT:
            refused["n"] += 1
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_write(fd, data)

    monkeypatch.setattr(spool.os, "write", write)
    parts = _parts(3)
    f = _write(tmp_path / "p", parts)
    assert (tmp_path / "p").read_bytes() == b"".join(parts)
    assert not f.direct and f.direct_bytes == 0
    assert refused["n"] == (1 if spool.O_DIRECT else 0)


def test_other_write_errors_are_raised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def write(fd: int, data: memoryview) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(spool.os, "write", write)
    fd = os.open(tmp_path / "p", os.O_WRONLY | os.O_CREAT, 0o644)
    f = AppendFile(fd)
    with pytest.raises(OSError, match="No space"):
        f.writelines([b"x" * (BUFFER + 1)])  # the first full buffer is written here
    with pytest.raises(OSError, match="No space"):
        f.close()
    with pytest.raises(OSError):
        os.fstat(fd)  # closed even so


@pytest.mark.parametrize("cached", [False, True])
@pytest.mark.parametrize("length", [1, ALIGN - 3, ALIGN, 5 * ALIGN + 11, 300_000])
def test_read_into_gives_any_range(tmp_path: Path, length: int, cached: bool) -> None:
    """Unaligned ranges come back exact through aligned (direct) reads, or copied from the
    page cache through a buffered descriptor (the file was just written: cached); past the
    end: None (direct) or refused (cached)."""
    data = random.Random(length).randbytes(400_000)
    path = tmp_path / "f"
    path.write_bytes(data)
    fd, _ = spool.open_direct(str(path))
    other = os.open(path, os.O_RDONLY)
    buf = mmap.mmap(-1, 400_000 + 2 * ALIGN)
    try:
        for start in (0, 1, ALIGN - 1, ALIGN, 12_345, len(data) - length):
            buf[:] = b"\xee" * len(buf)  # nothing left from the last read
            if cached and spool.NOWAIT:
                view = spool.read_cached(other, start, start + length, buf)
            else:
                view = spool.read_into(fd, start, start + length, buf)
            assert view is not None and bytes(view) == data[start : start + length]
            del view
        end = len(data) + 1
        assert spool.read_into(fd, len(data) - length + 1, end, buf) is None
        assert spool.read_cached(other, len(data) - length + 1, end, buf) is None
    finally:
        os.close(fd)
        os.close(other)
        buf.close()


@pytest.mark.skipif(not spool.NOWAIT, reason="no RWF_NOWAIT here")
def test_read_cached_refuses_bytes_not_in_the_page_cache(tmp_path: Path) -> None:
    """A file dropped from the page cache is not read through it: the caller then reads
    it from the disk (and stops asking for that file, see ChunkStore.stream_plain)."""
    data = random.Random(7).randbytes(1 << 20)
    path = tmp_path / "f"
    path.write_bytes(data)
    direct, is_direct = spool.open_direct(str(path))
    fd = os.open(path, os.O_RDONLY)
    buf = mmap.mmap(-1, len(data) + 2 * ALIGN)
    try:
        if not is_direct:
            pytest.skip("no O_DIRECT: a memory filesystem (tmpfs), whose pages stay")
        assert spool.read_cached(fd, 0, len(data), buf) is not None  # just written
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # clean pages are dropped
        assert spool.read_cached(fd, 0, len(data), buf) is None
        view = spool.read_into(direct, 0, len(data), buf)
        assert view is not None and bytes(view) == data
        del view
    finally:
        os.close(fd)
        os.close(direct)
        buf.close()
