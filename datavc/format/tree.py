"""Snapshot trees: byte formats (pure).

A snapshot is a *tree root* that lists *pages* (``trees/<id>``). Pages hold the file
entries, sorted by path (byte order of UTF-8), and cut so that each page stays small; the
root records each page's first and last path, so a reader finds one file's entry by reading
the root and one page. The root is small and travels inside the version record (and a
workspace's staged state).

Root: canonical JSON (sorted keys, no spaces, UTF-8)::

    {"type": "datavc-tree", "format": 2, "files": N, "bytes": B,
     "pages": [{"id": ID, "content": CID, "first": PATH, "last": PATH, "files": n,
                "bytes": b}, ...]}

Page::

    b"DVCTPG\\x00\\x02" | codec u8 | plain length u32 | body (zstd frame or raw)
    body: content length u32 | content | hints
    content: entry count u32, then per entry:
        path length u16 | path (UTF-8) | mode u32 | size u64 | file hash (32)
        chunk count u32 | chunk count x (chunk id (32) | plain length u32)
    hints: pack count u32 | pack ids (32 each) | for each chunk of the content, in order:
        pack number u32 | offset u64 | stored length u32 | codec u8

Little-endian. A file's bytes are its chunks concatenated in recipe order. The *hints* say
where each chunk was stored when the page was written, so a reader can fetch a file from
the version record, one page and the pack, without reading the index.

``id`` is the page object's id (its stored bytes, hints included); ``content`` is the BLAKE3
of the page's content bytes alone. The **snapshot id** is the BLAKE3 of the root's canonical
JSON *without* the page ids: it depends only on the files (paths, modes, bytes, chunking),
not on where the chunks happen to be stored, so the same files give the same snapshot id in
any store.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, cast

from ..errors import CorruptObject
from .hashing import DIGEST_SIZE, ChunkId, FileHash, ObjectId, is_object_id, object_id
from .packfile import HintRow, Location, decode_chunk, encode_chunk

PAGE_MAGIC = b"DVCTPG\x00\x02"
TREE_FORMAT = 2
MODE_FILE = 0o100644
MODE_EXEC = 0o100755
PAGE_MAX_ENTRIES = 65536
PAGE_MAX_BYTES = 4 << 20

_HEAD = struct.Struct("<BI")
_ENTRY = struct.Struct("<IQ32sI")
_CHUNK = struct.Struct("<32sI")
_HINT = struct.Struct("<IQIB")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")


@dataclass(frozen=True, slots=True)
class FileEntry:
    """One file of a snapshot: where it goes, what it is, and how to rebuild it."""

    path: str
    mode: int
    size: int
    hash: FileHash
    chunks: tuple[tuple[ChunkId, int], ...]

    @property
    def executable(self) -> bool:
        return self.mode == MODE_EXEC


@dataclass(frozen=True, slots=True)
class PageRef:
    id: ObjectId  # the page object (content and hints)
    first: str
    last: str
    files: int
    bytes: int
    content: ObjectId  # BLAKE3 of the page's content bytes: what the snapshot id covers


@dataclass(frozen=True, slots=True)
class TreeRoot:
    files: int
    bytes: int
    pages: tuple[PageRef, ...]

    def pages_for(self, path: str) -> list[PageRef]:
        """The pages whose path range could hold ``path`` (at most one, by construction)."""
        return [p for p in self.pages if p.first <= path <= p.last]

    def pages_under(self, prefix: str) -> list[PageRef]:
        """Pages that can hold paths starting with ``prefix`` ("" = every page)."""
        if not prefix:
            return list(self.pages)
        return [p for p in self.pages if p.last >= prefix and p.first[: len(prefix)] <= prefix]


class Hints(Mapping[ChunkId, Location]):
    """The location hints of a page's chunks as the page stores them: its pack table and
    one :data:`HintRow` per chunk. A store takes the rows as they are
    (``LocationTable.put_hints``: no object per chunk); looking one up by chunk id builds a
    :class:`Location` (the first row of a chunk named twice)."""

    __slots__ = ("_by_id", "packs", "rows")

    def __init__(self, packs: tuple[ObjectId, ...], rows: tuple[HintRow, ...]) -> None:
        self.packs = packs
        self.rows = rows
        self._by_id: dict[ChunkId, HintRow] | None = None

    def _index(self) -> dict[ChunkId, HintRow]:
        if self._by_id is None:
            by_id: dict[ChunkId, HintRow] = {}
            for row in self.rows:
                by_id.setdefault(row[0], row)
            self._by_id = by_id
        return self._by_id

    def __getitem__(self, cid: ChunkId) -> Location:
        _, number, offset, stored, plain, codec = self._index()[cid]
        return Location(self.packs[number], offset, stored, plain, codec)

    def __iter__(self) -> Iterator[ChunkId]:
        return iter(self._index())

    def __len__(self) -> int:
        return len(self._index())

    def __bool__(self) -> bool:
        return bool(self.rows)  # without building the lookup table


NO_HINTS = Hints((), ())


def encode_page(
    entries: Iterable[FileEntry], locate: Callable[[ChunkId], Location]
) -> tuple[bytes, ObjectId]:
    """Encode a page; ``locate`` gives each chunk's place in the store (its hint).
    Returns the page's bytes and its content id."""
    rows = list(entries)
    content = bytearray(_U32.pack(len(rows)))  # appended in place: no object per field
    hints = bytearray()
    packs: dict[str, int] = {}
    for e in rows:
        raw = e.path.encode("utf-8")
        content += _U16.pack(len(raw))
        content += raw
        content += _ENTRY.pack(e.mode, e.size, e.hash, len(e.chunks))
        for cid, length in e.chunks:
            content += _CHUNK.pack(cid, length)
            loc = locate(cid)
            number = packs.setdefault(loc.pack, len(packs))
            hints += _HINT.pack(number, loc.offset, loc.stored_length, loc.codec)
    table = b"".join([_U32.pack(len(packs)), *(bytes.fromhex(p) for p in packs)])
    body = b"".join([_U32.pack(len(content)), content, table, hints])
    content_id = object_id(content)
    del content, hints
    codec, stored = encode_chunk(body)
    return PAGE_MAGIC + _HEAD.pack(codec, len(body)) + stored, content_id


