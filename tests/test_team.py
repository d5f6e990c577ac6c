"""Team workflow (issue 13, item 4): status tells a pointer that moved (git checkout, pull,
merge) from edited data, and status and checkout explain a pointer file in a merge
conflict, naming both versions; checkout NAME@vN resolves it. Real git."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from helpers import run, write


def git(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=check)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q")
    run(root, "init")
    write(root / "data" / "d" / "a.txt", b"one\n")
    run(root, "add", "data/d")
    run(root, "commit", "-m", "v1")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "data v1")
    return root


def test_status_after_git_checkout_advises_checkout(repo: Path) -> None:
    write(repo / "data" / "d" / "a.txt", b"two\n")
    run(repo, "add", "data/d")
    run(repo, "commit", "-m", "v2")
    git(repo, "commit", "-q", "-am", "data v2")
    git(repo, "checkout", "-q", "HEAD~1")  # the pointer moves back to v1; the data stays v2
    out = run(repo, "status").stdout
    assert "moved: holds d@v2, but its pointer file names v1" in out, out
    assert "run 'datavc checkout'" in out and "datavc add" not in out
    (repo / "data" / "d" / "a.txt").touch()  # the stat cache no longer vouches: compared
    assert "moved: holds d@v2" in run(repo, "status").stdout
    run(repo, "checkout")
    assert (repo / "data" / "d" / "a.txt").read_bytes() == b"one\n"
    assert "clean" in run(repo, "status").stdout
    write(repo / "data" / "d" / "a.txt", b"edited\n")  # a real edit still advises add
    assert "modified" in run(repo, "status").stdout


def test_a_pointer_file_in_a_merge_conflict(repo: Path) -> None:
    git(repo, "checkout", "-q", "-b", "other")
    write(repo / "data" / "d" / "a.txt", b"other\n")
    run(repo, "add", "data/d")
    run(repo, "commit", "-m", "v2 on other")
    git(repo, "commit", "-q", "-am", "other")
    git(repo, "checkout", "-q", "-")
    run(repo, "checkout")
    write(repo / "data" / "d" / "a.txt", b"mine\n")
    run(repo, "add", "data/d")
    run(repo, "commit", "-m", "v3 on main")
    git(repo, "commit", "-q", "-am", "main")
    merge = git(repo, "merge", "other", check=False)
    assert merge.returncode != 0 and "CONFLICT" in merge.stdout, merge.stdout
    out = run(repo, "status").stdout
    assert "conflict" in out and "one side names d@v3, the other d@v2" in out, out
    assert "'datavc checkout d@v3' or 'datavc checkout d@v2'" in out
    err = run(repo, "checkout", code=8).stderr
    assert "one side names d@v3, the other d@v2" in err
    run(repo, "checkout", "d@v2")  # pick one: the pointer file is rewritten
    text = (repo / "data" / "d.datavc").read_text()
    assert "<<<<<<<" not in text and "version: 2" in text
    assert (repo / "data" / "d" / "a.txt").read_bytes() == b"other\n"
    git(repo, "add", "data/d.datavc")
    git(repo, "commit", "-q", "-m", "merged")
    assert "clean: matches v2" in run(repo, "status").stdout
