"""The pre-commit hook (issue 13, item 1) under the real pre-commit framework and real git:
each failing case blocks `git commit` with its line; a clean commit goes through; on 20,000
unchanged files the check reads no file's content."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import rand, run, write
from test_fsck import backend

from datavc.store.backend import Backend

ROOT = Path(__file__).resolve().parent.parent
DATAVC = str(Path(sys.executable).parent / "datavc")
CONFIG = f"""repos:
  - repo: local
    hooks:
      - id: datavc-check
        name: datavc check
        entry: {DATAVC} hook pre-commit
        language: system
        require_serial: true
        pass_filenames: false
        always_run: true
"""


def git(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=check, timeout=120
    )


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PRE_COMMIT_HOME", str(tmp_path / "pre-commit-home"))
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q")
    run(root, "init")
    write(root / "data" / "d" / "a.txt", b"one\n")
    write(root / "data" / "d" / "b.bin", rand("b", 300_000))
    run(root, "add", "data/d")
    run(root, "commit", "-m", "v1")
    (root / ".pre-commit-config.yaml").write_text(CONFIG)
    git(root, "add", "-A")
    subprocess.run(
        [str(Path(sys.executable).parent / "pre-commit"), "install"],
        cwd=root,
        check=True,
        capture_output=True,
    )
    proc = git(root, "commit", "-q", "-m", "data v1", check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr  # a clean commit goes through
    return root


def commit_refused(repo: Path, expected: str) -> str:
    proc = git(repo, "commit", "-m", "try", check=False)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0, text
    assert expected in text, text
    assert "Traceback" not in text
    return text


def test_the_manifest_is_valid() -> None:
    pre_commit = str(Path(sys.executable).parent / "pre-commit")
    proc = subprocess.run(
        [pre_commit, "validate-manifest", str(ROOT / ".pre-commit-hooks.yaml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = (ROOT / ".pre-commit-hooks.yaml").read_text()
    for line in (
        "id: datavc-check",
        "entry: datavc hook pre-commit",
        "require_serial: true",
        "pass_filenames: false",
    ):
        assert line in text


def test_conflict_markers(repo: Path) -> None:
    pointer = repo / "data" / "d.datavc"
    text = pointer.read_text()
    pointer.write_text(
        text.replace("version: 1", "<<<<<<< HEAD\nversion: 1\n=======\nversion: 2\n>>>>>>> other")
    )
    git(repo, "add", "data/d.datavc")
    commit_refused(repo, "datavc: data/d.datavc has a merge conflict (line 4): one side names d@v1")


def test_pointer_names_data_the_store_lacks(repo: Path) -> None:
    pointer = repo / "data" / "d.datavc"
    pointer.write_text(pointer.read_text().replace("version: 1", "version: 7"))
    git(repo, "add", "data/d.datavc")
    commit_refused(repo, "names d@v7, which the store")
    git(repo, "reset", "-q")
    git(repo, "checkout", "--", "data/d.datavc")
    # the version is there, but a pack it needs is not
    b = backend(repo)
    for name in b.list("packs"):
        b.delete(f"packs/{name}")
    (repo / "data" / "d.datavc").write_text((repo / "data" / "d.datavc").read_text() + "\n")
    git(repo, "add", "data/d.datavc")
    commit_refused(repo, "has data in no pack of the store: run 'datavc repair'")


def test_dataset_files_staged_into_git(repo: Path) -> None:
    git(repo, "add", "-f", "data/d/a.txt")
    commit_refused(repo, "data/d/a.txt: inside dataset 'd' (data/d), whose data must not enter git")


def test_dataset_edited_but_not_added(repo: Path) -> None:
    (repo / "data" / "d" / "a.txt").write_bytes(b"edited\n")
    (repo / "note.txt").write_text("x")
    git(repo, "add", "note.txt")
    commit_refused(repo, "data/d: changed since it was added: run 'datavc add data/d'")
    run(repo, "add", "data/d")
    commit_refused(repo, "data/d: added but not committed: run 'datavc commit'")
    run(repo, "commit", "-m", "v2")
    # the new pointer file is not staged: pre-commit stashes it away, so the folder (v2)
    # no longer matches the pointer file the commit would record (v1)
    commit_refused(repo, "git add data/d.datavc")


def test_credentials_in_a_staged_config(repo: Path) -> None:
    config = repo / ".datavc" / "config.toml"
    config.write_text(config.read_text() + '[storage_options]\nsecret = "abc"\n')
    git(repo, "add", ".datavc/config.toml")
    commit_refused(repo, "storage option 'secret' looks like a credential")


def test_a_clean_commit_goes_through(repo: Path) -> None:
    (repo / "data" / "d" / "a.txt").write_bytes(b"two\n")
    run(repo, "add", "data/d")
    run(repo, "commit", "-m", "v2")
    git(repo, "add", "data/d.datavc")
    proc = git(repo, "commit", "-q", "-m", "data v2", check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_twenty_thousand_unchanged_files_read_no_content(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """10 datasets of 2,000 files, added and committed: the check stats each file and
    reads none (the stat cache answers)."""
    from datavc.store import files
    from datavc.workspace import core
    from datavc.workspace.core import Workspace
    from datavc.workspace.hooks import pre_commit

    root = tmp_path / "big"
    root.mkdir()
    git(root, "init", "-q")
    run(root, "init")
    for d in range(10):
        folder = root / "data" / f"set{d}"
        folder.mkdir(parents=True)
        for i in range(2000):
            path = folder / f"{i:05d}.txt"
            path.write_bytes(f"{d}-{i}\n".encode())
            os.utime(path, (1e9, 1e9))  # not "just written": the stat cache may trust it
    time.sleep(2.1)  # the stat cache trusts no file changed (ctime) in the 2 s before it saves
    ws = Workspace.find(str(root))
    for d in range(10):
        ws.add(f"{root}/data/set{d}")
    ws.commit([], "v1")
    git(root, "add", "-A")
    reads: list[str] = []
    real_open = open

    def counting_hash(path: str, size: int) -> bytes:
        reads.append(path)
        raise AssertionError(f"read {path}")

    def counting_open(file: object, *args: object, **kwargs: object) -> object:
        if (
            isinstance(file, (str, os.PathLike))
            and "/data/set" in os.fspath(file)
            and not os.fspath(file).endswith(".datavc")
        ):
            reads.append(os.fspath(file))
        return real_open(file, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(core, "hash_path", counting_hash)
    monkeypatch.setattr(files, "hash_path", counting_hash)
    monkeypatch.setattr("builtins.open", counting_open)
    monkeypatch.chdir(root)
    problems = pre_commit(Workspace.find("."))
    assert problems == []
    assert reads == []
    shutil.rmtree(root)


# -- plain git hooks: datavc install-hooks ---------------------------------------------------


@pytest.fixture
def plain(tmp_path: Path) -> Path:
    """A repo with datavc's plain git hooks: d@v1 on main, d@v2 on branch other."""
    root = tmp_path / "plain"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    run(root, "init")
    write(root / "data" / "d" / "a.txt", b"one\n")
    run(root, "add", "data/d")
    run(root, "commit", "-m", "v1")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "data v1", "--no-verify")
    out = run(root, "install-hooks").stdout
    assert out.splitlines() == [f"installed {h}" for h in HOOK_NAMES]
    git(root, "checkout", "-q", "-b", "other")
    write(root / "data" / "d" / "a.txt", b"two\n")
    run(root, "add", "data/d")
    run(root, "commit", "-m", "v2")
    git(root, "commit", "-q", "-am", "data v2")
    return root


