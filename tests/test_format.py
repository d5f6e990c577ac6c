"""Format code: round trips and rejection of damaged input (pure; bytes in, values out, no I/O).

Covers pack footers and index objects (packfile), chunk framing and compression, tree pages and
roots, pointer files, version specs, version records, snapshot path checks and the chunker.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import random
import struct
import sys

import pytest
from blake3 import blake3
from hypothesis import example, given, settings
from hypothesis import strategies as st

from datavc.errors import BadInput, CorruptObject, DatavcError, UnsafePath
from datavc.format.chunker import Chunker, ChunkerParams
from datavc.format.hashing import ChunkId, FileHash, ObjectId, chunk_id, object_id
from datavc.format.packfile import (
    CODEC_RAW,
    CODEC_ZSTD,
    MAX_CHUNK,
    MAX_OFFSET,
    PACK_END,
    PACK_MAGIC,
    Location,
    LocationTable,
    PackEntry,
    decode_chunk,
    decode_index,
    encode_chunk,
    encode_index,
    pack_footer,
    read_pack_footer,
)
from datavc.format.paths import SortedPathCheck, check_path, check_paths
from datavc.format.pointer import Pointer, decode_pointer, encode_pointer
from datavc.format.record import CommitStats, VersionRecord, decode_record, encode_record
from datavc.format.spec import VersionSpec, parse_spec
from datavc.format.tree import (
    MODE_EXEC,
    MODE_FILE,
    PAGE_LIMIT_ENTRIES,
    PAGE_MAGIC,
    FileEntry,
    PageRef,
    TreeRoot,
    decode_page,
    encode_page,
    find_in_page,
    page_packs,
)
from datavc.format.treecut import PAGE_MAX_BYTES, PAGE_MAX_ENTRIES, cut_here, split_pages
from datavc.format.treeroot import decode_root, encode_root, snapshot_id
from datavc.store.build import _blocks

FAST = settings(max_examples=50, deadline=None)
PARAMS = ChunkerParams()
KIB = 1024
MIB = 1024 * KIB

digests = st.binary(min_size=32, max_size=32)
object_ids = digests.map(lambda d: ObjectId(d.hex()))
u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)
names = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_-]{0,30}", fullmatch=True)
# Text that UTF-8 can encode (no lone surrogates).
texts = st.text(st.characters(blacklist_categories=("Cs",)), max_size=60)


def randbytes(seed: int, n: int) -> bytes:
    return random.Random(seed).randbytes(n)


def build_pack(chunks: list[bytes]) -> tuple[bytes, list[PackEntry]]:
    """A pack laid out as a writer lays it out: magic, blobs in order, footer."""
    entries: list[PackEntry] = []
    blobs: list[bytes] = []
    offset = len(PACK_MAGIC)
    for data in chunks:
        codec, stored = encode_chunk(data)
        entries.append(PackEntry(chunk_id(data), offset, len(stored), len(data), codec))
        blobs.append(stored)
        offset += len(stored)
    return PACK_MAGIC + b"".join(blobs) + pack_footer(entries), entries


def footer_start(pack: bytes, count: int) -> int:
    return len(pack) - 4 - len(PACK_END) - 49 * count


# -- pack footers ---------------------------------------------------------------------------


@FAST
@given(st.lists(st.binary(max_size=3000) | st.just(b"a" * 5000), max_size=8))
@example([])
@example([b""])
@example([b"x"])
@example([b"a" * 5000, randbytes(1, 4000)])
def test_pack_footer_round_trip(chunks: list[bytes]) -> None:
    pack, entries = build_pack(chunks)
    assert read_pack_footer(pack, "packs/p") == entries
    for data, e in zip(chunks, entries, strict=True):
        stored = pack[e.offset : e.offset + e.stored_length]
        assert decode_chunk(e.codec, stored, e.plain_length, "packs/p") == data


def sample_pack() -> tuple[bytes, list[PackEntry]]:
    return build_pack([randbytes(2, 300), b"text " * 100, randbytes(3, 200)])


def test_pack_footer_rejects_bad_magic_and_bad_trailer() -> None:
    pack, _ = sample_pack()
    with pytest.raises(CorruptObject, match="packs/p"):
        read_pack_footer(b"X" + pack[1:], "packs/p")
    with pytest.raises(CorruptObject, match="packs/p"):
        read_pack_footer(pack[:-1] + b"\x02", "packs/p")
    with pytest.raises(CorruptObject):
        read_pack_footer(b"", "packs/p")


def test_pack_footer_rejects_every_truncation() -> None:
    pack, _ = sample_pack()
    for n in range(len(pack)):
        with pytest.raises(CorruptObject):
            read_pack_footer(pack[:n], "packs/p")


def test_pack_footer_rejects_count_longer_than_pack() -> None:
    pack, _ = sample_pack()
    pos = len(pack) - 4 - len(PACK_END)
    for count in (len(pack) // 49 + 1, 2**32 - 1):
        damaged = pack[:pos] + struct.pack("<I", count) + pack[pos + 4 :]
        with pytest.raises(CorruptObject, match="packs/p"):
            read_pack_footer(damaged, "packs/p")


def test_pack_footer_rejects_entries_that_do_not_fit_the_pack() -> None:
    pack, entries = sample_pack()
    start = footer_start(pack, len(entries))
    # 1. The first entry's offset points past the end of the pack.
    bad = PackEntry(entries[0].chunk, len(pack) + 10, 5, 5, CODEC_RAW)
    damaged = pack[:start] + pack_footer([bad, *entries[1:]])
    with pytest.raises(CorruptObject):
        read_pack_footer(damaged, "packs/p")
    # 2. The entry count was changed by one: the footer no longer matches the blob area.
    pos = len(pack) - 4 - len(PACK_END)
    for count in (len(entries) - 1, len(entries) + 1):
        damaged = pack[:pos] + struct.pack("<I", count) + pack[pos + 4 :]
        with pytest.raises(CorruptObject):
            read_pack_footer(damaged, "packs/p")


# -- index objects --------------------------------------------------------------------------


@st.composite
def index_maps(draw: st.DrawFn) -> dict[ChunkId, Location]:
    packs = draw(st.lists(object_ids, min_size=1, max_size=4, unique=True))
    ids = draw(st.lists(digests, max_size=30, unique=True))
    return {ChunkId(c): draw(locations(st.sampled_from(packs))) for c in ids}


@st.composite
def locations(draw: st.DrawFn, packs: st.SearchStrategy[ObjectId]) -> Location:
    """A place a chunk can be: raw at its plain length, or compressed to at most it."""
    plain = draw(st.integers(0, MAX_CHUNK))
    codec = CODEC_ZSTD if plain and draw(st.booleans()) else CODEC_RAW
    stored = draw(st.integers(1, plain)) if codec == CODEC_ZSTD else plain
    return Location(draw(packs), draw(st.integers(0, MAX_OFFSET - 1)), stored, plain, codec)


@FAST
@given(index_maps())
@example({})
@example({ChunkId(b"\x00" * 32): Location(ObjectId("ab" * 32), 8, 1, 1, CODEC_RAW)})
def test_index_round_trip(locs: dict[ChunkId, Location]) -> None:
    data = encode_index(locs)
    assert decode_index(data, "index/i") == locs
    # Canonical: the same map always encodes to the same bytes (so the same object id).
    assert encode_index(dict(reversed(list(locs.items())))) == data


def sample_index() -> bytes:
    packs = [ObjectId("11" * 32), ObjectId("22" * 32)]
    return encode_index(
        {ChunkId(bytes([i]) * 32): Location(packs[i % 2], 8 + i, 10, 20, i % 2) for i in range(5)}
    )


def test_index_rejects_bad_magic() -> None:
    data = sample_index()
    with pytest.raises(CorruptObject, match="index/i"):
        decode_index(b"\x00" + data[1:], "index/i")


def test_index_rejects_every_truncation() -> None:
    data = sample_index()
    for n in range(len(data)):
        with pytest.raises(CorruptObject, match="index/i"):
            decode_index(data[:n], "index/i")


def test_an_offset_a_pack_cannot_have_is_refused_in_an_index_and_a_page() -> None:
    """Offsets are u64 on disk; one of 2^63 or more was an OverflowError traceback from
    pread (checkout, every datavc.open reader) and from SQLite (fsck), found by a probe."""
    pack = ObjectId("11" * 32)
    for offset in (MAX_OFFSET, 2**63, 2**64 - 1):
        data = encode_index({ChunkId(bytes(32)): Location(pack, offset, 10, 10, CODEC_RAW)})
        with pytest.raises(CorruptObject, match=r"index/i: .*impossible"):
            decode_index(data, "index/i")
        page = _crafted_page(MODE_FILE, 5, [5], (5, CODEC_RAW), offset)
        with pytest.raises(CorruptObject, match=r"trees/t: .*impossible for its chunk"):
            decode_page(page, "trees/t")
    last = Location(pack, MAX_OFFSET - 1, 10, 10, CODEC_RAW)
    assert decode_index(encode_index({ChunkId(bytes(32)): last}), "index/i")
    _, hints = decode_page(_crafted_page(MODE_FILE, 5, [5], (5, CODEC_RAW), MAX_OFFSET - 1), "t")
    assert hints.rows[0][2] == MAX_OFFSET - 1


def test_index_rejects_pack_number_out_of_range() -> None:
    data = bytearray(sample_index())
    first_entry = 8 + 4 + 2 * 32 + 4
    struct.pack_into("<I", data, first_entry + 32, 7)  # only packs 0 and 1 exist
    with pytest.raises(CorruptObject, match="index/i"):
        decode_index(bytes(data), "index/i")


# -- chunk framing --------------------------------------------------------------------------


@FAST
@given(st.binary(max_size=20000))
@example(b"")
@example(b"x")
@example(b"abc" * 10000)
@example(randbytes(4, 64 * KIB))
def test_chunk_round_trip(data: bytes) -> None:
    codec, stored = encode_chunk(data)
    assert codec in (CODEC_RAW, CODEC_ZSTD)
    assert len(stored) <= len(data)  # never store more than the plain bytes
    assert decode_chunk(codec, stored, len(data), "packs/p") == data


def test_compressible_chunk_is_compressed() -> None:
    data = b"the same line again and again\n" * 2000
    codec, stored = encode_chunk(data)
    assert codec == CODEC_ZSTD
    assert len(stored) < len(data) // 10


def test_tiny_chunks_are_kept_raw() -> None:
    assert encode_chunk(b"a" * 63) == (CODEC_RAW, b"a" * 63)
    codec, stored = encode_chunk(b"a" * 64)
    assert codec == CODEC_ZSTD and decode_chunk(codec, stored, 64, "x") == b"a" * 64


@pytest.mark.parametrize("size", [1, 100, PARAMS.min_size - 1, PARAMS.min_size])
def test_a_file_up_to_the_minimum_chunk_size_is_one_chunk(size: int) -> None:
    """The premise of add's shortcut: such a file's hash is its one chunk's id."""
    data = randbytes(size, size)
    assert [bytes(p) for p in Chunker(PARAMS).cut(data)] == [data]


