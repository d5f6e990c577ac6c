"""Version records (``versions/<name>/<N>.json``): canonical JSON (pure).

::

    {"type": "datavc-version", "format": 2, "name": "images", "version": 3,
     "kind": "dir", "tree": ID, "root": {tree root}, "parent": 2 or null,
     "message": "...", "author": "...", "time": "2026-11-28T06:00:00Z",
     "git_head": "<sha>" or null, "nonce": "<uuid hex>",
     "stats": {"files": N, "bytes": B, "new_bytes": b, "new_chunks": c, "new_objects": o}}

Two fields are present only when they say something: ``"run": RUN-ID``, the run that wrote
this version (``datavc run``; its record is ``runs/<RUN-ID>.json``), and ``"derived_from":
[{"name": "images", "version": 3, "tree": ID, "store": null or URL}, ...]``, the versions it
was made from (a run's inputs, or ``datavc commit --from``). A record without them is
byte-for-byte what datavc wrote before they existed.

``root`` is the snapshot's tree root (see :mod:`datavc.format.tree`) and ``tree`` its id, the
snapshot id: a reader checks that the root hashes to it. Carrying the root here saves a
read and an object per version. ``nonce`` is unique per commit attempt: after a lost
response to an exclusive create, the writer reads the record back and recognises its own
write by it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from ..errors import BadInput, CorruptObject
from .hashing import ObjectId, is_object_id
from .jsondoc import (
    Malformed,
    integer,
    load_document,
    member,
    optional_integer,
    optional_string,
    string,
)
from .paths import valid_name
from .tree import TreeRoot
from .treeroot import root_doc, root_from_doc, snapshot_id

RECORD_FORMAT = 2
MAX_DERIVED = 10_000


@dataclass(frozen=True, slots=True)
class DerivedFrom:
    """A version another was made from; ``store`` is None for the same store."""

    name: str
    version: int
    tree: ObjectId
    store: str | None = None

    @property
    def label(self) -> str:
        return f"{self.name}@v{self.version}"


@dataclass(frozen=True, slots=True)
class CommitStats:
    files: int = 0
    bytes: int = 0
    new_bytes: int = 0
    new_chunks: int = 0
    new_objects: int = 0


@dataclass(frozen=True, slots=True)
class VersionRecord:
    name: str
    version: int
    kind: str
    tree: ObjectId
    parent: int | None
    message: str
    author: str
    time: str
    git_head: str | None
    nonce: str
    root: TreeRoot
    stats: CommitStats = field(default_factory=CommitStats)
    run: str | None = None
    derived_from: tuple[DerivedFrom, ...] = ()


def encode_record(r: VersionRecord) -> bytes:
    doc: dict[str, Any] = {
        "type": "datavc-version",
        "format": RECORD_FORMAT,
        "name": r.name,
        "version": r.version,
        "kind": r.kind,
        "tree": r.tree,
        "root": root_doc(r.root),
        "parent": r.parent,
        "message": r.message,
        "author": r.author,
        "time": r.time,
        "git_head": r.git_head,
        "nonce": r.nonce,
        "stats": {
            "files": r.stats.files,
            "bytes": r.stats.bytes,
            "new_bytes": r.stats.new_bytes,
            "new_chunks": r.stats.new_chunks,
            "new_objects": r.stats.new_objects,
        },
    }
    if r.run is not None:
        doc["run"] = r.run
    if r.derived_from:
        doc["derived_from"] = [
            {"name": d.name, "version": d.version, "tree": d.tree, "store": d.store}
            for d in r.derived_from
        ]
    text = json.dumps(doc, sort_keys=True, indent=1, ensure_ascii=False)
    try:
        return text.encode("utf-8") + b"\n"
    except UnicodeEncodeError:
        raise BadInput("a version record must be valid UTF-8 (message or author)") from None


@dataclass(frozen=True, slots=True)
class Forgotten:
    """What ``forget`` leaves at a version record's key: the number stays taken, and the
    tree and nonce of the version it was are kept (a publish that lost its response still
    recognises its nonce), but the root is gone: nothing keeps the version's data."""

    name: str
    version: int
    tree: ObjectId
    nonce: str
    time: str  # when it was forgotten
    author: str  # who forgot it


