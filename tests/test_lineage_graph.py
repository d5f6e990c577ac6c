"""``datavc lineage``: the graph of versions and runs, walked up and down, and written as
text, mermaid, dot, JSON and OpenLineage run events.

One real chain is built once (real git, the real ``datavc`` command): raw@v1 is read by
run ``prep``, which also opens extra@v1 with ``datavc.open``, and writes mid@v1; run
``train`` reads mid@v1 and writes model@v1; report@v1 is committed ``--from model@v1``. Each
test works on a copy. The formats are checked by strict checkers written here for the
subset datavc emits (and by graphviz's ``dot`` and mermaid's own parser where they are
installed: ``MERMAID_NODE_MODULES`` names a folder holding ``node_modules/mermaid`` and
``node_modules/jsdom``), and fed hostile values: quotes, brackets, entities, controls,
unicode. The OpenLineage check is written from the published spec (2-0-2, RunEvent).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from helpers import run, write

from datavc.errors import StoreUnreachable
from datavc.format.hashing import ObjectId
from datavc.format.pointer import decode_pointer
from datavc.format.run import (
    CodeState,
    Environment,
    RunInput,
    RunOutput,
    RunRecord,
    decode_lock,
    uuid_text,
)
from datavc.format.spec import parse_spec
from datavc.lineage.graph import Lineage, RunNode, VersionNode, lineage
from datavc.lineage.render import namespace, render
from datavc.store.backend import url_credentials
from datavc.workspace.core import Workspace

PREP = """\
import os, datavc
extra = datavc.open("extra@v1").cat_file("e.txt")
os.makedirs("data/mid", exist_ok=True)
with open("data/mid/m.txt", "wb") as f:
    f.write(open("data/raw/a.txt", "rb").read() + extra)
"""
TRAIN = """\
import os
os.makedirs("data/model", exist_ok=True)
with open("data/model/w.bin", "wb") as f:
    f.write(open("data/mid/m.txt", "rb").read()[::-1])
