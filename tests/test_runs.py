"""Runs (issue 14, item 1): ``datavc run`` and ``datavc.track`` record every snapshot a run
read (workspace datasets checked clean, snapshots opened through ``datavc.open``, also in
child processes), the code, parameter files and environment, and commit the outputs as
versions that name the run and its inputs; the run record is written last, exclusively;
the lock file is stable text. Real git, real subprocesses."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import clean_environment, rand, run, write

from datavc.format.hashing import object_id
from datavc.format.run import RunRecord, decode_lock, decode_run, encode_lock
from datavc.store import versions
from datavc.store.runs import read_run, run_ids
from datavc.workspace.core import Workspace

PY = sys.executable
OUTS = ("--out", "out/a", "--out", "out/b", "--out", "out/c")
BIG_RUN = ("run", "--in", "raw", *OUTS, "--", PY, "big.py")

TRAIN = """\
import os, sys, subprocess
import datavc
a = datavc.open("tab@v1").cat_file("t.csv")
b = datavc.open("tab@latest").cat_file("t.csv")
# a child process opens a third snapshot, as a DataLoader worker would
subprocess.run([sys.executable, "-c", "import datavc; datavc.open('img@v1').ls('')"], check=True)
names = sorted(os.listdir("data/raw"))
raw = b"".join(open(os.path.join("data/raw", n), "rb").read() for n in names)
os.makedirs("models/m", exist_ok=True)
with open("models/m/w.bin", "wb") as f:
    f.write(a + b + raw + open("params.yaml", "rb").read())
"""


def git(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=check)


def dataset(root: Path, rel: str, files: dict[str, bytes], message: str = "data") -> None:
    for name, data in files.items():
        write(root / rel / name, data)
    run(root, "add", rel)
    run(root, "commit", "-m", message)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A git repo with datasets raw (v1), tab (v1, v2) and img (v1), a training script
    and a parameter file, all committed; its store beside it (a relative path in the
    config, so that a copy of the folder is a workspace with its own store). Built once:
    each test works on a copy."""
    base = tmp_path_factory.mktemp("runs")
    root = base / "repo"
    root.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        clean_environment(mp, base / "home")
        git(root, "init", "-q")
        run(root, "init", "--store", "../store")
        dataset(root, "data/raw", {"a.bin": rand("a", 3000), "b.bin": rand("b", 5000)})
        dataset(root, "data/tab", {"t.csv": b"x,y\n1,2\n"})
        dataset(root, "data/tab", {"t.csv": b"x,y\n1,2\n3,4\n"})
        dataset(root, "data/img", {"0.png": rand("img", 700)})
        (root / "train.py").write_text(TRAIN)
        (root / "params.yaml").write_text("lr: 0.1\nseed: 7\n")
        git(root, "add", "-A")
        git(root, "commit", "-q", "-m", "code and data")
    return base


@pytest.fixture
def repo(template: Path, tmp_path: Path) -> Path:
    shutil.copytree(template / "repo", tmp_path / "work" / "repo", symlinks=True)
    shutil.copytree(template / "store", tmp_path / "work" / "store", symlinks=True)
    return tmp_path / "work" / "repo"


def record_of(root: Path, name: str = "train") -> tuple[dict[str, str], RunRecord]:
    text = (root / "runs" / f"{name}.lock").read_text()
    lock = decode_lock(text, "lock")
    ws = Workspace(str(root))
    rec, digest = read_run(ws.store, lock.id)
    assert digest == lock.record
    return {"text": text}, rec