def test_incompressible_chunk_is_kept_raw() -> None:
    data = randbytes(5, 64 * KIB)
    assert encode_chunk(data) == (CODEC_RAW, data)


def test_raw_is_kept_when_compression_saves_too_little() -> None:
    # 1/32 compressible: zstd saves a little, less than the 1/16 threshold.
    data = randbytes(6, 62 * KIB) + b"\x00" * (2 * KIB)
    codec, stored = encode_chunk(data)
    assert (codec, stored) == (CODEC_RAW, data)


def test_decode_chunk_rejects_damage() -> None:
    data = b"compress me please " * 500
    codec, stored = encode_chunk(data)
    assert codec == CODEC_ZSTD
    with pytest.raises(CorruptObject, match="packs/p"):
        decode_chunk(codec, stored[: len(stored) // 2], len(data), "packs/p")
    with pytest.raises(CorruptObject, match="packs/p"):
        decode_chunk(codec, b"\xff" * len(stored), len(data), "packs/p")
    with pytest.raises(CorruptObject, match="codec"):
        decode_chunk(7, stored, len(data), "packs/p")
    for wrong in (len(data) - 1, len(data) + 1):
        with pytest.raises(CorruptObject):
            decode_chunk(codec, stored, wrong, "packs/p")


# -- tree pages and roots -------------------------------------------------------------------

paths_text = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40)


@st.composite
def file_entries(draw: st.DrawFn) -> list[FileEntry]:
    paths = draw(st.lists(paths_text, max_size=12, unique=True))
    paths.sort(key=lambda p: p.encode())
    entries = []
    for p in paths:
        chunks = tuple((ChunkId(c), length_of(c)) for c in draw(st.lists(digests, max_size=4)))
        mode = draw(st.sampled_from([MODE_FILE, MODE_EXEC]))
        size = sum(n for _, n in chunks)
        entries.append(FileEntry(p, mode, size, FileHash(draw(digests)), chunks))
    return entries


def length_of(cid: bytes) -> int:
    """A chunk's made-up plain length, derived from its id (so :func:`locate` knows it)."""
    return int.from_bytes(cid[8:11], "little") % (MAX_CHUNK + 1)


def locate(cid: ChunkId) -> Location:
    """A made-up place for a chunk, derived from its id (a few packs, varied fields): raw
    at its plain length (:func:`length_of`), or compressed to at most it."""
    pack = ObjectId(hashlib.sha256(bytes([cid[0] % 3])).hexdigest())
    plain = length_of(cid)
    codec = cid[7] % 2 if plain else CODEC_RAW
    stored = plain if codec == CODEC_RAW else 1 + cid[6] * 1000 % plain
    return Location(pack, int.from_bytes(cid[1:6], "little"), stored, plain, codec)


def page(entries: list[FileEntry]) -> bytes:
    return encode_page(entries, locate)[0]


def check_page_round_trip(entries: list[FileEntry]) -> bytes:
    data, content = encode_page(entries, locate)
    decoded, hints = decode_page(data, "trees/t", content)
    assert decoded == entries
    for e in entries:
        for cid, _length in e.chunks:
            want = locate(cid)
            got = hints[cid]
            assert (got.pack, got.offset, got.stored_length, got.codec) == (
                want.pack,
                want.offset,
                want.stored_length,
                want.codec,
            )
    assert {cid for e in entries for cid, _ in e.chunks} == set(hints)
    table = LocationTable()  # what a store keeps: the rows as stored, the same places
    table.put_hints(hints.packs, hints.rows)
    assert {cid: table.get(cid) for cid in hints} == dict(hints)
    return data


def entry(path: str, nchunks: int = 0, seed: int = 0) -> FileEntry:
    rnd = random.Random(f"{path}/{seed}")
    ids = [ChunkId(rnd.randbytes(32)) for _ in range(nchunks)]
    chunks = tuple((cid, length_of(cid)) for cid in ids)
    return FileEntry(
        path, MODE_FILE, sum(n for _, n in chunks), FileHash(rnd.randbytes(32)), chunks
    )


@FAST
@given(file_entries())
@example([])
@example([FileEntry("a", MODE_EXEC, 0, FileHash(b"\x00" * 32), ())])
@example([entry(f"dir/{i:05d}.txt", 2) for i in range(200)])  # compressible: a zstd page
def test_page_round_trip(entries: list[FileEntry]) -> None:
    data = check_page_round_trip(entries)
    assert page(entries) == data  # deterministic


def test_page_hint_carries_each_chunks_plain_length() -> None:
    e = entry("a", 3)
    _, hints = decode_page(page([e]), "trees/t")
    assert [hints[cid].plain_length for cid, _ in e.chunks] == [n for _, n in e.chunks]


def test_page_codecs_both_used() -> None:
    zstd_page = page([entry(f"dir/{i:05d}.txt") for i in range(300)])
    raw_page = page([entry("a", 3)])
    assert zstd_page[8] == CODEC_ZSTD
    assert raw_page[8] == CODEC_RAW


@pytest.mark.parametrize("compressible", [True, False])
def test_page_rejects_every_truncation(compressible: bool) -> None:
    entries = (
        [entry(f"d/{i:03d}") for i in range(40)] if compressible else [entry("a", 2), entry("b")]
    )
    data = page(entries)
    assert (data[8] == CODEC_ZSTD) == compressible
    for n in range(len(data)):
        with pytest.raises(CorruptObject, match="trees/t"):
            decode_page(data[:n], "trees/t")


def test_page_rejects_bad_magic_codec_and_path() -> None:
    data = page([entry("a", 1)])
    with pytest.raises(CorruptObject):
        decode_page(b"Z" + data[1:], "trees/t")
    with pytest.raises(CorruptObject, match="known format"):  # a format 1 page
        decode_page(data[:7] + b"\x01" + data[8:], "trees/t")
    with pytest.raises(CorruptObject):
        decode_page(data[:8] + b"\x09" + data[9:], "trees/t")
    # A path that is not UTF-8.
    content = (
        struct.pack("<IH", 1, 1) + b"\xff" + struct.pack("<IQ32sI", MODE_FILE, 0, bytes(32), 0)
    )
    body = struct.pack("<I", len(content)) + content + struct.pack("<I", 0)  # no packs
    raw = data[:8] + struct.pack("<BI", CODEC_RAW, len(body)) + body
    with pytest.raises(CorruptObject):
        decode_page(raw, "trees/t")


def test_page_hint_naming_a_pack_not_in_its_table_is_corrupt() -> None:
    cid = bytes(range(32))
    content = struct.pack("<IH", 1, 1) + b"a" + struct.pack("<IQ32sI", MODE_FILE, 5, cid, 1)
    content += struct.pack("<32sI", cid, 5)

    def with_hint(number: int) -> bytes:
        packs = struct.pack("<I", 1) + bytes(32)  # one pack: number 0
        hint = struct.pack("<IQIB", number, 0, 5, CODEC_RAW)
        body = struct.pack("<I", len(content)) + content + packs + hint
        return PAGE_MAGIC + struct.pack("<BI", CODEC_RAW, len(body)) + body

    _, hints = decode_page(with_hint(0), "trees/t")
    assert hints[ChunkId(cid)] == Location(ObjectId("00" * 32), 0, 5, 5, CODEC_RAW)
    with pytest.raises(CorruptObject, match=r"trees/t: .*names a pack the page does not list"):
        decode_page(with_hint(1), "trees/t")
    with pytest.raises(CorruptObject, match=r"trees/t: .*names a pack the page does not list"):
        find_in_page(with_hint(1), "trees/t", None, "a")


def _crafted_page(
    mode: int, size: int, lengths: list[int], hint: tuple[int, int], offset: int = 0
) -> bytes:
    """A raw page of one entry "a": its mode, size and chunks' plain lengths as given,
    each chunk's hint in pack 0 at ``offset`` with (stored length, codec) ``hint``."""
    cids = [bytes([i]) * 32 for i in range(len(lengths))]
    content = struct.pack("<IH", 1, 1) + b"a"
    content += struct.pack("<IQ32sI", mode, size, bytes(32), len(lengths))
    content += b"".join(struct.pack("<32sI", c, n) for c, n in zip(cids, lengths, strict=True))
    hints = b"".join(struct.pack("<IQIB", 0, offset, *hint) for _ in lengths)
    body = struct.pack("<I", len(content)) + content + struct.pack("<I", 1) + bytes(32) + hints
    return PAGE_MAGIC + struct.pack("<BI", CODEC_RAW, len(body)) + body


@pytest.mark.parametrize("chunks", [1, 2])
def test_a_page_entry_or_hint_that_cannot_be_is_refused(chunks: int) -> None:
    """Each check of an entry and of a hint, for a file of one chunk (the decoder's quick
    path) and of two: the well-formed page decodes, each one change to it is refused."""
    n = 5
    good = _crafted_page(MODE_FILE, n * chunks, [n] * chunks, (n, CODEC_RAW))
    [e], hints = decode_page(good, "trees/t")
    assert (e.mode, e.size, len(e.chunks)) == (MODE_FILE, n * chunks, chunks)
    assert len(hints.rows) == chunks
    big = MAX_CHUNK + 1
    bad_entries = {
        "has mode 100600": (0o100600, n * chunks, [n] * chunks),
        r"says \d+ bytes, its chunks": (MODE_EXEC, n * chunks + 1, [n] * chunks),
        "longer than": (MODE_FILE, big * chunks, [big] * chunks),
    }
    for message, (mode, size, lengths) in bad_entries.items():
        bad = _crafted_page(mode, size, lengths, (lengths[0], CODEC_RAW))
        with pytest.raises(CorruptObject, match=f"trees/t: tree page entry 'a' .*{message}"):
            decode_page(bad, "trees/t")
    impossible = [(n + 1, CODEC_RAW), (n + 1, CODEC_ZSTD), (0, CODEC_ZSTD), (n, 7)]
    for hint in impossible:
        bad = _crafted_page(MODE_FILE, n * chunks, [n] * chunks, hint)
        with pytest.raises(CorruptObject, match="impossible for its chunk"):
            decode_page(bad, "trees/t")
    assert decode_page(_crafted_page(MODE_EXEC, n * chunks, [n] * chunks, (n - 1, CODEC_ZSTD)), "t")



def test_a_page_declaring_more_entries_than_the_limit_is_refused_before_any_is_built() -> None:
    """The count is checked first: an 11 KB zstd page can unpack to millions of minimal
    entries (a body within its limit), which took 6.8 s and 790 MiB to build before the
    count was checked against the root's."""
    good = _crafted_page(MODE_FILE, 5, [5], (5, CODEC_RAW))
    at = len(PAGE_MAGIC) + 5 + 4  # the header, the content's length: the entry count
    for count, message in [(2, "truncated or malformed"), (PAGE_LIMIT_ENTRIES + 1, "more than")]:
        bad = good[:at] + struct.pack("<I", count) + good[at + 4 :]
        with pytest.raises(CorruptObject, match=message):
            decode_page(bad, "trees/t")
        with pytest.raises(CorruptObject, match=message):
            find_in_page(bad, "trees/t", None, "b")


page_of = page


@FAST
@given(file_entries(), st.data())
def test_find_in_page_agrees_with_decoding_the_page(
    entries: list[FileEntry], data: st.DataObject
) -> None:
    """One entry and its hints, found without building the others, are what a full
    decode gives; a path not in the page is None."""
    page_bytes, content = encode_page(entries, locate)
    decoded, _ = decode_page(page_bytes, "trees/t", content)
    for e in decoded:
        found, found_hints = find_in_page(page_bytes, "trees/t", content, e.path)
        assert found == e
        assert set(found_hints) == {cid for cid, _ in e.chunks}
        for cid, length in e.chunks:
            got, want = found_hints[cid], locate(cid)
            assert (got.pack, got.offset, got.stored_length, got.codec) == (
                want.pack,
                want.offset,
                want.stored_length,
                want.codec,
            )
            assert got.plain_length == length or len({n for c, n in e.chunks if c == cid}) > 1
    _, hints = decode_page(page_bytes, "trees/t", content)
    assert page_packs(page_bytes, "trees/t", content) == hints.packs  # the pack table alone
    with pytest.raises(CorruptObject):
        page_packs(page_bytes, "trees/t", "0" * 64)
    absent = data.draw(st.text(max_size=5).filter(lambda p: p not in {e.path for e in entries}))
    assert find_in_page(page_bytes, "trees/t", content, absent) == (None, {})
    with pytest.raises(CorruptObject):
        find_in_page(page_bytes, "trees/t", "0" * 64, entries[0].path if entries else "a")


def test_page_content_id_ignores_hints_and_is_checked() -> None:
    """The content id covers the entries, not where their chunks are stored."""
    entries = [entry("a", 2), entry("b/c", 1)]
    here, content = encode_page(entries, locate)
    elsewhere, content2 = encode_page(entries, lambda c: locate(c)._replace(offset=7))
    assert here != elsewhere and content == content2
    decode_page(elsewhere, "trees/t", content)
    other = encode_page([entry("a", 2), entry("b/c", 1, seed=1)], locate)[1]
    assert other != content
    with pytest.raises(CorruptObject, match="does not match"):
        decode_page(here, "trees/t", other)


def test_snapshot_id_ignores_page_object_ids() -> None:
    ref = PageRef(ObjectId("1" * 64), "a", "b", 2, 9, ObjectId("2" * 64))
    root = TreeRoot(2, 9, (ref,))
    moved = TreeRoot(2, 9, (dataclasses.replace(ref, id=ObjectId("3" * 64)),))
    assert snapshot_id(root) == snapshot_id(moved)
    for changed in (
        TreeRoot(2, 9, (dataclasses.replace(ref, content=ObjectId("4" * 64)),)),
        TreeRoot(2, 9, (dataclasses.replace(ref, last="c"),)),
        TreeRoot(3, 9, (ref,)),
    ):
        assert snapshot_id(changed) != snapshot_id(root)


def many_entries(n: int, nchunks: int = 0) -> list[FileEntry]:
    return [entry(f"data/{i // 1000:03d}/{i:07d}.bin", nchunks) for i in range(n)]


def weight(e: FileEntry) -> int:
    """Bytes the entry takes in a page body."""
    return len(e.path.encode()) + 50 + 53 * len(e.chunks)


def uncut(n: int, fmt: str = "{:07d}", nchunks: int = 0) -> list[FileEntry]:
    """``n`` entries, none of whose paths ends a page by itself (no natural cut)."""
    out: list[FileEntry] = []
    i = 0
    while len(out) < n:
        path = fmt.format(i)
        if not cut_here(path.encode()):
            out.append(entry(path, nchunks))
        i += 1
    return out


def test_split_pages_cuts_by_entry_count() -> None:
    entries = uncut(2 * PAGE_MAX_ENTRIES + 100)  # short paths
    pages = list(split_pages(entries))
    assert [len(p) for p in pages] == [PAGE_MAX_ENTRIES, PAGE_MAX_ENTRIES, 100]
    assert [e for p in pages for e in p] == entries
    assert [[e.path for e in p] for p in split_pages(list(entries))] == [
        [e.path for e in p] for p in pages
    ]


def test_split_pages_cuts_after_the_paths_cut_here_picks() -> None:
    entries = [entry(f"data/{i:06d}.bin") for i in range(40_000)]
    pages = list(split_pages(entries))
    picked = [e.path for e in entries if cut_here(e.path.encode())]
    assert 5 <= len(picked) <= 60  # about 1 in 2048
    ends = picked if picked[-1] == entries[-1].path else [*picked, entries[-1].path]
    assert [p[-1].path for p in pages] == ends
    assert all(not cut_here(e.path.encode()) for p in pages for e in p[:-1])


def test_a_change_moves_the_cuts_of_its_own_page_only() -> None:
    """Inserting or removing one file changes one page: the others keep their content ids
    (what lets add keep them unread)."""
    entries = [entry(f"data/{i:06d}.bin") for i in range(40_000)]
    before = [page_of(p) for p in split_pages(entries)]
    changed = [*entries[:20_000], entry("data/020000a.bin"), *entries[20_000:]]
    del changed[30_000]
    after = [page_of(p) for p in split_pages(changed)]
    assert len(set(before) - set(after)) <= 2 and len(set(after) - set(before)) <= 2
    assert len(set(before) & set(after)) >= len(before) - 2


def test_split_pages_cuts_by_size_and_is_deterministic() -> None:
    entries = uncut(6000, "data/{:07d}.bin", nchunks=30)
    pages = list(split_pages(entries))
    assert len(pages) > 2
    assert [e for p in pages for e in p] == entries
    biggest = max(weight(e) for e in entries)
    for page in pages[:-1]:
        total = sum(weight(e) for e in page)
        assert PAGE_MAX_BYTES <= total < PAGE_MAX_BYTES + biggest
        assert len(page_of(page)) < PAGE_MAX_BYTES + biggest + 64 + 3 * 32
    assert sum(weight(e) for e in pages[-1]) < PAGE_MAX_BYTES
    again = list(split_pages(iter(entries)))
    assert [page_of(p) for p in again] == [page_of(p) for p in pages]


def test_split_pages_of_nothing_is_no_page() -> None:
    assert list(split_pages([])) == []


def root_of(pages: list[list[FileEntry]]) -> TreeRoot:
    refs = tuple(
        PageRef(
            ObjectId(f"{i:064x}"),
            p[0].path,
            p[-1].path,
            len(p),
            sum(e.size for e in p),
            ObjectId(f"{i + 100:064x}"),
        )
        for i, p in enumerate(pages)
    )
    return TreeRoot(sum(r.files for r in refs), sum(r.bytes for r in refs), refs)


def test_pages_for_finds_the_one_page_of_each_path() -> None:
    pages = list(split_pages(many_entries(2 * PAGE_MAX_ENTRIES + 500)))
    root = root_of(pages)
    for i, page in enumerate(pages):
        for e in [page[0], page[-1], *page[::97]]:
            assert root.pages_for(e.path) == [root.pages[i]]
    # Paths that are in no page: before the first, between two pages, after the last.
    assert root.pages_for("a") == []
    between = pages[0][-1].path + "~"
    assert pages[0][-1].path < between < pages[1][0].path
    assert root.pages_for(between) == []
    assert root.pages_for("zzz") == []


def test_root_round_trip_and_rejects_damage() -> None:
    root = root_of(list(split_pages(many_entries(PAGE_MAX_ENTRIES + 3))))
    data = encode_root(root)
    assert decode_root(data, "trees/r") == root
    assert encode_root(decode_root(data, "trees/r")) == data
    doc = json.loads(data)
    damaged = [
        data[:-1],
        b"[]",
        b"not json",
        json.dumps({**doc, "type": "datavc-version"}).encode(),
        json.dumps({**doc, "format": 99}).encode(),
        json.dumps({k: v for k, v in doc.items() if k != "pages"}).encode(),
        json.dumps({**doc, "pages": [{"id": "x"}]}).encode(),
        json.dumps({**doc, "pages": [{**doc["pages"][0], "id": "../../x"}]}).encode(),
        json.dumps({**doc, "pages": [{**doc["pages"][0], "id": "AB" * 32}]}).encode(),
        json.dumps({**doc, "pages": [{**doc["pages"][0], "content": "x"}]}).encode(),
        json.dumps(
            {**doc, "pages": [{k: v for k, v in doc["pages"][0].items() if k != "content"}]}
        ).encode(),
    ]
    for bad in damaged:
        with pytest.raises(CorruptObject, match="trees/r"):
            decode_root(bad, "trees/r")


def test_root_cut_rule_is_kept_checked_and_covered() -> None:
    """A root cut by the path rule says "cut":1, which round-trips and is covered by the
    snapshot id; any other value, or a non-integer, is refused."""
    plain = root_of(list(split_pages(many_entries(300))))
    cut = dataclasses.replace(plain, cut=1)
    data = encode_root(cut)
    assert b'"cut":1' in data and decode_root(data, "trees/r") == cut
    assert b'"cut"' not in encode_root(plain) and snapshot_id(cut) != snapshot_id(plain)
    doc = json.loads(data)
    for value in (0, 2, -1, "1", True, None):
        with pytest.raises(CorruptObject, match="trees/r"):
            decode_root(json.dumps({**doc, "cut": value}).encode(), "trees/r")


# -- pointer files --------------------------------------------------------------------------

pointers = st.builds(
    Pointer,
    name=names,
    kind=st.sampled_from(["dir", "file"]),
    version=st.integers(1, 10**9),
    snapshot=object_ids,
    files=st.integers(0, 10**12),
    bytes=st.integers(0, 10**18),
    page=st.none() | object_ids,
)


@FAST
@given(pointers)
@example(Pointer("a", "file", 1, ObjectId("0" * 64), 0, 0))
def test_pointer_round_trip(p: Pointer) -> None:
    text = encode_pointer(p)
    assert decode_pointer(text, "x.datavc") == p
    assert text.endswith("\n") and text.count("\n") == (7 if p.page is None else 8)
    assert ("\npage: " in text) == (p.page is not None)


GOOD_POINTER = encode_pointer(Pointer("images", "dir", 3, ObjectId("ab" * 32), 10, 1000))


@pytest.mark.parametrize(
    "text",
    [
        "",
        "just some text\n",
        "<<<<<<< HEAD\n" + GOOD_POINTER,
        GOOD_POINTER.replace("version: 3", "version: three"),
        GOOD_POINTER.replace("version: 3", "version: 0"),
        GOOD_POINTER.replace("kind: dir", "kind: link"),
        GOOD_POINTER.replace("ab" * 32, "ab" * 31),
        GOOD_POINTER.replace("ab" * 32, "AB" * 32),
        GOOD_POINTER.replace("name: images", "name: ../images"),
        GOOD_POINTER.replace("files: 10\n", ""),
        GOOD_POINTER.replace("snapshot: ", "snapshot "),
        GOOD_POINTER + "page: " + "ab" * 31 + "\n",
        GOOD_POINTER + "page: " + "AB" * 32 + "\n",
        GOOD_POINTER + "page: ../../x\n",
    ],
)
def test_bad_pointer_is_bad_input(text: str) -> None:
    with pytest.raises(BadInput, match=r"x\.datavc|dataset name"):
        decode_pointer(text, "x.datavc")


def test_pointer_tolerates_comments_and_blank_lines() -> None:
    text = "\n# a comment\n" + GOOD_POINTER.replace("\n", "\n\n")
    assert decode_pointer(text, "x.datavc") == decode_pointer(GOOD_POINTER, "x.datavc")


# -- version specs --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("images", VersionSpec("images", "none")),
        ("images@v3", VersionSpec("images", "number", "3")),
        ("images@v12", VersionSpec("images", "number", "12")),
        ("images@latest", VersionSpec("images", "latest")),
        ("images@git:HEAD~1", VersionSpec("images", "git", "HEAD~1")),
        ("images@git:main", VersionSpec("images", "git", "main")),
        ("images@best", VersionSpec("images", "ref", "best")),
        ("my-data_2.0@v1", VersionSpec("my-data_2.0", "number", "1")),
        ("images@" + "ab12" * 16, VersionSpec("images", "ref", "ab12" * 16)),
    ],
)
def test_parse_spec(text: str, expected: VersionSpec) -> None:
    spec = parse_spec(text)
    assert spec == expected
    assert str(spec) == text
    if spec.kind == "number":
        assert spec.number == int(text.rsplit("@v", 1)[1])


