"""Atomic local file writes: temp file beside the target, optional fsync, then rename.

A reader sees the old file or the new one, never a part. Files get the mode a plain
``open`` would give them (0o666 less the umask), not mkstemp's 0o600.
"""

from __future__ import annotations

import os
from collections.abc import Iterable


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


UMASK = _umask()
FILE_MODE = 0o666 & ~UMASK


def fsync_dir(folder: str) -> None:
    """Make a rename or link in ``folder`` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(
    path: str, data: bytes | Iterable[bytes], durable: bool = False, exclusive: bool = False
) -> bool:
    """Write ``data`` to ``path`` atomically; with ``exclusive``, only if ``path`` does not
    exist (a hard link, which fails on an existing name): False if it did."""
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    import tempfile  # imported when used (~10 ms): a read-only command never needs it

    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            f.writelines([data] if isinstance(data, bytes) else data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        if exclusive:
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
        else:
            os.replace(tmp, path)
            tmp = ""
        if durable:
            fsync_dir(folder)
        return True
    finally:
        if tmp:
            os.unlink(tmp)


def write_text_atomic(path: str, text: str) -> None:
    write_atomic(path, text.encode("utf-8"))
