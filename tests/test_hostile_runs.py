"""Hostile input to the reproducibility commands (issue 14): run records, version records,
lock files and arguments crafted to get around a guard, write where nothing may be
written, leak a secret, or make a walk cost far more than the records it reads.

Each test was written to fail before its fix. Real git, the real ``datavc`` command where
an exit code or an error line is the point, the library where a count is."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import run, write

from datavc.errors import StoreUnreachable
from datavc.format.hashing import ObjectId
from datavc.format.run import RunInput, RunOutput, decode_lock, decode_run, encode_run, run_key
from datavc.format.spec import parse_spec
from datavc.lineage import graph as graph_module
from datavc.lineage import reproduce as reproduce_module
from datavc.lineage.graph import lineage
from datavc.workspace.core import Workspace

PY = sys.executable
TRAIN = """\
import os
os.makedirs("models/m", exist_ok=True)
with open("models/m/w.bin", "wb") as f:
    f.write(open("data/raw/a.txt", "rb").read()[::-1])
"""


def git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, capture_output=True, check=True)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository whose run ``train`` read raw@v1 and wrote m@v1; lock committed."""
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q")
    run(root, "init", "--store", str(tmp_path / "store"))
    write(root / "data" / "raw" / "a.txt", b"raw data\n")
    run(root, "add", "data/raw")
    run(root, "commit", "-m", "raw")
    (root / "train.py").write_text(TRAIN)
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "code")
    run(root, "run", "--in", "raw", "--out", "models/m", "--", PY, "train.py")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "run")
    return root


def lock_id(repo: Path) -> str:
    return decode_lock((repo / "runs" / "train.lock").read_text(), "lock").id


def store_of(repo: Path) -> Path:
    return Path(Workspace(str(repo)).config.store)


def plant_record(repo: Path, new_id: str, **changes: object) -> None:
    """A copy of run ``train``'s record under another id, with ``changes``: a record that
    only the store holds (no lock file pins it)."""
    store = store_of(repo)
    rec = decode_run((store / run_key(lock_id(repo))).read_bytes(), "x")
    forged = dataclasses.replace(rec, id=new_id, **changes)  # type: ignore[arg-type]
    (store / run_key(new_id)).write_bytes(encode_run(forged))


def one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


# -- reproduce --check runs nothing a record from the store alone names ------------------


def test_check_runs_no_program_an_unpinned_record_names(repo: Path, tmp_path: Path) -> None:
    """A record no lock pins runs its command only with --yes. --check compares the
    environment: it must not start the record's "python" to ask it for its packages."""
    marker = tmp_path / "ran"
    write(
        repo / "tools" / "python",
        f'#!/bin/sh\ntouch "{marker}"\necho "{{}}"\n'.encode(),
        executable=True,
    )
    new_id = "01" + "a" * 30
    plant_record(repo, new_id, command=("tools/python", "train.py"))
    run(repo, "reproduce", new_id, code=2)  # refused without --yes, as designed
    assert not marker.exists()
    proc = run(repo, "reproduce", new_id, "--check", code=9)
    assert not marker.exists(), "reproduce --check ran a program named by the store"
    assert "drift: environment:" in proc.stdout and "--yes" in proc.stdout, proc.stdout
    # asked for (--yes), the interpreter is probed as before
    run(repo, "reproduce", new_id, "--check", "--yes", code=8)
    assert marker.exists()


# -- reproduce --into ------------------------------------------------------------------------


@pytest.mark.parametrize("into", [".git/scratch", ".GIT/scratch", ".datavc/scratch", "g/x"])
def test_into_inside_git_or_datavc_is_refused(repo: Path, into: str) -> None:
    os.symlink(".git", repo / "g")  # a way into .git that does not spell it
    before = sorted(p.name for p in (repo / ".git").iterdir())
    proc = run(repo, "reproduce", "train", "--into", into, code=2)
    assert "inside" in one_error_line(proc.stderr)
    assert sorted(p.name for p in (repo / ".git").iterdir()) == before
    assert not (repo / ".datavc" / "scratch").exists()


def test_into_a_file_is_a_usage_error(repo: Path, tmp_path: Path) -> None:
    target = tmp_path / "a-file"
    target.write_bytes(b"keep me")
    proc = run(repo, "reproduce", "train", "--into", str(target), code=2)
    assert "not a folder" in one_error_line(proc.stderr)
    assert target.read_bytes() == b"keep me"


# -- a store that stops answering ------------------------------------------------------------