def test_snapshot_prefix_is_recognised() -> None:
    assert parse_spec("images@3fa9c1").may_be_snapshot_prefix
    assert parse_spec("images@" + "0" * 64).may_be_snapshot_prefix
    assert not parse_spec("images@3fa9c").may_be_snapshot_prefix  # too short
    assert not parse_spec("images@release1").may_be_snapshot_prefix
    assert not parse_spec("images@v3").may_be_snapshot_prefix
    assert not parse_spec("images@" + "0" * 65).may_be_snapshot_prefix


def test_leading_zeros_normalise_the_version_number() -> None:
    assert parse_spec("images@v007") == VersionSpec("images", "number", "7")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "@v1",
        "images@",
        "images@v0",
        "images@git:",
        "../images@v1",
        "ima ges",
        "images/x@v1",
        "-images",
        ".images",
        "a..b@latest",
        "x" * 129,
    ],
)
def test_bad_spec_is_bad_input(text: str) -> None:
    with pytest.raises(BadInput):
        parse_spec(text)


@pytest.mark.parametrize(
    "text", ["images@../../datavc.json", "images@a/b", "images@a b", "images@..", "images@-x"]
)
def test_tag_must_be_a_safe_key(text: str) -> None:
    """A tag becomes part of an object key (tags/NAME/TAG): no traversal, no separators."""
    with pytest.raises(BadInput):
        parse_spec(text)


