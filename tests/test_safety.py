"""Regressions from review: nothing added is dropped by checkout, datavc.open never serves
another version's bytes, git revisions cannot inject options, stray files and damaged state
give clear errors, usage errors are one line, pointer files and .gitignore are right."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import datavc
from datavc.errors import BadInput

TIMEOUT = 120


def run(cwd: Path, *args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "datavc", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == code, (args, proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout
    if code:
        lines = proc.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("datavc: error: "), proc.stderr
    return proc


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "data" / "images").mkdir(parents=True)
    (root / "data" / "images" / "a.txt").write_bytes(b"version one\n")
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    run(root, "init")
    run(root, "add", "data/images")
    run(root, "commit", "-m", "v1")
    return root


def test_checkout_refuses_to_drop_added_but_uncommitted_files(repo: Path) -> None:
    precious = repo / "data" / "images" / "new.txt"
    precious.write_bytes(b"precious\n")
    run(repo, "add", "data/images")
    proc = run(repo, "checkout", code=2)
    assert "not stored" in proc.stderr or "not committed" in proc.stderr
    assert precious.read_bytes() == b"precious\n"
    assert "staged" in run(repo, "status").stdout
    run(repo, "checkout", "--force")
    assert not precious.exists()


def test_open_refuses_a_url_of_another_version(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (repo / "data" / "images" / "a.txt").write_bytes(b"version two\n")
    run(repo, "add", "data/images")
    run(repo, "commit", "-m", "v2")
    monkeypatch.chdir(repo)
    fs = datavc.open("images@v2")
    assert fs.cat("datavc://images@v2/a.txt") == b"version two\n"
    for other in ("datavc://images@v1/a.txt", "datavc://other@v7/a.txt"):
        with pytest.raises(BadInput):
            fs.cat(other)
        with pytest.raises(BadInput):
            fs.info(other)
    assert datavc.open("images@v1").cat("a.txt") == b"version one\n"


@pytest.mark.parametrize("rev", ["--output=/tmp/x", "-p", "HEAD x"])
def test_git_revision_cannot_carry_options(repo: Path, tmp_path: Path, rev: str) -> None:
    before = sorted(p.name for p in tmp_path.iterdir())
    run(repo, "checkout", f"images@git:{rev}", code=8)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_stray_datavc_file_of_another_tool_is_ignored(repo: Path) -> None:
    stray = repo / ".venv" / "lib" / "notes.datavc"
    stray.parent.mkdir(parents=True)
    stray.write_text("not ours\n")
    assert "clean" in run(repo, "status").stdout


def test_damaged_pointer_with_our_header_is_a_clear_error(repo: Path) -> None:
    pointer = repo / "data" / "images.datavc"
    pointer.write_text(pointer.read_text().replace("version: 1", "version: one"))
    run(repo, "status", code=8)


def test_damaged_staged_state_is_a_clear_error(repo: Path) -> None:
    (repo / "data" / "images" / "b.txt").write_bytes(b"b\n")
    run(repo, "add", "data/images")
    staged = repo / ".datavc" / "state" / "staged" / "images.json"
    for damage in ("{}", "not json", '{"name": 3}'):
        staged.write_text(damage)
        run(repo, "status", code=8)


@pytest.mark.parametrize("config", ["storage_options = 3\n", "core = 'x'\n"])
def test_bad_config_types_are_a_clear_error(repo: Path, config: str) -> None:
    path = repo / ".datavc" / "config.toml"
    path.write_text(config + path.read_text())
    run(repo, "status", code=8)


def test_init_twice_refuses_without_force(repo: Path, tmp_path: Path) -> None:
    config = (repo / ".datavc" / "config.toml").read_text()
    run(repo, "init", "--store", str(tmp_path / "elsewhere"), code=2)
    assert (repo / ".datavc" / "config.toml").read_text() == config
    run(repo, "init", "--force", "--store", str(tmp_path / "elsewhere"))
    assert "elsewhere" in (repo / ".datavc" / "config.toml").read_text()


@pytest.mark.parametrize(
    "args", [["add"], ["frobnicate"], ["checkout", "--bogus"], ["commit", "-m"]]
)
def test_usage_errors_are_one_line(repo: Path, args: list[str]) -> None:
    run(repo, *args, code=2)


def test_same_dataset_twice_in_one_checkout_is_refused(repo: Path) -> None:
    run(repo, "checkout", "images@v1", "images@latest", code=8)


def test_pointer_file_mode_follows_umask(repo: Path) -> None:
    mode = stat.S_IMODE(os.stat(repo / "data" / "images.datavc").st_mode)
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask


def test_gitignore_escapes_glob_characters(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    data = root / "data" / "[raw]*"
    data.mkdir(parents=True)
    (data / "x.bin").write_bytes(b"x")
    (root / "data" / "r").mkdir()
    (root / "data" / "r" / "keep.txt").write_bytes(b"keep")
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    run(root, "init")
    run(root, "add", "data/[raw]*", "--name", "raw")
    check = subprocess.run(["git", "check-ignore", "-q", "data/[raw]*/x.bin"], cwd=root)
    assert check.returncode == 0
    other = subprocess.run(["git", "check-ignore", "-q", "data/r/keep.txt"], cwd=root)
    assert other.returncode == 1


def test_commit_retried_after_a_lost_answer_makes_no_duplicate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datavc.store import versions
    from datavc.workspace.core import Workspace
    from datavc.workspace.initialize import init_workspace

    root = tmp_path / "ws"
    (root / "data").mkdir(parents=True)
    (root / "data" / "a.bin").write_bytes(b"a" * 1000)
    init_workspace(str(root), None)
    ws = Workspace(str(root))
    ws.add(str(root / "data"))

    def crash(self: Workspace, rel: str, rec: object) -> None:
        raise OSError("crashed after the version record was created")

    with monkeypatch.context() as m:
        m.setattr(Workspace, "write_pointer", crash)
        with pytest.raises(OSError):
            Workspace(str(root)).commit([], "v1")
    records, unchanged = Workspace(str(root)).commit([], "v1 again")
    assert [r.version for r in records] == [1]
    assert unchanged == []
    assert versions.version_numbers(Workspace(str(root)).store, "data") == [1]
    assert (root / "data.datavc").exists()


def test_checkout_writes_exact_modes_whatever_the_umask(repo: Path) -> None:
    """FORMAT.md: a file checkout writes is exactly 0644 or 0755, whatever the umask (here
    077); a file in place with the right content keeps its bits unless its execute bit
    differs from the entry's."""
    data = repo / "data" / "images"
    for name, executable in (("plain.txt", False), ("tool.sh", True), ("kept.txt", False)):
        (data / name).write_bytes(name.encode() + b"\n")
        (data / name).chmod(0o755 if executable else 0o644)
    (data / "flipped.sh").write_bytes(b"#!/bin/sh\n")
    (data / "flipped.sh").chmod(0o755)
    run(repo, "add", "data/images")
    run(repo, "commit", "-m", "v2")
    (data / "plain.txt").unlink()
    (data / "tool.sh").unlink()
    (data / "kept.txt").chmod(0o600)  # the right content, bits of its own
    (data / "flipped.sh").chmod(0o600)  # the right content, the execute bit lost
    subprocess.run(
        ["sh", "-c", f"umask 077 && exec {sys.executable} -m datavc checkout --force images@v2"],
        cwd=repo,
        check=True,
        capture_output=True,
        timeout=TIMEOUT,
    )
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in data.iterdir()}
    assert modes == {
        "a.txt": 0o644,
        "plain.txt": 0o644,
        "tool.sh": 0o755,
        "kept.txt": 0o600,
        "flipped.sh": 0o755,
    }