"""
AUTHOR = "Test Author <author@example.invalid>"
HOSTILE = (
    'Eve "q" ]) --> x; classDef a fill:red <b>&amp; `md` #quot; #35; \\l \\" {c} |p| '
    "ünï ☃ \x1b[31m \u202e end"
)


# -- the chain ------------------------------------------------------------------------


def _env(home: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DATAVC_", "GIT_", "AWS_", "FSSPEC_"))
    }
    env.update(HOME=str(home), GIT_CONFIG_NOSYSTEM="1")
    return env


def _sh(cwd: Path, env: dict[str, str], *args: str, code: int = 0) -> str:
    proc = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == code, (args, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    return proc.stdout


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("chain")
    home = base / "home"
    home.mkdir()
    (home / ".gitconfig").write_text(
        "[user]\n\tname = Test Author\n\temail = author@example.invalid\n"
        "[init]\n\tdefaultBranch = main\n"
    )
    env, root = _env(home), base / "repo"
    root.mkdir()

    def dv(*args: str) -> str:
        return _sh(root, env, sys.executable, "-m", "datavc", *args)

    _sh(root, env, "git", "init", "-q")
    dv("init")
    write(root / "data" / "raw" / "a.txt", b"raw data\n")
    write(root / "data" / "extra" / "e.txt", b"extra data\n")
    dv("add", "data/raw")
    dv("add", "data/extra")
    dv("commit", "-m", "raw and extra")
    (root / "prep.py").write_text(PREP)
    (root / "train.py").write_text(TRAIN)
    _sh(root, env, "git", "add", "-A")
    _sh(root, env, "git", "commit", "-q", "-m", "code")
    for name, source, out in (("prep", "raw", "data/mid"), ("train", "mid", "data/model")):
        dv("run", "--name", name, "--in", source, "--out", out, "--", sys.executable, f"{name}.py")
    write(root / "data" / "report" / "r.txt", b"a report on the model\n")
    dv("add", "data/report")
    dv("commit", "-m", "report", "--from", "model@v1")
    return root


@pytest.fixture
def repo(chain: Path, tmp_path: Path) -> Path:
    """A copy of the chain of this module, for this test alone."""
    root = tmp_path / "repo"
    shutil.copytree(chain, root, symlinks=True)
    return root


def snapshot(repo: Path, name: str) -> str:
    path = repo / "data" / f"{name}.datavc"
    return decode_pointer(path.read_text(), str(path)).snapshot


def run_id(repo: Path, name: str) -> str:
    path = repo / "runs" / f"{name}.lock"
    return decode_lock(path.read_text(), str(path)).id


def store_path(repo: Path) -> Path:
    return repo / ".datavc" / "store"


def graph_json(repo: Path, spec: str, *flags: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(run(repo, "lineage", spec, "--format", "json", *flags).stdout)
    return doc


def node_ids(doc: dict[str, Any]) -> set[str]:
    return {n["id"] for n in doc["nodes"]}


def edges(doc: dict[str, Any]) -> set[tuple[str, str, str]]:
    found = [(e["from"], e["to"], e["kind"]) for e in doc["edges"]]
    assert len(found) == len(set(found)), found  # no edge twice
    return set(found)


def nodes_by_id(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n["id"]: n for n in doc["nodes"]}


# -- the walk ---------------------------------------------------------------------------


def test_up_from_model_reaches_raw_through_both_runs(repo: Path) -> None:
    prep, train = f"run:{run_id(repo, 'prep')}", f"run:{run_id(repo, 'train')}"
    doc = graph_json(repo, "model", "--up")  # NAME: what the pointer file names
    assert doc["root"] == "model@v1" and doc["direction"] == "up" and doc["truncated"] is False
    assert node_ids(doc) == {"model@v1", train, "mid@v1", prep, "raw@v1", "extra@v1"}
    assert edges(doc) == {
        (train, "model@v1", "output"),
        ("mid@v1", train, "input"),
        (prep, "mid@v1", "output"),
        ("raw@v1", prep, "input"),
        ("extra@v1", prep, "input"),
    }
    nodes = nodes_by_id(doc)
    for name in ("model", "mid", "raw", "extra"):
        node = nodes[f"{name}@v1"]
        assert node["snapshot"] == snapshot(repo, name) and node["state"] == "ok", node
        assert node["type"] == "version" and node["store"] is None
    assert nodes["model@v1"]["run"] == train[4:] and nodes["raw@v1"]["run"] is None
    p = nodes[prep]
    assert (p["type"], p["state"], p["name"], p["exit"]) == ("run", "ok", "prep", 0)
    assert p["command"] == [sys.executable, "prep.py"] and p["author"] == AUTHOR
    assert p["uuid"] == uuid_text(prep[4:]) and p["code"]["git_head"]
    assert p["started"] <= p["ended"]
    assert {(i["name"], i["path"]) for i in p["inputs"]} == {("raw", "data/raw"), ("extra", None)}
    assert [(o["name"], o["snapshot"]) for o in p["outputs"]] == [("mid", snapshot(repo, "mid"))]


def test_down_from_raw_reaches_model_and_what_was_derived(repo: Path) -> None:
    prep, train = f"run:{run_id(repo, 'prep')}", f"run:{run_id(repo, 'train')}"
    doc = graph_json(repo, "raw@v1", "--down")
    assert doc["root"] == "raw@v1" and doc["direction"] == "down"
    # extra@v1 was read by prep too, but it was not made from raw: down does not show it
    assert node_ids(doc) == {"raw@v1", prep, "mid@v1", train, "model@v1", "report@v1"}
    assert edges(doc) == {
        ("raw@v1", prep, "input"),
        (prep, "mid@v1", "output"),
        ("mid@v1", train, "input"),
        (train, "model@v1", "output"),
        ("model@v1", "report@v1", "derived"),
    }
    assert nodes_by_id(doc)["report@v1"]["snapshot"] == snapshot(repo, "report")


def test_up_and_down_restrict_and_default_to_both(repo: Path) -> None:
    prep, train = f"run:{run_id(repo, 'prep')}", f"run:{run_id(repo, 'train')}"
    up, down = graph_json(repo, "mid", "--up"), graph_json(repo, "mid", "--down")
    assert node_ids(up) == {"mid@v1", prep, "raw@v1", "extra@v1"}
    assert node_ids(down) == {"mid@v1", train, "model@v1", "report@v1"}
    both = graph_json(repo, "mid")
    assert both["direction"] == "both" and graph_json(repo, "mid", "--up", "--down") == both
    assert node_ids(both) == node_ids(up) | node_ids(down)
    assert edges(both) == edges(up) | edges(down)
    assert node_ids(graph_json(repo, "raw", "--up")) == {"raw@v1"}  # raw data: made from nothing
    assert node_ids(graph_json(repo, "report", "--down")) == {"report@v1"}


def test_text_is_an_indented_tree_each_way(repo: Path) -> None:
    doc = graph_json(repo, "mid")
    nodes = nodes_by_id(doc)
    prep, train = run_id(repo, "prep"), run_id(repo, "train")
    ended = {r: nodes[f"run:{r}"]["ended"] for r in (prep, train)}
    sn = {n: snapshot(repo, n)[:12] for n in ("raw", "extra", "mid", "model", "report")}
    out = run(repo, "lineage", "mid").stdout.splitlines()
    assert out == [
        f"mid@v1  snapshot {sn['mid']}  (store file://{store_path(repo)})",
        "made from:",
        f"  <- run prep {prep[:12]}  exit 0  {AUTHOR}  {ended[prep]}",
        f"    <- extra@v1  snapshot {sn['extra']}",
        f"    <- raw@v1  snapshot {sn['raw']}",
        "made into:",
        f"  -> run train {train[:12]}  exit 0  {AUTHOR}  {ended[train]}",
        f"    -> model@v1  snapshot {sn['model']}",
        f"      -> report@v1  snapshot {sn['report']}  (derived)",
    ]
    up = run(repo, "lineage", "raw", "--up").stdout.splitlines()
    assert up[1:] == ["made from: nothing recorded"] and "made into" not in "".join(up)


def test_errors_are_one_line_with_their_exit_code(repo: Path) -> None:
    for args, code, text in (
        (["nosuch"], 3, "unknown dataset 'nosuch'"),
        (["mid@v9"], 3, "has no version 'v9'"),
        (["mid", "--format", "xml"], 2, "unknown format 'xml'"),
        (["mid", "--json", "--format", "dot"], 2, "two formats"),
        (["bad/name"], 8, "invalid dataset name"),
    ):
        proc = run(repo, "lineage", *args, code=code)
        assert proc.stdout == "" and text in proc.stderr, (args, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert json.loads(run(repo, "lineage", "mid", "--json").stdout)["root"] == "mid@v1"


# -- runs that are not whole -----------------------------------------------------------


def test_an_unfinished_run_is_shown_and_the_walk_stops_there(repo: Path) -> None:
    """Nothing is found through a run without a record; model@v1's own record still
    names what it was made from (derived_from), and the walk goes on from there."""
    prep, train = f"run:{run_id(repo, 'prep')}", f"run:{run_id(repo, 'train')}"
    (store_path(repo) / "runs" / f"{train[4:]}.json").unlink()  # killed before its record
    doc = graph_json(repo, "model", "--up")
    assert node_ids(doc) == {"model@v1", train, "mid@v1", prep, "raw@v1", "extra@v1"}
    assert edges(doc) == {
        (train, "model@v1", "output"),
        ("mid@v1", "model@v1", "derived"),
        (prep, "mid@v1", "output"),
        ("raw@v1", prep, "input"),
        ("extra@v1", prep, "input"),
    }
    down = graph_json(repo, "mid", "--down")
    assert node_ids(down) == {"mid@v1", train, "model@v1", "report@v1"}
    assert edges(down) == {
        (train, "model@v1", "output"),
        ("mid@v1", "model@v1", "derived"),
        ("model@v1", "report@v1", "derived"),
    }
    node = nodes_by_id(doc)[train]
    assert node["state"] == "unfinished" and node["name"] is None and node["exit"] is None
    text = run(repo, "lineage", "model", "--up").stdout.splitlines()
    assert text[2:4] == [
        f"  <- run ? {train[4:16]}  [unfinished: no run record]",
        f"  <- mid@v1  snapshot {snapshot(repo, 'mid')[:12]}  (derived)",
    ]
    events = run(repo, "lineage", "model", "--format", "openlineage").stdout.splitlines()
    assert [json.loads(e)["job"]["name"] for e in events] == ["prep"]  # no record: no event
    mermaid = check_mermaid(run(repo, "lineage", "model", "--format", "mermaid").stdout)
    assert ("r0", "unfinished") in mermaid.classes
    assert ("v1", "-.->|derived|", "v0") in mermaid.edges


def test_a_damaged_run_record_is_shown_and_the_walk_stops_there(repo: Path) -> None:
    prep, train = f"run:{run_id(repo, 'prep')}", f"run:{run_id(repo, 'train')}"
    record = store_path(repo) / "runs" / f"{prep[4:]}.json"
    record.write_bytes(record.read_bytes()[:40])
    doc = graph_json(repo, "model", "--up")
    assert node_ids(doc) == {"model@v1", train, "mid@v1", prep, "raw@v1", "extra@v1"}
    assert edges(doc) == {
        (train, "model@v1", "output"),
        ("mid@v1", train, "input"),
        (prep, "mid@v1", "output"),
        ("raw@v1", "mid@v1", "derived"),  # from mid@v1's record, not through the run
        ("extra@v1", "mid@v1", "derived"),
    }
    assert nodes_by_id(doc)[prep]["state"] == "damaged"
    assert nodes_by_id(doc)[prep]["command"] is None
    text = run(repo, "lineage", "model", "--up").stdout
    assert f"<- run ? {prep[4:16]}  [damaged record]" in text
    events = run(repo, "lineage", "model", "--format", "openlineage").stdout.splitlines()
    assert [json.loads(e)["job"]["name"] for e in events] == ["train"]
    down = graph_json(repo, "raw", "--down")  # mid@v1's record says it was made from raw
    assert node_ids(down) == {"raw@v1", prep, "mid@v1", train, "model@v1", "report@v1"}
    assert {("raw@v1", "mid@v1", "derived"), (prep, "mid@v1", "output")} <= edges(down)
    assert not [e for e in edges(down) if e[1] == prep]  # what it read: unknown
    mermaid = check_mermaid(run(repo, "lineage", "model", "--format", "mermaid").stdout)
    assert ("r1", "damaged") in mermaid.classes


def test_a_store_that_does_not_answer_fails_the_walk(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not "damaged": a store that did not answer says nothing about a record."""
    ws = Workspace.find(str(repo))
    rec = ws.resolve(parse_spec("model"))
    read = ws.store.backend.read

    def flaky(key: str) -> bytes:
        if key.startswith("runs/"):
            raise StoreUnreachable(str(repo), "connection reset")
        return read(key)

    monkeypatch.setattr(ws.store.backend, "read", flaky)
    with pytest.raises(StoreUnreachable):
        lineage(ws.store, rec, up=True, down=False)