@FAST
@given(
    names,
    st.one_of(
        st.just(("none", "")),
        st.just(("latest", "")),
        st.integers(1, 10**6).map(lambda n: ("number", str(n))),
        # a revision may not start with "-" (it would reach git as an option)
        st.from_regex(r"[A-Za-z0-9~^._/][A-Za-z0-9~^._/-]{0,19}", fullmatch=True).map(
            lambda r: ("git", r)
        ),
        st.from_regex(r"[0-9a-f]{6,64}", fullmatch=True).map(lambda r: ("ref", r)),
    ),
)
def test_spec_text_round_trip(name: str, kind_value: tuple[str, str]) -> None:
    spec = VersionSpec(name, *kind_value)
    assert parse_spec(str(spec)) == spec


# -- version records ------------------------------------------------------------------------

EMPTY_ROOT = TreeRoot(0, 0, ())


@st.composite
def roots(draw: st.DrawFn) -> TreeRoot:
    """A consistent root: pages in path order with disjoint ranges, totals their sums."""
    bounds = sorted(set(draw(st.lists(texts, max_size=6))))
    pages = tuple(
        PageRef(
            draw(object_ids),
            first,
            last,
            draw(st.integers(1, 2**20)),
            draw(st.integers(0, 2**62)),
            draw(object_ids),
        )
        for first, last in zip(bounds[::2], bounds[1::2], strict=False)
    )
    return TreeRoot(sum(p.files for p in pages), sum(p.bytes for p in pages), pages)


