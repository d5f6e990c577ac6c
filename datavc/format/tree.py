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
any store. The root's JSON, the snapshot id and the root's checks are :mod:`.treeroot`.
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from ..errors import BadInput, CorruptObject
from .hashing import DIGEST_SIZE, ChunkId, FileHash, ObjectId, object_id
from .packfile import (
    CODEC_RAW,
    CODEC_ZSTD,
    MAX_CHUNK,
    MAX_OFFSET,
    HintRow,
    Location,
    decode_chunk,
    encode_chunk,
)

PAGE_MAGIC = b"DVCTPG\x00\x02"
TREE_FORMAT = 2
MODE_FILE = 0o100644
MODE_EXEC = 0o100755
PAGE_LIMIT_ENTRIES = 1 << 20  # what a reader accepts in one page
PAGE_LIMIT_BODY = 128 << 20  # and the largest decoded page body (one file's recipe can be long)
CUT_RULE = 1  # the root's "cut": pages end where cut_here says (0: an older writer's rule)

_HEAD = struct.Struct("<BI")
_ENTRY = struct.Struct("<IQ32sI")
_CHUNK = struct.Struct("<32sI")
# a chunk's hint: its pack's number in the page's table, offset, stored length, codec (public:
# the tree writer packs the rows itself)
HINT_ROW = struct.Struct("<IQIB")
ITEM_BYTES = _CHUNK.size + HINT_ROW.size  # a recipe item in a page: content and hint (53)
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
    cut: int = 0  # CUT_RULE if the pages were cut by treecut.Cutter (a writer may reuse them)

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

    __slots__ = ("_by_id", "obj", "packs", "rows")

    def __init__(
        self, packs: tuple[ObjectId, ...], rows: tuple[HintRow, ...], obj: str = "tree page"
    ) -> None:
        self.packs = packs
        self.rows = rows
        self.obj = obj
        self._by_id: dict[ChunkId, HintRow] | None = None

    def index(self) -> dict[ChunkId, HintRow]:
        """The rows by chunk id (the first row of a chunk named twice). A page that names a
        chunk with two plain lengths is corrupt (its id fixes its bytes): a writer that kept
        one entry's hint for the other's would write a page no reader takes."""
        return self._index()

    def _index(self) -> dict[ChunkId, HintRow]:
        if self._by_id is None:
            by_id: dict[ChunkId, HintRow] = {}
            put = by_id.setdefault
            for row in self.rows:
                if put(row[0], row)[4] != row[4]:
                    twice = f"names chunk {row[0].hex()[:16]}… twice, with two lengths"
                    raise CorruptObject(self.obj, twice)
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

# A FileEntry made field by field, for a decoder that makes many: its frozen __init__ sets
# each field through object.__setattr__ (0.59 against 0.35 us an entry, measured here).
_ENTRY_NEW = (
    object.__new__,
    *(cast(Any, getattr(FileEntry, name)).__set__ for name in FileEntry.__slots__),
)


def encode_content(entries: Sequence[FileEntry]) -> bytes:
    """A page's content bytes: its entries without their location hints."""
    content = bytearray(_U32.pack(len(entries)))  # appended in place: no object per field
    for e in entries:
        raw = e.path.encode("utf-8")
        content += _U16.pack(len(raw))
        content += raw
        content += _ENTRY.pack(e.mode, e.size, e.hash, len(e.chunks))
        for cid, length in e.chunks:
            content += _CHUNK.pack(cid, length)
    return bytes(content)


def encode_page(
    entries: Iterable[FileEntry], locate: Callable[[ChunkId], Location]
) -> tuple[bytes, ObjectId]:
    """Encode a page; ``locate`` gives each chunk's place in the store (its hint).
    Returns the page's bytes and its content id."""
    rows = list(entries)
    content = encode_content(rows)
    hints = bytearray()
    packs: dict[str, int] = {}
    for e in rows:
        for cid, _ in e.chunks:
            loc = locate(cid)
            number = packs.setdefault(loc.pack, len(packs))
            hints += HINT_ROW.pack(number, loc.offset, loc.stored_length, loc.codec)
    data = encode_page_hinted(content, [bytes.fromhex(p) for p in packs], hints, rows)
    return data, object_id(content)


