"""Helpers shared by the test modules: seeded data, writing files, a folder's exact state,
forged version records, running the datavc command."""

from __future__ import annotations

import os
import random
import shutil
import stat
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from datavc.format.record import CommitStats, VersionRecord
from datavc.format.tree import TreeRoot
from datavc.format.treeroot import snapshot_id


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


def forged_record(name: str, root: TreeRoot) -> VersionRecord:
    """A version record (number 0: publishing numbers it) whose tree is ``root`` as given,
    whatever a hostile writer put in it; its id is the root's, as a real record's is."""
    return VersionRecord(
        name=name,
        version=0,
        kind="dir",
        tree=snapshot_id(root),
        root=root,
        parent=1,
        message="forged",
        author="attacker",
        time="2026-01-01T00:00:00Z",
        git_head=None,
        nonce=uuid.uuid4().hex,
        stats=CommitStats(root.files, root.bytes, 0, 0, 0),
    )


DATAVC_TIMEOUT = 120


def run(cwd: Path, *args: str, code: int | None = 0) -> subprocess.CompletedProcess[str]:
    """Run datavc; its exit code must be ``code`` (None: 0 or 2)."""
    proc = subprocess.run(
        [sys.executable, "-m", "datavc", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=DATAVC_TIMEOUT,
        stdin=subprocess.DEVNULL,
    )
    allowed = (0, 2) if code is None else (code,)
    assert proc.returncode in allowed, (args, proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout
    return proc


def clean_environment(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    """Its own HOME and a git identity, and no datavc or AWS settings (module-scoped
    fixtures that build a repo once call this under ``pytest.MonkeyPatch.context()``)."""
    for key in list(os.environ):
        if key.startswith(("DATAVC_", "GIT_", "AWS_", "FSSPEC_")):
            monkeypatch.delenv(key)
    home.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_AUTHOR_NAME", "Test Author")
    monkeypatch.setenv("GIT_AUTHOR_EMAIL", "author@example.invalid")
    monkeypatch.setenv("GIT_COMMITTER_NAME", "Test Author")
    monkeypatch.setenv("GIT_COMMITTER_EMAIL", "author@example.invalid")
    (home / ".gitconfig").write_text(
        "[user]\n\tname = Test Author\n\temail = author@example.invalid\n"
        "[init]\n\tdefaultBranch = main\n"
    )


def forget_reads() -> None:
    """Empty the process's caches of checked pages, parsed pages and chunks, as a new process
    starts (they are content-addressed, shared by every store, and tests write the same
    bytes)."""
    from datavc.store.reader import CHUNKS
    from datavc.store.trees import PAGES, PARSED

    PAGES.clear()
    PARSED.clear()
    CHUNKS.clear()


class SnapshotFiles:
    """A map-style dataset for PyTorch's DataLoader (any object with ``__len__`` and
    ``__getitem__`` is one): item ``i`` is (bytes, worker id, pid) of the i-th (filesystem,
    path) pair, the filesystems being datavc's, which the DataLoader copies into each worker
    (by fork or by pickle). Kept here, not in the test module, so that a spawned worker
    imports little."""

    def __init__(self, files: list[tuple[object, str]]) -> None:
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[bytes, int, int]:
        from torch.utils.data import get_worker_info

        fs, path = self.files[i]
        with fs.open(path, "rb") as f:  # type: ignore[attr-defined]
            data: bytes = f.read()
        info = get_worker_info()
        return data, -1 if info is None else info.id, os.getpid()


def local_cluster(base: Path) -> Any:
    """A Dask LocalCluster of two worker processes, one thread each, on 127.0.0.1, its
    scratch in ``base``; call under the environment its workers are to inherit."""
    from distributed import LocalCluster

    return LocalCluster(
        n_workers=2,
        processes=True,
        threads_per_worker=1,
        host="127.0.0.1",
        dashboard_address=None,
        local_directory=str(base / "scratch"),
    )


def from_nothing(data: Path, scratch: Path) -> str:
    """The snapshot id of a copy of ``data`` added in a new workspace with its own store."""
    from datavc.workspace.core import Workspace
    from datavc.workspace.initialize import init_workspace

    scratch.mkdir()
    init_workspace(str(scratch), str(scratch / ".store"))
    shutil.copytree(data, scratch / "d")
    return Workspace(str(scratch)).add(str(scratch / "d")).staged.tree