HOOK_NAMES = ("pre-commit", "post-checkout", "post-merge", "pre-push")


def content(repo: Path) -> bytes:
    return (repo / "data" / "d" / "a.txt").read_bytes()


def test_post_checkout_follows_the_pointer_files(plain: Path) -> None:
    proc = git(plain, "checkout", "main")
    assert content(plain) == b"one\n", proc.stderr
    assert "data/d: now d@v1" in proc.stderr
    git(plain, "checkout", "other")
    assert content(plain) == b"two\n"
    assert "clean: matches v2" in run(plain, "status").stdout
    # uncommitted edits are left alone, and reported
    write(plain / "data" / "d" / "a.txt", b"edited\n")
    proc = git(plain, "checkout", "main")
    assert content(plain) == b"edited\n"
    assert "data/d: left as it is (modified)" in proc.stderr


def test_a_rebase_does_not_run_it(plain: Path) -> None:
    git(plain, "checkout", "-q", "main")
    (plain / "notes.txt").write_text("main moves on\n")
    git(plain, "add", "notes.txt")
    git(plain, "commit", "-q", "-m", "notes")
    git(plain, "checkout", "-q", "other")
    assert content(plain) == b"two\n"
    proc = git(plain, "rebase", "main")  # checks out main's tip first: v1's pointer
    assert "now d@v1" not in proc.stderr, proc.stderr
    assert content(plain) == b"two\n" and "clean" in run(plain, "status").stdout


def test_pre_push_needs_the_data_on_the_data_remote(plain: Path, tmp_path: Path) -> None:
    bare = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", str(bare))
    git(plain, "remote", "add", "origin", str(bare))
    run(plain, "remote", "add", "team", str(tmp_path / "team-store"))
    proc = git(plain, "push", "-q", "origin", "other", check=False)
    assert proc.returncode != 0 and "nothing has been pushed there yet" in proc.stderr
    run(plain, "push", "team", "d@v1")  # v1 only: the pushed pointer names v2
    proc = git(plain, "push", "-q", "origin", "other", check=False)
    assert proc.returncode != 0 and "names d@v2, which remote 'team' does not have" in proc.stderr
    run(plain, "push")
    git(plain, "push", "-q", "origin", "other")
    # a pack the pushed pointers need goes missing from the data remote: refused again
    b = Backend(str(tmp_path / "team-store"))
    for name in b.list("packs"):
        b.delete(f"packs/{name}")
    (plain / "notes.txt").write_text("x\n")
    git(plain, "add", "notes.txt")
    git(plain, "commit", "-q", "-m", "notes")
    proc = git(plain, "push", "-q", "origin", "other", check=False)
    assert proc.returncode != 0 and "has data in no pack" in proc.stderr, proc.stderr
    run(plain, "push")
    git(plain, "push", "-q", "origin", "other")


def test_install_keeps_a_hook_it_did_not_write(tmp_path: Path) -> None:
    root = tmp_path / "r"
    root.mkdir()
    git(root, "init", "-q")
    run(root, "init")
    hook = root / ".git" / "hooks" / "pre-commit"
    hook.write_text("#!/bin/sh\necho theirs ran >&2\nexit 0\n")
    hook.chmod(0o755)
    out = run(root, "install-hooks").stdout
    assert "installed pre-commit (the hook that was there runs first" in out
    (root / "x.txt").write_text("x")
    git(root, "add", "x.txt")
    proc = git(root, "commit", "-q", "-m", "x")
    assert "theirs ran" in proc.stderr
    out = run(root, "install-hooks", "--uninstall").stdout
    assert "removed pre-commit (the hook that was there before is back)" in out
    assert hook.read_text() == "#!/bin/sh\necho theirs ran >&2\nexit 0\n"
    assert not (root / ".git" / "hooks" / "post-checkout").exists()
