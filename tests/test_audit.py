"""datavc audit SPEC: a real chain made with datavc run (raw@v1 -> run prep -> mid@v1 -> run
train -> model@v1) is reported and verified; a flipped byte of raw's data, a run record
rewritten in the store, a deleted run record and a forgotten input each fail with their
exit code and an error line that names them. Real git; the embedded store, and S3 (moto)."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import clean_environment, rand, run, write

from datavc.format.record import decode_record, encode_record
from datavc.format.run import decode_run, encode_run
from datavc.store.backend import Backend

PREP = """\
import os
os.makedirs("data/mid", exist_ok=True)
for name in sorted(os.listdir("data/raw")):
    data = open(os.path.join("data/raw", name), "rb").read()
    open(os.path.join("data/mid", name + ".rev"), "wb").write(data[::-1])
"""
TRAIN = """\
import os
os.makedirs("models", exist_ok=True)
size = sum(os.path.getsize(os.path.join("data/mid", n)) for n in os.listdir("data/mid"))
open("models/model.bin", "wb").write(b"weights %d\\n" % size + open("params.yaml", "rb").read())
"""


@dataclass
class Chain:
    root: Path
    store: Backend
    raw_packs: list[str]  # the packs raw@v1's commit wrote (before any run)
    runs: dict[str, str]  # run name -> id


def git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def build_chain(tmp_path: Path, store_url: str | None = None) -> Chain:
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q")
    run(root, "init", *(["--store", store_url] if store_url else []))
    write(root / "data" / "raw" / "a.bin", rand("a", 150_000))
    write(root / "data" / "raw" / "b.bin", rand("b", 60_000))
    run(root, "add", "data/raw")
    run(root, "commit", "-m", "raw data")
    store = Backend(store_url or str(root / ".datavc" / "store"))
    raw_packs = [i.name for i in store.list_detail("packs")]
    (root / "prep.py").write_text(PREP)
    (root / "train.py").write_text(TRAIN)
    (root / "params.yaml").write_text("lr: 0.1\n")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "code")
    py = sys.executable
    run(root, "run", "--name", "prep", "--in", "raw", "--out", "data/mid", "--", py, "prep.py")
    run(
        root, "run", "--name", "train", "--in", "mid", "--param", "params.yaml",
        "--env", "SEED", "--out", "models/model.bin", "--", py, "train.py",
    )  # fmt: skip
    runs = {}
    for name in ("prep", "train"):
        text = (root / "runs" / f"{name}.lock").read_text()
        runs[name] = text.split("\nid: ", 1)[1].split("\n", 1)[0]
    return Chain(root, store, raw_packs, runs)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Chain:
    """The chain, built once (on the embedded store, inside the repo): each test works on
    a copy."""
    base = tmp_path_factory.mktemp("audit")
    with pytest.MonkeyPatch.context() as mp:
        clean_environment(mp, base / "home")
        mp.setenv("SEED", "7")
        return build_chain(base)


@pytest.fixture
def chain(template: Chain, tmp_path: Path) -> Chain:
    root = tmp_path / "repo"
    shutil.copytree(template.root, root, symlinks=True)
    store = Backend(str(root / ".datavc" / "store"))
    return Chain(root, store, template.raw_packs, template.runs)


def audit_json(root: Path, code: int) -> dict[str, object]:
    doc: dict[str, object] = json.loads(
        run(root, "audit", "model@v1", "--format", "json", code=code).stdout
    )
    return doc


def failed(doc: dict[str, object]) -> list[tuple[str, str, int]]:
    checks = doc["checks"]
    assert isinstance(checks, list)
    return [(c["item"], c["check"], c["exit_code"]) for c in checks if c["result"] == "failed"]


def replace(b: Backend, key: str, data: bytes) -> None:
    b.delete(key)
    b.write(key, data)


def test_a_clean_chain_is_verified(chain: Chain) -> None:
    out = run(chain.root, "audit", "model@v1").stdout
    prep, train = chain.runs["prep"], chain.runs["train"]
    assert out.startswith("# Audit of model@v1\n")
    assert "**verified**" in out and "FAILED" not in out
    for text in (f"### run prep {prep[:12]}", f"### run train {train[:12]}", "| raw@v1 |"):
        assert text in out, text
    assert "| raw@v1 | `" in out and "| raw data |" in out  # raw: made by no run
    assert f"by run {prep[:12]} from raw@v1" in out and f"by run {train[:12]} from mid@v1" in out
    assert "- env: `SEED=7`" in out and "- param: `params.yaml`" in out
    assert "| run prep " in out and "runs/prep.lock pins this record" in out
    doc = audit_json(chain.root, code=0)
    assert doc["ok"] is True and doc["exit_code"] == 0 and failed(doc) == []
    runs = {r["name"]: r for r in doc["runs"]}  # type: ignore[union-attr]
    assert set(runs) == {"prep", "train"} and runs["train"]["id"] == train
    assert runs["train"]["code"]["dirty"] is False and runs["train"]["code"]["git_head"]
    assert runs["train"]["environment"]["packages"] > 0
    assert [p["path"] for p in runs["train"]["params"]] == ["params.yaml"]
    labels = [v["version"] for v in doc["versions"]]  # type: ignore[union-attr]
    assert labels == ["raw@v1", "mid@v1", "model@v1"]
    checks = {(c["item"].split(" ")[-1], c["check"]) for c in doc["checks"]}  # type: ignore[union-attr]
    for item in ("raw@v1", "mid@v1", "model@v1"):
        assert (item, "data") in checks and (item, "record") in checks
    assert (train[:12], "lock") in checks and (prep[:12], "input raw@v1") in checks
    assert doc["fsck"]["bytes_read"] > 200_000  # type: ignore[index]


def test_a_flipped_byte_of_raw_names_the_input_the_pack_and_the_run(chain: Chain) -> None:
    (pack,) = chain.raw_packs
    key = f"packs/{pack}"
    data = bytearray(chain.store.read(key))
    data[1000] ^= 0x40  # inside the first chunk: only reading the data shows it
    replace(chain.store, key, bytes(data))
    proc = run(chain.root, "audit", "model@v1", code=6)
    err = proc.stderr.strip()
    assert err.count("\n") == 0 and err.startswith("datavc: error: audit of model@v1 failed: ")
    assert "raw@v1" in err and key in err and f"run prep {chain.runs['prep'][:12]}" in err
    row = next(line for line in proc.stdout.splitlines() if line.startswith("| raw@v1 | data |"))
    assert "| FAILED |" in row and key in row and "read by run prep" in row
    doc = audit_json(chain.root, code=6)
    assert failed(doc) == [("raw@v1", "data", 6)]  # mid and model hold other data


def test_a_rewritten_run_record_is_caught_by_the_lock(chain: Chain) -> None:
    prep = chain.runs["prep"]
    key = f"runs/{prep}.json"
    rec = decode_run(chain.store.read(key), key)
    forged = dataclasses.replace(rec, command=(*rec.command[:-1], "other.py"))
    replace(chain.store, key, encode_run(forged))  # valid, and every link as before
    proc = run(chain.root, "audit", "model@v1", code=9)
    assert "runs/prep.lock pins record" in proc.stderr and "changed after the run" in proc.stderr
    assert "`other.py`" not in proc.stdout and "other.py" in proc.stdout  # reported as stored
    assert failed(audit_json(chain.root, code=9)) == [(f"run prep {prep[:12]}", "lock", 9)]
    (chain.root / "runs" / "prep.lock").unlink()  # without the lock, nothing tells
    doc = audit_json(chain.root, code=0)
    lock = [c for c in doc["checks"] if c["check"] == "lock" and prep[:12] in c["item"]]  # type: ignore[union-attr]
    assert [c["result"] for c in lock] == ["skipped"]


def test_a_deleted_run_record_is_an_unfinished_run(chain: Chain) -> None:
    train = chain.runs["train"]
    chain.store.delete(f"runs/{train}.json")
    proc = run(chain.root, "audit", "model@v1", code=3)
    assert f"run ? {train[:12]}: record: no record runs/{train}.json" in proc.stderr
    assert "no record in the store (unfinished)" in proc.stdout
    doc = audit_json(chain.root, code=3)
    assert failed(doc) == [(f"run ? {train[:12]}", "record", 3)]
    # the walk goes on through model's derived-from link: mid, prep and raw are verified
    assert [v["version"] for v in doc["versions"]] == ["raw@v1", "mid@v1", "model@v1"]  # type: ignore[union-attr]
    assert [r["state"] for r in doc["runs"]] == ["ok", "unfinished"]  # type: ignore[union-attr]


def test_a_forgotten_input_fails(chain: Chain) -> None:
    run(chain.root, "forget", "raw@v1", "--force")  # a run read it: forget protects it
    doc = audit_json(chain.root, code=3)
    prep = f"run prep {chain.runs['prep'][:12]}"
    assert failed(doc) == [
        ("raw@v1", "record", 3),
        ("mid@v1", "derived from raw@v1", 3),
        (prep, "input raw@v1", 3),
    ]
    err = run(chain.root, "audit", "model@v1", code=3).stderr
    assert "raw@v1: record: forgotten by" in err


def test_a_version_record_rewritten_to_another_snapshot_disagrees(chain: Chain) -> None:
    raw = decode_record(chain.store.read("versions/raw/1.json"), "raw")
    mid = decode_record(chain.store.read("versions/mid/1.json"), "mid")
    forged = dataclasses.replace(mid, tree=raw.tree, root=raw.root)  # valid: its root hashes
    replace(chain.store, "versions/mid/1.json", encode_record(forged))
    doc = audit_json(chain.root, code=9)
    train = f"run train {chain.runs['train'][:12]}"
    assert failed(doc) == [("model@v1", "derived from mid@v1", 9), (train, "input mid@v1", 9)]
    err = run(chain.root, "audit", "model@v1", code=9).stderr
    assert f"recorded as snapshot {mid.tree[:12]}, but mid@v1 is snapshot {raw.tree[:12]}" in err


def test_on_s3(s3_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from conftest import BUCKET

    monkeypatch.setenv("SEED", "7")
    chain = build_chain(tmp_path, f"s3://{BUCKET}/{uuid.uuid4().hex}")
    doc = audit_json(chain.root, code=0)
    assert [r["name"] for r in doc["runs"]] == ["prep", "train"]  # type: ignore[union-attr]
    (pack,) = chain.raw_packs
    data = bytearray(chain.store.read(f"packs/{pack}"))
    data[1000] ^= 0x40
    replace(chain.store, f"packs/{pack}", bytes(data))
    err = run(chain.root, "audit", "model@v1", code=6).stderr
    assert "raw@v1" in err and f"packs/{pack}" in err and "run prep" in err
