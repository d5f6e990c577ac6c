"""Run records in a store (``runs/<id>.json``): create exclusively, read, list, find.

A run record is the last write of a run: every output version it names was published
before it. It is created with an exclusive create, read back, and never replaced.
"""

from __future__ import annotations

from collections.abc import Iterator

from ..errors import BadInput, CorruptObject, NotFoundError, ObjectNotFound
from ..format.hashing import ObjectId, object_id
from ..format.run import RunRecord, decode_run, encode_run, is_run_id, run_key
from .chunkstore import ChunkStore


def create_run(store: ChunkStore, record: RunRecord) -> ObjectId:
    """Create the record (exclusively); return the hash of its bytes. A record already
    there with the same bytes is this one (a retry after a lost answer)."""
    data = encode_run(record)
    key = run_key(record.id)
    if not store.backend.create_exclusive(key, data):
        if store.backend.read(key) != data:
            raise CorruptObject(key, "another run record already has this run id")
    elif store.backend.read(key) != data:
        raise CorruptObject(key, "the store did not keep the run record written")
    return object_id(data)


def read_run(store: ChunkStore, run_id: str) -> tuple[RunRecord, ObjectId]:
    """The run record ``run_id`` and the hash of its bytes."""
    if not is_run_id(run_id):
        raise BadInput(f"{run_id[:40]!r} is not a run id (32 hex digits)")
    key = run_key(run_id)
    try:
        data = store.backend.read(key)
    except ObjectNotFound:
        raise NotFoundError(f"no run {run_id} in the store") from None
    rec = decode_run(data, key)
    if rec.id != run_id:
        raise CorruptObject(key, f"it holds run {rec.id}")
    return rec, object_id(data)


def run_ids(store: ChunkStore) -> list[str]:
    """Every run id in the store, oldest first (ids sort by start time)."""
    out = []
    for n in store.backend.list("runs"):
        if n.endswith(".json") and is_run_id(n[:-5]):
            out.append(n[:-5])
    return sorted(out)


def find_run(store: ChunkStore, prefix: str) -> str:
    """The one run id that starts with ``prefix`` (at least 6 hex digits; dashes of the
    8-4-4-4-12 form are ignored)."""
    text = prefix.replace("-", "").lower()
    if len(text) < 6 or not all(c in "0123456789abcdef" for c in text):
        raise BadInput(f"{prefix!r} is not a run id or a prefix of one (6+ hex digits)")
    found = [i for i in run_ids(store) if i.startswith(text)]
    if not found:
        raise NotFoundError(f"no run {prefix} in the store")
    if len(found) > 1:
        raise BadInput(f"run id prefix {prefix!r} is ambiguous ({len(found)} runs)")
    return found[0]


def iter_runs(store: ChunkStore) -> Iterator[tuple[RunRecord, ObjectId]]:
    """Every run record, oldest first; one that cannot be read is skipped (fsck names it)."""
    for run_id in run_ids(store):
        try:
            yield read_run(store, run_id)
        except (CorruptObject, NotFoundError):
            continue
