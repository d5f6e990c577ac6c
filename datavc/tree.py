"""Snapshot trees: byte formats (pure).

A snapshot is a *tree root* that lists *pages* (``trees/<id>``). Pages hold the file
entries, sorted by path (byte order of UTF-8), and cut so that each page stays small; the
root records each page's first and last path, so a reader finds one file's entry by reading
the root and one page. The root is small and travels inside the version record (and a
workspace's staged state); its id, the BLAKE3 of its canonical bytes, is the snapshot id.

Root: canonical JSON (sorted keys, no spaces, UTF-8)::

    {"type": "datavc-tree", "format": 2, "files": N, "bytes": B,
     "pages": [{"id": ID, "first": PATH, "last": PATH, "files": n, "bytes": b}, ...]}

Page::

    b"DVCTPG\\x00\\x02" | codec u8 | plain length u32 | body (zstd frame or raw)
    body: pack count u32 | pack ids (32 each)
          entry count u32, then per entry:
            path length u16 | path (UTF-8) | mode u32 | size u64 | file hash (32)
            chunk count u32 | chunk count x (chunk id (32) | plain length u32
                | pack number u32 | offset u64 | stored length u32 | codec u8)

Little-endian. A file's bytes are its chunks concatenated in recipe order. Each chunk also
carries where it was stored when the page was written (a *location hint*), so a reader can
fetch a file from the version record, one page and the pack, without reading the index.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from .errors import CorruptObject
from .hashing import DIGEST_SIZE, ChunkId, FileHash, ObjectId, is_object_id, object_id
from .packfile import Location, decode_chunk, encode_chunk

PAGE_MAGIC = b"DVCTPG\x00\x02"
TREE_FORMAT = 2
MODE_FILE = 0o100644
MODE_EXEC = 0o100755
PAGE_MAX_ENTRIES = 65536
PAGE_MAX_BYTES = 4 << 20

_HEAD = struct.Struct("<BI")
_ENTRY = struct.Struct("<IQ32sI")
_CHUNK = struct.Struct("<32sIIQIB")
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
    id: ObjectId
    first: str
    last: str
    files: int
    bytes: int


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


def encode_page(entries: Iterable[FileEntry], locate: Callable[[ChunkId], Location]) -> bytes:
    """Encode a page; ``locate`` gives each chunk's place in the store (its hint)."""
    rows = list(entries)
    packs: dict[str, int] = {}
    body_parts = [_U32.pack(len(rows))]
    for e in rows:
        raw = e.path.encode("utf-8")
        body_parts += [_U16.pack(len(raw)), raw, _ENTRY.pack(e.mode, e.size, e.hash, len(e.chunks))]
        for cid, length in e.chunks:
            loc = locate(cid)
            number = packs.setdefault(loc.pack, len(packs))
            body_parts.append(
                _CHUNK.pack(cid, length, number, loc.offset, loc.stored_length, loc.codec)
            )
    head = [_U32.pack(len(packs)), *(bytes.fromhex(p) for p in packs)]
    body = b"".join(head + body_parts)
    codec, stored = encode_chunk(body)
    return PAGE_MAGIC + _HEAD.pack(codec, len(body)) + stored


def decode_page(data: bytes, obj: str) -> tuple[list[FileEntry], dict[ChunkId, Location]]:
    """The entries of a page, and the location hint of each chunk they name."""
    if not data.startswith(PAGE_MAGIC):
        raise CorruptObject(obj, "not a datavc tree page of a known format")
    try:
        codec, plain = _HEAD.unpack_from(data, len(PAGE_MAGIC))
        body = decode_chunk(codec, memoryview(data)[len(PAGE_MAGIC) + _HEAD.size :], plain, obj)
        hints: dict[ChunkId, Location] = {}
        return list(_iter_page_body(body, hints)), hints
    except (struct.error, UnicodeDecodeError, IndexError):
        raise CorruptObject(obj, "tree page is truncated or malformed") from None


def _iter_page_body(body: bytes, hints: dict[ChunkId, Location]) -> Iterator[FileEntry]:
    (npacks,) = _U32.unpack_from(body, 0)
    pos = _U32.size
    packs = [
        ObjectId(body[pos + i * DIGEST_SIZE : pos + (i + 1) * DIGEST_SIZE].hex())
        for i in range(npacks)
    ]
    pos += npacks * DIGEST_SIZE
    (count,) = _U32.unpack_from(body, pos)
    pos += _U32.size
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
        recipe = []
        for cid, length, number, offset, stored, ccodec in _CHUNK.iter_unpack(body[pos:end]):
            recipe.append((ChunkId(cid), length))
            hints[ChunkId(cid)] = Location(packs[number], offset, stored, length, ccodec)
        pos = end
        yield FileEntry(path, mode, size, FileHash(fhash), tuple(recipe))


def split_pages(entries: Iterable[FileEntry]) -> Iterator[list[FileEntry]]:
    """Cut sorted entries into pages; deterministic, so equal trees get equal ids."""
    page: list[FileEntry] = []
    weight = 0
    for e in entries:
        page.append(e)
        weight += len(e.path.encode()) + 50 + _CHUNK.size * len(e.chunks)
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
            {"id": p.id, "first": p.first, "last": p.last, "files": p.files, "bytes": p.bytes}
            for p in root.pages
        ],
    }


def encode_root(root: TreeRoot) -> bytes:
    """The root's canonical bytes: what its id (the snapshot id) is the hash of."""
    doc = root_doc(root)
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def snapshot_id(root: TreeRoot) -> ObjectId:
    return object_id(encode_root(root))


def root_from_doc(doc: Any, obj: str) -> TreeRoot:
    try:
        if doc.get("type") != "datavc-tree":
            raise CorruptObject(obj, "not a datavc tree root")
        if doc.get("format") != TREE_FORMAT:
            raise CorruptObject(obj, f"unsupported tree format {doc.get('format')}")
        pages = tuple(
            PageRef(ObjectId(p["id"]), p["first"], p["last"], int(p["files"]), int(p["bytes"]))
            for p in doc["pages"]
        )
        if not all(is_object_id(p.id) for p in pages):
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
