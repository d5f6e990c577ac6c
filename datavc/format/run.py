"""Run records (``runs/<id>.json`` in a store) and run lock files (``runs/NAME.lock`` in a
workspace): canonical JSON and stable text (pure).

A run record says what one run of a command read, with which code, parameters and
environment, and what it wrote::

    {"type": "datavc-run", "format": 1, "id": RUN-ID, "name": "train",
     "command": ["python", "train.py"], "cwd": "", "author": "...",
     "started": "2026-12-04T16:00:00.123Z", "ended": "...", "exit": 0,
     "code": {"git_head": SHA or null, "dirty": false, "diff": HASH or null},
     "inputs": [{"name": "images", "version": 3, "tree": ID, "path": "data/images" or null,
                 "store": null or URL, "dirty": false}],
     "params": [{"path": "params.yaml", "hash": HASH, "size": 120, "content": BASE64 or null}],
     "environment": {"python": "3.11.9", "implementation": "CPython", "platform": "...",
                     "machine": "x86_64", "packages": {"numpy": "2.1.0"},
                     "env": {"SEED": "1"}, "container": {"CONTAINER_IMAGE": "..."}},
     "outputs": [{"name": "model", "version": 1, "tree": ID, "path": "models/model"}]}

The run id is a UUID (version 7: its first 48 bits are the start time in milliseconds, so
ids sort by time) written as 32 lower-case hex digits. A record is created exclusively,
after every output version it names was published: a run record never names a version
that does not exist. Everything in a record is checked against the limits below before it
is used; hashes are BLAKE3, hex.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, field
from typing import Any

from ..errors import BadInput, CorruptObject, UnsafePath
from .hashing import ObjectId, is_object_id
from .jsondoc import Malformed, array, integer, load_document, member, optional_string, string
from .paths import check_name, check_path, valid_name

RUN_FORMAT = 1
MAX_INPUTS = 10_000
MAX_OUTPUTS = 1_000
MAX_PARAMS = 64
MAX_PARAM_CONTENT = 64 << 10  # a parameter file up to this size is stored in the record
MAX_PACKAGES = 20_000
MAX_ENV = 256
MAX_ARGS = 4_096
MAX_TEXT = 64 << 10  # any one string in a record
EXIT_RANGE = (-255, 255)

_RUN_ID = re.compile(r"[0-9a-f]{32}")
_SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z")


@dataclass(frozen=True, slots=True)
class RunInput:
    """A snapshot a run read: ``path`` is its workspace path (None: opened by spec through
    ``datavc.open``); ``store`` is None for the run's own store, else the store's URL."""

    name: str
    version: int
    tree: ObjectId
    path: str | None = None
    store: str | None = None
    dirty: bool = False  # the workspace copy differed from the snapshot (--allow-dirty)

    @property
    def label(self) -> str:
        return f"{self.name}@v{self.version}"


@dataclass(frozen=True, slots=True)
class RunOutput:
    name: str
    version: int
    tree: ObjectId
    path: str

    @property
    def label(self) -> str:
        return f"{self.name}@v{self.version}"


@dataclass(frozen=True, slots=True)
class RunParam:
    """A parameter file: its workspace path, content hash and size; ``content`` is the
    file itself when it is at most MAX_PARAM_CONTENT bytes."""

    path: str
    hash: str
    size: int
    content: bytes | None = None


@dataclass(frozen=True, slots=True)
class CodeState:
    git_head: str | None
    dirty: bool
    diff: str | None  # BLAKE3 of the uncommitted changes (see docs/FORMAT.md), if dirty


@dataclass(frozen=True, slots=True)
class Environment:
    python: str
    implementation: str
    platform: str
    machine: str
    packages: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    container: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RunRecord:
    id: str
    name: str
    command: tuple[str, ...]
    cwd: str  # the command's folder, relative to the workspace root ("" for the root)
    author: str
    started: str
    ended: str
    exit: int
    code: CodeState
    inputs: tuple[RunInput, ...]
    params: tuple[RunParam, ...]
    environment: Environment
    outputs: tuple[RunOutput, ...]


def is_run_id(text: str) -> bool:
    return bool(_RUN_ID.fullmatch(text))


def run_key(run_id: str) -> str:
    return f"runs/{run_id}.json"


def uuid_text(run_id: str) -> str:
    """The run id in the 8-4-4-4-12 form OpenLineage and most tools print."""
    h = run_id
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def make_run_id(millis: int, random80: int) -> str:
    """A version-7 UUID from a time in milliseconds and 80 random bits (the caller's)."""
    value = (millis & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76  # version 7
    value |= ((random80 >> 62) & 0xFFF) << 64  # 12 random bits
    value |= 0b10 << 62  # the RFC 9562 variant
    value |= random80 & ((1 << 62) - 1)
    return f"{value:032x}"


# -- encoding -------------------------------------------------------------------------


def encode_run(r: RunRecord) -> bytes:
    doc: dict[str, Any] = {
        "type": "datavc-run",
        "format": RUN_FORMAT,
        "id": r.id,
        "name": r.name,
        "command": list(r.command),
        "cwd": r.cwd,
        "author": r.author,
        "started": r.started,
        "ended": r.ended,
        "exit": r.exit,
        "code": {"git_head": r.code.git_head, "dirty": r.code.dirty, "diff": r.code.diff},
        "inputs": [_input_doc(i) for i in r.inputs],
        "params": [
            {
                "path": p.path,
                "hash": p.hash,
                "size": p.size,
                "content": None if p.content is None else base64.b64encode(p.content).decode(),
            }
            for p in r.params
        ],
        "environment": {
            "python": r.environment.python,
            "implementation": r.environment.implementation,
            "platform": r.environment.platform,
            "machine": r.environment.machine,
            "packages": dict(sorted(r.environment.packages.items())),
            "env": dict(sorted(r.environment.env.items())),
            "container": dict(sorted(r.environment.container.items())),
        },
        "outputs": [
            {"name": o.name, "version": o.version, "tree": o.tree, "path": o.path}
            for o in r.outputs
        ],
    }
    try:
        check_run(r)
    except Malformed as err:
        raise BadInput(f"cannot record this run: {err}") from None
    text = json.dumps(doc, sort_keys=True, indent=1, ensure_ascii=False)
    try:
        return text.encode("utf-8") + b"\n"
    except UnicodeEncodeError:
        raise BadInput("a run record must be valid UTF-8 (command, paths or names)") from None


def _input_doc(i: RunInput) -> dict[str, Any]:
    return {
        "name": i.name,
        "version": i.version,
        "tree": i.tree,
        "path": i.path,
        "store": i.store,
        "dirty": i.dirty,
    }


# -- decoding -------------------------------------------------------------------------


def decode_run(data: bytes, obj: str) -> RunRecord:
    """A run record, parsed completely and checked against every limit above."""
    try:
        doc = load_document(data)
        if doc.get("type") != "datavc-run" or doc.get("format") != RUN_FORMAT:
            raise Malformed("not a datavc run record of a known format")
        rec = RunRecord(
            id=string(doc, "id"),
            name=string(doc, "name"),
            command=tuple(_strings(array(doc, "command"), "command", MAX_ARGS)),
            cwd=string(doc, "cwd"),
            author=_text(doc, "author"),
            started=string(doc, "started"),
            ended=string(doc, "ended"),
            exit=integer(doc, "exit", *EXIT_RANGE),
            code=_code(member(doc, "code")),
            inputs=tuple(_input(d) for d in _limited(doc, "inputs", MAX_INPUTS)),
            params=tuple(_param(d) for d in _limited(doc, "params", MAX_PARAMS)),
            environment=_environment(member(doc, "environment")),
            outputs=tuple(_output(d) for d in _limited(doc, "outputs", MAX_OUTPUTS)),
        )
        check_run(rec)
    except Malformed as err:
        raise CorruptObject(obj, f"run record is malformed: {err}") from None
    return rec


def check_run(r: RunRecord) -> None:
    """The rules every run record obeys (ids, names, paths, times); Malformed if not."""
    if not is_run_id(r.id):
        raise Malformed("'id' is not a run id (32 hex digits)")
    if not valid_name(r.name):
        raise Malformed(f"'name' {r.name[:40]!r} is not a valid name")
    if not r.command:
        raise Malformed("'command' is empty")
    if r.cwd:
        _path(r.cwd, "cwd")
    for t in (r.started, r.ended):
        if not _TIME.fullmatch(t):
            raise Malformed(f"time {t[:40]!r} is not an ISO 8601 UTC time")
    if r.code.git_head is not None and not _SHA.fullmatch(r.code.git_head):
        raise Malformed("'git_head' is not a git object id")
    if r.code.diff is not None and not is_object_id(r.code.diff):
        raise Malformed("'diff' is not a hash")
    for i in r.inputs:
        _version_ref(i.name, i.version, i.tree)
        if i.path is not None:
            _path(i.path, "input path")
    seen: set[str] = set()
    for p in r.params:
        _path(p.path, "param path")
        if p.path in seen:
            raise Malformed(f"param {p.path!r} appears twice")
        seen.add(p.path)
        if not is_object_id(p.hash):
            raise Malformed(f"param {p.path!r} has no valid hash")
        if p.content is not None and len(p.content) != p.size:
            raise Malformed(f"param {p.path!r}: content is not {p.size} bytes")
    for o in r.outputs:
        _version_ref(o.name, o.version, o.tree)
        _path(o.path, "output path")


def _version_ref(name: str, version: int, tree: str) -> None:
    if not valid_name(name) or version < 1 or not is_object_id(tree):
        raise Malformed(f"{name[:40]!r}@v{version} is not a valid version reference")


def _path(path: str, what: str) -> None:
    try:
        check_path(path)
    except UnsafePath as err:
        raise Malformed(f"{what} {path[:60]!r}: {err}") from None


def _limited(doc: Any, key: str, limit: int) -> list[Any]:
    items = array(doc, key)
    if len(items) > limit:
        raise Malformed(f"{key!r} holds {len(items)} items, more than {limit}")
    return items


def _strings(items: list[Any], key: str, limit: int) -> list[str]:
    if len(items) > limit:
        raise Malformed(f"{key!r} holds more than {limit} items")
    if not all(isinstance(s, str) and len(s) <= MAX_TEXT for s in items):
        raise Malformed(f"{key!r} holds an item that is not a string of at most {MAX_TEXT}")
    return items


def _text(doc: Any, key: str) -> str:
    value = string(doc, key)
    if len(value) > MAX_TEXT:
        raise Malformed(f"{key!r} is longer than {MAX_TEXT}")
    return value


def _boolean(doc: Any, key: str) -> bool:
    value = member(doc, key)
    if not isinstance(value, bool):
        raise Malformed(f"{key!r} is not true or false")
    return value


def _code(doc: Any) -> CodeState:
    return CodeState(
        git_head=optional_string(doc, "git_head"),
        dirty=_boolean(doc, "dirty"),
        diff=optional_string(doc, "diff"),
    )


def _input(doc: Any) -> RunInput:
    return RunInput(
        name=string(doc, "name"),
        version=integer(doc, "version", 1),
        tree=ObjectId(string(doc, "tree")),
        path=optional_string(doc, "path"),
        store=optional_string(doc, "store"),
        dirty=_boolean(doc, "dirty"),
    )


def _output(doc: Any) -> RunOutput:
    return RunOutput(
        name=string(doc, "name"),
        version=integer(doc, "version", 1),
        tree=ObjectId(string(doc, "tree")),
        path=string(doc, "path"),
    )


def _param(doc: Any) -> RunParam:
    content = optional_string(doc, "content")
    size = integer(doc, "size")
    raw = None
    if content is not None:
        if len(content) > (MAX_PARAM_CONTENT * 4) // 3 + 4:
            raise Malformed("a param's content is larger than the limit")
        try:
            raw = base64.b64decode(content, validate=True)
        except (binascii.Error, ValueError):
            raise Malformed("a param's content is not base64") from None
    return RunParam(path=string(doc, "path"), hash=string(doc, "hash"), size=size, content=raw)


def _mapping(doc: Any, key: str, limit: int) -> dict[str, str]:
    value = member(doc, key)
    if not isinstance(value, dict) or len(value) > limit:
        raise Malformed(f"{key!r} is not an object of at most {limit} strings")
    if not all(isinstance(v, str) and len(k) + len(v) <= MAX_TEXT for k, v in value.items()):
        raise Malformed(f"{key!r} holds a value that is not a short string")
    return dict(value)


def _environment(doc: Any) -> Environment:
    return Environment(
        python=_text(doc, "python"),
        implementation=_text(doc, "implementation"),
        platform=_text(doc, "platform"),
        machine=_text(doc, "machine"),
        packages=_mapping(doc, "packages", MAX_PACKAGES),
        env=_mapping(doc, "env", MAX_ENV),
        container=_mapping(doc, "container", MAX_ENV),
    )


# -- lock files -----------------------------------------------------------------------

LOCK_HEADER = "# datavc run lock: written by 'datavc run', commit it with git"
LOCK_SUFFIX = ".lock"
LOCK_FOLDER = "runs"
MAX_LOCK = 1 << 20


@dataclass(frozen=True, slots=True)
class RunLock:
    """What a lock file pins: the run (by id) and the hash of its record's bytes. The other
    lines (command, code, inputs, params, outputs) restate the record for ``git diff``."""

    name: str
    id: str
    record: ObjectId


def encode_lock(r: RunRecord, record_hash: ObjectId) -> str:
    """A lock file: one fact a line, in a fixed order, so that two runs diff line by line."""
    code = r.code.git_head or "none"
    state = f"dirty {r.code.diff}" if r.code.dirty else "clean"
    lines = [
        LOCK_HEADER,
        f"run: {r.name}",
        f"id: {r.id}",
        f"record: {record_hash}",
        f"command: {json.dumps(list(r.command), ensure_ascii=False)}",
        f"code: {code} {state}",
    ]
    for i in sorted(r.inputs, key=lambda i: (i.name, i.version)):
        where = f" path={i.path}" if i.path else ""
        where += f" store={i.store}" if i.store else ""
        where += " dirty" if i.dirty else ""
        lines.append(f"input: {i.label} {i.tree}{where}")
    for p in sorted(r.params, key=lambda p: p.path):
        lines.append(f"param: {p.path} {p.hash}")
    for o in sorted(r.outputs, key=lambda o: o.path):
        lines.append(f"output: {o.label} {o.tree} path={o.path}")
    return "\n".join(lines) + "\n"


def decode_lock(text: str, where: str) -> RunLock:
    """The run a lock file pins (the other lines are for people and ``git diff``)."""
    if len(text) > MAX_LOCK or not text.startswith(LOCK_HEADER):
        raise BadInput(f"{where} is not a datavc run lock")
    fields: dict[str, str] = {}
    for line in text.splitlines()[1:]:
        key, _, value = line.partition(": ")
        if key in ("run", "id", "record"):
            if key in fields:
                raise BadInput(f"{where}: {key!r} appears twice")
            fields[key] = value.strip()
    try:
        lock = RunLock(fields["run"], fields["id"], ObjectId(fields["record"]))
    except KeyError as err:
        raise BadInput(f"{where} is not a datavc run lock ({err} missing)") from None
    check_name(lock.name)
    if not is_run_id(lock.id) or not is_object_id(lock.record):
        raise BadInput(f"{where}: the run id or record hash is not valid")
    return lock