# -- OpenLineage ------------------------------------------------------------------------

EVENT_TYPES = {"START", "RUNNING", "COMPLETE", "ABORT", "FAIL", "OTHER"}
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:[^\s\"<>\\^`{|}]+")
_DATE_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)")


def check_uri(value: object) -> str:
    """A URI (RFC 3986: a scheme, then no character a URI cannot hold)."""
    assert isinstance(value, str) and _URI.fullmatch(value), value
    return value


def check_facet(facet: object) -> None:
    """BaseFacet: ``_producer`` and ``_schemaURL`` are URIs; no other field starts with _."""
    assert isinstance(facet, dict), facet
    check_uri(facet["_producer"])
    check_uri(facet["_schemaURL"])
    assert not [k for k in facet if k.startswith("_") and k not in ("_producer", "_schemaURL")]


def check_facets(parent: dict[str, Any], key: str) -> None:
    facets = parent.get(key, {})
    assert isinstance(facets, dict), facets
    for facet in facets.values():
        check_facet(facet)


def check_dataset(d: object, facets_key: str) -> None:
    assert isinstance(d, dict), d
    assert isinstance(d["namespace"], str) and d["namespace"], d
    assert isinstance(d["name"], str) and d["name"], d
    check_facets(d, "facets")
    check_facets(d, facets_key)


