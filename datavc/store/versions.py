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
import functools
import re
from typing import TYPE_CHECKING

from ..errors import (
    BadInput,
    Conflict,
    CorruptObject,
    DatasetNotFound,
    DatavcError,
    IntegrityError,
    NotFoundError,
    ObjectNotFound,
    StoreUnreachable,
    UsageError,
    VersionForgotten,
    VersionNotFound,
)
from ..format.hashing import ObjectId
from ..format.record import (
    Forgotten,
    VersionRecord,
    decode_version,
    encode_forgotten,
    encode_record,
)
from .backend import Created
from .chunkstore import ChunkStore
from .overlap import Overlap

if TYPE_CHECKING:
    from ..format.spec import VersionSpec

_RECORD_NAME = re.compile(r"([1-9][0-9]*)\.json")  # no leading zero: "01.json" is no record
MAX_PUBLISH_TRIES = 100
RECENT = 8  # how many newest records a publish checks for its own nonce


def version_numbers(store: ChunkStore, name: str) -> list[int]:
    names = store.backend.list(f"versions/{name}")
    return sorted(int(m.group(1)) for n in names if (m := _RECORD_NAME.fullmatch(n)))


def dataset_names(store: ChunkStore) -> list[str]:
    """The datasets the store has versions of (names that are no dataset name are skipped)."""
    from ..format.paths import valid_name

    return [n for n in store.backend.list("versions") if valid_name(n)]


def read_version(store: ChunkStore, name: str, number: int) -> VersionRecord:
    """Version ``number`` of ``name``; VersionForgotten if ``forget`` removed it."""
    rec = read_entry(store, name, number)
    if isinstance(rec, Forgotten):
        raise VersionForgotten(name, number, f"by {rec.author} at {rec.time}")
    return rec


def read_entry(store: ChunkStore, name: str, number: int) -> VersionRecord | Forgotten:
    """What is at version ``number``'s key: its record, or what ``forget`` left there."""
    key = f"versions/{name}/{number}.json"
    try:
        data = store.backend.read(key)
    except ObjectNotFound:
        _ = store.config  # no store at all: say that, not "no such version"
        if not version_numbers(store, name):
            raise DatasetNotFound(name) from None
        raise VersionNotFound(name, f"v{number}") from None
    return _checked(decode_version(data, key), name, number, key)


def _checked(
    rec: VersionRecord | Forgotten, name: str, number: int, key: str
) -> VersionRecord | Forgotten:
    if rec.name != name or rec.version != number:
        raise CorruptObject(key, f"it holds {rec.name}@v{rec.version}")
    return rec


def live_versions(store: ChunkStore, name: str) -> list[VersionRecord]:
    """Every version of ``name`` that is not forgotten, oldest first."""
    out = []
    for n in version_numbers(store, name):
        rec = read_entry(store, name, n)
        if isinstance(rec, VersionRecord):
            out.append(rec)
    return out


def forget_version(store: ChunkStore, name: str, number: int, who: str, when: str) -> bool:
    """Replace version ``number``'s record with what ``forget`` leaves (keeping its number,
    tree and nonce); False if it was forgotten already."""
    rec = read_entry(store, name, number)
    if isinstance(rec, Forgotten):
        return False
    gone = Forgotten(rec.name, rec.version, rec.tree, rec.nonce, when, who)
    store.backend.replace(f"versions/{name}/{number}.json", encode_forgotten(gone))
    return True


@dataclasses.dataclass(frozen=True, slots=True)
class Start:
    """Where a publish starts (:func:`publish_start`): the version an earlier attempt with
    the same nonce published (its answer lost), or else the number to try first."""

    number: int
    published: VersionRecord | None = None


def publish_start(store: ChunkStore, name: str, nonce: str) -> Start:
    """List ``versions/<name>/`` and read its ``RECENT`` newest records (at once, on a
    remote store): one of them may hold ``nonce``, published by an attempt whose answer was
    lost. Else the first number to try is the largest + 1, or 1."""
    numbers = version_numbers(store, name)
    recent = list(reversed(numbers[-RECENT:]))
    with Overlap(not store.backend.is_local) as overlap:
        entries = overlap.map(functools.partial(_recent_entry, store, name), recent)
    for n, earlier in zip(recent, entries, strict=True):
        if earlier is not None and earlier.nonce == nonce:
            return Start(n, _published(earlier))
    return Start((numbers[-1] + 1) if numbers else 1)


def _recent_entry(store: ChunkStore, name: str, number: int) -> VersionRecord | Forgotten | None:
    try:
        return read_entry(store, name, number)
    except IntegrityError:
        return None  # a damaged record (fsck names it) must not stop every later commit