def test_a_run_records_every_input_by_snapshot_id_and_links_its_output(repo: Path) -> None:
    out = run(
        repo,
        "run",
        "--param",
        "params.yaml",
        "--out",
        "models/m",
        "--in",
        "raw",
        "--",
        PY,
        "train.py",
    ).stdout
    assert "wrote m@v1" in out and "lock  runs/train.lock" in out, out
    lock, rec = record_of(repo)
    ws = Workspace(str(repo))
    tab1, tab2 = (versions.read_version(ws.store, "tab", n) for n in (1, 2))
    raw1 = versions.read_version(ws.store, "raw", 1)
    img1 = versions.read_version(ws.store, "img", 1)
    got = {(i.name, i.version, i.tree, i.path, i.dirty) for i in rec.inputs}
    assert got == {
        ("raw", 1, raw1.tree, "data/raw", False),  # the workspace dataset, checked clean
        ("tab", 1, tab1.tree, None, False),  # datavc.open("tab@v1")
        ("tab", 2, tab2.tree, None, False),  # datavc.open("tab@latest"), resolved to v2
        ("img", 1, img1.tree, None, False),  # opened in a child process
    }
    # the output version names the run and, through it, every input
    m1 = versions.read_version(ws.store, "m", 1)
    assert m1.run == rec.id
    assert {(d.name, d.version, d.tree) for d in m1.derived_from} == {
        (n, v, t) for n, v, t, _, _ in got
    }
    assert [(o.name, o.version, o.tree, o.path) for o in rec.outputs] == [
        ("m", 1, m1.tree, "models/m")
    ]
    params = rec.params
    assert params[0].path == "params.yaml" and params[0].content == b"lr: 0.1\nseed: 7\n"
    assert params[0].hash == object_id(b"lr: 0.1\nseed: 7\n")
    # the lock restates the record, in a fixed order, and pins the record's bytes
    data = (Path(ws.config.store) / "runs" / f"{rec.id}.json").read_bytes()
    assert lock["text"] == encode_lock(decode_run(data, "x"), object_id(data))
    lines = lock["text"].splitlines()
    assert [ln.split(":")[0] for ln in lines[1:6]] == ["run", "id", "record", "command", "code"]
    assert lines[6:10] == sorted(lines[6:10]) and all(
        ln.startswith("input: ") for ln in lines[6:10]
    )


def test_the_lock_file_diffs_line_by_line_in_git(repo: Path) -> None:
    args = (
        "run",
        "--param",
        "params.yaml",
        "--out",
        "models/m",
        "--in",
        "raw",
        "--",
        PY,
        "train.py",
    )
    run(repo, *args)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "run 1")
    (repo / "params.yaml").write_text("lr: 0.2\nseed: 7\n")
    git(repo, "commit", "-q", "-am", "new lr")
    run(repo, *args)
    diff = git(repo, "diff", "--", "runs/train.lock").stdout
    changed = sorted(
        ln[1:].split(":")[0]
        for ln in diff.splitlines()
        if ln[:1] in "+-" and not ln.startswith(("+++", "---"))
    )
    # exactly: the run id, the record hash, the code commit, the param hash, the output
    assert changed == sorted(["id", "record", "code", "param", "output"] * 2), diff
    assert "output: m@v2" in diff


def test_a_dirty_input_is_refused_unless_allowed_and_then_recorded(repo: Path) -> None:
    write(repo / "data" / "raw" / "a.bin", b"edited")
    err = run(repo, "run", "--in", "raw", "--out", "models/m", "--", PY, "train.py", code=2).stderr
    assert "data/raw is modified" in err and "--allow-dirty" in err
    assert not (repo / "runs").exists() and not (repo / "models").exists()  # nothing ran
    run(repo, "run", "--allow-dirty", "--in", "raw", "--out", "models/m", "--", PY, "train.py")
    lock, rec = record_of(repo)
    raw = [i for i in rec.inputs if i.name == "raw"]
    assert raw[0].dirty and raw[0].version == 1
    assert " path=data/raw dirty" in lock["text"]


def test_code_state_ignores_datavc_files_and_hashes_real_changes(repo: Path) -> None:
    args = ("run", "--in", "raw", "--out", "models/m", "--", PY, "train.py")
    run(repo, *args)
    _, first = record_of(repo)
    head = git(repo, "rev-parse", "HEAD").stdout.strip()
    assert first.code.git_head == head and not first.code.dirty
    # the run changed runs/train.lock, .gitignore and a new pointer file: still clean
    assert git(repo, "status", "--porcelain").stdout.strip()
    run(repo, *args)
    _, second = record_of(repo)
    assert not second.code.dirty
    with open(repo / "train.py", "a") as f:
        f.write("# tuned\n")
    run(repo, *args)
    _, third = record_of(repo)
    assert third.code.dirty and third.code.diff
    run(repo, *args)
    _, fourth = record_of(repo)
    assert fourth.code.diff == third.code.diff
    (repo / "notes.txt").write_text("an untracked file is part of the code\n")
    run(repo, *args)
    _, fifth = record_of(repo)
    assert fifth.code.diff not in (None, third.code.diff)


