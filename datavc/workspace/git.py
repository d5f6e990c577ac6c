"""The workspace and git: the root ``.gitignore``, and git itself.

Tracked data paths are added to the root ``.gitignore``, anchored, with glob characters
escaped. Git is asked for the author, HEAD and pointer files of older revisions; a
workspace need not be a git repo.
"""

from __future__ import annotations

import os

from ..store.atomic import write_text_atomic
from ..store.files import TMP_PREFIX


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