def encode_page_hinted(
    content: bytes,
    packs: Sequence[bytes],
    hints: bytes | bytearray,
    rows: Sequence[FileEntry] = (),
) -> bytes:
    """A page's bytes from its content, its pack table (raw ids) and its hint rows
    (:data:`HINT_ROW`, one for each chunk of the content's recipes, in order)."""
    table = b"".join([_U32.pack(len(packs)), *packs])
    body = b"".join([_U32.pack(len(content)), content, table, hints])
    if len(body) > PAGE_LIMIT_BODY:  # what a reader would refuse is never written
        if rows:
            largest = max(rows, key=lambda e: len(e.chunks))
            raise BadInput(
                f"{largest.path}: {len(largest.chunks)} chunks are more than a tree page "
                f"holds ({PAGE_LIMIT_BODY >> 20} MiB of recipe and hints): a file of this "
                "size is not supported"
            )
        raise BadInput(f"a tree page would exceed {PAGE_LIMIT_BODY >> 20} MiB")
    codec, stored = encode_chunk(body)
    return PAGE_MAGIC + _HEAD.pack(codec, len(body)) + stored


def decode_page(
    data: bytes,
    obj: str,
    content: str | None = None,
    hints: bool = True,
    files: int | None = None,
) -> tuple[list[FileEntry], Hints]:
    """The entries of a page, and the location hint of each chunk they name (none if
    ``hints`` is False). With ``content``, the page's content must hash to it, and with
    ``files`` hold that many entries, refused before any is built (the root's record of
    the page)."""
    try:
        body, content_bytes = _page_body(data, obj, content)
        entries = list(_iter_page_body(content_bytes, obj, files))
        found = NO_HINTS
        if hints:
            found = _decode_hints(body, _U32.size + len(content_bytes), entries, obj)
        return entries, found
    except _BadEntry as err:
        raise CorruptObject(obj, f"tree page entry {err}") from None
    except (struct.error, UnicodeDecodeError, IndexError):
        raise CorruptObject(obj, "tree page is truncated or malformed") from None


def page_packs(data: bytes, obj: str, content: str | None) -> tuple[ObjectId, ...]:
    """The packs a page's hints name (its pack table), without decoding its entries; with
    ``content``, the page's content must hash to it."""
    try:
        body, content_bytes = _page_body(data, obj, content)
        pos = _U32.size + len(content_bytes)
        (npacks,) = _U32.unpack_from(body, pos)
        pos += _U32.size
        if pos + npacks * DIGEST_SIZE > len(body):
            raise struct.error("short pack table")
        return tuple(
            ObjectId(body[pos + i * DIGEST_SIZE : pos + (i + 1) * DIGEST_SIZE].hex())
            for i in range(npacks)
        )
    except (struct.error, IndexError):
        raise CorruptObject(obj, "tree page is truncated or malformed") from None


def find_in_page(
    data: bytes, obj: str, content: str | None, path: str, files: int | None = None
) -> tuple[FileEntry | None, Hints]:
    """One path's entry in a page (None if absent) and its chunks' hints, without building
    the page's other entries (a page can hold tens of thousands); ``files``: as for
    :func:`decode_page`."""
    try:
        body, content_bytes = _page_body(data, obj, content)
        target = path.encode("utf-8")
        (count,) = _U32.unpack_from(content_bytes, 0)
        _check_count(count, obj, files)
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
    except _BadEntry as err:
        raise CorruptObject(obj, f"tree page entry {err}") from None
    except (struct.error, UnicodeDecodeError, IndexError, StopIteration):
        raise CorruptObject(obj, "tree page is truncated or malformed") from None


def _page_body(data: bytes, obj: str, content: str | None) -> tuple[bytes, bytes]:
    """The page's decoded body and its content part, checked against ``content``."""
    if not data.startswith(PAGE_MAGIC):
        raise CorruptObject(obj, "not a datavc tree page of a known format")
    codec, plain = _HEAD.unpack_from(data, len(PAGE_MAGIC))
    stored = memoryview(data)[len(PAGE_MAGIC) + _HEAD.size :]
    body = decode_chunk(codec, stored, plain, obj, limit=PAGE_LIMIT_BODY)
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
    if pos + npacks * DIGEST_SIZE > len(body):
        raise struct.error("short pack table")
    packs = tuple(
        ObjectId(body[pos + i * DIGEST_SIZE : pos + (i + 1) * DIGEST_SIZE].hex())
        for i in range(npacks)
    )
    pos += npacks * DIGEST_SIZE + skip * HINT_ROW.size
    recipe = [c for e in entries for c in e.chunks]
    table = body[pos : pos + len(recipe) * HINT_ROW.size]
    if len(table) != len(recipe) * HINT_ROW.size:
        raise struct.error("short hints")
    rows: list[HintRow] = []
    add, raw, zstd = rows.append, CODEC_RAW, CODEC_ZSTD
    for (cid, length), (number, offset, stored, codec) in zip(
        recipe, HINT_ROW.iter_unpack(table), strict=True
    ):
        # plausible(offset, stored, length, codec), inline: a page has thousands of hints
        # (the entries' check refused a length over MAX_CHUNK already)
        if number >= npacks or offset >= MAX_OFFSET or not (
            stored == length if codec == raw else codec == zstd and 0 < stored <= length
        ):
            if number >= npacks:
                raise CorruptObject(obj, "a location hint names a pack the page does not list")
            raise CorruptObject(obj, "a location hint is impossible for its chunk")
        add((cid, number, offset, stored, length, codec))
    return Hints(packs, tuple(rows), obj)


