"""Run records in the store machinery: push, fetch and pull copy them after the versions
(only those whose outputs the destination holds, byte for byte, exclusively; other bytes
under the same id are a divergence); fsck parses them and checks their outputs and inputs;
forget refuses a version a run read; gc leaves them alone.

Runs are made by ``datavc run`` in subprocesses (the command line tests) or by
:func:`datavc.lineage.run.run_command` in this process (the store-level tests), in real git
repositories, on local stores; push and pull also on S3 through the moto server.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
import uuid
from pathlib import Path

import pytest
from helpers import rand, write
from test_cli import assert_error, git, run

from datavc.errors import Diverged, UsageError
from datavc.format.hashing import ObjectId, object_id
from datavc.format.run import RunInput, RunRecord, decode_lock, encode_run, run_key
from datavc.lineage.run import RunOptions, run_command
from datavc.store.backend import Backend
from datavc.store.check import fsck
from datavc.store.chunkstore import ChunkStore
from datavc.store.gc import gc
from datavc.store.runs import read_run, run_ids
from datavc.store.sync import copy_versions
from datavc.workspace.core import Workspace
from datavc.workspace.initialize import init_workspace

# The command a run runs: writes the folder "model" from "raw" (so it reads its input).
TRAIN = (
    "import pathlib, hashlib; out = pathlib.Path('model'); out.mkdir(exist_ok=True); "
    "data = b''.join(p.read_bytes() for p in sorted(pathlib.Path('raw').rglob('*.bin'))); "
    "(out / 'weights.bin').write_bytes(hashlib.sha256(data).digest() * 1000)"
)
OTHER_TREE = ObjectId("ab" * 32)


def store_at(url: str) -> ChunkStore:
    return ChunkStore.open(Backend(url))


def record_bytes(store: ChunkStore, run_id: str) -> bytes:
    return store.backend.read(run_key(run_id))


# -- a workspace with a run, in this process -------------------------------------------


@pytest.fixture
def trained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Workspace, RunRecord]:
    """A workspace whose store holds raw@v1 and the run "train" that read it and wrote
    model@v1."""
    root = tmp_path / "ws"
    root.mkdir()
    git(root, "init", "-q")
    init_workspace(str(root), None)
    ws = Workspace(str(root))
    write(root / "raw" / "a.bin", rand("raw-a", 50_000))
    write(root / "raw" / "b.bin", rand("raw-b", 20_000))
    ws.add(str(root / "raw"))
    ws.commit([], "raw v1")
    monkeypatch.chdir(root)
    options = RunOptions(name="train", outputs=("model",))
    code, result = run_command(ws, [sys.executable, "-c", TRAIN], options)
    assert code == 0
    assert [o.label for o in result.record.outputs] == ["model@v1"]
    assert [i.label for i in result.record.inputs] == ["raw@v1"]
    return ws, result.record


def forged(rec: RunRecord, **changes: object) -> RunRecord:
    """Another run record like ``rec``: a new run id, the fields given changed."""
    return dataclasses.replace(rec, id=uuid.uuid4().hex, **changes)  # type: ignore[arg-type]


def put_run(store: ChunkStore, rec: RunRecord) -> str:
    store.backend.write(run_key(rec.id), encode_run(rec))
    return f"runs/{rec.id}.json"


# -- push, fetch, pull --------------------------------------------------------------------


def test_a_run_moves_with_its_outputs_byte_for_byte(
    trained: tuple[Workspace, RunRecord], tmp_path: Path
) -> None:
    """Copying the input alone leaves the run behind (its output is not there); copying
    the output then carries the record, the source's bytes; a second copy finds it there;
    the destination then checks out whole."""
    ws, rec = trained
    dst = store_at(str(tmp_path / "remote"))
    first = copy_versions(ws.store, dst, [("raw", 1)])
    assert (first.runs_copied, first.runs_not_copied) == (0, 1)
    assert run_ids(dst) == []
    second = copy_versions(ws.store, dst, [("raw", 1), ("model", 1)])
    assert second.copied == ["model@v1"]
    assert (second.runs_copied, second.runs_present) == (1, 0)
    assert second.as_json()["runs_copied"] == 1
    assert record_bytes(dst, rec.id) == record_bytes(ws.store, rec.id)
    assert read_run(dst, rec.id) == read_run(ws.store, rec.id)
    third = copy_versions(ws.store, dst, [("model", 1)])
    assert (third.runs_copied, third.runs_present) == (0, 1)
    report = fsck(dst)
    assert report.ok, [p.line() for p in report.problems.values()]
    assert report.counts["runs"] == 1


def test_a_run_whose_outputs_are_there_already_is_copied(
    trained: tuple[Workspace, RunRecord], tmp_path: Path
) -> None:
    """Outputs copied before (by a datavc that did not copy runs, here: the record removed
    after the copy), then a copy of the input alone: the run is copied now."""
    ws, rec = trained
    remote = tmp_path / "remote"
    copy_versions(ws.store, store_at(str(remote)), [("model", 1)])
    (remote / run_key(rec.id)).unlink()
    report = copy_versions(ws.store, store_at(str(remote)), [("raw", 1)])
    assert report.copied == ["raw@v1"]
    assert report.runs_copied == 1
    assert (remote / run_key(rec.id)).read_bytes() == record_bytes(ws.store, rec.id)


def test_a_run_record_with_other_bytes_is_a_divergence(
    trained: tuple[Workspace, RunRecord], tmp_path: Path
) -> None:
    """The destination holds other bytes under the run's id: the copy fails (Diverged,
    exit 7) naming the run, leaves that record as it is and still copies another run."""
    ws, rec = trained
    other = forged(rec, author="someone else")
    put_run(ws.store, other)
    remote = tmp_path / "remote"
    dst = store_at(str(remote))
    copy_versions(ws.store, dst, [("raw", 1)])
    theirs = encode_run(dataclasses.replace(rec, author="a forger"))
    (remote / "runs").mkdir()
    (remote / run_key(rec.id)).write_bytes(theirs)
    with pytest.raises(Diverged) as caught:
        copy_versions(ws.store, store_at(str(remote)), [("raw", 1), ("model", 1)])
    assert rec.id in str(caught.value) and caught.value.exit_code == 7
    assert (remote / run_key(rec.id)).read_bytes() == theirs
    assert record_bytes(dst, other.id) == record_bytes(ws.store, other.id)


def test_a_damaged_source_record_is_not_copied(
    trained: tuple[Workspace, RunRecord], tmp_path: Path
) -> None:
    """A source run record that does not parse is left behind with a note; the sound one
    is copied."""
    ws, rec = trained
    bad = forged(rec)
    key = put_run(ws.store, bad)
    data = record_bytes(ws.store, bad.id)
    ws.store.backend.replace(key, data.replace(b'"format": 1', b'"format": 9'))
    dst = store_at(str(tmp_path / "remote"))
    report = copy_versions(ws.store, dst, [("raw", 1), ("model", 1)])
    assert report.runs_copied == 1
    assert run_ids(dst) == [rec.id]
    assert any(n.startswith(f"{key} not copied: corrupt object") for n in report.notes)


def _bump(repo: Path) -> None:
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "step")


def test_push_and_pull_carry_run_records(tmp_path: Path, shared_store_url: str) -> None:
    """``datavc run`` in one clone, then push (first the input alone: no run record moves;
    then everything), and pull into a fresh clone: the clone's store holds the identical
    run record bytes; push and pull report the counts as text and JSON."""
    a = tmp_path / "a"
    a.mkdir()
    git(a, "init", "-q")
    run(a, "init")
    write(a / "raw" / "a.bin", rand("cli-raw", 40_000))
    run(a, "add", "raw")
    run(a, "commit", "-m", "raw")
    run(a, "run", "--name", "train", "--out", "model", "--", sys.executable, "-c", TRAIN)
    run_id = decode_lock((a / "runs" / "train.lock").read_text(), "train.lock").id
    run(a, "remote", "add", "origin", shared_store_url)
    _bump(a)
    only_input = json.loads(run(a, "push", "origin", "raw@v1", "--json").stdout)
    assert (only_input["runs_copied"], only_input["runs_not_copied"]) == (0, 1)
    assert run_ids(store_at(shared_store_url)) == []
    pushed = run(a, "push").stdout
    assert "1 run records copied" in pushed, pushed

    b = tmp_path / "b"
    git(tmp_path, "clone", "-q", str(a), str(b))
    pulled = json.loads(run(b, "pull", "--json").stdout)
    assert pulled["runs_copied"] == 1
    assert sorted(pulled["versions_copied"]) == ["model@v1", "raw@v1"]  # type: ignore[arg-type]
    mine = store_at(str(a / ".datavc" / "store"))
    theirs = store_at(str(b / ".datavc" / "store"))
    assert record_bytes(theirs, run_id) == record_bytes(mine, run_id)
    assert read_run(theirs, run_id) == read_run(mine, run_id)
    lock = decode_lock((b / "runs" / "train.lock").read_text(), "train.lock")
    assert lock.record == object_id(record_bytes(theirs, run_id))
    again = run(b, "pull").stdout
    assert "0 run records copied" in again, again


# -- fsck ------------------------------------------------------------------------------------


def test_fsck_checks_run_records(trained: tuple[Workspace, RunRecord]) -> None:
    """A sound run passes; a damaged record, an output that is missing or another
    snapshot, an input missing, and a stray name in runs/ are each a problem naming the
    object; ``runs/`` itself is no stray."""
    ws, rec = trained
    sound = fsck(ws.store)
    assert sound.ok, [p.line() for p in sound.problems.values()]
    assert sound.counts["runs"] == 1
    damaged = put_run(ws.store, forged(rec))
    ws.store.backend.replace(damaged, b"{not json")
    out = rec.outputs[0]
    missing_out = put_run(ws.store, forged(rec, outputs=(dataclasses.replace(out, version=5),)))
    other_out = put_run(ws.store, forged(rec, outputs=(dataclasses.replace(out, tree=OTHER_TREE),)))
    missing_in = put_run(
        ws.store, forged(rec, inputs=(RunInput("raw", 9, rec.inputs[0].tree, "raw"),))
    )
    ws.store.backend.write("runs/notes.txt", b"hello")
    report = fsck(ws.store)
    problems = {k: p.message for k, p in report.problems.items()}
    assert problems[damaged].startswith("damaged: run record is malformed")
    assert problems[missing_out] == "names output model@v5, which is missing"
    assert f"names output model@v1 as snapshot {OTHER_TREE[:12]}" in problems[other_out]
    assert "cannot be reproduced: input raw@v9 is missing" in problems[missing_in]
    assert problems["runs/notes.txt"].startswith("stray object")
    assert set(problems) == {damaged, missing_out, other_out, missing_in, "runs/notes.txt"}
    assert report.counts["runs"] == 4


def test_fsck_names_a_forgotten_input_and_restricts_to_the_versions_given(
    trained: tuple[Workspace, RunRecord], tmp_path: Path
) -> None:
    """After ``forget --force`` of the run's input, fsck fails (exit 6, in the JSON too)
    with "cannot be reproduced"; fsck of a version the run does not touch passes, of one
    it touches fails; a forgotten output is no problem."""
    ws, rec = trained
    write(Path(ws.root) / "other" / "x.bin", b"other data")
    ws.add(str(Path(ws.root) / "other"))
    ws.commit([], "other v1")
    ws.forget(["raw@v1"], force=True)
    ws.forget(["model@v1"])
    key = f"runs/{rec.id}.json"
    report = fsck(ws.store)
    assert list(report.problems) == [key]
    expected = f"run train ({rec.id[:12]}) cannot be reproduced: input raw@v1 is forgotten"
    assert report.problems[key].message == expected
    assert fsck(ws.store, {"other": [1]}).ok
    assert not fsck(ws.store, {"model": [1]}).ok
    proc = run(Path(ws.root), "fsck", "--json", check=False)
    assert proc.returncode == 6 and "Traceback" not in proc.stderr
    doc = json.loads(proc.stdout)
    assert [p["object"] for p in doc["problems"]] == [key]
    assert doc["checked"]["runs"] == 1


# -- forget and gc -------------------------------------------------------------------------


def test_forget_refuses_a_version_a_run_read(trained: tuple[Workspace, RunRecord]) -> None:
    """``forget raw@v1`` is refused in one line naming the run (exit 2), the record left
    live; --keep-last keeps it and says so; --force forgets it; outputs forget freely."""
    ws, rec = trained
    root = Path(ws.root)
    _bump(root)
    line = assert_error(root, ["forget", "raw@v1"], 2, f"run train ({rec.id[:12]})")
    assert "--force" in line
    with pytest.raises(UsageError):
        ws.forget(["raw@latest"])
    for seed in ("v2", "v3"):
        write(root / "raw" / "a.bin", rand(seed, 1000))
        ws.add(str(root / "raw"))
        ws.commit([], seed)
    kept = run(root, "forget", "raw", "--keep-last", "1").stdout.splitlines()
    assert kept == ["forgot raw@v2", f"kept raw@v1 (read by run train ({rec.id[:12]}))"]
    assert ws.forget(["model@v1"]).done == ["model@v1"]
    assert run(root, "forget", "--force", "raw@v1").stdout.splitlines() == ["forgot raw@v1"]


def test_gc_leaves_run_records_alone(trained: tuple[Workspace, RunRecord]) -> None:
    """gc with no grace period, after the run's output was forgotten, deletes its data but
    not the run record (nor a stray file in runs/), and does not stop at runs/."""
    ws, rec = trained
    before = record_bytes(ws.store, rec.id)
    ws.store.backend.write("runs/notes.txt", b"hello")
    ws.forget(["model@v1"])
    then = time.time() - 10 * 86400
    for path in Path(ws.store.backend.root).rglob("*"):
        os.utime(path, (then, then))  # everything old: garbage is deleted at once
    report = gc(ws.store, 0)
    assert report.deleted_packs + report.deleted_pages > 0
    assert record_bytes(ws.store, rec.id) == before
    assert sorted(ws.store.backend.list("runs")) == sorted([f"{rec.id}.json", "notes.txt"])


def test_an_input_from_another_store_is_not_checked_here(
    trained: tuple[Workspace, RunRecord],
) -> None:
    """An input opened from another store is not this store's to check or to protect;
    the same input read from this store is checked."""
    ws, rec = trained
    elsewhere = RunInput("raw", 7, OTHER_TREE, None, "s3://elsewhere/store")
    put_run(ws.store, forged(rec, inputs=(elsewhere,)))
    assert fsck(ws.store).ok
    key = put_run(ws.store, forged(rec, inputs=(dataclasses.replace(elsewhere, store=None),)))
    assert list(fsck(ws.store).problems) == [key]
