"""The workspace's files outside the store: its lock, the root .gitignore, and git itself.

Commands that change a workspace hold an exclusive ``flock`` on ``.datavc/state/lock`` for
their whole run (released by the kernel if the process dies). Tracked data paths are added
to the root ``.gitignore``, anchored, with glob characters escaped. Git is asked for the
author, HEAD and pointer files of older revisions; a workspace need not be a git repo.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager

from .atomic import write_text_atomic
from .errors import LockHeld
from .snapshot import TMP_PREFIX


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


def ignore_path(root: str, rel: str) -> None:
    """Add a dataset path (and checkout's staging folders) to the root .gitignore."""
    path = os.path.join(root, ".gitignore")
    line = "/" + "".join(f"\\{c}" if c in "*?[]!#\\" else c for c in rel)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        text = ""
    lines = text.splitlines()
    missing = [x for x in (line, f"{TMP_PREFIX}*") if x not in lines]
    if missing:
        sep = "" if not text or text.endswith("\n") else "\n"
        write_text_atomic(path, text + sep + "".join(f"{x}\n" for x in missing))


def git(root: str, *args: str) -> str | None:
    """Stripped stdout of a git command run in ``root``, or None if it failed."""
    import subprocess  # imported when used: most commands never run git

    try:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)
    except OSError:
        return None
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else None


def git_author(root: str) -> str:
    name = git(root, "config", "user.name")
    email = git(root, "config", "user.email")
    if name:
        return f"{name} <{email}>" if email else name
    import getpass
    import socket

    return f"{getpass.getuser()}@{socket.gethostname()}"
