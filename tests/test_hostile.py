"""Hostile input from Git: a pointer file's own path is as untrusted as its content.

A pointer file arrives with ``git pull`` from anyone with push access. Its path names the
dataset's folder, so a pointer named ``.git.datavc`` would have checkout write a snapshot
into ``.git`` (hooks: code run on the next commit) and ``.datavc.datavc`` into the embedded
store. Each case runs the commands that act on datasets and checks that they fail with one
error line (exit 8) naming the pointer file, that nothing under ``.git`` or the store
changed, and that a sentinel file outside the workspace is untouched.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

TIMEOUT = 120
HOOK = b"#!/bin/sh\necho owned > ../../owned\n"


def run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "datavc", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def ok(cwd: Path, *args: str) -> None:
    done = run(cwd, *args)
    assert done.returncode == 0, (args, done.stdout, done.stderr)


def digest_of(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (symlinks by their target), by path: its content's hash."""
    out: dict[str, str] = {}
    for current, _dirs, files in os.walk(folder):
        for f in files:
            p = Path(current, f)
            data = os.readlink(p).encode() if p.is_symlink() else p.read_bytes()
            out[str(p.relative_to(folder))] = hashlib.sha256(data).hexdigest()
    return out


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repo whose store holds dataset ``payload``: a folder ``hooks/pre-commit``, the shape
    of ``.git/hooks``. Its pointer file and folder are gone: a hostile pointer will name it."""
    root = tmp_path / "repo"
    hook = root / "payload" / "hooks" / "pre-commit"
    hook.parent.mkdir(parents=True)
    hook.write_bytes(HOOK)
    hook.chmod(0o755)
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    ok(root, "init")
    ok(root, "add", "payload")
    ok(root, "commit", "-m", "payload")
    (tmp_path / "sentinel.txt").write_bytes(b"untouched\n")
    return root


def state(repo: Path) -> tuple[dict[str, str], dict[str, str], bytes]:
    return (
        digest_of(repo / ".git"),
        digest_of(repo / ".datavc" / "store"),
        (repo.parent / "sentinel.txt").read_bytes(),
    )


@pytest.mark.parametrize(
    "pointer",
    [
        ".git.datavc",
        ".GIT.datavc",
        ".Git.datavc",
        ".datavc.datavc",
        ".DataVC.datavc",
        "sub/.git.datavc",
        "a/b/.DATAVC.datavc",
    ],
)
@pytest.mark.parametrize(
    "command",
    [["checkout", "--force"], ["checkout"], ["checkout", "--force", "payload@v1"], ["status"]],
)
def test_a_pointer_file_cannot_make_datavc_write_into_git_or_the_store(
    repo: Path, pointer: str, command: list[str]
) -> None:
    text = (repo / "payload.datavc").read_text()
    (repo / "payload.datavc").unlink()
    shutil.rmtree(repo / "payload")
    (repo / pointer).parent.mkdir(parents=True, exist_ok=True)
    (repo / pointer).write_text(text)
    before = state(repo)
    done = run(repo, *command)
    assert done.returncode == 8, (done.stdout, done.stderr)
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("datavc: error: unsafe path"), done.stderr
    assert repr(pointer) in lines[0]  # names the pointer file
    assert "Traceback" not in done.stderr
    assert state(repo) == before
    assert not (repo.parent / "owned").exists()
    assert not (repo / pointer.removesuffix(".datavc") / "hooks" / "pre-commit").exists()


def test_staged_state_cannot_name_git_either(repo: Path) -> None:
    """The staged state under ``.datavc/state`` is read with the same rules: a damaged or
    planted one that names ``.git`` stops every command that reads the datasets."""
    (repo / "payload" / "hooks" / "post-commit").write_bytes(HOOK)
    ok(repo, "add", "payload")
    staged = repo / ".datavc" / "state" / "staged" / "payload.json"
    doc = json.loads(staged.read_text())
    doc["path"] = ".git"
    staged.write_text(json.dumps(doc))
    shutil.rmtree(repo / "payload")
    before = state(repo)
    for command in (["checkout", "--force"], ["commit", "-m", "x"], ["status"]):
        done = run(repo, *command)
        assert done.returncode == 8, (command, done.stdout, done.stderr)
        assert done.stderr.startswith("datavc: error: unsafe path") and str(staged) in done.stderr
        assert state(repo) == before


@pytest.mark.parametrize("path", [".git", ".GIT/x", "data/.Git/y", "data/.DATAVC/z"])
def test_a_typed_path_inside_git_or_datavc_is_refused_at_any_depth(repo: Path, path: str) -> None:
    target = repo / path
    target.mkdir(parents=True, exist_ok=True)
    (target / "f.bin").write_bytes(b"x")
    before = state(repo)
    done = run(repo, "add", path)
    assert done.returncode == 8, (done.stdout, done.stderr)
    assert len(done.stderr.splitlines()) == 1
    assert state(repo)[1:] == before[1:]  # the store and the sentinel


def git(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)


@pytest.mark.parametrize("first_line", [True, False])
def test_a_pointer_file_with_conflict_markers_is_an_error_naming_it(
    tmp_path: Path, first_line: bool
) -> None:
    """Two branches commit different versions; the merge leaves git's markers in the
    pointer file. (Before, markers on its first line hid the header: the dataset was skipped,
    ``status`` said "no tracked datasets" and ``checkout`` exited 0.)"""
    root = tmp_path / "repo"
    (root / "data").mkdir(parents=True)
    (root / "data" / "a.txt").write_bytes(b"base\n")
    git(root, "init", "-q", "-b", "main")
    ok(root, "init")
    ok(root, "add", "data")
    ok(root, "commit", "-m", "v1")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "v1")
    for branch, content in (("other", b"theirs\n"), ("main", b"ours\n")):
        if branch == "other":
            git(root, "checkout", "-q", "-b", "other")
        else:
            git(root, "checkout", "-q", "main")
        (root / "data" / "a.txt").write_bytes(content)
        ok(root, "add", "data")
        ok(root, "commit", "-m", branch)
        git(root, "commit", "-q", "-am", branch)
    assert git(root, "merge", "-q", "other").returncode != 0  # a conflict, as wanted
    pointer = root / "data.datavc"
    text = pointer.read_text()
    assert "<<<<<<<" in text
    if first_line:  # the whole file in conflict: the marker comes before the header
        lines = [line for line in text.splitlines() if not line.startswith("#")]
        pointer.write_text("\n".join(["<<<<<<< HEAD", *lines]) + "\n")
    number = next(
        i for i, line in enumerate(pointer.read_text().splitlines(), 1) if line[:7] == "<<<<<<<"
    )
    advice = (
        f"data.datavc has a merge conflict (line {number}): one side names data@v3, the other "
        "data@v2: pick one with 'datavc checkout data@v3' or 'datavc checkout data@v2' (it "
        "rewrites the pointer file), then git add data.datavc"
    )
    plain = (
        f"data.datavc has merge-conflict markers (line {number}): keep the lines of the "
        "version you want, delete the markers, then run 'datavc checkout'"
    )
    if not first_line:  # each side names a version: status explains it among the states
        status = run(root, "status")
        assert status.returncode == 0 and status.stdout == f"data (data): conflict: {advice}\n"
    commands = [["checkout"], ["checkout", "--force"], ["commit", "-a", "-m", "x"]]
    for command in commands if not first_line else [["status"], *commands]:
        done = run(root, *command)
        assert done.returncode == 8, (command, done.stdout, done.stderr)
        assert done.stderr.splitlines() == [f"datavc: error: {plain if first_line else advice}"]
    assert (root / "data" / "a.txt").read_bytes() == b"ours\n"
    if not first_line:  # a conflict whose sides do not both name a version: plain advice
        pointer.write_text(pointer.read_text().replace("version: 2", "version: two"))
        done = run(root, "status")
        assert done.returncode == 8 and done.stderr.splitlines() == [f"datavc: error: {plain}"]


HOSTILE = "\x1b]0;owned\x07\x1b[2J\r\u202e"  # set the title, clear the screen, RTL override


def test_what_a_store_says_reaches_the_terminal_escaped(tmp_path: Path) -> None:
    """File names, authors and messages come from trees and records that anyone with write
    access to the store may have written: every command prints them with control
    characters escaped, one line per item."""
    root = tmp_path / "repo"
    names = [f"a{HOSTILE}b.txt", "new\nline.txt", "plain.txt"]
    for i, name in enumerate(names):
        (root / "data" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "data" / name).write_bytes(b"%d\n" % i)
    git(root, "init", "-q")
    git(root, "config", "user.name", f"Mallory{HOSTILE}")
    ok(root, "init")
    ok(root, "add", "data")
    ok(root, "commit", "-m", f"v1{HOSTILE}\nsecond line")
    (root / "data" / names[0]).write_bytes(b"changed\n")
    outputs = {}
    for command in (["status"], ["ls", "data"], ["log", "data"], ["diff", "data"]):
        done = run(root, *command)
        assert done.returncode == 0, (command, done.stderr)
        outputs[" ".join(command)] = done.stdout
    ok(root, "add", "data")
    ok(root, "commit", "-m", "v2")
    outputs["diff v1 v2"] = run(root, "diff", "data@v1", "data@v2").stdout
    outputs["checkout"] = run(root, "checkout", "data@v1").stdout
    missing = run(root, "add", f"gone{HOSTILE}")
    assert missing.returncode == 3
    outputs["error"] = missing.stderr
    for command, text in outputs.items():
        for bad in ("\x1b", "\x07", "\r", "\u202e"):
            assert bad not in text, (command, text)
    shown = "\\x1b]0;owned\\x07\\x1b[2J\\x0d\\u202e"  # HOSTILE, escaped
    assert shown in outputs["ls data"]
    assert len(outputs["ls data"].splitlines()) == 1 + len(names)  # a header, a line a file
    assert "new\\x0aline.txt" in outputs["ls data"]
    log = outputs["log data"].splitlines()
    assert (
        len(log) == 3 and log[2] == "    v1\\x1b]0;owned\\x07\\x1b[2J\\x0d\\u202e\\x0asecond line"
    )
    assert "Mallory\\x1b]0;owned" in log[0]
    assert outputs["diff v1 v2"].splitlines()[1] == f"M a{shown}b.txt"
    assert len(outputs["error"].splitlines()) == 1


SECRET = "se/cr+et"  # an AWS-style secret: it may hold "/" and "+"


@pytest.mark.parametrize(
    "url",
    [
        f"s3://AKIAEXAMPLE:{SECRET}@bucket/store",
        f"https://host.example/store?X-Amz-Credential=AKIAEXAMPLE&X-Amz-Signature={SECRET}",
        f"az://container/store?sv=2024&sig={SECRET}",
        f"memory://user:{SECRET}@x/store",
    ],
)
def test_init_refuses_credentials_in_the_store_url(tmp_path: Path, url: str) -> None:
    """The config is committed: a store URL with a password or a signature in it is refused
    before anything is written, and the message says where credentials go."""
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q")
    done = run(root, "init", "--store", url)
    assert done.returncode == 8, (done.stdout, done.stderr)
    assert len(done.stderr.splitlines()) == 1 and "config.local.toml" in done.stderr
    assert SECRET not in done.stdout + done.stderr
    assert not (root / ".datavc").exists()


def test_a_store_url_with_credentials_is_never_printed(tmp_path: Path) -> None:
    """A URL from the environment (or a hand-written config) may hold credentials: error
    messages show it with them replaced by ``***``."""
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q")
    ok(root, "init")
    cases = {
        f"memory://AKIAEXAMPLE:{SECRET}@nowhere/store": (4, "memory://AKIAEXAMPLE:***@nowhere"),
        f"s3://AKIAEXAMPLE:{SECRET}@bucket/store": (5, "s3://AKIAEXAMPLE:***@bucket/store"),
        f"s3://bucket/store?X-Amz-Signature={SECRET}": (5, "X-Amz-Signature=***"),
    }
    for url, (code, shown) in cases.items():
        env = {**os.environ, "DATAVC_STORE": url, "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}
        env.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
        done = subprocess.run(
            [sys.executable, "-m", "datavc", "log", "ds"],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
        assert done.returncode == code, (url, done.stderr)
        assert shown in done.stderr and SECRET not in done.stdout + done.stderr, done.stderr
