"""Helpers shared by the test modules: seeded data, writing files, a folder's exact state."""

from __future__ import annotations

import os
import random
import stat
from pathlib import Path


def rand(seed: object, n: int) -> bytes:
    """``n`` seeded random bytes: compression cannot hide anything."""
    return random.Random(str(seed)).randbytes(n)


def write(path: Path, data: bytes, executable: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(0o755 if executable else 0o644)


def tree_state(root: Path) -> dict[str, object]:
    """Every file (bytes, executable bit) and every folder under ``root``; no symlinks."""
    state: dict[str, object] = {}
    for current, dirs, files in os.walk(root):
        rel_dir = os.path.relpath(current, root)
        for d in dirs:
            state[os.path.normpath(os.path.join(rel_dir, d)) + "/"] = "dir"
        for f in files:
            p = os.path.join(current, f)
            st = os.lstat(p)
            assert stat.S_ISREG(st.st_mode), p
            state[os.path.normpath(os.path.join(rel_dir, f))] = (
                Path(p).read_bytes(),
                bool(st.st_mode & 0o111),
            )
    return state