def test_the_environment_is_recorded(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEED", "42")
    monkeypatch.setenv("CONTAINER_IMAGE", "registry.example/train@sha256:" + "ab" * 32)
    run(
        repo,
        "run",
        "--env",
        "SEED",
        "--env",
        "UNSET_VAR",
        "--in",
        "raw",
        "--out",
        "models/m",
        "--",
        PY,
        "train.py",
    )
    _, rec = record_of(repo)
    env = rec.environment
    from importlib.metadata import version

    assert env.packages["blake3"] == version("blake3")
    assert env.packages["fsspec"] == version("fsspec")
    assert env.python == ".".join(map(str, sys.version_info[:3]))
    assert env.env == {"SEED": "42"}
    assert env.container == {"CONTAINER_IMAGE": "registry.example/train@sha256:" + "ab" * 32}


def test_a_failed_command_commits_nothing_and_keeps_the_lock(repo: Path) -> None:
    run(repo, "run", "--in", "raw", "--out", "models/m", "--", PY, "train.py")
    before = (repo / "runs" / "train.lock").read_text()
    (repo / "fail.py").write_text(
        "import os\nos.makedirs('models/m', exist_ok=True)\n"
        "open('models/m/x', 'w').write('x')\nraise SystemExit(3)\n"
    )
    proc = run(
        repo,
        "run",
        "--name",
        "train",
        "--in",
        "raw",
        "--out",
        "models/m",
        "--",
        PY,
        "fail.py",
        code=3,
    )
    assert "exit 3" in proc.stdout and "no outputs committed" in proc.stdout
    assert (repo / "runs" / "train.lock").read_text() == before
    ws = Workspace(str(repo))
    assert versions.version_numbers(ws.store, "m") == [1]
    records = [read_run(ws.store, i)[0] for i in run_ids(ws.store)]
    assert [(r.exit, len(r.outputs)) for r in records] == [(0, 1), (3, 0)]


def test_commit_from_records_derived_from_links(repo: Path) -> None:
    write(repo / "data" / "feat" / "f.bin", b"features")
    run(repo, "add", "data/feat")
    run(repo, "commit", "-m", "features", "--from", "raw@v1", "--from", "tab")
    ws = Workspace(str(repo))
    rec = versions.read_version(ws.store, "feat", 1)
    assert rec.run is None
    assert [(d.name, d.version) for d in rec.derived_from] == [("raw", 1), ("tab", 2)]
    run(repo, "commit", "-m", "x", "--from", "nosuch@v1", code=3)


def test_track_in_python(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(repo)
    import datavc

    with datavc.track("inline", inputs=["raw"], outputs=["models/inline"]) as r:
        datavc.open("tab@v1").cat_file("t.csv")
        child = "import datavc; datavc.open('img@v1').ls('')"  # a worker process
        subprocess.run([PY, "-c", child], check=True)
        write(repo / "models" / "inline" / "o.bin", b"out")
    assert "DATAVC_RUN_LOG" not in os.environ
    ws = Workspace(str(repo))
    rec, _ = read_run(ws.store, r.id)
    assert {(i.name, i.version) for i in rec.inputs} == {("raw", 1), ("tab", 1), ("img", 1)}
    assert [o.label for o in rec.outputs] == ["inline@v1"]
    assert (repo / "runs" / "inline.lock").is_file()
    with pytest.raises(RuntimeError), datavc.track("broken", inputs=[]) as r2:
        raise RuntimeError("boom")
    failed, _ = read_run(ws.store, r2.id)
    assert failed.exit == 1 and not failed.outputs
    assert not (repo / "runs" / "broken.lock").exists()


def test_a_run_killed_while_committing_outputs_leaves_no_record_naming_a_missing_version(
    repo: Path,
) -> None:
    """SIGKILL as soon as the first output's version exists: a run record, if any, names
    only versions that exist; then the run can be made again."""
    (repo / "big.py").write_text(
        "import os, random\n"
        "for n, size in (('a', 10), ('b', 48 << 20), ('c', 10)):\n"
        "    os.makedirs(f'out/{n}', exist_ok=True)\n"
        "    open(f'out/{n}/x.bin', 'wb').write(random.Random(n).randbytes(size))\n"
    )
    store = Path(Workspace(str(repo)).config.store)
    proc = subprocess.Popen(
        [PY, "-m", "datavc", *BIG_RUN],
        cwd=repo,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    first = store / "versions" / "a" / "1.json"
    deadline = time.monotonic() + 120
    while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert first.exists()
    ws = Workspace(str(repo))
    for run_id in run_ids(ws.store):
        rec, _ = read_run(ws.store, run_id)
        for o in rec.outputs:
            assert versions.read_version(ws.store, o.name, o.version).tree == o.tree
    killed_run = versions.read_version(ws.store, "a", 1).run
    assert killed_run is not None
    if killed_run not in run_ids(ws.store):  # killed before its record: the usual case here
        assert not (repo / "runs" / "big.lock").exists()
    run(repo, *BIG_RUN)
    _, rec = record_of(repo, "big")
    assert sorted(o.name for o in rec.outputs) == ["a", "b", "c"]
    for o in rec.outputs:
        assert versions.read_version(ws.store, o.name, o.version).run == rec.id


def test_run_refuses_bad_arguments_with_one_line(repo: Path) -> None:
    run(repo, "run", "--", code=2)
    run(repo, "run", "--name", "../x", "--", PY, "-c", "pass", code=8)
    run(repo, "run", "--param", "nosuch.yaml", "--", PY, "-c", "pass", code=3)
    run(repo, "run", "--in", "raw", "--out", "data/raw", "--", PY, "-c", "pass", code=8)
    # an output inside a tracked dataset, or holding one: refused before the command runs
    marker = "import pathlib; pathlib.Path('ran').touch()"
    for out in ("data/raw/sub", "data"):
        err = run(repo, "run", "--out", out, "--", PY, "-c", marker, code=8).stderr
        assert "overlaps data/" in err, err
    assert not (repo / "ran").exists()
    run(repo, "run", "--in", "raw", "--out", "never", "--", PY, "-c", "pass", code=3)
    run(repo, "run", "--in", "raw", "--", "/no/such/program", code=2)


def test_the_run_log_is_read_as_untrusted(tmp_path: Path) -> None:
    from datavc.lineage.tracking import read_log

    log = tmp_path / "log"
    good = {"store": "/s", "name": "tab", "version": 1, "tree": "a" * 64}
    lines = [
        json.dumps(good),
        json.dumps(good),  # twice: once
        json.dumps({**good, "name": "../x"}),
        json.dumps({**good, "version": 0}),
        json.dumps({**good, "tree": "zz"}),
        json.dumps({**good, "version": 1e9}),
        "{not json",
        json.dumps({**good, "version": 2}),
    ]
    log.write_text("\n".join(lines) + "\n")
    got = read_log(str(log))
    assert [(s, i.name, i.version) for s, i in got] == [("/s", "tab", 1), ("/s", "tab", 2)]


def test_the_package_list_is_what_importlib_metadata_says() -> None:
    """The probe reads each distribution's name and version from its metadata headers;
    the answer is importlib.metadata's (parsed in full) for every installed one."""
    import importlib.metadata
    import re

    from datavc.lineage.environment import capture_environment

    expected: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"] if dist.metadata else None
        if name and dist.version:
            expected.setdefault(re.sub(r"[-_.]+", "-", name).lower(), dist.version)
    assert len(expected) > 20
    assert capture_environment([]).packages == expected