def record(*args: object, root: TreeRoot = EMPTY_ROOT, **kw: object) -> VersionRecord:
    """A VersionRecord whose tree id is its root's id (as a real one's is)."""
    return VersionRecord(*args, tree=snapshot_id(root), root=root, **kw)  # type: ignore[arg-type,misc]


records = st.builds(
    record,
    name=names,
    version=st.integers(1, 10**9),
    kind=st.sampled_from(["dir", "file"]),
    root=roots(),
    parent=st.none() | st.integers(1, 10**9),
    message=texts,
    author=texts,
    time=st.just("2026-11-28T06:00:00Z"),
    git_head=st.none() | st.from_regex(r"[0-9a-f]{40}", fullmatch=True),
    nonce=st.uuids().map(lambda u: u.hex),
    stats=st.builds(CommitStats, u64, u64, u64, u64, u64),
)


@FAST
@given(records)
@example(
    record("a", 1, "dir", parent=None, message="", author="", time="", git_head=None, nonce="")
)
@example(
    record(
        "a",
        2,
        "file",
        parent=1,
        message='multi\nline "quoted" é 日本',
        author="A <a@b>",
        time="t",
        git_head="ab",
        nonce="n",
        stats=CommitStats(1, 2, 3, 4, 5),
        root=TreeRoot(3, 4, (PageRef(ObjectId("1" * 64), "a", "b/c", 3, 4, ObjectId("2" * 64)),)),
    )
)
def test_record_round_trip(rec: VersionRecord) -> None:
    data = encode_record(rec)
    assert decode_record(data, "versions/a/1.json") == rec
    assert encode_record(decode_record(data, "versions/a/1.json")) == data