def check_run_event(event: dict[str, Any]) -> None:
    """Every field the OpenLineage 2-0-2 RunEvent requires (BaseEvent: eventTime,
    producer, schemaURL; RunEvent: run, job), with its type and format."""
    when = event["eventTime"]
    assert isinstance(when, str) and _DATE_TIME.fullmatch(when), when
    assert datetime.fromisoformat(when.replace("Z", "+00:00")).tzinfo is not None
    check_uri(event["producer"])
    schema = urlparse(check_uri(event["schemaURL"]))
    assert schema.scheme == "https" and schema.netloc and schema.path.endswith("OpenLineage.json")
    assert schema.fragment == "/$defs/RunEvent"
    assert event["eventType"] in EVENT_TYPES
    run_id_text = event["run"]["runId"]
    assert isinstance(run_id_text, str) and str(uuid.UUID(run_id_text)) == run_id_text
    check_facets(event["run"], "facets")
    job = event["job"]
    assert isinstance(job["namespace"], str) and job["namespace"]
    assert isinstance(job["name"], str) and job["name"]
    check_facets(job, "facets")
    assert isinstance(event["inputs"], list) and isinstance(event["outputs"], list)
    for d in event["inputs"]:
        check_dataset(d, "inputFacets")
    for d in event["outputs"]:
        check_dataset(d, "outputFacets")


