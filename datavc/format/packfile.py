"""Pack and index objects: byte formats (pure; bytes in, values out).

Pack (``packs/<id>``, id = BLAKE3 of its footer: the entries, count and end magic, which
name every chunk in it; each chunk is checked against its own id when read)::

    b"DVCPACK\\x01"                                   8-byte magic
    blob 0 | blob 1 | ...                             each chunk compressed on its own (or raw)
    entry 0 | entry 1 | ...                           49 bytes each, in blob order:
        chunk id (32) | offset u64 | stored length u32 | plain length u32 | codec u8
    entry count u32 | b"DVCPEND\\x01"                  12-byte trailer

Index (``index/<id>``, id = BLAKE3 of the whole index)::

    b"DVCIDX\\x00\\x01" | pack count u32 | pack ids (32 bytes each)
    entry count u32 | entries, 53 bytes each, sorted by chunk id:
        chunk id (32) | pack number u32 | offset u64 | stored length u32
        | plain length u32 | codec u8

All integers are little-endian. Codec 0 = stored raw, 1 = zstd frame.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from ..errors import CorruptObject
from .hashing import DIGEST_SIZE, ChunkId, ObjectId

PACK_MAGIC = b"DVCPACK\x01"
PACK_END = b"DVCPEND\x01"
INDEX_MAGIC = b"DVCIDX\x00\x01"
CODEC_RAW = 0
CODEC_ZSTD = 1
MAX_CHUNK = 16 << 20  # the largest plain length of a chunk (the chunker's own limit)
MAX_OFFSET = 1 << 40  # a chunk's offset in its pack is below this (a pack is at most ~1 GiB)

_PACK_ENTRY = struct.Struct("<32sQIIB")
_INDEX_ENTRY = struct.Struct("<32sIQIIB")
_U32 = struct.Struct("<I")
TRAILER_SIZE = _U32.size + len(PACK_END)
# Compression must save at least this fraction of a chunk to be kept.
_MIN_SAVING = 1 / 8
_PROBE = 4096
_TINY = 64


_THREAD = threading.local()


def _compressor() -> Any:
    """This thread's zstd compressor (level 1). The ``zstandard`` package releases the GIL
    while it works, so two threads compress twice as fast as one (pyarrow's codec does
    not: measured 0.45 and 0.49 GB/s for one and two threads, against 0.53 and 1.12)."""
    c = getattr(_THREAD, "compressor", None)
    if c is None:
        import zstandard

        c = _THREAD.compressor = zstandard.ZstdCompressor(level=1)
    return c


def _decompressor() -> Any:
    d = getattr(_THREAD, "decompressor", None)
    if d is None:
        import zstandard

        d = _THREAD.decompressor = zstandard.ZstdDecompressor()
    return d


class Location(NamedTuple):
    """Where a chunk's stored bytes are: a byte range of one pack. (A named tuple: made
    for every chunk a reader locates, and a frozen dataclass takes 2.5 times as long.)"""

    pack: ObjectId
    offset: int
    stored_length: int
    plain_length: int
    codec: int


def encode_chunk(data: bytes | memoryview) -> tuple[int, bytes | memoryview]:
    """Compress one chunk if that pays; return (codec, stored bytes). A chunk kept raw is
    returned as given, not copied: the caller keeps ``data`` unchanged until it is stored.

    A 4 KiB sample is tried first: zstd spends as long failing to compress random data as
    it takes to compress text, so data the sample shows incompressible is kept raw. Tiny
    chunks are kept raw: a zstd frame's own overhead eats any saving."""
    if len(data) < _TINY:
        return CODEC_RAW, data
    if len(data) > 4 * _PROBE:
        sample = _compressor().compress(memoryview(data)[:_PROBE])
        if len(sample) > _PROBE * (1 - _MIN_SAVING):
            return CODEC_RAW, data
    packed: bytes = _compressor().compress(data)
    if len(packed) <= len(data) * (1 - _MIN_SAVING):
        return CODEC_ZSTD, packed
    return CODEC_RAW, data


