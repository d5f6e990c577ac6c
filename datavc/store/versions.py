"""Version records and tags in a store: list, read, publish, resolve a spec.

Publishing is the last write of a commit. The record for version N is created with an
exclusive create; if it exists, the writer reads it back: its own nonce means an earlier try
succeeded (a lost response), anything else means another writer won N, so it tries N+1. A
create that fails in a way that passes (a reset, a timeout, a 5xx) is tried again on the same
N by the backend (:mod:`.retry`); if the lost attempt had in fact created the record, the
retry finds it there, and it is recognised by its nonce.
"""

from __future__ import annotations

import dataclasses
import re
from typing import TYPE_CHECKING

from ..errors import (
    BadInput,
    Conflict,
    CorruptObject,
    DatasetNotFound,
    ObjectNotFound,
    VersionNotFound,
)
from ..format.hashing import ObjectId
from ..format.record import VersionRecord, decode_record, encode_record
from .chunkstore import ChunkStore

if TYPE_CHECKING:
    from ..format.spec import VersionSpec

_RECORD_NAME = re.compile(r"([1-9][0-9]*)\.json")  # no leading zero: "01.json" is no record
MAX_PUBLISH_TRIES = 100
RECENT = 8  # how many newest records a publish checks for its own nonce


def version_numbers(store: ChunkStore, name: str) -> list[int]:
    names = store.backend.list(f"versions/{name}")
    return sorted(int(m.group(1)) for n in names if (m := _RECORD_NAME.fullmatch(n)))


def dataset_names(store: ChunkStore) -> list[str]:
    return store.backend.list("versions")


def read_version(store: ChunkStore, name: str, number: int) -> VersionRecord:
    key = f"versions/{name}/{number}.json"
    try:
        data = store.backend.read(key)
    except ObjectNotFound:
        _ = store.config  # no store at all: say that, not "no such version"
        if not version_numbers(store, name):
            raise DatasetNotFound(name) from None
        raise VersionNotFound(name, f"v{number}") from None
    rec = decode_record(data, key)
    if rec.name != name or rec.version != number:
        raise CorruptObject(key, f"it holds {rec.name}@v{rec.version}")
    return rec


def publish_version(store: ChunkStore, record: VersionRecord) -> VersionRecord:
    """Create the record under the next free number; return it with that number.

    A create that fails in passing is retried on the same number (by the backend); if it had
    in fact succeeded, the retry finds the record and recognises it by its nonce, so a lost
    response is no conflict.
    """
    _ = store.config  # a store this datavc can write (and not a bare folder)
    numbers = version_numbers(store, record.name)
    for n in reversed(numbers[-RECENT:]):
        earlier = read_version(store, record.name, n)
        if earlier.nonce == record.nonce:
            return earlier  # published before, by an attempt whose answer was lost
    number = (numbers[-1] + 1) if numbers else 1
    for _ in range(MAX_PUBLISH_TRIES):
        candidate = dataclasses.replace(record, version=number)
        key = f"versions/{record.name}/{number}.json"
        if store.backend.create_exclusive(key, encode_record(candidate)):
            return candidate
        try:
            existing = decode_record(store.backend.read(key), key)
        except ObjectNotFound:
            continue  # vanished between create and read: try the same number again
        if existing.nonce == record.nonce:
            return existing
        number += 1
    raise Conflict(f"could not publish a version of {record.name!r}: too many concurrent writers")


def resolve(store: ChunkStore, spec: VersionSpec) -> VersionRecord:
    """Resolve a store-side spec: none or latest, vN, a tag, or a snapshot-id prefix."""
    if spec.kind == "number":
        return read_version(store, spec.name, spec.number)
    numbers = version_numbers(store, spec.name)
    if not numbers:
        _ = store.config  # no store at all: say that, not "no such dataset"
        raise DatasetNotFound(spec.name)
    if spec.kind in ("none", "latest"):
        return read_version(store, spec.name, numbers[-1])
    if spec.kind == "ref":
        tagged = read_tag(store, spec.name, spec.value)
        if tagged is not None:
            return read_version(store, spec.name, tagged)
        if spec.may_be_snapshot_prefix:
            return _by_snapshot_prefix(store, spec, numbers)
    raise VersionNotFound(spec.name, str(spec).split("@", 1)[-1])


def _by_snapshot_prefix(store: ChunkStore, spec: VersionSpec, numbers: list[int]) -> VersionRecord:
    matches: dict[ObjectId, VersionRecord] = {}
    for n in reversed(numbers):
        rec = read_version(store, spec.name, n)
        if rec.tree.startswith(spec.value):
            matches.setdefault(rec.tree, rec)  # the newest version with that snapshot
    if len(matches) > 1:
        raise BadInput(f"snapshot prefix {spec.value!r} of {spec.name!r} is ambiguous")
    if not matches:
        raise VersionNotFound(spec.name, spec.value)
    return next(iter(matches.values()))


def read_tag(store: ChunkStore, name: str, tag: str) -> int | None:
    try:
        data = store.backend.read(f"tags/{name}/{tag}")
    except ObjectNotFound:
        return None
    text = data.decode("utf-8", "replace").strip()
    if not re.fullmatch(r"[0-9]{1,12}", text):
        raise BadInput(f"tag {name}@{tag} is damaged: {text[:40]!r}")
    return int(text)
