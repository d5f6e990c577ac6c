"""fsck in memory that does not grow with the store (issue 16): footers, indexes and the
chunks trees need are joined in on-disk tables, a big index object is read from a file a
block of rows at a time, and a page several versions share is read once but its damage
still names each of them."""

from __future__ import annotations

import os
import tracemalloc
from pathlib import Path

import pytest
from helpers import write

from datavc.format import treecut
from datavc.format.hashing import ChunkId, FileHash, ObjectId
from datavc.format.packfile import (
    INDEX_MAGIC,
    INDEX_ROW,
    Location,
    PackEntry,
    decode_index,
    encode_index,
)
from datavc.format.tree import MODE_FILE, FileEntry
from datavc.store import check, fscktables, packwriter, rowfiles
from datavc.store.check import fsck
from datavc.store.fscktables import Tables
from datavc.workspace.core import Workspace
from datavc.workspace.initialize import init_workspace


def _store_of(tmp_path: Path, n: int, versions: int = 1) -> Workspace:
    root = tmp_path / f"ws{n}"
    root.mkdir()
    init_workspace(str(root), str(tmp_path / f"store{n}"))
    ws = Workspace(str(root))
    data = root / "d"
    for i in range(n):
        write(data / f"{i // 500:03d}" / f"{i:06d}.txt", b"file %d\n" % i)
    for v in range(versions):
        if v:
            write(data / "000" / "000000.txt", b"version %d\n" % v)
        result = Workspace(str(root)).add(str(data))
        ws.commit([result.staged.name], f"v{v + 1}")
    return Workspace(str(root))


def _peak_python_bytes(ws: Workspace) -> int:
    tracemalloc.start()
    try:
        report = fsck(ws.store)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert report.ok, [p.line() for p in report.problems.values()]
    return peak


def test_fsck_holds_nothing_per_chunk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What is held is bounded by a pack's footer, a tree page, an index object's in-memory
    limit and the blocks read: with all of them small, the peak grows only with the number of
    pages (their references, ~2 KB a page), not with the chunks."""
    monkeypatch.setattr(packwriter, "MAX_PACK_CHUNKS", 1024)
    monkeypatch.setattr(treecut, "CUT_MASK", 255)  # pages of about 256 files
    monkeypatch.setattr(rowfiles, "DOWNLOAD_BLOCK", 64 << 10)
    monkeypatch.setattr(fscktables, "ROWS_PER_READ", 1024)
    monkeypatch.setattr(check, "INDEX_IN_MEMORY", 64)
    small = _peak_python_bytes(_store_of(tmp_path, 3_000))
    big = _peak_python_bytes(_store_of(tmp_path, 30_000))
    # per chunk, the in-memory tables took ~400 bytes: 27,000 more chunks, ~11 MB more
    assert big - small < 3 << 19, f"{small} -> {big} bytes of Python objects at the peak"


def test_a_big_index_is_checked_from_its_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = _store_of(tmp_path, 2_000)
    monkeypatch.setattr(check, "INDEX_IN_MEMORY", 64)  # every index is "big"
    report = fsck(ws.store)
    assert report.ok and report.counts["indexes"] >= 1
    [name] = ws.store.backend.list("index")
    path = Path(ws.store.backend.path(f"index/{name}"))
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF  # a byte of the last row
    os.chmod(path, 0o644)
    path.write_bytes(bytes(data))
    problems = fsck(ws.store).problems
    assert f"index/{name}" in problems and "damaged" in problems[f"index/{name}"].message


@pytest.mark.parametrize("big", [False, True])
def test_an_index_naming_an_impossible_place_is_refused_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, big: bool
) -> None:
    """Its id checks out (it was stored as it is), but a row is impossible: fsck names it,
    and none of its rows counts as indexing a chunk."""
    ws = _store_of(tmp_path, 500)
    if big:
        monkeypatch.setattr(check, "INDEX_IN_MEMORY", 64)
    pack = ObjectId(ws.store.backend.list("packs")[0])
    bad = {ChunkId(bytes([7]) * 32): Location(pack, 0, 100, 10, 0)}  # raw, but 100 != 10
    name = ws.store.write_object("index", encode_index(bad))
    key = f"index/{name}"
    problems = fsck(ws.store).problems
    assert list(problems) == [key] and "impossible" in problems[key].message


def test_a_damaged_page_two_versions_share_names_both(tmp_path: Path) -> None:
    ws = _store_of(tmp_path, 1_500, versions=2)
    v1, v2 = (r.root.pages for r in ws.log("d")[::-1])
    shared = [p for p in v1 if p in v2]
    assert shared, "premise: the versions share a page"
    path = Path(ws.store.backend.path(f"trees/{shared[0].id}"))
    os.chmod(path, 0o644)
    path.write_bytes(path.read_bytes()[:-5])
    report = fsck(ws.store)
    problem = report.problems[f"trees/{shared[0].id}"]
    assert problem.versions == {"d@v1", "d@v2"}
    assert problem.file_count == 2 * shared[0].files


def test_an_index_refused_for_one_impossible_row_indexes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sound index is replaced by one listing the same places and one impossible row
    (sorted last, read in a later block than the others): it is refused whole, so the
    chunks count as listed by no index."""
    monkeypatch.setattr(fscktables, "ROWS_PER_READ", 16)
    ws = _store_of(tmp_path, 300)
    [name] = ws.store.backend.list("index")
    places = decode_index(ws.store.read_object("index", name), name)
    pack = next(iter(places.values())).pack
    places[ChunkId(b"\xff" * 32)] = Location(pack, 0, 100, 10, 0)  # raw, but 100 != 10
    crafted = f"index/{ws.store.write_object('index', encode_index(places))}"
    ws.store.backend.delete(f"index/{name}")
    problems = fsck(Workspace(ws.root).store).problems
    assert "impossible" in problems[crafted].message
    assert "no index lists" in problems[f"packs/{pack}"].message