def decode_chunk(
    codec: int, stored: bytes | memoryview, plain_length: int, obj: str, limit: int = MAX_CHUNK
) -> bytes:
    """Undo :func:`encode_chunk`; the caller checks the result against the chunk id. No
    more than ``plain_length`` bytes are produced, and ``plain_length`` must be within
    ``limit`` (a small zstd frame can declare any size: memory follows the limit)."""
    if not 0 <= plain_length <= limit:
        raise CorruptObject(obj, f"chunk says {plain_length} bytes, over the limit of {limit}")
    if codec == CODEC_RAW:
        if len(stored) != plain_length:
            raise CorruptObject(obj, f"raw chunk of {len(stored)} bytes says {plain_length}")
        return bytes(stored)
    if codec != CODEC_ZSTD:
        raise CorruptObject(obj, f"unknown codec {codec}")
    import zstandard

    try:
        # A frame that states its size is decoded into a buffer of that size, whatever
        # max_output_size says: the stated size must be the one we expect.
        declared = zstandard.frame_content_size(stored)  # -1: not stated
        if declared not in (plain_length, -1, zstandard.CONTENTSIZE_UNKNOWN):
            raise CorruptObject(obj, f"chunk says {declared} bytes, not {plain_length}")
        out: bytes = _decompressor().decompress(stored, max_output_size=plain_length)
    except zstandard.ZstdError as err:  # not a frame, damaged, or larger than allowed
        raise CorruptObject(obj, f"chunk does not decompress ({err})") from None
    if len(out) != plain_length:
        raise CorruptObject(obj, f"chunk decompresses to {len(out)} bytes, not {plain_length}")
    return out


def plausible(offset: int, stored_length: int, plain_length: int, codec: int) -> bool:
    """Whether a chunk's stored form can be as a location says: an offset below
    ``MAX_OFFSET``, a known codec, a plain length of at most ``MAX_CHUNK`` bytes, stored raw
    at that length or compressed to at most it (so nothing read or decoded for one chunk
    exceeds ``MAX_CHUNK``)."""
    if offset >= MAX_OFFSET or not 0 <= plain_length <= MAX_CHUNK:
        return False
    if codec == CODEC_RAW:
        return stored_length == plain_length
    return codec == CODEC_ZSTD and 0 < stored_length <= plain_length


@dataclass(frozen=True, slots=True)
class PackEntry:
    chunk: ChunkId
    offset: int
    stored_length: int
    plain_length: int
    codec: int


def pack_footer(entries: Iterable[PackEntry]) -> bytes:
    rows = [
        _PACK_ENTRY.pack(e.chunk, e.offset, e.stored_length, e.plain_length, e.codec)
        for e in entries
    ]
    return b"".join(rows) + _U32.pack(len(rows)) + PACK_END


FOOTER_ROW = _PACK_ENTRY  # a footer's entry: chunk id, offset, stored and plain length, codec


