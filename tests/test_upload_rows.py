"""What an upload holds per chunk it stores (issue 16): its index rows in buckets searched
in place (about 60 bytes a chunk), the index object written from them through a file, and
packs closed at a chunk count so that what waits to be stored stays bounded."""

from __future__ import annotations

import random
import threading
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from datavc.format import newrows
from datavc.format.chunker import ChunkerParams
from datavc.format.hashing import ChunkId, ObjectId, chunk_id
from datavc.format.indextable import MemoryRows
from datavc.format.newrows import NewRows
from datavc.format.packfile import (
    CODEC_RAW,
    FOOTER_ROW,
    INDEX_ROW,
    Location,
    LocationTable,
    footer_from_rows,
    index_row_at,
    read_pack_footer,
)
from datavc.format.storeconfig import StoreConfig
from datavc.store import chunkstore, packwriter, rowfiles
from datavc.store.backend import Backend
from datavc.store.chunkstore import ChunkStore
from datavc.store.rowfiles import STRIDE, FileRows, spill_rows


def _footer(rng: random.Random, ids: list[ChunkId]) -> tuple[bytes, list[tuple[ChunkId, int]]]:
    rows, at, places = bytearray(), 8, []
    for cid in ids:
        length = rng.randrange(1, 5000)
        rows += FOOTER_ROW.pack(cid, at, length, length, CODEC_RAW)
        places.append((cid, at))
        at += length
    return footer_from_rows(rows), places