def sample_record_doc() -> dict[str, object]:
    rec = record(
        "a",
        1,
        "dir",
        parent=None,
        message="m",
        author="me",
        time="t",
        git_head=None,
        nonce="n",
        root=TreeRoot(1, 2, (PageRef(ObjectId("1" * 64), "a", "a", 1, 2, ObjectId("2" * 64)),)),
    )
    doc: dict[str, object] = json.loads(encode_record(rec))
    return doc


@pytest.mark.parametrize(
    "change",
    [
        {"type": "datavc-tree"},
        {"format": 1},
        {"tree": "not-a-tree"},
        {"tree": "F" * 64},
        {"tree": "f" * 64},  # a valid id, but not the root's
        {"root": None},
        {"root": {"type": "datavc-tree", "format": 2}},
        {"root": {"type": "datavc-tree", "format": 2, "files": 1, "bytes": 2, "pages": []}},
        {"kind": "link"},
        {"version": "three"},
        {"stats": {"files": 1, "bogus": 2}},
        {"stats": None},
        {"parent": "x"},
    ],
)
def test_damaged_record_is_corrupt(change: dict[str, object]) -> None:
    doc = {**sample_record_doc(), **change}
    with pytest.raises(CorruptObject, match=r"versions/a/1\.json"):
        decode_record(json.dumps(doc).encode(), "versions/a/1.json")


@pytest.mark.parametrize("data", [b"", b"{", b"[]", b"null", b'"x"'])
def test_unparseable_record_is_corrupt(data: bytes) -> None:
    with pytest.raises(CorruptObject):
        decode_record(data, "versions/a/1.json")


def test_record_missing_field_is_corrupt() -> None:
    for key in ("name", "version", "kind", "tree", "root", "parent", "message", "nonce", "stats"):
        doc = {k: v for k, v in sample_record_doc().items() if k != key}
        with pytest.raises(CorruptObject):
            decode_record(json.dumps(doc).encode(), "versions/a/1.json")


