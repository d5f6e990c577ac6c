"""Pointer files (``PATH.datavc``): small, stable, diff-friendly text committed to Git (pure).

::

    # datavc pointer file: tracks data in the store; edit with datavc, commit with git
    name: images
    kind: dir
    version: 3
    snapshot: <64 hex digits>
    files: 20000
    bytes: 1100000000

``kind`` is ``dir`` for a folder, ``file`` for a single file. The snapshot id is the anchor of
reproducibility; the version number is a convenience.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import BadInput
from .hashing import ObjectId, is_object_id
from .paths import check_name

SUFFIX = ".datavc"
HEADER = "# datavc pointer file: tracks data in the store; edit with datavc, commit with git"
KINDS = ("dir", "file")


@dataclass(frozen=True, slots=True)
class Pointer:
    name: str
    kind: str
    version: int
    snapshot: ObjectId
    files: int
    bytes: int


def encode_pointer(p: Pointer) -> str:
    return (
        f"{HEADER}\nname: {p.name}\nkind: {p.kind}\nversion: {p.version}\n"
        f"snapshot: {p.snapshot}\nfiles: {p.files}\nbytes: {p.bytes}\n"
    )


_CONFLICT_MARKERS = ("<<<<<<<", "|||||||", "=======", ">>>>>>>")


def conflict_line(text: str) -> int | None:
    """The number of the first line that is a merge-conflict marker (git's ``<<<<<<<``,
    ``|||||||``, ``=======`` or ``>>>>>>>``, alone or followed by a space), or None."""
    for number, line in enumerate(text.splitlines(), 1):
        marker = line[:7]
        if marker in _CONFLICT_MARKERS and line[7:8] in ("", " "):
            return number
    return None


def check_no_conflict(text: str, where: str) -> None:
    """Refuse a pointer file that git left with conflict markers, saying how to resolve it."""
    number = conflict_line(text)
    if number is not None:
        raise BadInput(
            f"{where} has merge-conflict markers (line {number}): keep the lines of the "
            "version you want, delete the markers, then run 'datavc checkout'"
        )


def decode_pointer(text: str, where: str) -> Pointer:
    check_no_conflict(text, where)
    fields: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise BadInput(f"{where}: not a datavc pointer file (line {line[:40]!r})")
        fields[key.strip()] = value.strip()
    try:
        p = Pointer(
            name=fields["name"],
            kind=fields.get("kind", "dir"),
            version=int(fields["version"]),
            snapshot=ObjectId(fields["snapshot"]),
            files=int(fields["files"]),
            bytes=int(fields["bytes"]),
        )
    except (KeyError, ValueError) as err:
        raise BadInput(f"{where}: not a datavc pointer file ({err} missing or invalid)") from None
    check_name(p.name)
    if p.kind not in KINDS or not is_object_id(p.snapshot) or p.version < 1:
        raise BadInput(f"{where}: not a datavc pointer file (bad kind, snapshot or version)")
    return p