@settings(max_examples=150, deadline=None)
@given(
    st.integers(0, 2**32),
    st.integers(1, 5),
    st.lists(st.integers(0, 199), max_size=30),
    st.sampled_from([0, 7, 40]),
)
def test_new_rows_answer_and_encode_as_the_dict_table_does(
    seed: int, packs: int, dropped: list[int], spill_at: int
) -> None:
    """Packs of chunks (some ids sharing their first two bytes, so a bucket holds several;
    some chunks in two packs: the first place is kept), then drops: every answer is the dict
    table's, and the index object is the one the dict table encodes, byte for byte."""
    rng = random.Random(seed)
    ids = [
        ChunkId(rng.choice([b"\0\0", b"\xff\xfe", rng.randbytes(2)]) + rng.randbytes(30))
        for _ in range(200)
    ]
    spilled = []

    def spill(sorted_rows: Iterator[bytes]) -> FileRows:
        run = spill_rows(sorted_rows, None)
        spilled.append(run)
        return run

    rows, plain = NewRows(spill if spill_at else None), LocationTable()
    old_limit = newrows.SPILL_ROWS
    newrows.SPILL_ROWS = spill_at or old_limit  # (hypothesis runs no fixture per example)
    for _ in range(packs):
        pack = ObjectId(rng.randbytes(32).hex())
        footer, _ = _footer(rng, rng.sample(ids, rng.randrange(1, 60)))
        rows.add_pack(pack, footer)
        for e in read_pack_footer(
            b"DVCPACK\x01"
            + bytes(
                sum(
                    FOOTER_ROW.unpack_from(footer, i * FOOTER_ROW.size)[2]
                    for i in range((len(footer) - 12) // FOOTER_ROW.size)
                )
            )
            + footer,
            "p",
        ):
            if e.chunk not in plain:
                plain.put(e.chunk, Location(pack, e.offset, e.stored_length, e.plain_length, 0))
    newrows.SPILL_ROWS = old_limit
    if spill_at:
        assert spilled or rows.count < spill_at, "premise: rows went to runs"
    for i in dropped:
        rows.drop(ids[i])
        plain.drop(ids[i])
    for cid in ids:
        assert rows.find(cid) == plain.get(cid)
    assert rows.count == len(plain)
    assert sorted(rows) == sorted(plain._ids())
    if rows.count:
        assert b"".join(rows.encode()) == b"".join(plain.encode_index())


def test_an_id_spanning_two_rows_is_not_taken_for_a_row() -> None:
    """A bucket's bytes searched for an id match only at a row's start: 32 bytes from the
    middle of one row into the next (starting with the bucket's two bytes) are no id."""
    rows = NewRows()
    a = ChunkId(b"\1\2" + bytes(range(30)))
    b = ChunkId(b"\1\2" + bytes(30))
    at = 0x0201  # the offset field, little-endian, starts with the bucket's bytes 1, 2
    footer = footer_from_rows(FOOTER_ROW.pack(a, at, 1, 1, 0) + FOOTER_ROW.pack(b, 9, 1, 1, 0))
    rows.add_pack(ObjectId("1" * 64), footer)
    bucket = bytes(rows._buckets[0x0102] or b"")
    spanning = ChunkId(bucket[36:68])  # from row a's offset field into row b
    assert spanning[:2] == b"\1\2" and bucket.find(spanning) == 36, "premise"
    assert rows.find(spanning) is None
    assert rows.find(a) == Location(ObjectId("1" * 64), at, 1, 1, 0)
    assert rows.find(b) == Location(ObjectId("1" * 64), 9, 1, 1, 0)
    # the same search where rows are read back: the runs spilled to files
    assert index_row_at(bucket, spanning) == -1
    assert (index_row_at(bucket, a), index_row_at(bucket, b)) == (0, INDEX_ROW.size)
    # (in the bucket's order, which keeps the spanning bytes: two rows are one stride)
    run = spill_rows(iter([bucket[:53], bucket[53:]]), None)
    assert run.find_raw(spanning) is None
    assert run.find_raw(a) == bucket[:53] and run.find_raw(b) == bucket[53:]


def _store(tmp_path: Path) -> ChunkStore:
    return ChunkStore.create(Backend(str(tmp_path / "store")), StoreConfig(ChunkerParams()))


def _reopened(tmp_path: Path) -> ChunkStore:
    """The store of ``_store(tmp_path)`` as another process opens it, its index loaded."""
    fresh = ChunkStore.open(Backend(str(tmp_path / "store")))
    fresh.load_index()
    return fresh


def _add_all(writer: packwriter.PackWriter, pieces: list[bytes]) -> None:
    """Each of ``pieces`` added as one chunk (the upload not finished)."""
    for data in pieces:
        writer.add(chunk_id(data), data)


def _store_all(store: ChunkStore, pieces: list[bytes]) -> None:
    """One upload of ``pieces``, one chunk each, finished (packs, then the index)."""
    with store.new_writer() as writer:
        _add_all(writer, pieces)
        writer.finish()


def _packs_stored(writer: packwriter.PackWriter) -> None:
    """Every pack of the upload stored, its index not written yet (as finish() starts)."""
    writer._drain(0)
    with writer._lock:
        writer._flush_locked()
    while writer._tasks:
        writer._tasks.popleft().result()
    writer._wait_uploads()


def _pieces(n: int) -> list[bytes]:
    return [b"tiny chunk %d\n" % i for i in range(n)]


def test_an_upload_holds_little_per_chunk_it_stored(tmp_path: Path) -> None:
    """20,000 one-chunk files stored: what the store keeps for them after the upload (its
    index rows, and what trusts the packs' footers) is under 200 bytes a chunk, where a
    dict row, a footer row and a list entry took about 400. (With so few chunks most
    buckets hold one row and their own overhead: 141 bytes a chunk measured; about 60 at a
    million chunks.)"""
    store = _store(tmp_path)
    pieces = _pieces(20_000)
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        with store.new_writer() as writer:
            _add_all(writer, pieces)
            writer.finish()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    held = sum(s.size_diff for s in after.compare_to(before, "filename"))
    assert held < 200 * len(pieces), f"{held / len(pieces):.0f} bytes a chunk"
    for data in pieces[::997]:
        assert store.has_chunk(chunk_id(data))
        assert bytes(store.read_one(chunk_id(data))) == data
    fresh = _reopened(tmp_path)
    assert all(fresh.location(chunk_id(d)) == store.location(chunk_id(d)) for d in pieces)


def test_a_pack_closes_at_its_chunk_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiny chunks fill no pack by bytes: a pack is closed at MAX_PACK_CHUNKS, so the
    chunks waiting in the pack being filled stay few."""
    monkeypatch.setattr(packwriter, "MAX_PACK_CHUNKS", 10)
    store = _store(tmp_path)
    pieces = _pieces(35)
    _store_all(store, pieces)
    packs = store.backend.list("packs")
    counts = sorted(len(read_pack_footer(store.backend.read(f"packs/{p}"), p)) for p in packs)
    assert counts == [5, 10, 10, 10]
    assert all(bytes(store.read_one(chunk_id(d))) == d for d in pieces)


def test_chunks_of_an_upload_that_failed_are_not_taken_as_stored(tmp_path: Path) -> None:
    """Packs stored, then the upload ends without its index (an error): the chunks are not
    counted as stored by the next upload, which stores them again and indexes them."""
    store = _store(tmp_path)
    pieces = _pieces(50)
    with store.new_writer() as writer:
        _add_all(writer, pieces)
        _packs_stored(writer)
        assert store.has_chunk(chunk_id(pieces[0])), "premise: stored, visible to the upload"
    assert not any(store.has_chunk(chunk_id(d)) for d in pieces)
    assert store.backend.list("index") == []
    with store.new_writer() as writer:
        assert all(writer.add(chunk_id(d), d) for d in pieces)
        writer.finish()
    fresh = _reopened(tmp_path)
    assert all(fresh.has_chunk(chunk_id(d)) for d in pieces)


def test_a_pack_whose_chunks_are_all_named_elsewhere_is_not_in_the_index() -> None:
    """A second pack holding only chunks of the first, and a third whose one chunk is
    dropped: the index object's pack table names the first pack alone."""
    rng = random.Random(7)
    ids = [ChunkId(rng.randbytes(32)) for _ in range(4)]
    first, second, third = (ObjectId(c * 64) for c in "abc")
    rows = NewRows()
    rows.add_pack(first, _footer(rng, ids[:3])[0])
    rows.add_pack(second, _footer(rng, ids[:2])[0])
    rows.add_pack(third, _footer(rng, ids[3:])[0])
    rows.drop(ids[3])
    index = b"".join(rows.encode())
    plain = LocationTable()
    plain.add_index(index, "index/x")
    assert {loc.pack for _, loc in plain.items()} == {first}
    assert index[8:12] == (1).to_bytes(4, "little"), "one pack in the table"


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32), st.integers(0, 3 * STRIDE + 5))
def test_file_rows_find_what_memory_rows_find(seed: int, n: int) -> None:
    """Sorted rows in a file, sampled every STRIDE rows, some ids sharing their first 8
    bytes across a stride's edge: every id is found with its row, and others are not."""
    rng = random.Random(seed)
    prefixes = [rng.randbytes(8) for _ in range(4)]
    ids = sorted({rng.choice(prefixes) + rng.randbytes(24) for _ in range(n)})
    raw = [cid + rng.randbytes(21) for cid in ids]
    memory = MemoryRows(b"".join(raw), 0, len(raw))
    run = spill_rows(iter(raw), None)
    assert run.count == len(raw) and list(run.raw_rows()) == raw
    for cid in ids:
        assert run.find_raw(cid) == memory.find_raw(cid) is not None
    for _ in range(20):
        other = rng.choice(prefixes) + rng.randbytes(24)
        assert run.find_raw(other) == memory.find_raw(other)
    run.close()