def test_openlineage_events_follow_the_spec(repo: Path) -> None:
    raw_py = "import sys; sys.exit(3)"
    run(repo, "run", "--name", "broken", "--in", "raw", "--", sys.executable, "-c", raw_py, code=3)
    lines = run(repo, "lineage", "raw", "--down", "--format", "openlineage").stdout.splitlines()
    events = [json.loads(line) for line in lines]
    for event in events:
        check_run_event(event)
    assert [e["job"]["name"] for e in events] == ["prep", "train", "broken"]  # in time order
    prep, train, broken = events
    assert [e["eventType"] for e in events] == ["COMPLETE", "COMPLETE", "FAIL"]
    ns = f"file://{store_path(repo)}"
    assert {e["job"]["namespace"] for e in events} == {ns}
    assert prep["run"]["runId"] == uuid_text(run_id(repo, "prep"))
    assert uuid.UUID(prep["run"]["runId"]).version == 7
    doc = graph_json(repo, "raw", "--down")
    nodes = nodes_by_id(doc)
    assert prep["eventTime"] == nodes[f"run:{run_id(repo, 'prep')}"]["ended"]

    def datasets(items: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
        return {
            (d["namespace"], d["name"], d["facets"]["version"]["datasetVersion"]) for d in items
        }

    sn = {n: snapshot(repo, n) for n in ("raw", "extra", "mid", "model")}
    assert datasets(prep["inputs"]) == {(ns, "raw@v1", sn["raw"]), (ns, "extra@v1", sn["extra"])}
    assert datasets(prep["outputs"]) == {(ns, "mid@v1", sn["mid"])}
    assert datasets(train["outputs"]) == {(ns, "model@v1", sn["model"])}
    assert broken["outputs"] == [] and datasets(broken["inputs"]) == {(ns, "raw@v1", sn["raw"])}
    version_facet = prep["outputs"][0]["facets"]["version"]
    assert "DatasetVersionDatasetFacet.json" in version_facet["_schemaURL"]
    facet = prep["run"]["facets"]["datavc_run"]
    assert facet["command"] == [sys.executable, "prep.py"] and facet["exit"] == 0
    assert facet["code"]["gitHead"] and facet["environment"]["python"]
    assert broken["run"]["facets"]["datavc_run"]["exit"] == 3
    paths = {d["name"]: d["inputFacets"]["datavc_input"]["path"] for d in prep["inputs"]}
    assert paths == {"raw@v1": "data/raw", "extra@v1": None}


def test_a_namespace_holds_no_credentials() -> None:
    secret = "s3://alice:s3cr3t@bucket/team/data?X-Amz-Signature=abc123&x=1#frag"
    assert namespace(secret) == "s3://bucket/team/data"
    assert namespace("memory://store/") == "memory://store"
    assert namespace("/tmp/a b/store") == "file:///tmp/a%20b/store"
    for url in (secret, "https://u:p@host.example/x?token=t"):
        ns = namespace(url)
        assert url_credentials(ns) is None and "s3cr3t" not in ns and "p@" not in ns
        check_uri(ns)


# -- diagrams: strict checkers for what datavc emits -------------------------------------


class Mermaid:
    def __init__(self) -> None:
        self.nodes: dict[str, tuple[str, str]] = {}  # id -> (shape, decoded label)
        self.edges: list[tuple[str, str, str]] = []
        self.class_defs: set[str] = set()
        self.classes: set[tuple[str, str]] = set()


_M_ID = r"[A-Za-z0-9_]+"
_M_NODE = re.compile(rf'  ({_M_ID})(\[\(|\(\[)"([^"]*)"(\)\]|\]\))')
_M_EDGE = re.compile(rf"  ({_M_ID}) (-->|-\.->\|derived\|) ({_M_ID})")
_M_CLASSDEF = re.compile(r"  classDef ([A-Za-z_]\w*) ([a-z-]+:[#\w .-]+(?:,[a-z-]+:[#\w .-]+)*)")
_M_CLASS = re.compile(rf"  class ({_M_ID}) ([A-Za-z_]\w*)")
_M_SHAPES = {"[(": ")]", "([": "])"}
_M_FORBIDDEN = set('"#<>`[]{}|;&\\')


def mermaid_label(body: str) -> str:
    """A label as mermaid shows it; fails on any character that could end or bend it."""
    plain = re.sub(r"#\d+;", "", body.replace("<br/>", ""))
    assert not (set(plain) & _M_FORBIDDEN), body
    assert plain.isprintable(), body
    text = re.sub(r"#(\d+);", lambda m: chr(int(m.group(1))), body)
    return text.replace("<br/>", "\n")


def check_mermaid(text: str) -> Mermaid:
    """The subset datavc writes: the header, node definitions, edges, classDef and class
    lines, each id defined once and before any use."""
    lines = text.splitlines()
    assert lines[0] == "flowchart LR", lines[:1]
    out = Mermaid()
    for line in lines[1:]:
        if m := _M_NODE.fullmatch(line):
            ident, opening, body, closing = m.groups()
            assert _M_SHAPES[opening] == closing and ident not in out.nodes, line
            out.nodes[ident] = (opening, mermaid_label(body))
        elif m := _M_EDGE.fullmatch(line):
            assert m.group(1) in out.nodes and m.group(3) in out.nodes, line
            out.edges.append((m.group(1), m.group(2), m.group(3)))
        elif m := _M_CLASSDEF.fullmatch(line):
            out.class_defs.add(m.group(1))
        elif m := _M_CLASS.fullmatch(line):
            assert m.group(1) in out.nodes and m.group(2) in out.class_defs, line
            out.classes.add((m.group(1), m.group(2)))
        else:
            raise AssertionError(f"not a line datavc writes: {line!r}")
    return out


_Q = r'"(?:[^"\\]|\\.)*"'
_D_ATTRS = rf"\w+={_Q}(?:, \w+={_Q})*"
_D_NODE = re.compile(rf"  ({_Q}) \[({_D_ATTRS})\];")
_D_EDGE = re.compile(rf"  ({_Q}) -> ({_Q})(?: \[({_D_ATTRS})\])?;")
_D_HEAD = ['digraph "lineage" {', '  rankdir="LR";', '  node [fontname="Helvetica"];']


def dot_string(quoted: str) -> str:
    """A quoted dot string as shown: only \\\\, \\" and \\n escapes (data can make no other)."""
    body, out, i = quoted[1:-1], [], 0
    while i < len(body):
        if body[i] == "\\":
            nxt = body[i + 1]
            assert nxt in '\\"n', quoted
            out.append({"\\": "\\", '"': '"', "n": "\n"}[nxt])
            i += 2
        else:
            out.append(body[i])
            i += 1
    return "".join(out)


def dot_attrs(text: str) -> dict[str, str]:
    return {k: dot_string(v) for k, v in re.findall(rf"(\w+)=({_Q})", text)}


def check_dot(text: str) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """(node id -> shown label, edges); every id and label quoted and escaped."""
    lines = text.splitlines()
    assert lines[:3] == _D_HEAD and lines[-1] == "}", lines
    nodes: dict[str, str] = {}
    found: list[tuple[str, str]] = []
    for line in lines[3:-1]:
        if m := _D_NODE.fullmatch(line):
            ident, attrs = dot_string(m.group(1)), dot_attrs(m.group(2))
            assert ident not in nodes and set(attrs) >= {"shape", "label"}, line
            nodes[ident] = attrs["label"]
            assert all(part.isprintable() for part in attrs["label"].split("\n")), line
        elif m := _D_EDGE.fullmatch(line):
            a, b = dot_string(m.group(1)), dot_string(m.group(2))
            assert a in nodes and b in nodes, line
            found.append((a, b))
        else:
            raise AssertionError(f"not a line datavc writes: {line!r}")
    return nodes, found


def real_dot(text: str, nodes: dict[str, str], found: list[tuple[str, str]]) -> None:
    """graphviz itself reads it, with no warning, into the same nodes and edges."""
    if shutil.which("dot") is None:
        return
    proc = subprocess.run(["dot", "-Tjson"], input=text, capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    doc = json.loads(proc.stdout)
    assert {o["name"] for o in doc.get("objects", [])} == set(nodes)
    assert len(doc.get("edges", [])) == len(found)


def real_mermaid(text: str, tmp_path: Path) -> None:
    """mermaid's own parser accepts it (where MERMAID_NODE_MODULES names an install)."""
    base = os.environ.get("MERMAID_NODE_MODULES")
    if not base or shutil.which("node") is None:
        return
    script = tmp_path / "parse.mjs"
    script.write_text(MERMAID_SCRIPT)
    proc = subprocess.run(
        ["node", str(script), base], input=text, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "OK", proc.stdout + proc.stderr


MERMAID_SCRIPT = """\
import { createRequire } from 'module';
import { pathToFileURL } from 'url';
import { readFileSync } from 'fs';
const req = createRequire(process.argv[2] + '/package.json');
const { JSDOM } = req('jsdom');
const dom = new JSDOM('<!doctype html><html><body></body></html>');
globalThis.window = dom.window; globalThis.document = dom.window.document;
const mermaid = (await import(pathToFileURL(req.resolve('mermaid')).href)).default;
try { await mermaid.parse(readFileSync(0, 'utf8')); console.log('OK'); }
catch (e) { console.log('ERR ' + String(e.message || e)); process.exit(1); }
"""


def hostile_graph() -> Lineage:
    """Every kind of node and state, with a hostile author, command and store URL and a
    unicode dataset name (the most a valid name allows)."""
    tree = ObjectId("ab" * 32)
    rid, lost = "0190" + "ab" * 14, "0190" + "cd" * 14
    foreign = 's3://eve:pw@bucket/"odd]path?sig=zz'
    rec = RunRecord(
        id=rid, name="tr-ain.2", command=(HOSTILE, "--x"), cwd="", author=HOSTILE,
        started="2026-01-02T03:04:05.678Z", ended="2026-01-02T03:04:06.789Z", exit=3,
        code=CodeState(None, False, None),
        inputs=(RunInput("src", 2, tree, None, foreign), RunInput("gone", 1, tree, "data/g")),
        params=(), environment=Environment("3.11", "CPython", HOSTILE, "x86_64"),
        outputs=(RunOutput("données-ß", 1, tree, "data/d"),),
    )  # fmt: skip
    graph = Lineage("données-ß@v1")
    nodes: list[VersionNode | RunNode] = [
        VersionNode("données-ß", 1, tree),
        RunNode(rid, rec, ObjectId("ef" * 32)),
        VersionNode("src", 2, tree, foreign, state="foreign"),
        VersionNode("gone", 1, tree, state="forgotten"),
        RunNode(lost, state="unfinished"),
        VersionNode("bad", 1, tree, state="damaged"),
    ]
    for node in nodes:
        graph.nodes[node.key] = node
    keys = [n.key for n in nodes]
    for a, b, kind in ((1, 0, "output"), (2, 1, "input"), (3, 1, "input"), (4, 3, "output")):
        graph.add_edge(keys[a], keys[b], kind)
    graph.add_edge(keys[5], keys[0], "derived")
    return graph


def test_mermaid_and_dot_escape_hostile_values(tmp_path: Path) -> None:
    graph = hostile_graph()
    mermaid = check_mermaid("\n".join(render(graph, "mermaid", "/s")))
    real_mermaid("\n".join(render(graph, "mermaid", "/s")), tmp_path)
    labels = {label for _, label in mermaid.nodes.values()}
    run_label = next(lb for lb in labels if lb.startswith("run tr-ain.2"))
    ended = "2026-01-02T03:04:06.789Z"
    assert run_label.split("\n") == ["run tr-ain.2", "0190abababab exit 3", HOSTILE, ended]
    assert "données-ß@v1\nsnapshot abababababab" in labels  # unicode letters kept as they are
    foreign = next(lb for lb in labels if lb.startswith("src@v2"))
    assert "pw" not in foreign and "sig" not in foreign and foreign.endswith('/"odd]path')
    assert len(mermaid.nodes) == 6 and len(mermaid.edges) == 5
    assert ("v3", "-.->|derived|", "v0") in mermaid.edges
    assert mermaid.classes == {
        ("v0", "asked"), ("v1", "foreign"), ("v2", "gone"), ("r1", "unfinished"),
        ("v3", "damaged"),
    }  # fmt: skip
    dot = "\n".join(render(graph, "dot", "/s"))
    nodes, found = check_dot(dot)
    assert nodes["r0"].split("\n")[2] == HOSTILE.replace("\x1b", "\\x1b").replace(
        "\u202e", "\\u202e"
    )
    assert len(nodes) == 6 and len(found) == 5
    real_dot(dot, nodes, found)


def test_hostile_values_through_the_command(repo: Path, tmp_path: Path) -> None:
    """A run whose author (from git config) and command are hostile, end to end."""
    author = 'Eve "q" ]) --> x; #quot; `md` <b> ünï ☃'
    subprocess.run(["git", "config", "user.name", author], cwd=repo, check=True)
    cmd = [sys.executable, "-c", 'import sys; print("]) --> \\"x\\""); sys.exit(4)']
    run(repo, "run", "--name", "odd", "--in", "model", "--", *cmd, code=4)
    mermaid_text = run(repo, "lineage", "model", "--format", "mermaid").stdout
    mermaid = check_mermaid(mermaid_text)
    real_mermaid(mermaid_text, tmp_path)
    assert any(f"{author} <author@example.invalid>" in lb for _, lb in mermaid.nodes.values())
    dot_text = run(repo, "lineage", "model", "--format", "dot").stdout
    nodes, found = check_dot(dot_text)
    real_dot(dot_text, nodes, found)
    assert any(f"{author} <author@example.invalid>" in lb for lb in nodes.values())
    events = run(repo, "lineage", "model", "--format", "openlineage").stdout.splitlines()
    odd = json.loads(events[-1])
    check_run_event(odd)
    assert odd["eventType"] == "FAIL" and odd["run"]["facets"]["datavc_run"]["command"] == cmd


def test_every_format_of_the_real_chain_parses(repo: Path, tmp_path: Path) -> None:
    for spec in ("mid", "model", "raw"):
        text = run(repo, "lineage", spec, "--format", "mermaid").stdout
        mermaid = check_mermaid(text)
        real_mermaid(text, tmp_path)
        doc = graph_json(repo, spec)
        assert len(mermaid.nodes) == len(doc["nodes"]) and len(mermaid.edges) == len(doc["edges"])
        assert ("v0", "asked") in mermaid.classes
        assert mermaid.nodes["v0"][1].startswith(f"{doc['root']}\nsnapshot ")
        dot = run(repo, "lineage", spec, "--format", "dot").stdout
        nodes, found = check_dot(dot)
        real_dot(dot, nodes, found)
        assert len(nodes) == len(doc["nodes"]) and len(found) == len(doc["edges"])