def _iter_page_body(body: bytes, obj: str, files: int | None) -> Iterator[FileEntry]:
    (count,) = _U32.unpack_from(body, 0)
    _check_count(count, obj, files)
    return _iter_entries_at(body, _U32.size, count)


def _check_count(count: int, obj: str, files: int | None) -> None:
    """A page's declared entry count, before any entry is built: a small zstd object can
    unpack to a body of millions of minimal entries."""
    if count > PAGE_LIMIT_ENTRIES:
        raise _BadEntry(f"count {count} is more than a page may hold ({PAGE_LIMIT_ENTRIES})")
    if files is not None and count != files:
        raise CorruptObject(obj, "tree page does not hold what the tree root says")


def _iter_entries_at(body: bytes, pos: int, count: int) -> Iterator[FileEntry]:
    # a page holds thousands of entries, most of one chunk: the loop is kept lean (2.0
    # against 0.8 us an entry, micro-benchmark of a page of 4,096 one-chunk files)
    entry_at, chunk_at, u16_at, chunks_of = (
        _ENTRY.unpack_from,
        _CHUNK.unpack_from,
        _U16.unpack_from,
        _CHUNK.iter_unpack,
    )
    entry_size, chunk_size = _ENTRY.size, _CHUNK.size
    modes, most, end_of_body = (MODE_FILE, MODE_EXEC), MAX_CHUNK, len(body)
    new, set_path, set_mode, set_size, set_hash, set_chunks = _ENTRY_NEW
    for _ in range(count):
        (plen,) = u16_at(body, pos)
        pos += 2  # _U16.size
        path = body[pos : pos + plen].decode("utf-8")
        pos += plen
        mode, size, fhash, nchunks = entry_at(body, pos)
        pos += entry_size
        if nchunks == 1 and mode in modes:
            chunk = chunk_at(body, pos)  # (chunk id, plain length)
            pos += chunk_size
            if chunk[1] != size or size > most:
                _check_entry(path, mode, size, (chunk,))  # raises, naming what is wrong
            chunks: tuple[tuple[ChunkId, int], ...] = (chunk,)
        else:
            end = pos + nchunks * chunk_size
            if end > end_of_body:
                raise struct.error("short recipe")
            # (chunk id, plain length) pairs as struct gives them: no call per chunk
            chunks = cast(tuple[tuple[ChunkId, int], ...], tuple(chunks_of(body[pos:end])))
            pos = end
            _check_entry(path, mode, size, chunks)
        e = new(FileEntry)
        set_path(e, path)
        set_mode(e, mode)
        set_size(e, size)
        set_hash(e, fhash)
        set_chunks(e, chunks)
        yield e


class _BadEntry(ValueError):
    pass


def _check_entry(path: str, mode: int, size: int, chunks: tuple[tuple[ChunkId, int], ...]) -> None:
    """An entry's mode is one of the two, and its size is exactly the sum of its recipe's
    plain lengths, each at most ``MAX_CHUNK`` bytes: a reader never writes or holds more
    than an entry says (a 10-byte entry cannot name a gigabyte of chunks)."""
    if mode != MODE_FILE and mode != MODE_EXEC:
        raise _BadEntry(f"{path!r} has mode {mode:o}")
    if len(chunks) == 1:  # most files: no list to build
        total = longest = chunks[0][1]
    else:
        lengths = [length for _, length in chunks]
        total, longest = sum(lengths), max(lengths, default=0)
    if total != size:
        raise _BadEntry(f"{path!r} says {size} bytes, its chunks {total}")
    if longest > MAX_CHUNK:
        raise _BadEntry(f"{path!r} names a chunk longer than {MAX_CHUNK} bytes")


def check_page(entries: list[FileEntry], ref: PageRef, obj: str) -> None:
    """A page's entries against the root's record of it: the count, the bytes, the first
    and last paths; and its paths strictly increasing (sorted, none twice)."""
    if len(entries) != ref.files or sum(e.size for e in entries) != ref.bytes:
        raise CorruptObject(obj, "tree page does not hold what the tree root says")
    if entries[0].path != ref.first or entries[-1].path != ref.last:
        raise CorruptObject(obj, "tree page's paths are not the range the tree root says")
    for before, after in itertools.pairwise(entries):
        if before.path >= after.path:
            raise CorruptObject(obj, f"tree page's paths are not in order at {after.path!r}")