def test_a_big_index_is_searched_in_its_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An index object over the in-memory limit is searched where it is: a second upload
    finds every chunk the first stored (and stores none again), and a damaged one is
    skipped as a damaged small one is."""
    monkeypatch.setattr(chunkstore, "INDEX_IN_MEMORY", 1000)
    store = _store(tmp_path)
    pieces = _pieces(3000)
    _store_all(store, pieces)
    (name,) = store.backend.list("index")
    assert store.backend.size(f"index/{name}") > 1000, "premise: a big one"
    again = ChunkStore.open(Backend(str(tmp_path / "store")))
    with again.new_writer() as writer:
        assert not any(writer.add(chunk_id(d), d) for d in pieces), "all found"
        writer.finish()
    assert [type(t.rows).__name__ for t in again._index._tables] == ["FileRows"]
    path = tmp_path / "store" / "index" / name
    data = bytearray(path.read_bytes())
    data[200] ^= 1
    path.write_bytes(bytes(data))
    damaged = ChunkStore.open(Backend(str(tmp_path / "store")))
    damaged.load_index()
    assert damaged.damaged_indexes == {name}
    assert damaged.location(chunk_id(pieces[0])) is None


def test_an_upload_of_many_chunks_spills_its_rows_and_indexes_them_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows spilled to runs every 500 chunks: the upload still finds its own chunks (a
    chunk given twice is stored once), and its index object names every chunk."""
    monkeypatch.setattr(newrows, "SPILL_ROWS", 500)
    monkeypatch.setattr(packwriter, "MAX_PACK_CHUNKS", 300)
    store = _store(tmp_path)
    pieces = _pieces(2600)
    with store.new_writer() as writer:
        _add_all(writer, pieces)
        rows = writer._rows
        _packs_stored(writer)
        assert len(rows._runs) >= 3, "premise: spilled"
        assert not any(writer.add(chunk_id(d), d) for d in pieces[::7]), "found in runs"
        writer.finish()
    fresh = _reopened(tmp_path)
    assert all(fresh.has_chunk(chunk_id(d)) for d in pieces)
    assert all(bytes(fresh.read_one(chunk_id(d))) == d for d in pieces[::97])