def decode_page(
    data: bytes, obj: str, content: str | None = None, hints: bool = True
) -> tuple[list[FileEntry], Hints]:
    """The entries of a page, and the location hint of each chunk they name (none if
    ``hints`` is False). With ``content``, the page's content must hash to it (the root's
    record of the page)."""
    try:
        body, content_bytes = _page_body(data, obj, content)
        entries = list(_iter_page_body(content_bytes))
        found = NO_HINTS
        if hints:
            found = _decode_hints(body, _U32.size + len(content_bytes), entries, obj)
        return entries, found
    except (struct.error, UnicodeDecodeError, IndexError):
        raise CorruptObject(obj, "tree page is truncated or malformed") from None


def find_in_page(
    data: bytes, obj: str, content: str | None, path: str
) -> tuple[FileEntry | None, Hints]:
    """One path's entry in a page (None if absent) and its chunks' hints, without building
    the page's other entries (a page can hold tens of thousands)."""
    try:
        body, content_bytes = _page_body(data, obj, content)
        target = path.encode("utf-8")
        (count,) = _U32.unpack_from(content_bytes, 0)
        pos, before = _U32.size, 0  # before: chunks of the entries skipped so far
        for _ in range(count):
            (plen,) = _U16.unpack_from(content_bytes, pos)
            start = pos + _U16.size
            name = content_bytes[start : start + plen]
            nchunks = _ENTRY.unpack_from(content_bytes, start + plen)[3]
            end = start + plen + _ENTRY.size + nchunks * _CHUNK.size
            if name == target:
                entry = next(_iter_entries_at(content_bytes, pos, 1))
                table = _decode_hints(body, _U32.size + len(content_bytes), [entry], obj, before)
                return entry, table
            if name > target:
                break  # entries are sorted by their UTF-8 bytes
            before += nchunks
            pos = end
        return None, NO_HINTS
    except (struct.error, UnicodeDecodeError, IndexError, StopIteration):
        raise CorruptObject(obj, "tree page is truncated or malformed") from None


def _page_body(data: bytes, obj: str, content: str | None) -> tuple[bytes, bytes]:
    """The page's decoded body and its content part, checked against ``content``."""
    if not data.startswith(PAGE_MAGIC):
        raise CorruptObject(obj, "not a datavc tree page of a known format")
    codec, plain = _HEAD.unpack_from(data, len(PAGE_MAGIC))
    body = decode_chunk(codec, memoryview(data)[len(PAGE_MAGIC) + _HEAD.size :], plain, obj)
    (size,) = _U32.unpack_from(body, 0)
    content_bytes = body[_U32.size : _U32.size + size]
    if len(content_bytes) != size:
        raise struct.error("short content")
    if content is not None and object_id(content_bytes) != content:
        raise CorruptObject(obj, "page content does not match the snapshot's tree root")
    return body, content_bytes