def _entry(path: str, cid: ChunkId, length: int) -> FileEntry:
    return FileEntry(path, MODE_FILE, length, FileHash(b"\0" * 32), ((cid, length),))


def test_hints_are_checked_against_good_footers_only() -> None:
    tables = Tables()
    try:
        good, gone = ObjectId("a" * 64), ObjectId("b" * 64)
        chunks = [ChunkId(bytes([i]) * 32) for i in range(4)]
        tables.add_footer(good, [PackEntry(c, 10 * i, 10, 10, 0) for i, c in enumerate(chunks)])
        tables.index_held()
        hints = {
            chunks[0]: Location(good, 0, 10, 10, 0),  # right
            chunks[1]: Location(good, 0, 10, 10, 0),  # wrong: chunk 0's place
            chunks[2]: Location(gone, 0, 10, 10, 0),  # stale: its pack is gone
        }  # chunks[3]: no hint
        files = [_entry(f"f{i}", c, 10) for i, c in enumerate(chunks)]
        tables.add_page("trees/x", "d@v1", files, hints)  # type: ignore[arg-type]
        found = {tables.file_of(file)[1]: (good_pack, wrong, indexed)
                 for _, _, file, good_pack, wrong, indexed in tables.problem_refs()}  # fmt: skip
        # no index lists anything: every chunk is reported, each held by the good pack
        assert found == {
            "f0": (good, False, False),
            "f1": (good, True, False),
            "f2": (good, False, False),
            "f3": (good, False, False),
        }
        assert tables.used_packs() == {good}
    finally:
        tables.close()


def test_a_missing_pack_names_every_version_of_a_page_they_share(tmp_path: Path) -> None:
    """Each distinct page is read once, and a problem in it names every version naming it."""
    ws = _store_of(tmp_path, 1_500, versions=2)
    v1, v2 = (r.root.pages for r in ws.log("d")[::-1])
    shared = [p for p in v1 if p in v2]
    assert shared and len(shared) < len(v1), "premise: the versions share some pages"
    store = Workspace(ws.root).store
    report = fsck(store)
    assert report.ok and report.counts["pages"] == len(v1) + len(v2)
    reads = [k for k in store.backend.stats.read_keys if k.startswith("trees/")]
    assert len(reads) == len(set(reads)) == len({p.id for p in [*v1, *v2]})
    for pack in ws.store.backend.list("packs"):
        path = Path(ws.store.backend.path(f"packs/{pack}"))
        os.chmod(path, 0o644)
        os.unlink(path)
    problems = fsck(Workspace(ws.root).store).problems
    named = {v for p in problems.values() if p.key.startswith("packs/") for v in p.versions}
    assert named == {"d@v1", "d@v2"}
    files = sum(p.file_count for p in problems.values() if p.key.startswith("packs/"))
    assert files == sum(p.files for p in v1) + sum(p.files for p in v2)


def test_an_index_row_naming_a_pack_past_its_table_is_refused(tmp_path: Path) -> None:
    ws = _store_of(tmp_path, 200)
    pack = ws.store.backend.list("packs")[0]
    row = INDEX_ROW.pack(b"\x01" * 32, 5, 0, 10, 10, 0)  # pack number 5 of a table of 1
    data = INDEX_MAGIC + (1).to_bytes(4, "little") + bytes.fromhex(pack)
    data += (1).to_bytes(4, "little") + row
    key = f"index/{ws.store.write_object('index', data)}"
    problems = fsck(Workspace(ws.root).store).problems
    assert list(problems) == [key] and problems[key].message == "damaged: index is truncated"