def test_a_big_index_of_a_remote_store_is_downloaded_checked_and_cached(
    store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On every backend: a big index object is fetched a block at a time into a local file
    (never whole in memory), checked, searched there, and kept in the cache; a copy in the
    cache that is damaged is not used (the store's is fetched again)."""
    monkeypatch.setattr(chunkstore, "INDEX_IN_MEMORY", 1000)
    monkeypatch.setattr(rowfiles, "DOWNLOAD_BLOCK", 4096)  # several blocks
    store = ChunkStore.create(Backend(store_url), StoreConfig(ChunkerParams()))
    pieces = _pieces(2000)
    _store_all(store, pieces)
    (name,) = store.backend.list("index")
    cache_dir = tmp_path / "cache"

    def reopened() -> ChunkStore:
        cache = None if Backend(store_url).is_local else Backend(str(cache_dir))
        again = ChunkStore.open(Backend(store_url), cache)
        again.load_index()
        return again

    again = reopened()
    assert not again.damaged_indexes
    assert all(again.location(chunk_id(d)) == store.location(chunk_id(d)) for d in pieces)
    assert [type(t.rows).__name__ for t in again._index._tables] == ["FileRows"]
    if again.cache is None:
        return
    cached = cache_dir / "index" / name
    assert cached.exists(), "kept in the cache"
    data = bytearray(cached.read_bytes())
    data[300] ^= 1
    cached.write_bytes(bytes(data))
    third = reopened()
    assert not third.damaged_indexes
    assert all(third.location(chunk_id(d)) == store.location(chunk_id(d)) for d in pieces)
    assert rowfiles._file_id(str(cached)) == name, "the damaged copy was replaced"


def test_spilled_rows_are_searched_only_in_the_runs_that_may_hold_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Twenty runs (past the 16 with a filter bit of their own): every id is found with
    its place, an id never stored is not, and a lookup searches about one run, not all
    of them (searching each made a 10-million-chunk add 1.8x as slow per chunk)."""
    monkeypatch.setattr(newrows, "SPILL_ROWS", 200)
    rng = random.Random(11)
    rows = NewRows(lambda sorted_rows: spill_rows(sorted_rows, None))
    places: dict[ChunkId, int] = {}
    for p in range(21):
        ids = [ChunkId(rng.randbytes(32)) for _ in range(200)]
        footer, at = _footer(rng, ids)
        rows.add_pack(ObjectId(f"{p:064x}"), footer)
        places.update(at)
    assert len(rows._runs) == 21, "premise: every pack went to a run of its own"
    searched = 0
    real = FileRows.find_raw

    def counting(self: FileRows, cid: bytes) -> bytes | None:
        nonlocal searched
        searched += 1
        return real(self, cid)

    monkeypatch.setattr(FileRows, "find_raw", counting)
    for cid, offset in places.items():
        loc = rows.find(cid)
        assert loc is not None and loc.offset == offset
    present = searched
    searched = 0
    assert not any(rows.find(ChunkId(rng.randbytes(32))) for _ in range(2000))
    # 4,200 ids found: one search each, a few more for the runs sharing the last bit
    # (runs 15-20: about 6 searches each for their 1,200 ids) and the filter's misses
    assert present < 4200 + 1200 * 6 + 400, present
    assert searched < 200  # an absent id: a run searched only on a filter miss


def test_a_chunk_dropped_from_a_run_and_stored_again_is_found_at_its_new_place(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A drop hides the rows of the runs spilled before it, not a later row of the same
    chunk (stored again, then spilled too): found, listed once, counted once."""
    monkeypatch.setattr(newrows, "SPILL_ROWS", 50)
    rng = random.Random(4)
    rows = NewRows(lambda sorted_rows: spill_rows(sorted_rows, None))
    ids = [ChunkId(rng.randbytes(32)) for _ in range(100)]
    for n, part in enumerate((ids[:50], ids[50:])):  # two runs of 50
        footer, _ = _footer(rng, part)
        rows.add_pack(ObjectId(f"{n:064x}"), footer)
    assert len(rows._runs) == 2
    again = ids[10:20]
    for cid in again:
        rows.drop(cid)
    assert all(rows.find(cid) is None for cid in again)
    footer, places = _footer(rng, again + [ChunkId(rng.randbytes(32)) for _ in range(40)])
    rows.add_pack(ObjectId("bb" * 32), footer)  # stored again: a third run
    assert len(rows._runs) == 3
    new_place = dict(places)
    for cid in again:
        loc = rows.find(cid)
        assert loc is not None and (loc.pack, loc.offset) == ("bb" * 32, new_place[cid])
    listed = list(rows)
    assert len(listed) == len(set(listed)) == rows.count == 140
    encoded = b"".join(rows.encode())
    assert len(encoded) == 8 + 4 + 3 * 32 + 4 + 140 * INDEX_ROW.size


def test_a_writer_gives_each_stored_chunk_its_place_in_storing_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``places()``: every chunk the upload stored, once, in the order stored, at the place
    its index object gives it (packs closed every 300 chunks, rows spilled every 500)."""
    monkeypatch.setattr(newrows, "SPILL_ROWS", 500)
    monkeypatch.setattr(packwriter, "MAX_PACK_CHUNKS", 300)
    store = _store(tmp_path)
    pieces = _pieces(2600)
    with store.new_writer(places=True) as writer:
        for data in pieces + pieces[::5]:  # given again: stored once, placed once
            writer.add(chunk_id(data), data)
        writer.finish()
        placed = list(writer.places())
    assert [cid for cid, _ in placed] == [chunk_id(d) for d in pieces]
    assert len({loc.pack for _, loc in placed}) >= 8, "premise: many packs"
    fresh = _reopened(tmp_path)
    assert all(fresh.location(cid) == loc for cid, loc in placed)
    with store.new_writer() as plain:  # a writer not asked for places gives none
        plain.finish()
        assert list(plain.places()) == []


def test_an_add_writes_its_pages_from_the_places_it_stored_not_from_lookups(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first add of 6,000 files (pages of 400 entries, rows spilled every 1,000 chunks)
    looks up no chunk of its own to write its pages' hints: the places come from the
    writer, in order. The pages are byte for byte those written from lookups. Files with
    the same content as an earlier one (stored once) are looked up, and only those."""
    from datavc.format import treecut
    from datavc.workspace.core import Workspace
    from datavc.workspace.initialize import init_workspace

    monkeypatch.setattr(newrows, "SPILL_ROWS", 1000)
    monkeypatch.setattr(treecut, "PAGE_MAX_ENTRIES", 400)
    looked: list[ChunkId] = []
    real = ChunkStore.locate_stored

    def locate_stored(self: ChunkStore, cid: ChunkId) -> Location:
        looked.append(cid)
        return real(self, cid)

    monkeypatch.setattr(ChunkStore, "locate_stored", locate_stored)

    def add(name: str) -> tuple[object, ...]:
        root = tmp_path / name
        data = root / "data"
        for i in range(6000):
            body = b"file %d\n" % (i if i % 1000 else 0)  # 1000, 2000...: file 0's bytes
            (data / f"{i // 100:03d}").mkdir(parents=True, exist_ok=True)
            (data / f"{i // 100:03d}" / f"{i:05d}.txt").write_bytes(body)
        init_workspace(str(root), str(tmp_path / f"{name}-store"))
        looked.clear()
        return Workspace(str(root)).add(str(data)).staged.root.pages

    pages = add("places")
    assert len(pages) >= 10, "premise: many pages"
    assert looked == [chunk_id(b"file 0\n")] * 5
    monkeypatch.setattr(packwriter.PackWriter, "places", lambda self: iter(()))
    assert add("lookups") == pages
    assert len(looked) == 6000, "premise: the lookups the places replace"


def test_a_writer_takes_in_its_own_packs_without_searching_the_spilled_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chunk of a pack the writer just stored cannot be in the upload's rows already (it
    was pending from its append until now): taking the pack in searches only the buckets,
    never a spilled run, even where the runs' filter says "maybe" for every id. The rows
    still find every chunk."""
    monkeypatch.setattr(newrows, "SPILL_ROWS", 500)
    monkeypatch.setattr(packwriter, "MAX_PACK_CHUNKS", 300)
    monkeypatch.setattr(NewRows, "_maybe_in", lambda self, cid: (1 << len(self._runs)) - 1)
    searched = 0
    taking: set[int] = set()  # the threads in add_pack (others look chunks up meanwhile)
    real_find = FileRows.find_raw
    real_add = NewRows.add_pack

    def find_raw(self: FileRows, cid: bytes) -> bytes | None:
        nonlocal searched
        searched += threading.get_ident() in taking
        return real_find(self, cid)

    def add_pack(self: NewRows, pack: ObjectId, footer: bytes, new: bool = False) -> None:
        taking.add(threading.get_ident())
        try:
            real_add(self, pack, footer, new)
        finally:
            taking.discard(threading.get_ident())

    monkeypatch.setattr(FileRows, "find_raw", find_raw)
    monkeypatch.setattr(NewRows, "add_pack", add_pack)
    store = _store(tmp_path)
    pieces = _pieces(2600)
    _store_all(store, pieces)
    assert searched == 0
    fresh = _reopened(tmp_path)
    assert all(fresh.has_chunk(chunk_id(d)) for d in pieces)


def test_a_new_chunk_is_searched_for_in_the_spilled_runs_once_not_again_when_appended(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chunk is looked for in the store before it is compressed; when it is appended, only
    what this upload stored since is searched again: its pending chunks, the buckets and
    the runs spilled after that look. With the runs' filter saying "maybe" for every id,
    the chunks given through submit() (as add gives them) search the runs once each, at
    most: appends search only runs spilled while their chunk was in flight."""
    monkeypatch.setattr(newrows, "SPILL_ROWS", 500)
    monkeypatch.setattr(packwriter, "MAX_PACK_CHUNKS", 300)
    monkeypatch.setattr(packwriter, "MAX_INFLIGHT", 2)  # batches between look and append
    monkeypatch.setattr(NewRows, "_maybe_in", lambda self, cid: (1 << len(self._runs)) - 1)
    looks = {"encode": 0, "append": 0}
    where: dict[int, str] = {}
    real_find, real_encode, real_append = (
        FileRows.find_raw,
        packwriter.PackWriter._encode,
        packwriter.PackWriter._append,
    )

    def find_raw(self: FileRows, cid: bytes) -> bytes | None:
        step = where.get(threading.get_ident())
        if step is not None:
            looks[step] += 1
        return real_find(self, cid)

    def during(step: str, real: Any) -> Any:
        def call(*args: Any) -> Any:
            where[threading.get_ident()] = step
            try:
                return real(*args)
            finally:
                del where[threading.get_ident()]

        return call

    monkeypatch.setattr(FileRows, "find_raw", find_raw)
    monkeypatch.setattr(packwriter.PackWriter, "_encode", during("encode", real_encode))
    monkeypatch.setattr(packwriter.PackWriter, "_append", during("append", real_append))
    store = _store(tmp_path)
    pieces = _pieces(3000)
    with store.new_writer() as writer:
        for at in range(0, len(pieces), 50):
            writer.submit(pieces[at : at + 50])
        writer.finish()
        runs = len(writer._rows._runs)
    assert runs >= 4, "premise: spilled"
    assert looks["encode"] >= 100, "premise: the looks before compression search the runs"
    # at most the chunks in flight at each spill (was: every run, for every chunk)
    assert looks["append"] <= 2 * 50 * runs, looks
    fresh = _reopened(tmp_path)
    assert all(fresh.has_chunk(chunk_id(d)) for d in pieces)


def test_a_chunk_stored_and_spilled_while_its_copy_was_in_flight_is_stored_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two copies of a chunk, both looked for before either is stored: the first is
    appended, its pack stored and its row spilled to a run before the second is appended.
    The second append finds it in that run (spilled after the look) and stores nothing."""
    monkeypatch.setattr(newrows, "SPILL_ROWS", 500)
    monkeypatch.setattr(packwriter, "MAX_PACK_CHUNKS", 300)
    store = _store(tmp_path)
    pieces = _pieces(600)
    twin = pieces[0]
    with store.new_writer() as writer:
        looked = writer._rows.spills
        second = packwriter.Encoded(chunk_id(twin), CODEC_RAW, None, len(twin), looked)
        _add_all(writer, pieces)
        _packs_stored(writer)
        assert writer._rows.spills > looked, "premise: the first copy's row is in a run"
        assert chunk_id(twin) not in writer._pending
        new = writer.new_chunks
        with writer._lock:
            assert writer._append(second, twin) is False
        assert writer.new_chunks == new
        writer.finish()


def test_rows_being_spilled_are_found_without_waiting_for_the_spill(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A spill (a million rows sorted and written to a file, about a second) runs without
    the rows' lock: a lookup meanwhile finds the rows being spilled, and those held and
    spilled before, at once; rows dropped meanwhile stay hidden in the run they go to.
    (Lookups waited for the lock, held through every spill, and through every search of a
    run: at ten million chunks a writer's two threads waited on each other for 79 s.)"""
    monkeypatch.setattr(newrows, "SPILL_ROWS", 300)
    rng = random.Random(5)
    entered, release, timed_out = threading.Event(), threading.Event(), threading.Event()
    spills = 0

    def spill(sorted_rows: Iterator[bytes]) -> FileRows:
        nonlocal spills
        spills += 1
        if spills == 2:  # the second spill waits until the lookups are done
            entered.set()
            if not release.wait(10):
                timed_out.set()
        return spill_rows(sorted_rows, None)

    rows = NewRows(spill)
    placed: list[dict[ChunkId, int]] = []
    for p in range(2):
        ids = [ChunkId(rng.randbytes(32)) for _ in range(300)]
        footer, at = _footer(rng, ids)
        placed.append(dict(at))
        if p == 0:
            rows.add_pack(ObjectId(f"{p:064x}"), footer)
            assert rows.spills == 1
        else:
            taking = threading.Thread(
                target=rows.add_pack, args=(ObjectId(f"{p:064x}"), footer), daemon=True
            )
            taking.start()
    assert entered.wait(30), "premise: the second spill started"
    try:
        found = {}
        for cid in (*placed[0], *placed[1]):
            loc = rows.find(cid)
            assert loc is not None, "a row is missing while the buckets are spilled"
            found[cid] = loc.offset
        assert found == {**placed[0], **placed[1]}
        gone = next(iter(placed[1]))
        rows.drop(gone)
        assert rows.find(gone) is None
        assert rows.holds_since(next(iter(placed[0])), 0)
        assert not timed_out.is_set(), "the lookups waited for the spill to end"
    finally:
        release.set()
    taking.join(30)
    assert not taking.is_alive() and rows.spills == 2
    assert rows.find(gone) is None
    assert rows.count == 599
    assert all(rows.find(cid) is not None for cid in placed[1] if cid != gone)
    assert gone not in set(rows)


def test_a_search_of_a_spilled_run_does_not_hold_the_store_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer's look for a chunk may read a spilled run (a file read). The store's lock
    is not held meanwhile: another thread's lookups go on. (It was held through the read:
    at ten million files the add's two threads waited on it for 30 s.)"""
    monkeypatch.setattr(newrows, "SPILL_ROWS", 500)
    monkeypatch.setattr(packwriter, "MAX_PACK_CHUNKS", 300)
    monkeypatch.setattr(NewRows, "_maybe_in", lambda self, cid: (1 << len(self._runs)) - 1)
    entered, release = threading.Event(), threading.Event()
    real_find = FileRows.find_raw

    def find_raw(self: FileRows, cid: bytes) -> bytes | None:
        if threading.current_thread().name == "slow" and not entered.is_set():
            entered.set()
            release.wait(30)
        return real_find(self, cid)

    store = _store(tmp_path)
    pieces = _pieces(1200)
    with store.new_writer() as writer:
        _add_all(writer, pieces)
        _packs_stored(writer)
        assert writer._rows.spills >= 1, "premise: rows spilled to runs"
        monkeypatch.setattr(FileRows, "find_raw", find_raw)
        absent = chunk_id(b"never stored")
        answers: dict[str, bool] = {}
        slow = threading.Thread(
            target=lambda: answers.setdefault("slow", store.has_chunk(absent)), name="slow"
        )
        slow.start()
        try:
            assert entered.wait(30), "premise: the slow look reads a run"
            other = threading.Thread(
                target=lambda: answers.setdefault("other", store.has_chunk(chunk_id(pieces[0])))
            )
            other.start()
            other.join(5)
            assert "other" in answers, "a lookup waited for another's read of a run"
        finally:
            release.set()
            slow.join(30)
        assert answers == {"slow": False, "other": True}
        writer.finish()
    fresh = _reopened(tmp_path)
    assert all(fresh.has_chunk(chunk_id(d)) for d in pieces)


def test_a_look_with_no_run_spilled_since_asks_neither_filter_nor_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An append asks whether its chunk was stored since it was looked for. With no run
    spilled since, only the buckets are searched: the filter (four reads of 16 MiB of
    masks) is not asked. It was, for every chunk appended: 12 s of a 10M-file add."""
    monkeypatch.setattr(newrows, "SPILL_ROWS", 300)
    rng = random.Random(9)
    rows = NewRows(lambda sorted_rows: spill_rows(sorted_rows, None))
    ids = [ChunkId(rng.randbytes(32)) for _ in range(400)]
    footer, _ = _footer(rng, ids[:300])
    rows.add_pack(ObjectId("1" * 64), footer)
    footer, _ = _footer(rng, ids[300:])
    rows.add_pack(ObjectId("2" * 64), footer)
    assert rows.spills == 1, "premise: a run and a filter, and rows held after it"
    asked = 0
    real = NewRows._maybe_in

    def maybe_in(self: NewRows, cid: bytes) -> int:
        nonlocal asked
        asked += 1
        return real(self, cid)

    monkeypatch.setattr(NewRows, "_maybe_in", maybe_in)
    assert all(rows.holds_since(cid, 1) == (cid in ids[300:]) for cid in ids)
    assert not rows.holds_since(ChunkId(rng.randbytes(32)), 1)
    assert asked == 0
    assert all(rows.holds_since(cid, 0) for cid in ids)
    assert asked > 0, "premise: a look from before the spill asks the filter"