def footer_from_rows(rows: bytes | bytearray) -> bytes:
    """A footer whose entries are ``rows`` (:data:`FOOTER_ROW`, in blob order)."""
    return bytes(rows) + _U32.pack(len(rows) // _PACK_ENTRY.size) + PACK_END


def footer_entries_of(footer: bytes) -> Iterator[tuple[bytes, int, int, int, int]]:
    """The entries of a footer this process built (chunk id, offset, stored and plain
    length, codec): not checked, as :func:`parse_footer` checks one read from a store."""
    return _PACK_ENTRY.iter_unpack(memoryview(footer)[: len(footer) - TRAILER_SIZE])


def read_pack_footer(data: bytes, obj: str) -> list[PackEntry]:
    """Parse the entries of a whole pack (used by checks and repair tools)."""
    if not data.startswith(PACK_MAGIC):
        raise CorruptObject(obj, "not a datavc pack")
    if len(data) < len(PACK_MAGIC) + TRAILER_SIZE:
        raise CorruptObject(obj, "pack is shorter than its trailer")
    count = footer_count(data[-TRAILER_SIZE:], len(data), obj)
    return parse_footer(data[len(data) - footer_size(count) :], len(data), obj)


def footer_size(count: int) -> int:
    """The bytes of a footer of ``count`` entries, trailer included."""
    return count * _PACK_ENTRY.size + TRAILER_SIZE


def footer_count(trailer: bytes, pack_size: int, obj: str) -> int:
    """The entry count a pack's last ``TRAILER_SIZE`` bytes state, checked against the pack's
    size (so a reader never fetches or allocates more than the pack holds)."""
    if len(trailer) != TRAILER_SIZE or not trailer.endswith(PACK_END):
        raise CorruptObject(obj, "not a datavc pack (no end magic)")
    count: int = _U32.unpack_from(trailer, 0)[0]
    if len(PACK_MAGIC) + footer_size(count) > pack_size:
        raise CorruptObject(obj, "pack footer is longer than the pack")
    return count


def parse_footer(footer: bytes, pack_size: int, obj: str) -> list[PackEntry]:
    """The entries of a pack's footer (its last ``footer_size(count)`` bytes), checked to
    tile the pack's blobs exactly: the first at offset 8, each where the one before ends,
    the last ending where the footer starts; every entry a possible chunk."""
    count = footer_count(footer[-TRAILER_SIZE:], pack_size, obj)
    if len(footer) != footer_size(count):
        raise CorruptObject(obj, "pack footer is truncated")
    start = pack_size - len(footer)
    entries = [
        PackEntry(ChunkId(c), off, sl, pl, codec)
        for c, off, sl, pl, codec in _PACK_ENTRY.iter_unpack(footer[: count * _PACK_ENTRY.size])
    ]
    expected = len(PACK_MAGIC)
    for e in entries:
        loc = (e.offset, e.stored_length, e.plain_length, e.codec)
        if e.offset != expected or not plausible(*loc):
            raise CorruptObject(obj, f"pack footer entry at offset {e.offset} does not fit")
        expected += e.stored_length
    if expected != start:
        raise CorruptObject(obj, "pack footer does not match the chunks before it")
    return entries


def footer_row(cid: ChunkId, loc: Location) -> bytes:
    """The footer entry a pack holding the chunk at ``loc`` has, byte for byte."""
    return _PACK_ENTRY.pack(cid, loc.offset, loc.stored_length, loc.plain_length, loc.codec)


def footer_rows(footer: bytes) -> frozenset[bytes]:
    """A parsed footer's entries as raw rows (see :func:`footer_row`): compact, for checking
    many locations against one pack."""
    size = _PACK_ENTRY.size
    n = (len(footer) - TRAILER_SIZE) // size
    return frozenset(footer[i * size : (i + 1) * size] for i in range(n))


def encode_index(locations: dict[ChunkId, Location]) -> bytes:
    table = LocationTable()
    for cid, loc in locations.items():
        table.put(cid, loc)
    return b"".join(table.encode_index())


def decode_index(data: bytes, obj: str) -> dict[ChunkId, Location]:
    table = LocationTable()
    table.add_index(data, obj)
    return dict(table.items())


_ROW = struct.Struct("<IQIIB")
U32 = _U32
PLACE_ROW = _ROW  # a place as a LocationTable packs it: pack number, offset, lengths, codec
INDEX_ROW = _INDEX_ENTRY  # an index object's row: chunk id, pack number, offset, ...


def index_row_at(rows: bytes | bytearray, cid: bytes) -> int:
    """Where ``cid``'s row starts in ``rows`` (index rows back to back), or -1: a match
    must start at a row's boundary (an id could in principle span two rows' bytes)."""
    at = rows.find(cid)
    while at >= 0 and at % INDEX_ROW.size:
        at = rows.find(cid, at + 1)
    return at


HintRow = tuple[ChunkId, int, int, int, int, int]
"""A chunk's location hint as a tree page stores it: chunk id, pack number in the page's
pack table, offset, stored length, plain length, codec."""


class LocationTable:
    """Chunk id -> :class:`Location`, held compactly: 21 packed bytes per chunk (a Location
    object with its integers takes about 150), so a writer's view of a store with millions
    of chunks stays small. A chunk put twice keeps its first location as the one
    :meth:`get` gives, and other places as alternatives (:meth:`locations`), so that a
    reader whose first place for a chunk is gone can use another. Not thread-safe: the
    chunk store changes its tables under its own lock."""

    def __init__(self) -> None:
        self._rows: dict[ChunkId, bytes] = {}
        self._more: dict[ChunkId, list[bytes]] = {}  # other places of a chunk (rare)
        self._packs: list[ObjectId] = []
        self._numbers: dict[ObjectId, int] = {}

    def _number(self, pack: ObjectId) -> int:
        n = self._numbers.get(pack)
        if n is None:
            n = self._numbers[pack] = len(self._packs)
            self._packs.append(pack)
        return n

    def put(self, cid: ChunkId, loc: Location) -> None:
        row = (self._number(loc.pack), loc.offset, loc.stored_length, loc.plain_length)
        self._put_row(cid, _ROW.pack(*row, loc.codec))

    def _first_row(self, cid: ChunkId) -> bytes | None:
        """The place :meth:`get` gives, packed (a subclass may keep places elsewhere)."""
        return self._rows.get(cid)

    def _put_row(self, cid: ChunkId, row: bytes) -> None:
        first = self._first_row(cid)
        if first is None:
            self._rows[cid] = row
        elif first != row:
            more = self._more.setdefault(cid, [])
            if row not in more:
                more.append(row)

    def prefer(self, cid: ChunkId, loc: Location) -> None:
        """Make ``loc`` (put already) the place :meth:`get` gives for ``cid``."""
        row = (self._number(loc.pack), loc.offset, loc.stored_length, loc.plain_length)
        wanted = _ROW.pack(*row, loc.codec)
        first = self._first_row(cid)
        if first is None or first == wanted:
            return
        more = self._more.setdefault(cid, [])
        if wanted in more:
            more.remove(wanted)
        more.insert(0, first)
        self._rows[cid] = wanted

    def locations(self, cid: ChunkId) -> list[Location]:
        """Every place known for ``cid``, the one :meth:`get` gives first."""
        rows = [self._rows[cid], *self._more.get(cid, ())] if cid in self._rows else []
        return [self._location(row) for row in rows]

    def _location(self, row: bytes) -> Location:
        n, offset, stored, plain, codec = _ROW.unpack(row)
        return Location(self._packs[n], offset, stored, plain, codec)

    def put_hints(self, packs: Sequence[ObjectId], rows: Iterable[HintRow]) -> None:
        """Take in a tree page's hints as it stores them (``packs``: its pack table; each
        row: chunk id, pack number in ``packs``, offset, stored and plain length, codec),
        keeping locations already known."""
        numbers = [self._number(p) for p in packs]
        table, pack = self._rows, _ROW.pack
        for cid, number, offset, stored, plain, codec in rows:
            if self._first_row(cid) is None:
                table[cid] = pack(numbers[number], offset, stored, plain, codec)

    def get(self, cid: ChunkId) -> Location | None:
        row = self._first_row(cid)
        return None if row is None else self._location(row)

    def drop(self, cid: ChunkId) -> None:
        """Forget every place of ``cid``."""
        self._rows.pop(cid, None)
        self._more.pop(cid, None)

    def __contains__(self, cid: object) -> bool:
        return cid in self._rows

    def __len__(self) -> int:
        return len(self._rows)

    def _ids(self) -> Iterator[ChunkId]:
        return iter(list(self._rows))

    def row(self, cid: ChunkId) -> bytes:
        """A chunk's first place, packed (KeyError if it has none)."""
        return self._rows[cid]

    def items(self) -> Iterator[tuple[ChunkId, Location]]:
        for cid in list(self._rows):
            loc = self.get(cid)
            if loc is not None:
                yield cid, loc

    def encode_index(self, only: Iterable[ChunkId] | None = None) -> list[bytes]:
        """The index object for these locations (or for the chunks ``only`` names), in
        parts of about 1 MiB (a million-chunk index is never copied into one buffer)."""
        keys = sorted(self._ids() if only is None else set(only))
        rows = [self.row(cid) for cid in keys]
        packs = sorted({self._packs[_ROW.unpack(r)[0]] for r in rows})
        local = {self._numbers[p]: i for i, p in enumerate(packs)}
        out = bytearray(INDEX_MAGIC)
        out += _U32.pack(len(packs))
        for p in packs:
            out += bytes.fromhex(p)
        out += _U32.pack(len(keys))
        parts: list[bytes] = []
        for cid, row in zip(keys, rows, strict=True):
            n, offset, stored, plain, codec = _ROW.unpack(row)
            out += _INDEX_ENTRY.pack(cid, local[n], offset, stored, plain, codec)
            if len(out) >= 1 << 20:
                parts.append(bytes(out))
                out.clear()
        parts.append(bytes(out))
        return parts

    def _index_header(
        self, data: bytes, obj: str, size: int | None = None
    ) -> tuple[list[int], int, int]:
        """An index object's pack table (as this table's pack numbers), where its rows
        start, and how many there are, all checked against the object's length (``size``,
        if ``data`` is only its head)."""
        total = len(data) if size is None else size
        if not data.startswith(INDEX_MAGIC):
            raise CorruptObject(obj, "not a datavc index")
        try:
            pos = len(INDEX_MAGIC)
            (npacks,) = _U32.unpack_from(data, pos)
            pos += _U32.size
            if pos + npacks * DIGEST_SIZE > len(data):
                raise CorruptObject(obj, "index is truncated")
            numbers = [
                self._number(
                    ObjectId(data[pos + i * DIGEST_SIZE : pos + (i + 1) * DIGEST_SIZE].hex())
                )
                for i in range(npacks)
            ]
            pos += npacks * DIGEST_SIZE
            (count,) = _U32.unpack_from(data, pos)
            pos += _U32.size
        except struct.error:
            raise CorruptObject(obj, "index is truncated") from None
        if pos + count * _INDEX_ENTRY.size > total:
            raise CorruptObject(obj, "index is truncated")
        return numbers, pos, count

    def add_index(self, data: bytes, obj: str) -> None:
        """Take in every entry of an index object (keeping locations already known)."""
        numbers, pos, count = self._index_header(data, obj)
        body = data[pos : pos + count * _INDEX_ENTRY.size]
        try:
            rows, put = self._rows, self._put_row
            for c, p, off, sl, pl, codec in _INDEX_ENTRY.iter_unpack(body):
                if not plausible(off, sl, pl, codec):
                    raise CorruptObject(obj, f"index entry of chunk {c.hex()[:16]} is impossible")
                row = _ROW.pack(numbers[p], off, sl, pl, codec)
                if rows.setdefault(ChunkId(c), row) != row:
                    put(ChunkId(c), row)
        except (struct.error, IndexError):
            raise CorruptObject(obj, "index is truncated") from None