def encode_forgotten(f: Forgotten) -> bytes:
    doc = {
        "type": "datavc-forgotten",
        "format": RECORD_FORMAT,
        "name": f.name,
        "version": f.version,
        "tree": f.tree,
        "nonce": f.nonce,
        "time": f.time,
        "author": f.author,
    }
    return json.dumps(doc, sort_keys=True, indent=1, ensure_ascii=False).encode("utf-8") + b"\n"


def decode_version(data: bytes, obj: str) -> VersionRecord | Forgotten:
    """What is at a version record's key: the record, or what ``forget`` left there."""
    try:
        doc = load_document(data)
        if doc.get("type") != "datavc-forgotten":
            return decode_record(data, obj, doc)
        if doc.get("format") != RECORD_FORMAT:
            raise CorruptObject(obj, "not a datavc version record of a known format")
        gone = Forgotten(
            name=string(doc, "name"),
            version=integer(doc, "version", 1),
            tree=ObjectId(string(doc, "tree")),
            nonce=string(doc, "nonce"),
            time=string(doc, "time"),
            author=string(doc, "author"),
        )
    except Malformed as err:
        raise CorruptObject(obj, f"version record is malformed: {err}") from None
    if not is_object_id(gone.tree):
        raise CorruptObject(obj, "version record names no valid tree")
    return gone


def decode_record(data: bytes, obj: str, parsed: dict[str, Any] | None = None) -> VersionRecord:
    """A version record, checked: strict JSON (:mod:`.jsondoc`) with every field of its
    type and range, and a tree root that hashes to ``tree``."""
    try:
        doc = load_document(data) if parsed is None else parsed
        if doc.get("type") != "datavc-version" or doc.get("format") != RECORD_FORMAT:
            raise CorruptObject(obj, "not a datavc version record of a known format")
        stats = member(doc, "stats")
        rec = VersionRecord(
            name=string(doc, "name"),
            version=integer(doc, "version", 1),
            kind=string(doc, "kind"),
            tree=ObjectId(string(doc, "tree")),
            parent=optional_integer(doc, "parent", 1),
            message=string(doc, "message"),
            author=string(doc, "author"),
            time=string(doc, "time"),
            git_head=optional_string(doc, "git_head"),
            nonce=string(doc, "nonce"),
            root=root_from_doc(member(doc, "root"), obj),
            stats=_stats(stats),
            run=optional_string(doc, "run"),
            derived_from=_derived(doc.get("derived_from")),
        )
    except Malformed as err:
        raise CorruptObject(obj, f"version record is malformed: {err}") from None
    if not is_object_id(rec.tree) or rec.kind not in ("dir", "file"):
        raise CorruptObject(obj, "version record names no valid tree")
    if rec.run is not None and not re.fullmatch(r"[0-9a-f]{32}", rec.run):
        raise CorruptObject(obj, "version record names no valid run id")
    if snapshot_id(rec.root) != rec.tree:
        raise CorruptObject(obj, "the tree root in the version record does not hash to its id")
    return rec


def _derived(doc: Any) -> tuple[DerivedFrom, ...]:
    """The ``derived_from`` list: each a valid name, version and tree id."""
    if doc is None:
        return ()
    if not isinstance(doc, list) or len(doc) > MAX_DERIVED:
        raise Malformed(f"'derived_from' is not a list of at most {MAX_DERIVED} versions")
    out = []
    for d in doc:
        ref = DerivedFrom(
            name=string(d, "name"),
            version=integer(d, "version", 1),
            tree=ObjectId(string(d, "tree")),
            store=optional_string(d, "store"),
        )
        if not valid_name(ref.name) or not is_object_id(ref.tree):
            raise Malformed("'derived_from' names an invalid version")
        out.append(ref)
    return tuple(out)


_STATS = ("files", "bytes", "new_bytes", "new_chunks", "new_objects")


def _stats(doc: Any) -> CommitStats:
    """A record's stats: a missing field reads as 0, an unknown one is an error."""
    if not isinstance(doc, dict) or set(doc) - set(_STATS):
        raise Malformed("'stats' holds a field other than " + ", ".join(_STATS))
    return CommitStats(*(integer(doc, k) if k in doc else 0 for k in _STATS))
