"""The workspace lock: commands that change a workspace hold an exclusive ``flock`` on
``.datavc/state/lock`` for their whole run (released by the kernel if the process dies); a
second command fails at once, naming the process that holds it.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager

from ..errors import LockHeld


@contextmanager
def workspace_lock(state: str) -> Iterator[None]:
    """Hold the workspace lock, or fail at once naming the process that holds it."""
    os.makedirs(state, exist_ok=True)
    fd = os.open(os.path.join(state, "lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            raise LockHeld(
                f"another datavc command (pid {holder}) is using this workspace; "
                "wait for it to finish and try again"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)
