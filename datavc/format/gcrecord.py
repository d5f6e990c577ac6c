"""gc records (``gc/<id>``): the objects one gc run found garbage (pure; bytes in, values out).

::

    {"type": "datavc-gc", "format": 2, "time": "2026-12-04T12:00:00Z",
     "packs": [pack id, ...], "trees": [page id, ...]}

A record is written before anything it lists is deleted, and is named by the BLAKE3 of its
bytes. Its age (the store's modification time of the object) starts the grace period: a
later gc deletes a listed object only once the record is older than the grace period and
the object is still garbage. Writers read the records before an upload and never reuse what
they list (docs/FORMAT.md, "Garbage collection").
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from ..errors import CorruptObject
from .hashing import ObjectId, is_object_id
from .jsondoc import Malformed, array, load_document, string

GC_FORMAT = 2
MAX_LISTED = 100_000  # objects of one kind in one record (a run writes several if needed)


@dataclass(frozen=True, slots=True)
class GcRecord:
    time: str  # when it was written (UTC), for people; the object's age is what counts
    packs: tuple[ObjectId, ...]
    trees: tuple[ObjectId, ...]


def encode_gc_record(r: GcRecord) -> bytes:
    if len(r.packs) > MAX_LISTED or len(r.trees) > MAX_LISTED:
        raise ValueError("a gc record lists at most MAX_LISTED objects of a kind")
    doc = {
        "type": "datavc-gc",
        "format": GC_FORMAT,
        "time": r.time,
        "packs": sorted(r.packs),
        "trees": sorted(r.trees),
    }
    return json.dumps(doc, sort_keys=True, indent=1).encode("ascii") + b"\n"


def decode_gc_record(data: bytes, obj: str) -> GcRecord:
    try:
        doc = load_document(data)
        if doc.get("type") != "datavc-gc" or doc.get("format") != GC_FORMAT:
            raise CorruptObject(obj, "not a datavc gc record of a known format")
        time = string(doc, "time")
        lists = []
        for key in ("packs", "trees"):
            items = array(doc, key)
            if len(items) > MAX_LISTED or not all(
                isinstance(i, str) and is_object_id(i) for i in items
            ):
                raise Malformed(f"{key!r} must be at most {MAX_LISTED} object ids")
            lists.append(tuple(ObjectId(i) for i in items))
    except Malformed as err:
        raise CorruptObject(obj, f"gc record is malformed: {err}") from None
    return GcRecord(time, lists[0], lists[1])
