"""datavc verify PATH SPEC: a folder (or file), anywhere, equals a snapshot file by file, or
the command names what differs (extra, missing, different content or mode) and exits 9;
it writes nothing, not even the stat cache. Real git, the embedded store."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import rand, run, write


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """d@v1: a folder of three files (one executable, one in a subfolder); m@v1: a file."""
    root = tmp_path / "repo"
    root.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    run(root, "init")
    write(root / "data" / "d" / "a.txt", b"alpha\n")
    write(root / "data" / "d" / "sub" / "b.bin", rand("b", 100_000))
    write(root / "data" / "d" / "run.sh", b"#!/bin/sh\n", executable=True)
    write(root / "models" / "m.bin", rand("m", 50_000))
    run(root, "add", "data/d")
    run(root, "add", "models/m.bin")
    run(root, "commit", "-m", "v1")
    return root


def snapshot_id(repo: Path, spec: str) -> str:
    doc = json.loads(run(repo, "ls", spec, "--json").stdout)
    return str(doc["snapshot"])


def verify_json(repo: Path, *args: str, code: int) -> dict[str, object]:
    doc: dict[str, object] = json.loads(run(repo, "verify", "--json", *args, code=code).stdout)
    return doc


def copy_of(repo: Path, tmp_path: Path) -> Path:
    """A copy of d's folder outside the workspace (modes kept)."""
    dest = tmp_path / "elsewhere" / "copy"
    shutil.copytree(repo / "data" / "d", dest)
    return dest


def test_equal_inside_and_outside_the_workspace(repo: Path, tmp_path: Path) -> None:
    tree = snapshot_id(repo, "d@v1")
    out = run(repo, "verify", "data/d", "d@v1").stdout
    assert out.strip() == f"data/d equals d@v1 (snapshot {tree[:12]}, 3 files)"
    copy = copy_of(repo, tmp_path)
    out = run(repo, "verify", str(copy), "d").stdout  # a bare NAME: its pointer's version
    assert out.strip() == f"{copy} equals d@v1 (snapshot {tree[:12]}, 3 files)"
    doc = verify_json(repo, str(copy), "d@v1", code=0)
    assert doc == {
        "path": str(copy),
        "name": "d",
        "version": 1,
        "snapshot": tree,
        "files": 3,
        "equal": True,
        "note": None,
        "extra": [],
        "missing": [],
        "different": [],
    }


def test_extra_files_symlinks_and_special_files(repo: Path, tmp_path: Path) -> None:
    copy = copy_of(repo, tmp_path)
    for i in range(55):
        write(copy / "more" / f"x{i:02d}.txt", b"x")
    os.symlink("a.txt", copy / "link")
    os.mkfifo(copy / "fifo")
    proc = run(repo, "verify", str(copy), "d@v1", code=9)
    lines = proc.stdout.splitlines()
    assert lines[0].startswith(f"{copy} differs from d@v1")
    assert "extra: 57 files" in lines
    shown = [line for line in lines if line.startswith("  ") and "..." not in line]
    assert len(shown) == 50 and "  ... and 7 more" in lines, lines
    assert "  fifo" in shown and "  link" in shown  # sorted: before more/
    err = proc.stderr.strip()
    assert err == f"datavc: error: {copy} differs from d@v1: 57 extra, 0 missing, 0 different"
    doc = verify_json(repo, str(copy), "d@v1", code=9)
    assert doc["equal"] is False and len(doc["extra"]) == 57  # type: ignore[arg-type]
    assert doc["missing"] == [] and doc["different"] == []


def test_missing_files(repo: Path, tmp_path: Path) -> None:
    copy = copy_of(repo, tmp_path)
    (copy / "sub" / "b.bin").unlink()
    out = run(repo, "verify", str(copy), "d@v1", code=9).stdout
    assert "missing: 1 files\n  sub/b.bin\n" in out
    doc = verify_json(repo, str(copy), "d@v1", code=9)
    assert doc["missing"] == ["sub/b.bin"] and doc["extra"] == [] and doc["different"] == []
    gone = tmp_path / "nowhere"
    doc = verify_json(repo, str(gone), "d@v1", code=9)
    assert doc["note"] == f"{gone} does not exist" and len(doc["missing"]) == 3  # type: ignore[arg-type]


def test_different_content_of_the_same_size(repo: Path) -> None:
    write(repo / "data" / "d" / "a.txt", b"ALPHA\n")  # the same size: only the hash tells
    out = run(repo, "verify", "data/d", "d@v1", code=9).stdout
    assert "different: 1 files\n  a.txt (content)\n" in out
    doc = verify_json(repo, "data/d", "d@v1", code=9)
    assert doc["different"] == [{"path": "a.txt", "why": "content"}]


def test_different_mode(repo: Path) -> None:
    (repo / "data" / "d" / "a.txt").chmod(0o755)
    (repo / "data" / "d" / "run.sh").chmod(0o644)
    doc = verify_json(repo, "data/d", "d@v1", code=9)
    assert doc["different"] == [
        {"path": "a.txt", "why": "mode"},
        {"path": "run.sh", "why": "mode"},
    ]
    assert doc["extra"] == [] and doc["missing"] == []


def test_a_file_dataset_under_any_name(repo: Path, tmp_path: Path) -> None:
    other = tmp_path / "renamed.model"
    shutil.copy2(repo / "models" / "m.bin", other)
    tree = snapshot_id(repo, "m@v1")
    out = run(repo, "verify", str(other), "m@v1").stdout
    assert out.strip() == f"{other} equals m@v1 (snapshot {tree[:12]}, 1 files)"
    run(repo, "verify", "models/m.bin", "m")
    other.write_bytes(rand("other", 50_000))
    doc = verify_json(repo, str(other), "m@v1", code=9)
    assert doc["different"] == [{"path": "m.bin", "why": "content"}] and doc["extra"] == []
    doc = verify_json(repo, "models", "m@v1", code=9)  # a folder is not the file
    assert doc["note"] == "models is a folder, not a regular file"
    os.symlink(repo / "models" / "m.bin", tmp_path / "link.bin")
    doc = verify_json(repo, str(tmp_path / "link.bin"), "m@v1", code=9)
    assert doc["note"] == f"{tmp_path / 'link.bin'} is a symbolic link, not a regular file"


def _state(root: Path) -> dict[str, tuple[int, bytes | None]]:
    """Every path under ``root``: its mtime, and a file's bytes."""
    found: dict[str, tuple[int, bytes | None]] = {}
    for current, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            p = Path(current) / name
            data = p.read_bytes() if p.is_file() and not p.is_symlink() else None
            found[str(p.relative_to(root))] = (p.lstat().st_mtime_ns, data)
    found["."] = (root.stat().st_mtime_ns, None)
    return found


def test_writes_nothing(repo: Path) -> None:
    folder = repo / "data" / "d"
    os.utime(folder / "a.txt", ns=(1, 1))  # the stat cache no longer vouches for it
    (folder / "run.sh").chmod(0o644)
    state = repo / ".datavc" / "state"
    assert any(p.is_file() for p in state.rglob("*")), "the stat cache exists"

    def everything() -> object:
        return (_state(state), _state(folder), sorted(os.listdir(repo / ".datavc")))

    before = everything()
    run(repo, "verify", "data/d", "d@v1", code=9)
    run(repo, "verify", "--json", "data/d", "d", code=9)
    assert everything() == before
    (folder / "run.sh").chmod(0o755)  # equal again (a.txt only touched)
    run(repo, "verify", "data/d", "d@v1")
    assert everything() == before
