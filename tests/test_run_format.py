"""Run records and lock files are untrusted input (a store object, a file from git): each
is parsed completely and checked against its documented limits before anything acts on
it; a crafted one is a one-line error, never a traceback or a path outside the target."""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from typing import Any

import pytest

from datavc.errors import BadInput, CorruptObject
from datavc.format.hashing import ObjectId, object_id
from datavc.format.run import (
    MAX_INPUTS,
    CodeState,
    Environment,
    RunInput,
    RunOutput,
    RunParam,
    RunRecord,
    decode_lock,
    decode_run,
    encode_lock,
    encode_run,
    make_run_id,
    uuid_text,
)

TREE = ObjectId("ab" * 32)


def record() -> RunRecord:
    return RunRecord(
        id=make_run_id(1_700_000_000_000, 12345),
        name="train",
        command=("python", "train.py"),
        cwd="src",
        author="A <a@x>",
        started="2026-12-04T16:00:00.000Z",
        ended="2026-12-04T16:00:01.250Z",
        exit=0,
        code=CodeState("c" * 40, True, "d" * 64),
        inputs=(RunInput("raw", 1, TREE, "data/raw"), RunInput("tab", 2, TREE, None, "s3://b/x")),
        params=(RunParam("params.yaml", object_id(b"lr: 1\n"), 6, b"lr: 1\n"),),
        environment=Environment("3.11.9", "CPython", "Linux", "x86_64", {"numpy": "2.1"}),
        outputs=(RunOutput("model", 1, TREE, "models/m"),),
    )


def doc_of(rec: RunRecord) -> dict[str, Any]:
    return json.loads(encode_run(rec))


def test_a_record_round_trips_and_its_id_is_a_uuid7() -> None:
    rec = record()
    assert decode_run(encode_run(rec), "k") == rec
    text = uuid_text(rec.id)
    assert text[14] == "7" and text[19] in "89ab" and len(text) == 36
    assert int(rec.id[:12], 16) == 1_700_000_000_000  # sorts by start time


def test_the_lock_pins_the_record_and_restates_it() -> None:
    rec = record()
    data = encode_run(rec)
    text = encode_lock(rec, object_id(data))
    lock = decode_lock(text, "runs/train.lock")
    assert (lock.name, lock.id, lock.record) == ("train", rec.id, object_id(data))
    assert "input: tab@v2 " + TREE + " store=s3://b/x" in text
    with pytest.raises(BadInput):
        decode_lock(text.replace(f"id: {rec.id}", "id: ../../etc"), "x")
    with pytest.raises(BadInput):
        decode_lock(text + f"id: {rec.id}\n", "x")  # twice
    with pytest.raises(BadInput):
        decode_lock("run: train\n", "x")  # no header


def mutate(change: Any) -> bytes:
    doc = doc_of(record())
    change(doc)
    return json.dumps(doc).encode()


HOSTILE = {
    "input path escapes": lambda d: d["inputs"][0].update(path="../outside"),
    "input path into .git": lambda d: d["inputs"][0].update(path=".git/hooks"),
    "output path absolute": lambda d: d["outputs"][0].update(path="/etc/passwd"),
    "output path into .datavc": lambda d: d["outputs"][0].update(path="a/.DATAVC/x"),
    "param path escapes": lambda d: d["params"][0].update(path="../../x"),
    "cwd escapes": lambda d: d.update(cwd=".."),
    "param size lies": lambda d: d["params"][0].update(size=5),
    "param content not base64": lambda d: d["params"][0].update(content="***"),
    "param content too large": lambda d: d["params"][0].update(
        content=base64.b64encode(b"x" * (1 << 20)).decode(), size=1 << 20
    ),
    "bad run id": lambda d: d.update(id="0" * 31 + "g"),
    "bad name": lambda d: d.update(name="a/b"),
    "empty command": lambda d: d.update(command=[]),
    "command not strings": lambda d: d.update(command=["python", 3]),
    "version zero": lambda d: d["inputs"][0].update(version=0),
    "version a float": lambda d: d["inputs"][0].update(version=1.0),
    "tree not an id": lambda d: d["outputs"][0].update(tree="zz"),
    "exit out of range": lambda d: d.update(exit=1 << 40),
    "time not ISO": lambda d: d.update(started="yesterday"),
    "dirty not a bool": lambda d: d["code"].update(dirty="no"),
    "git head not a sha": lambda d: d["code"].update(git_head="HEAD; rm -rf /"),
    "packages not strings": lambda d: d["environment"].update(packages={"x": 1}),
    "too many inputs": lambda d: d.update(inputs=[d["inputs"][0]] * (MAX_INPUTS + 1)),
    "duplicate param": lambda d: d.update(params=d["params"] * 2),
    "wrong type": lambda d: d.update(type="datavc-version"),
    "missing field": lambda d: d.pop("outputs"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_crafted_record_is_refused(case: str) -> None:
    with pytest.raises(CorruptObject) as err:
        decode_run(mutate(HOSTILE[case]), "runs/x.json")
    assert "runs/x.json" in str(err.value)


@pytest.mark.parametrize("data", [b"", b"[]", b"\xff\xfe", b"{" * 100_000, b'{"a": 1e999}'])
def test_garbage_is_refused(data: bytes) -> None:
    with pytest.raises(CorruptObject):
        decode_run(data, "runs/x.json")


def test_a_record_datavc_would_not_write_is_refused_on_encode() -> None:
    with pytest.raises(BadInput):
        encode_run(replace(record(), cwd="../up"))