def _decode_hints(
    body: bytes, pos: int, entries: list[FileEntry], obj: str, skip: int = 0
) -> Hints:
    """Hints for ``entries``' chunks; ``skip``: how many recipe items of the page come
    before the first of them (the table has one hint per item, in order)."""
    (npacks,) = _U32.unpack_from(body, pos)
    pos += _U32.size
    packs = tuple(
        ObjectId(body[pos + i * DIGEST_SIZE : pos + (i + 1) * DIGEST_SIZE].hex())
        for i in range(npacks)
    )
    pos += npacks * DIGEST_SIZE + skip * _HINT.size
    recipe = [c for e in entries for c in e.chunks]
    table = body[pos : pos + len(recipe) * _HINT.size]
    if len(table) != len(recipe) * _HINT.size:
        raise struct.error("short hints")
    rows = tuple(
        (cid, number, offset, stored, length, codec)
        for (cid, length), (number, offset, stored, codec) in zip(
            recipe, _HINT.iter_unpack(table), strict=True
        )
    )
    if rows and max(row[1] for row in rows) >= npacks:
        raise CorruptObject(obj, "a location hint names a pack the page does not list")
    return Hints(packs, rows)


def _iter_page_body(body: bytes) -> Iterator[FileEntry]:
    (count,) = _U32.unpack_from(body, 0)
    return _iter_entries_at(body, _U32.size, count)


def _iter_entries_at(body: bytes, pos: int, count: int) -> Iterator[FileEntry]:
    for _ in range(count):
        (plen,) = _U16.unpack_from(body, pos)
        pos += _U16.size
        path = body[pos : pos + plen].decode("utf-8")
        pos += plen
        mode, size, fhash, nchunks = _ENTRY.unpack_from(body, pos)
        pos += _ENTRY.size
        end = pos + nchunks * _CHUNK.size
        if end > len(body):
            raise struct.error("short recipe")
        # (chunk id, plain length) pairs as struct gives them: no call per chunk
        chunks = cast(tuple[tuple[ChunkId, int], ...], tuple(_CHUNK.iter_unpack(body[pos:end])))
        pos = end
        yield FileEntry(path, mode, size, FileHash(fhash), chunks)


def split_pages(entries: Iterable[FileEntry]) -> Iterator[list[FileEntry]]:
    """Cut sorted entries into pages; deterministic, so equal trees get equal ids."""
    page: list[FileEntry] = []
    weight = 0
    for e in entries:
        page.append(e)
        weight += len(e.path.encode()) + 50 + (_CHUNK.size + _HINT.size) * len(e.chunks)
        if len(page) >= PAGE_MAX_ENTRIES or weight >= PAGE_MAX_BYTES:
            yield page
            page, weight = [], 0
    if page:
        yield page


def root_doc(root: TreeRoot) -> dict[str, Any]:
    return {
        "type": "datavc-tree",
        "format": TREE_FORMAT,
        "files": root.files,
        "bytes": root.bytes,
        "pages": [
            {
                "id": p.id,
                "content": p.content,
                "first": p.first,
                "last": p.last,
                "files": p.files,
                "bytes": p.bytes,
            }
            for p in root.pages
        ],
    }


def encode_root(root: TreeRoot) -> bytes:
    """The root's canonical bytes."""
    return _canonical(root_doc(root))


def snapshot_id(root: TreeRoot) -> ObjectId:
    """BLAKE3 of the root's canonical JSON without the page object ids (see above)."""
    doc = root_doc(root)
    for page in doc["pages"]:
        del page["id"]
    return object_id(_canonical(doc))


def _canonical(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def root_from_doc(doc: Any, obj: str) -> TreeRoot:
    try:
        if doc.get("type") != "datavc-tree":
            raise CorruptObject(obj, "not a datavc tree root")
        if doc.get("format") != TREE_FORMAT:
            raise CorruptObject(obj, f"unsupported tree format {doc.get('format')}")
        pages = tuple(
            PageRef(
                ObjectId(p["id"]),
                p["first"],
                p["last"],
                int(p["files"]),
                int(p["bytes"]),
                ObjectId(p["content"]),
            )
            for p in doc["pages"]
        )
        if not all(is_object_id(p.id) and is_object_id(p.content) for p in pages):
            raise CorruptObject(obj, "tree root names a page by an invalid id")
        return TreeRoot(int(doc["files"]), int(doc["bytes"]), pages)
    except (ValueError, KeyError, TypeError, AttributeError):
        raise CorruptObject(obj, "tree root is malformed") from None


def decode_root(data: bytes, obj: str) -> TreeRoot:
    try:
        doc = json.loads(data)
    except ValueError:
        raise CorruptObject(obj, "tree root is malformed") from None
    return root_from_doc(doc, obj)
