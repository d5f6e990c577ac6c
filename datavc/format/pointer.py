"""Pointer files (``PATH.datavc``): small, stable, diff-friendly text committed to Git (pure).

::

    # datavc pointer file: tracks data in the store; edit with datavc, commit with git
    name: images
    kind: dir
    version: 3
    snapshot: <64 hex digits>
    files: 20000
    bytes: 1100000000
    page: <64 hex digits>

``kind`` is ``dir`` for a folder, ``file`` for a single file. The snapshot id is the anchor of
reproducibility; the version number is a convenience. ``page`` (optional) is a hint: the
object id of the snapshot's first tree page in the store it was committed to, so that a
reader can fetch that page beside the version record instead of after it.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import BadInput
from .hashing import ObjectId, is_object_id
from .paths import check_name, valid_name

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
    page: ObjectId | None = None  # a hint, used only if the version's record agrees


def encode_pointer(p: Pointer) -> str:
    return (
        f"{HEADER}\nname: {p.name}\nkind: {p.kind}\nversion: {p.version}\n"
        f"snapshot: {p.snapshot}\nfiles: {p.files}\nbytes: {p.bytes}\n"
        + (f"page: {p.page}\n" if p.page is not None else "")
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
    """Refuse a pointer file that git left with conflict markers, saying how to resolve it:
    with the version each side names, when both sides name one."""
    number = conflict_line(text)
    if number is None:
        return
    sides = conflict_sides(text)
    if sides is not None:
        raise BadInput(conflict_advice(where, number, sides))
    raise BadInput(
        f"{where} has merge-conflict markers (line {number}): keep the lines of the "
        "version you want, delete the markers, then run 'datavc checkout'"
    )


def conflict_advice(where: str, number: int, sides: tuple[str, str, str]) -> str:
    """What to do about a pointer file in a merge conflict whose sides name ``sides``
    (dataset name, and each side's ``vN``)."""
    name, ours, theirs = sides
    return (
        f"{where} has a merge conflict (line {number}): one side names {name}@{ours}, the "
        f"other {name}@{theirs}: pick one with 'datavc checkout {name}@{ours}' or 'datavc "
        f"checkout {name}@{theirs}' (it rewrites the pointer file), then git add {where}"
    )


def conflict_sides(text: str) -> tuple[str, str, str] | None:
    """For a pointer file with git's conflict markers: the dataset name and the version
    (``vN``) each side names, or None if the sides do not both name one of the same
    dataset."""
    lines: dict[str, list[str]] = {"common": [], "ours": [], "base": [], "theirs": []}
    state = "common"
    after = {"<<<<<<<": "ours", "|||||||": "base", "=======": "theirs", ">>>>>>>": "common"}
    for line in text.splitlines():
        marker = line[:7]
        if marker in after and line[7:8] in ("", " "):
            state = after[marker]
            continue
        lines[state].append(line)
    found = []
    for side in ("ours", "theirs"):
        fields: dict[str, str] = {}
        for line in lines["common"] + lines[side]:
            key, sep, value = line.strip().partition(":")
            if sep and not key.startswith("#"):
                fields[key.strip()] = value.strip()
        name, version = fields.get("name", ""), fields.get("version", "")
        if not valid_name(name) or not version.isdigit() or len(version) > 12:
            return None
        found.append((name, f"v{int(version)}"))
    if found[0][0] != found[1][0]:
        return None
    return found[0][0], found[0][1], found[1][1]


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
            page=ObjectId(fields["page"]) if "page" in fields else None,
        )
    except (KeyError, ValueError) as err:
        raise BadInput(f"{where}: not a datavc pointer file ({err} missing or invalid)") from None
    check_name(p.name)
    if p.kind not in KINDS or not is_object_id(p.snapshot) or p.version < 1:
        raise BadInput(f"{where}: not a datavc pointer file (bad kind, snapshot or version)")
    if p.page is not None and not is_object_id(p.page):
        raise BadInput(f"{where}: not a datavc pointer file (bad page)")
    return p