def test_a_store_that_stops_answering_mid_reproduce_is_exit_5(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store goes away while the command runs: the outputs cannot be compared, which
    says nothing about them (exit 5, unreachable), not "not reproduced" (exit 9)."""
    gone = tmp_path / "gone"
    (repo / "train.py").write_text(TRAIN + f"open({str(gone)!r}, 'w').close()\n")
    git(repo, "commit", "-q", "-am", "the command marks when it ran")
    run(repo, "run", "--in", "raw", "--out", "models/m", "--", PY, "train.py")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "run again")
    gone.unlink()
    ws = Workspace(str(repo))
    real = reproduce_module.versions.read_entry

    def flaky(store: object, name: str, number: int) -> object:
        if gone.exists():
            raise StoreUnreachable(str(store_of(repo)), "connection reset")
        return real(store, name, number)  # type: ignore[arg-type]

    monkeypatch.setattr(reproduce_module.versions, "read_entry", flaky)
    monkeypatch.chdir(repo)
    with pytest.raises(StoreUnreachable):
        reproduce_module.reproduce(ws, "train")
    assert gone.exists()  # the store went away after the command ran, as intended


# -- a walk that costs what it reads ---------------------------------------------------------


def test_many_versions_of_one_run_are_walked_once(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """N versions that all name one run that read all N and wrote all N (a cycle, too):
    the walk up and down does work in proportion to the records (about N), not N * N."""
    n = 400
    store = store_of(repo)
    raw = json.loads((store / "versions" / "raw" / "1.json").read_bytes())
    shared = "02" + "b" * 30
    (store / "versions" / "q").mkdir()
    for number in range(1, n + 1):
        doc = {**raw, "name": "q", "version": number, "parent": None, "run": shared}
        (store / "versions" / "q" / f"{number}.json").write_text(json.dumps(doc))
    tree = ObjectId(raw["tree"])
    inputs = tuple(RunInput("q", v, tree) for v in range(1, n + 1))
    outputs = tuple(RunOutput("q", v, tree, f"out/{v}") for v in range(1, n + 1))
    plant_record(repo, shared, inputs=inputs, outputs=outputs)
    calls = 0
    real = graph_module.Lineage.add_edge

    def counted(self: graph_module.Lineage, source: str, target: str, kind: str) -> None:
        nonlocal calls
        calls += 1
        real(self, source, target, kind)

    monkeypatch.setattr(graph_module.Lineage, "add_edge", counted)
    ws = Workspace(str(repo))
    start = ws.resolve(parse_spec("q@v1"))
    for up, down in ((True, False), (False, True)):
        calls = 0
        graph = lineage(ws.store, start, up=up, down=down)
        assert len(graph.nodes) == n + 1
        assert calls <= 4 * n, (up, down, calls)


# -- secrets ---------------------------------------------------------------------------------


def test_a_store_url_with_credentials_is_recorded_without_them(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run that opened a snapshot from a store URL holding a password or a signed query
    records where it came from, but the secret goes neither into the run record (copied
    to every store) nor into the lock file (committed to git)."""
    import datavc
    from datavc.lineage import tracking

    monkeypatch.chdir(repo)
    url = "s3://AKIDEXAMPLE:wJalr%2FsEcReT@bucket/team?X-Amz-Signature=f00dfeed&p=1"
    tree = ObjectId("ab" * 32)
    with datavc.track("leak", inputs=[]) as active:
        tracking.note_open(url, "other", 2, tree)
    (found,) = active.inputs.values()
    assert found.store is not None and "bucket/team" in found.store
    lock = (repo / "runs" / "leak.lock").read_text()
    record = (store_of(repo) / run_key(decode_lock(lock, "lock").id)).read_text()
    for text in (lock, record, found.store):
        assert "sEcReT" not in text and "f00dfeed" not in text, text


# -- lock files ------------------------------------------------------------------------------


def test_a_lock_file_that_is_a_symlink_to_a_fifo_does_not_hang_audit(
    repo: Path, tmp_path: Path
) -> None:
    """git checks symlinks out: runs/train.lock may point at a named pipe, which no one
    writes to. The audit reads only a regular file as the lock (the others: skipped)."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    (repo / "runs" / "train.lock").unlink()
    os.symlink(fifo, repo / "runs" / "train.lock")
    proc = subprocess.run(
        [PY, "-m", "datavc", "audit", "m@v1"],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=60,  # a guard against the hang, not a measurement
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert "runs/train.lock is not a regular file" in proc.stdout, proc.stdout


def test_run_writes_no_lock_file_through_a_symlinked_runs_folder(
    repo: Path, tmp_path: Path
) -> None:
    """``runs`` may arrive with git as a symbolic link to anywhere: the lock file is not
    written through it, and the run is refused before its command starts."""
    outside = tmp_path / "outside"
    outside.mkdir()
    for p in (repo / "runs").iterdir():
        p.unlink()
    (repo / "runs").rmdir()
    os.symlink(outside, repo / "runs")
    marker = tmp_path / "ran"
    proc = run(repo, "run", "--in", "raw", "--", PY, "-c", f"open({str(marker)!r}, 'w')", code=8)
    assert "symbolic link" in one_error_line(proc.stderr)
    assert list(outside.iterdir()) == []
    assert not marker.exists()


# -- the audit report, in Markdown -----------------------------------------------------------


def test_audit_markdown_escapes_every_record_text(repo: Path) -> None:
    """A version record's ``time`` is free text (docs/FORMAT.md): it goes into a table
    cell escaped like the author and message. A code span holding backtick runs (a
    command may hold any) is fenced by a longer run, so it cannot end early."""
    from datavc.lineage.audit import AuditReport
    from datavc.lineage.audit_report import code, render_markdown
    from datavc.lineage.graph import Lineage, VersionNode

    ws = Workspace(str(repo))
    rec = ws.resolve(parse_spec("raw@v1"))
    hostile = dataclasses.replace(rec, time="2026 | x | [click](http://e.invalid) <b>")
    node = VersionNode(rec.name, rec.version, rec.tree, None, hostile)
    graph = Lineage(node.key, {node.key: node})
    lines = render_markdown(AuditReport("raw@v1", rec.tree, graph))
    (row,) = [line for line in lines if line.startswith("| raw@v1 |")]
    assert row.replace("\\|", "").count("|") == 7, row
    assert "[click]" not in row and "<b>" not in row, row
    for text in ("a `` ] b", "``", "x ` y ```z"):
        span = code(text)
        fence = len(span) - len(span.lstrip("`"))
        inner = {len(m) for m in re.findall("`+", text)}
        assert fence not in inner and span.endswith("`" * fence), (text, span)
        assert span[fence:-fence].strip() == text.strip()
