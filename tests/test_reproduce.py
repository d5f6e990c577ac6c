"""``datavc reproduce`` (issue 14, item 2): on another clone, and from the store alone, the
recorded inputs are materialized byte-exact and a deterministic run gives the same output
snapshot; drift in parameter files, package versions and code is reported field by field.
Real git, real subprocesses, a fake installed distribution whose version changes."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import clean_environment, rand, run, tree_state, write

from datavc.format.run import decode_lock, decode_run, encode_run
from datavc.workspace.core import Workspace

PY = sys.executable

TRAIN = """\
import hashlib, json, os
import datavc
tab = datavc.open("tab@latest").cat_file("t.csv")
h = hashlib.sha256(tab + open("params.yaml", "rb").read())
for top, dirs, files in sorted(os.walk("data/raw")):
    for name in sorted(files):
        h.update(open(os.path.join(top, name), "rb").read())
os.makedirs("models/m", exist_ok=True)
open("models/m/model.bin", "wb").write(h.digest() * 1000)
json.dump({"rows": tab.count(b"\\n")}, open("models/m/meta.json", "w"), sort_keys=True)
"""


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True)
    return done.stdout


def fake_distribution(site: Path, version: str) -> Path:
    """A folder that, on PYTHONPATH, makes ``datavc-demo-pkg`` appear installed."""
    info = site / f"datavc_demo_pkg-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: datavc-demo-pkg\nVersion: {version}\n"
    )
    return site


def commit_data(root: Path, rel: str, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        write(root / rel / name, data)
    run(root, "add", rel)
    run(root, "commit", "-m", f"{rel}")


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repo whose run 'train' read raw@v1 (workspace) and tab@latest (= v2, opened), with
    datavc-demo-pkg 1.0 installed; everything committed to git; its store beside it (a
    relative path in the config). Built once: each test works on a copy."""
    base = tmp_path_factory.mktemp("reproduce")
    root = base / "origin"
    root.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        clean_environment(mp, base / "home")
        mp.setenv("PYTHONPATH", str(fake_distribution(base / "site1", "1.0")))
        git(root, "init", "-q")
        run(root, "init", "--store", "../store")
        commit_data(root, "data/raw", {"a.bin": rand("a", 40_000), "sub/b.bin": rand("b", 300)})
        commit_data(root, "data/tab", {"t.csv": b"x\n1\n"})
        commit_data(root, "data/tab", {"t.csv": b"x\n1\n2\n"})
        (root / "train.py").write_text(TRAIN)
        (root / "params.yaml").write_text("epochs: 3\n")
        git(root, "add", "-A")
        git(root, "commit", "-q", "-m", "code")
        run(
            root,
            "run",
            "--param",
            "params.yaml",
            "--in",
            "raw",
            "--out",
            "models/m",
            "--",
            PY,
            "train.py",
        )
        git(root, "add", "-A")
        git(root, "commit", "-q", "-m", "run train")
    return base


@pytest.fixture
def origin(template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for part in ("origin", "store", "site1"):
        shutil.copytree(template / part, tmp_path / part, symlinks=True)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "site1"))
    return tmp_path / "origin"


def clone(origin: Path, where: Path) -> Path:
    git(origin.parent, "clone", "-q", str(origin), str(where))
    return where


def test_reproduce_in_another_clone_is_bit_identical(origin: Path, tmp_path: Path) -> None:
    other = clone(origin, tmp_path / "other")
    scratch = tmp_path / "scratch"
    out = run(other, "reproduce", "train", "--into", str(scratch)).stdout
    assert "drift: none" in out, out
    assert "output m@v1: bit-identical" in out and "reproduced:" in out
    # the inputs were materialized byte-exact, the output rebuilt byte-exact
    assert tree_state(scratch / "data" / "raw") == tree_state(origin / "data" / "raw")
    assert tree_state(scratch / "models" / "m") == tree_state(origin / "models" / "m")
    # latest moves on; the rerun still reads the version the run opened (tab@v2)
    commit_data(origin, "data/tab", {"t.csv": b"x\n1\n2\n3\n"})
    out = run(other, "reproduce", "train").stdout
    assert "bit-identical" in out and "removed" in out, out


def test_the_same_snapshot_id_when_added_again(origin: Path, tmp_path: Path) -> None:
    """A reproduced output, added to the store, is the recorded snapshot (same id)."""
    scratch = tmp_path / "scratch"
    run(origin, "reproduce", "train", "--into", str(scratch))
    lock = decode_lock((origin / "runs" / "train.lock").read_text(), "lock")
    ws = Workspace(str(origin))
    from datavc.store.runs import read_run

    rec, _ = read_run(ws.store, lock.id)
    recorded = rec.outputs[0].tree
    (origin / "models" / "m").rename(origin / "models" / "old")
    (scratch / "models" / "m").rename(origin / "models" / "m")
    out = run(origin, "add", "models/m").stdout
    assert "0 added, 0 modified, 0 removed" in out, out
    text = (origin / "models" / "m.datavc").read_text()
    assert f"snapshot: {recorded}" in text