def publish_version(
    store: ChunkStore, record: VersionRecord, start: Start | None = None
) -> VersionRecord:
    """Create the record under the next free number; return it with that number. ``start``:
    :func:`publish_start`'s answer, if the caller asked for it already (alongside its own
    requests; it has then also read the store config).

    A create that fails in passing is retried on the same number (by the backend); if it had
    in fact succeeded, the retry finds the record and recognises it by its nonce, so a lost
    response is no conflict.
    """
    if start is None:
        _ = store.config  # a store this datavc can write (and not a bare folder)
        start = publish_start(store, record.name, record.nonce)
    if start.published is not None:  # published before, by an attempt whose answer was lost
        return start.published
    number = start.number
    for _ in range(MAX_PUBLISH_TRIES):
        candidate = dataclasses.replace(record, version=number)
        key = f"versions/{record.name}/{number}.json"
        data = encode_record(candidate)
        try:
            created = store.backend.create(key, data)
        except StoreUnreachable:
            # The backend's retries are spent, but the create may have succeeded with only
            # its answer lost: one look settles it (our nonce there means it did).
            mine = _own_record(store, key, record.nonce)
            if mine is None:
                raise
            return mine
        if created is Created.CONFIRMED:  # the answer confirms the store keeps these bytes
            return candidate
        if created is Created.CREATED:
            _check_kept(store, key, data)
            return candidate
        try:
            existing = decode_version(store.backend.read(key), key)
        except ObjectNotFound:
            continue  # vanished between create and read: try the same number again
        if existing.nonce == record.nonce:
            return _published(existing)
        number += 1
    raise Conflict(f"could not publish a version of {record.name!r}: too many concurrent writers")


def _own_record(store: ChunkStore, key: str, nonce: str) -> VersionRecord | None:
    """The record at ``key`` if this publish created it (its nonce), else None; None too
    if it cannot be read."""
    try:
        existing = decode_version(store.backend.read(key), key)
    except DatavcError:
        return None
    return _published(existing) if existing.nonce == nonce else None


def _check_kept(store: ChunkStore, key: str, data: bytes) -> None:
    """Read back a record just created: a store that kept part of it (and said it kept
    it all) gets the whole record written over its own damaged one, once. (If it cannot
    be read back now, the create's success stands.)"""
    for attempt in range(2):
        try:
            if store.backend.read(key) == data:
                return
        except ObjectNotFound:
            pass
        except StoreUnreachable:
            return
        if attempt == 0:
            store.backend.replace(key, data)
    raise CorruptObject(key, "the store did not keep the version record written")


def _published(rec: VersionRecord | Forgotten) -> VersionRecord:
    if isinstance(rec, Forgotten):  # published, then forgotten by someone else meanwhile
        raise VersionForgotten(rec.name, rec.version, f"by {rec.author} at {rec.time}")
    return rec


def resolve(store: ChunkStore, spec: VersionSpec) -> VersionRecord:
    """Resolve a store-side spec: none or latest, vN, a tag, or a snapshot-id prefix."""
    if spec.kind == "number":
        return read_version(store, spec.name, spec.number)
    numbers = version_numbers(store, spec.name)
    if not numbers:
        _ = store.config  # no store at all: say that, not "no such dataset"
        raise DatasetNotFound(spec.name)
    if spec.kind in ("none", "latest"):
        for n in reversed(numbers):
            rec = read_entry(store, spec.name, n)
            if isinstance(rec, VersionRecord):
                return rec
        raise VersionNotFound(spec.name, "latest (every version is forgotten)")
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
        rec = read_entry(store, spec.name, n)
        if isinstance(rec, Forgotten):
            continue
        if rec.tree.startswith(spec.value):
            matches.setdefault(rec.tree, rec)  # the newest version with that snapshot
    if len(matches) > 1:
        raise BadInput(f"snapshot prefix {spec.value!r} of {spec.name!r} is ambiguous")
    if not matches:
        raise VersionNotFound(spec.name, spec.value)
    return next(iter(matches.values()))


def list_tags(store: ChunkStore, name: str) -> dict[str, int]:
    """A dataset's tags and the version each names (names that are no tag are skipped)."""
    from ..format.spec import check_tag

    out = {}
    for tag in store.backend.list(f"tags/{name}"):
        try:
            check_tag(tag)
        except BadInput:
            continue  # a temporary file, or a stray: not a tag
        number = read_tag(store, name, tag)
        if number is not None:
            out[tag] = number
    return out


def write_tag(store: ChunkStore, name: str, tag: str, number: int, force: bool) -> int | None:
    """Point ``NAME@tag`` at version ``number``; return the version it named before (None if
    new). An existing tag that names another version is moved only with ``force``."""
    key = f"tags/{name}/{tag}"
    data = f"{number}\n".encode()
    if store.backend.create_exclusive(key, data):
        return None
    before = read_tag(store, name, tag)
    if before == number:
        return before
    if not force:
        raise UsageError(f"tag {name}@{tag} names v{before}: use --force to move it to v{number}")
    store.backend.replace(key, data)
    return before


def delete_tag(store: ChunkStore, name: str, tag: str) -> int:
    """Remove a tag; return the version it named."""
    number = read_tag(store, name, tag)
    if number is None:
        raise NotFoundError(f"no tag {name}@{tag}")
    store.backend.delete(f"tags/{name}/{tag}")
    return number


def read_tag(store: ChunkStore, name: str, tag: str) -> int | None:
    try:
        data = store.backend.read(f"tags/{name}/{tag}")
    except ObjectNotFound:
        return None
    text = data.decode("utf-8", "replace").strip()
    if not re.fullmatch(r"[0-9]{1,12}", text):
        raise BadInput(f"tag {name}@{tag} is damaged: {text[:40]!r}")
    return int(text)