def test_record_with_undecodable_message_is_a_clean_error_or_round_trips() -> None:
    rec = record(
        "a",
        1,
        "dir",
        parent=None,
        message="caf\udce9",
        author="me",
        time="t",
        git_head=None,
        nonce="n",
    )
    try:
        data = encode_record(rec)
    except DatavcError:
        return  # refusing it with a clear error is fine too
    assert decode_record(data, "versions/a/1.json").message == rec.message


# -- snapshot paths -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "",
        "..",
        "../x",
        "a/../../x",
        "a/..",
        "./a",
        "a/./b",
        "a//b",
        "a/",
        "/etc/passwd",
        "C:/x",
        "c:x",
        "a\\..\\b",
        "a\\b",
        "a\x00b",
        ".git",
        ".git/config",
        "a/.git/hooks/pre-commit",
        ".GIT/config",
        "x/.Git",
        ".datavc/config.toml",
    ],
)
def test_unsafe_path(path: str) -> None:
    with pytest.raises(UnsafePath) as info:
        check_paths([path])
    assert info.value.path == path



LONG_NAME = "é" * 127 + "n"  # 255 bytes in UTF-8, 128 characters
DEEP_FOLDER = ("p" * 250 + "/") * 12  # 3,012 bytes


def test_paths_within_the_name_depth_and_length_limits_and_past_them() -> None:
    """A name of 256 bytes cannot be written on common file systems, and a path deeper
    than 128 folders overflowed the recursion of walkers (status's, fsspec's): a reader
    refuses both in its first phase, before it writes anything; so does SortedPathCheck
    in its shortcut for a path in the same folder as the last, which checks the name."""
    within = ["n" * 255, LONG_NAME, "d/" * 127 + "f", ("p" * 255 + "/") * 11 + "q" * 255]
    assert len(within[-1]) == 3071
    for path in within:
        check_path(path)
        check_paths([path])
    past = {
        "a name longer than 255 bytes": ["n" * 256, LONG_NAME + "n", "a/" + "é" * 128],
        "deeper than 128 components": ["d/" * 128 + "f", "d/" * 900 + "f"],
        "longer than 3072 bytes": [("p" * 255 + "/") * 12 + "q", DEEP_FOLDER + "b" * 61],
    }
    for message, paths in past.items():
        for path in paths:
            with pytest.raises(UnsafePath, match=message):
                check_path(path)
    for folder, name, message in [
        ("a/", "n" * 256, "a name longer than 255 bytes"),
        ("a/", LONG_NAME + "é", "a name longer than 255 bytes"),
        (DEEP_FOLDER, "b" * 61, "longer than 3072 bytes"),
    ]:
        check = SortedPathCheck()
        check.add(folder + "a")  # the folder seen: the next path takes the shortcut
        with pytest.raises(UnsafePath, match=message):
            check.add(folder + name)


@pytest.mark.parametrize(
    "paths",
    [
        ["a", "b/c", "b/d/e", ".gitignore", "git/x", "a.git", "日本/ファイル", "x y/z"],
        [],
        ["a/b", "a/c", "a_b", "a-b/c"],
    ],
)
def test_safe_paths(paths: list[str]) -> None:
    check_paths(paths)
    for p in paths:
        check_path(p)


@pytest.mark.parametrize(
    ("paths", "bad"),
    [
        (["a/b", "c", "a/b"], "a/b"),
        (["Data/x", "data/X"], "data/X"),
        (["README", "readme"], "readme"),
        (["a", "a/b"], "a"),
        (["a/b/c", "a/b"], "a/b"),
        (["A", "a/b"], "a"),
    ],
)
def test_paths_that_clash(paths: list[str], bad: str) -> None:
    with pytest.raises(UnsafePath) as info:
        check_paths(paths)
    assert info.value.path == bad


def test_folders_that_differ_only_by_case_clash() -> None:
    with pytest.raises(UnsafePath):
        check_paths(["A/x", "a/y"])


def test_path_that_is_not_utf8_is_unsafe() -> None:
    with pytest.raises(UnsafePath):
        check_paths(["photos/caf\udce9.jpg"])


# -- chunker --------------------------------------------------------------------------------

CHUNKER = Chunker(PARAMS)


def cut(data: bytes) -> list[bytes]:
    return [bytes(c) for c in CHUNKER.cut(data)]


@FAST
@given(st.integers(0, 2**32), st.integers(0, 2 * MIB))
@example(0, 0)  # empty
@example(0, 1)  # 1 byte
@example(1, PARAMS.min_size)  # exactly one chunk
@example(2, PARAMS.max_size + 1)  # max chunk + 1
@example(3, 3 * PARAMS.max_size)
def test_chunker_cuts_random_data(seed: int, size: int) -> None:
    data = randbytes(seed, size)
    chunks = cut(data)
    check_chunks(data, chunks)
    for block in (PARAMS.max_size, 300_000, 2 * MIB):  # files over the whole-read limit
        streamed = []
        for whole, views in _blocks(io.BytesIO(data), CHUNKER, block):
            assert bytes(whole) == b"".join(views)
            streamed += [bytes(v) for v in views]
        assert streamed == chunks  # cut a block at a time, the same cuts as the whole file


def test_block_buffers_are_reused_only_when_no_view_is_left() -> None:
    data = randbytes(5, 24 * MIB)
    block = 2 * PARAMS.max_size
    held = list(_blocks(io.BytesIO(data), CHUNKER, block))  # every view kept
    assert len({id(whole.obj) for whole, _ in held}) == len(held)
    assert b"".join(bytes(whole) for whole, _ in held) == data  # none overwritten
    assert [bytes(v) for _, views in held for v in views] == cut(data)
    del held
    buffers = set()
    for whole, views in _blocks(io.BytesIO(data), CHUNKER, block):  # views dropped as used
        buffers.add(id(whole.obj))
        assert len(views) > 0
        del whole, views
    assert len(buffers) <= 3  # this block's, the one the carried chunk is in, one free
    buffers.clear()
    kept = None
    for whole, views in _blocks(io.BytesIO(data), CHUNKER, block):
        buffers.add(id(whole.obj))
        kept = kept or (whole, views)  # the first block stays in use to the end
        del whole, views
    assert kept is not None and bytes(kept[0]) == data[: len(kept[0])]
    assert len(buffers) <= 4  # one more, not a new one per block