def test_reproduce_from_the_store_alone(origin: Path, tmp_path: Path) -> None:
    """No pointer files and no lock in the clone (no git history of the data): the run id
    is enough, as a prefix too."""
    run_id = decode_lock((origin / "runs" / "train.lock").read_text(), "lock").id
    other = clone(origin, tmp_path / "other")
    git(other, "rm", "-q", "-r", "runs", "data/raw.datavc", "data/tab.datavc", "models/m.datavc")
    git(other, "commit", "-q", "-m", "no data history")
    run(other, "reproduce", "train", code=3)  # no lock by that name now
    # the record comes from the store alone: its command runs only when asked to
    err = run(other, "reproduce", run_id[:10], code=2).stderr
    assert "not pinned by a lock file" in err and "train.py" in err and "--yes" in err
    assert "no drift" in run(other, "reproduce", run_id, "--check").stdout
    out = run(other, "reproduce", run_id[:10], "--yes").stdout
    assert "bit-identical" in out, out
    assert "bit-identical" in run(other, "reproduce", run_id, "--yes").stdout
    # in the origin, runs/train.lock pins it: a run id is enough there
    assert "bit-identical" in run(origin, "reproduce", run_id).stdout


def test_drift_is_reported_field_by_field(
    origin: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert "no drift" in run(origin, "reproduce", "train", "--check").stdout
    # a package upgraded
    monkeypatch.setenv("PYTHONPATH", str(fake_distribution(tmp_path / "site2", "1.1")))
    proc = run(origin, "reproduce", "train", "--check", code=9)
    assert "drift: package datavc-demo-pkg: 1.0 -> 1.1" in proc.stdout, proc.stdout
    assert "1 fields drifted" in proc.stderr
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "site1"))
    # a changed parameter file
    (origin / "params.yaml").write_text("epochs: 4\n")
    proc = run(origin, "reproduce", "train", "--check", code=9)
    assert "drift: param params.yaml:" in proc.stdout, proc.stdout
    git(origin, "checkout", "--", "params.yaml")
    # a dirty tree: the code differs from the recorded commit
    with open(origin / "train.py", "a") as f:
        f.write("# changed\n")
    proc = run(origin, "reproduce", "train", "--check", code=9)
    assert "drift: code: commit" in proc.stdout and "1 files differ: train.py" in proc.stdout
    # the scratch rerun uses the recorded commit's code: still bit-identical
    assert "bit-identical" in run(origin, "reproduce", "train").stdout
    git(origin, "checkout", "--", "train.py")
    assert "no drift" in run(origin, "reproduce", "train", "--check").stdout


def test_a_nondeterministic_run_is_not_reproduced(origin: Path) -> None:
    (origin / "noisy.py").write_text(
        "import os, time\nos.makedirs('out', exist_ok=True)\n"
        "open('out/t.txt', 'w').write(str(time.time_ns()))\nopen('out/k', 'w').write('k')\n"
    )
    git(origin, "add", "-A")
    git(origin, "commit", "-q", "-m", "noisy")
    run(origin, "run", "--in", "raw", "--out", "out", "--", PY, "noisy.py")
    proc = run(origin, "reproduce", "noisy", code=9)
    assert "output out@v1: differs: 1 different (t.txt)" in proc.stdout, proc.stdout
    assert "was not reproduced" in proc.stderr


def test_in_place_checks_the_inputs_out_at_their_versions(origin: Path) -> None:
    commit_data(origin, "data/raw", {"a.bin": b"raw v2"})
    out = run(origin, "reproduce", "train", "--in-place").stdout
    assert "bit-identical" in out, out
    assert "checked out raw@v1 (its pointer file now names it)" in out
    assert "version: 1" in (origin / "data" / "raw.datavc").read_text()
    assert (origin / "data" / "raw" / "a.bin").read_bytes() == rand("a", 40_000)


def test_a_record_that_does_not_match_its_lock_is_refused(origin: Path) -> None:
    lock = decode_lock((origin / "runs" / "train.lock").read_text(), "lock")
    ws = Workspace(str(origin))
    key = Path(ws.config.store) / "runs" / f"{lock.id}.json"
    rec = decode_run(key.read_bytes(), "x")
    from dataclasses import replace

    key.write_bytes(encode_run(replace(rec, command=(PY, "other.py"))))
    proc = run(origin, "reproduce", "train", code=8)
    assert "does not match runs/train.lock" in proc.stderr.replace(str(origin) + "/", "")


def test_an_input_gone_from_the_store_stops_the_reproduction(origin: Path) -> None:
    ws = Workspace(str(origin))
    (Path(ws.config.store) / "versions" / "tab" / "2.json").unlink()
    proc = run(origin, "reproduce", "train", code=3)
    assert "tab@v2 is not in the store" in proc.stdout + proc.stderr