@FAST
@given(st.binary(max_size=1000), st.integers(0, 3 * PARAMS.max_size))
@example(b"", 0)
@example(b"\x00", PARAMS.max_size + 1)
@example(b"ab", PARAMS.max_size)
def test_chunker_cuts_repetitive_data(unit: bytes, size: int) -> None:
    data = (unit * (size // len(unit) + 1))[:size] if unit else b""
    check_chunks(data, cut(data))


def check_chunks(data: bytes, chunks: list[bytes]) -> None:
    assert b"".join(chunks) == data
    assert all(0 < len(c) <= PARAMS.max_size for c in chunks)
    assert all(len(c) >= PARAMS.min_size for c in chunks[:-1])
    if not data:
        assert chunks == []
    elif len(data) <= PARAMS.min_size:
        assert chunks == [data]
    if len(data) > PARAMS.max_size:
        assert len(chunks) >= 2


def test_chunker_edge_sizes() -> None:
    assert cut(b"") == []
    assert cut(b"x") == [b"x"]
    assert [len(c) for c in cut(bytes(PARAMS.max_size))] == [PARAMS.max_size]
    assert [len(c) for c in cut(bytes(PARAMS.max_size + 1))] == [PARAMS.max_size, 1]


BIG = randbytes(7, 8 * MIB)
BIG_CHUNKS = cut(BIG)


@FAST
@given(
    st.integers(2 * MIB, 6 * MIB),
    st.sampled_from(["replace", "insert", "delete"]),
    st.integers(1, 4096),
)
@example(4 * MIB, "replace", 1)
@example(4 * MIB, "insert", 1)
@example(4 * MIB, "delete", 4096)
def test_chunker_cut_points_are_stable_under_a_middle_edit(at: int, how: str, n: int) -> None:
    patch = randbytes(at + n, n)
    if how == "replace":
        flipped = bytes(b ^ 0xA5 for b in BIG[at : at + n])
        edited = BIG[:at] + flipped + BIG[at + n :]
    elif how == "insert":
        edited = BIG[:at] + patch + BIG[at:]
    else:
        edited = BIG[:at] + BIG[at + n :]
    assert edited != BIG
    chunks = cut(edited)
    assert chunk_id(chunks[0]) == chunk_id(BIG_CHUNKS[0])
    assert chunk_id(chunks[-1]) == chunk_id(BIG_CHUNKS[-1])
    # Every cut before the edit is unchanged, and the cuts resynchronise soon after it.
    before = [c for c in _ends(BIG_CHUNKS) if c <= at]
    assert [c for c in _ends(chunks) if c <= at] == before
    old_ids = {chunk_id(c) for c in BIG_CHUNKS}
    new = [c for c in chunks if chunk_id(c) not in old_ids]
    assert 1 <= len(new) <= 6
    assert sum(len(c) for c in new) <= n + 4 * PARAMS.max_size


def _ends(chunks: list[bytes]) -> list[int]:
    out, pos = [], 0
    for c in chunks:
        pos += len(c)
        out.append(pos)
    return out


def test_chunker_params_round_trip_and_reject_unknown_algorithm() -> None:
    params = ChunkerParams(avg_size=8192, min_size=2048, max_size=32768, seed=3)
    assert ChunkerParams.from_json(params.to_json()) == params
    with pytest.raises(CorruptObject):
        ChunkerParams.from_json({**params.to_json(), "algorithm": "rabin"})


# -- test vectors quoted in docs/FORMAT.md -------------------------------------------------


def test_vector_canonical_root_and_snapshot_id() -> None:
    """Control characters, DEL, U+2028, ``<&>/`` and non-ASCII in page paths: escaped as
    FORMAT.md says (only what JSON requires), so another encoder can match the id."""
    first, last = 'a\x01\t\n"\\b\x7f', "z\u2028<&>/é日本"
    root = TreeRoot(
        3,
        30,
        (
            PageRef(ObjectId("1" * 64), first, "m", 2, 20, ObjectId("2" * 64)),
            PageRef(ObjectId("3" * 64), "n", last, 1, 10, ObjectId("4" * 64)),
        ),
    )
    expected = (
        '{"bytes":30,"files":3,"format":2,"pages":[{"bytes":20,"content":"' + "2" * 64 + '",'
        '"files":2,"first":"a\\u0001\\t\\n\\"\\\\b\x7f","last":"m"},{"bytes":10,"content":"'
        + "4" * 64
        + '","files":1,"first":"n","last":"z\u2028<&>/é日本"}],"type":"datavc-tree"}'
    ).encode("utf-8")
    assert snapshot_id(root) == object_id(expected)
    assert snapshot_id(root) == "f4239a6ab38508337867ca3b5e3ae62ab885a9a667390bee83cb20e859e9b949"


def test_vector_chunker_cut_points() -> None:
    data = random.Random(20261204).randbytes(1 << 20)
    cuts = [len(c) for c in Chunker(ChunkerParams()).cut(data)]
    assert cuts == [
        *(36991, 39179, 76416, 44617, 95331, 34692, 108411, 53655),
        *(91772, 45404, 75848, 133463, 32676, 70970, 24929, 84222),
    ]
    small = ChunkerParams(avg_size=8192, min_size=2048, max_size=32768, seed=3)
    assert [len(c) for c in Chunker(small).cut(data[:65536])] == [
        9191,
        9834,
        4958,
        12273,
        9007,
        13110,
        7163,
    ]


def test_vector_chunker_tables() -> None:
    """The installed chunker's tables are the ones whose digests FORMAT.md gives."""
    from pyfastcdc.py import constants

    assert sys.byteorder == "little"
    assert len(constants.MASKS) == 26 and len(constants.GEAR) == 256
    masks = blake3(constants.MASKS.tobytes()).hexdigest()
    gear = blake3(constants.GEAR.tobytes()).hexdigest()
    assert masks == "8a09367a994a4fd8758a1376acf240b45d3066e2aa4cc0b6f9e62cb6d64ba904"
    assert gear == "9af822d1e10df25d0157a43ccd0a73b56d1c1d0a5d77acb4e6e979522d0fe149"


def test_vector_pack_with_a_raw_and_a_zstd_chunk() -> None:
    """A reader of FORMAT.md's pack: its footer, each chunk decoded and checked, its id."""
    raw = b"datavc raw chunk\n" * 2
    text = b"datavc zstd chunk, compressible: " + b"abc" * 2000
    frame = bytes.fromhex(
        "28b52ffd6091166d01004402646174617663207a737464206368756e6b2c20636f6d707265737369"
        "626c653a206162630100543b7bf704"
    )
    footer = pack_footer(
        [
            PackEntry(chunk_id(raw), 8, len(raw), len(raw), CODEC_RAW),
            PackEntry(chunk_id(text), 8 + len(raw), len(frame), len(text), CODEC_ZSTD),
        ]
    )
    pack = PACK_MAGIC + raw + frame + footer
    assert len(pack) == 207
    entries = read_pack_footer(pack, "packs/v")
    for e, plain in zip(entries, (raw, text), strict=True):
        stored = pack[e.offset : e.offset + e.stored_length]
        assert decode_chunk(e.codec, stored, e.plain_length, "packs/v") == plain
        assert chunk_id(plain) == e.chunk
    assert object_id(footer) == "a46968e1e50e89d75160d4b72a7fd119aa58a05b70702fddcf2fceaf551634d9"
