"""Streaming over many files (issue 16): a scan in snapshot order, path rules checked one
path at a time, pages cut where the paths say, and an add or status that keeps the pages
of unchanged files unread."""

from __future__ import annotations

import os
import random
import time
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import from_nothing, rand, write
from hypothesis import example, given, settings
from hypothesis import strategies as st

from datavc.errors import CorruptObject, UnsafePath, UsageError
from datavc.format.hashing import ChunkId, ObjectId
from datavc.format.indextable import IndexTable
from datavc.format.packfile import CODEC_RAW, Location, LocationTable, encode_index
from datavc.format.paths import SortedPathCheck, check_paths
from datavc.store.files import iter_scan, scan
from datavc.workspace import statcache
from datavc.workspace.core import Workspace
from datavc.workspace.initialize import init_workspace

N = 3000  # files: about two pages at the natural cut rate (1 in 2048)


@pytest.fixture
def ws(tmp_path: Path) -> Iterator[Workspace]:
    root = tmp_path / "ws"
    root.mkdir()
    init_workspace(str(root), str(tmp_path / "store"))
    yield Workspace(str(root))


def many(folder: Path, n: int = N) -> None:
    for i in range(n):
        write(folder / f"{i // 100:03d}" / f"{i:05d}.txt", b"file %d\n" % i)


# -- scan order and path rules ----------------------------------------------------------------


def test_scan_is_in_snapshot_path_order(tmp_path: Path) -> None:
    """A folder's files come where its whole paths sort: "a.txt" (".": 0x2e) before "a/b"
    ("/": 0x2f), "a/b" before "a0"; the listing order of the file system does not matter."""
    names = ["a.txt", "a/b", "a/c/d", "a0", "a-b/x", "B", "é/z", "z"]
    for name in names:
        write(tmp_path / "d" / name, b"x")
    paths = [f.path for f in iter_scan(str(tmp_path / "d"), "dir")]
    assert paths == sorted(names)
    assert [f.path for f in scan(str(tmp_path / "d"), "dir")] == paths


segment = st.sampled_from(["a", "A", "b", "a.b", "a0", "ä", "Ä", "ß", "ss", "SS", "x-y"])
bad = st.sampled_from(["", ".", "..", ".GIT", ".datavc", "a\\b", "a\x00", "\ud800", "c:"])
segment = st.one_of(segment, segment, segment, bad)
paths = st.lists(st.lists(segment, min_size=1, max_size=3).map("/".join), max_size=12)


@settings(max_examples=400, deadline=None)
@given(paths)
def test_sorted_path_check_agrees_with_check_paths(found: list[str]) -> None:
    """Checked one at a time in sorted order, a set of paths is refused exactly when the
    whole-list check refuses it (case clashes, file and folder, duplicates)."""
    ordered = sorted(found)
    try:
        check_paths(ordered)
        whole = None
    except UnsafePath as err:
        whole = err
    checker = SortedPathCheck()
    try:
        for p in ordered:
            checker.add(p)
        streamed = None
    except UnsafePath as err:
        streamed = err
    assert (whole is None) == (streamed is None), (ordered, whole, streamed)


@pytest.mark.parametrize("bad", ["..", ".", ".GIT", ".datavc", "a\\b", "a\x00", "\ud800"])
def test_sorted_path_check_refuses_a_bad_name_after_a_good_one_in_its_folder(bad: str) -> None:
    """The second path of a folder has only its name checked (its folders were checked with
    the first): a bad name there is still refused, as check_paths refuses it."""
    ordered = ["x/-", f"x/{bad}"]
    assert sorted(ordered) == ordered, "premise: the bad one comes second"
    with pytest.raises(UnsafePath):
        check_paths(ordered)
    checker = SortedPathCheck()
    checker.add(ordered[0])
    with pytest.raises(UnsafePath):
        checker.add(ordered[1])


def test_sorted_path_check_refuses_a_drive_name_after_another_top_level_name() -> None:
    """Found by the hypothesis check: at the top, a name is the whole path, so "c:" after
    "a" is refused as absolute, as check_paths refuses it."""
    with pytest.raises(UnsafePath, match="absolute"):
        check_paths(["a", "c:"])
    checker = SortedPathCheck()
    checker.add("a")
    with pytest.raises(UnsafePath, match="absolute"):
        checker.add("c:")


def test_sorted_path_check_refuses_a_clash_far_apart() -> None:
    """Folders "A" and "a" clash though thousands of paths lie between them."""
    checker = SortedPathCheck()
    for i in range(5000):
        checker.add(f"A/{i:05d}")
    checker.add("B/x")
    with pytest.raises(UnsafePath, match="differs only by case"):
        checker.add("a/00000")


# -- add and status keep unchanged pages unread -------------------------------------------


def page_reads(ws: Workspace) -> list[str]:
    return [k for k in ws.store.backend.stats.read_keys if k.startswith("trees/")]


def test_add_of_a_few_changes_reads_and_writes_only_their_pages(
    ws: Workspace, trusted: None
) -> None:
    data = Path(ws.root) / "d"
    many(data, 12_000)
    first = ws.add(str(data))
    ws.commit([first.staged.name], "v1")
    pages = first.staged.root.pages
    assert len(pages) >= 4
    (data / "050" / "05007.txt").write_bytes(b"changed\n")
    write(data / "080" / "new.txt", b"new\n")
    os.unlink(data / "110" / "11003.txt")
    again = Workspace(ws.root)
    result = again.add(str(data))
    assert result.counts == (1, 1, 1)
    assert result.diff.added == ("080/new.txt",) and result.diff.removed == ("110/11003.txt",)
    assert result.diff.modified == ("050/05007.txt",)
    new_pages = result.staged.root.pages
    kept = {p.id for p in pages} & {p.id for p in new_pages}
    assert len(kept) >= len(new_pages) - 4  # each change rewrote about one page
    assert len(page_reads(again)) <= 3, "only the changed pages are read"
    # The same files added from nothing give the same snapshot: cuts depend on the files.
    assert from_nothing(data, Path(ws.root).parent / "scratch") == result.staged.tree


def test_removing_the_file_a_page_ends_at_joins_two_pages(ws: Workspace, trusted: None) -> None:
    """The file a page is cut after goes: the next page can no longer be kept as it is
    (the cut moved), and the result is what an add from nothing gives."""
    data = Path(ws.root) / "d"
    many(data, 12_000)
    first = ws.add(str(data))
    ws.commit([first.staged.name], "v1")
    pages = first.staged.root.pages
    os.unlink(data / pages[1].last)
    result = Workspace(ws.root).add(str(data))
    assert result.counts == (0, 0, 1)
    new = result.staged.root.pages
    assert pages[2].id not in {p.id for p in new}  # joined with what was left of page 1
    assert pages[3].id in {p.id for p in new}  # and the cuts are back after it
    assert from_nothing(data, Path(ws.root).parent / "scratch") == result.staged.tree


def test_status_of_a_changed_file_reads_one_group(ws: Workspace, trusted: None) -> None:
    data = Path(ws.root) / "d"
    many(data, 8000)
    result = ws.add(str(data))
    ws.commit([result.staged.name], "v1")
    rows: list[int] = []
    original = statcache.StatCache.rows

    def counting(self: statcache.StatCache, g: statcache.Group) -> dict[str, statcache.Row]:
        rows.append(g.count)
        return original(self, g)

    clean = Workspace(ws.root)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(statcache.StatCache, "rows", counting)
        assert [s.state for s in clean.status()] == ["clean"]
        assert rows == [] and clean._store is None
        (data / "040" / "04001.txt").write_bytes(b"other content\n")
        status = Workspace(ws.root).status()
    assert [s.state for s in status] == ["modified"]
    assert status[0].diff.modified == ("040/04001.txt",)
    assert len(rows) == 1 and rows[0] < 8000  # one group's rows, not every file's
    assert [s.state for s in Workspace(ws.root).status()] == ["modified"]  # still seen


def test_a_damaged_stat_cache_is_rebuilt(ws: Workspace, trusted: None) -> None:
    data = Path(ws.root) / "d"
    many(data, 500)
    result = ws.add(str(data))
    ws.commit([result.staged.name], "v1")
    cache = Path(ws.root) / ".datavc" / "state" / "stat" / "d.cache"
    raw = bytearray(cache.read_bytes())
    raw[152:160] = bytes(8)  # the first group's header (after the 152-byte first line)
    cache.write_bytes(bytes(raw))
    (data / "001" / "00100.txt").write_bytes(b"edited\n")
    status = Workspace(ws.root).status()
    assert [s.state for s in status] == ["modified"]
    assert status[0].diff.modified == ("001/00100.txt",)
    again = Workspace(ws.root).add(str(data))
    assert again.counts == (0, 1, 0)
    cache.write_bytes(b"datavc-statcache 4 garbage")
    assert Workspace(ws.root).add(str(data)).staged.tree == again.staged.tree


def test_a_change_within_the_racy_window_is_seen(ws: Workspace) -> None:
    """Rows of files changed just before the cache was written are never trusted: a
    same-size edit in the same clock tick is still seen (real clock here)."""
    data = Path(ws.root) / "d"
    many(data, 300)
    result = ws.add(str(data))
    ws.commit([result.staged.name], "v1")
    target = data / "002" / "00200.txt"
    before = target.stat()
    target.write_bytes(b"file 999\n"[: before.st_size].ljust(before.st_size, b"x"))
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    status = Workspace(ws.root).status()
    assert status[0].diff.modified == ("002/00200.txt",)


def test_many_random_edits_keep_add_exact(ws: Workspace, trusted: None) -> None:
    """Rounds of random edits, adds and removals: each add's snapshot equals a fresh add
    of the same files (what the kept pages hold is what the files are)."""
    data = Path(ws.root) / "d"
    many(data, 5000)
    rng = random.Random(7)
    ws.add(str(data))
    for round_ in range(4):
        files = sorted(p for p in data.rglob("*") if p.is_file())
        for p in rng.sample(files, 5):
            p.unlink()
        for p in rng.sample(files, 5):
            if p.exists():
                p.write_bytes(rand((round_, p.name), 40))
        for k in range(5):
            write(data / f"{rng.randrange(60):03d}" / f"n{round_}-{k}.txt", b"n")
        staged = Workspace(ws.root).add(str(data)).staged
        assert from_nothing(data, Path(ws.root).parent / f"scratch{round_}") == staged.tree


def test_status_without_a_cache_keeps_seeing_the_change(ws: Workspace, trusted: None) -> None:
    """A status that compares every file (no usable cache) writes the files' own hashes in
    the new cache, not the snapshot's: the next status still sees the change."""
    data = Path(ws.root) / "d"
    many(data, 400)
    result = ws.add(str(data))
    ws.commit([result.staged.name], "v1")
    (Path(ws.root) / ".datavc" / "state" / "stat" / "d.cache").unlink()
    (data / "002" / "00201.txt").write_bytes(b"edited\n")
    for _ in range(2):
        status = Workspace(ws.root).status()
        assert [s.state for s in status] == ["modified"]
        assert status[0].diff.modified == ("002/00201.txt",)


def test_every_row_racy_still_compares_right(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A clock 10 s behind: every row is racy (never trusted, no group exact), so status
    and add read the pages and the files, and still get every change right."""
    behind = types.SimpleNamespace(time_ns=lambda: time.time_ns() - 10 * 10**9)
    monkeypatch.setattr(statcache, "time", behind)
    data = Path(ws.root) / "d"
    many(data, 3000)
    result = ws.add(str(data))
    ws.commit([result.staged.name], "v1")
    assert [s.state for s in Workspace(ws.root).status()] == ["clean"]
    (data / "010" / "01005.txt").write_bytes(b"edited\n")
    os.unlink(data / "020" / "02007.txt")
    write(data / "025" / "new.txt", b"new\n")
    status = Workspace(ws.root).status()
    assert (status[0].diff.added, status[0].diff.removed, status[0].diff.modified) == (
        ("025/new.txt",),
        ("020/02007.txt",),
        ("010/01005.txt",),
    )
    assert Workspace(ws.root).add(str(data)).counts == (1, 1, 1)


def test_kept_entries_of_a_changed_page_take_their_old_hints_without_the_index(
    ws: Workspace, trusted: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One file of a page changes: the page's other files keep their entries, and the new
    page's hints come from the old page's (their pack is live), not from index lookups."""
    data = Path(ws.root) / "d"
    many(data, 5000)
    first = ws.add(str(data))
    ws.commit([first.staged.name], "v1")
    (data / "020" / "02001.txt").write_bytes(b"edited\n")
    again = Workspace(ws.root)
    looked: list[bytes] = []
    real = type(again.store).location

    def location(store: object, cid: ChunkId) -> Location | None:
        looked.append(cid)
        return real(store, cid)  # type: ignore[arg-type]

    monkeypatch.setattr(type(again.store), "location", location)
    monkeypatch.setattr(type(again.store), "locate_stored", location)
    result = again.add(str(data))
    assert result.counts == (0, 1, 0)
    changed = [p for p in result.staged.root.pages if p not in first.staged.root.pages]
    assert sum(p.files for p in changed) > 100, "premise: a page of many files rewritten"
    assert len(looked) <= 2, "only the edited file's chunk is looked up"
    _reads_back(ws, result, {"020/02001.txt": b"edited\n", "020/02002.txt": b"file 2002\n"})


def test_kept_entries_whose_old_pack_was_moved_take_the_index_place(
    ws: Workspace, trusted: None
) -> None:
    """gc moved every chunk to another pack (here: stored again by a writer that did not
    load the index, then the old pack and index deleted): an edit's page keeps its other
    files' entries, unread, with hints from the index, never the old pack's."""
    from datavc.format.tree import decode_page
    from datavc.store.packwriter import PackWriter

    data = Path(ws.root) / "d"
    many(data, 3000)
    first = ws.add(str(data))
    ws.commit([first.staged.name], "v1")
    store = ws.store
    old_packs, old_index = set(store.backend.list("packs")), store.backend.list("index")
    fresh = type(store).open(store.backend)
    with PackWriter(fresh) as writer:  # no index loaded: every chunk is stored anew
        for f in sorted(data.rglob("*.txt"), reverse=True):  # another order: another pack
            raw = f.read_bytes()
            writer.add(ChunkId(bytes.fromhex(_chunk_hex(raw))), raw)
        writer.finish()
    for p in old_packs:
        store.backend.delete(f"packs/{p}")
    for i in old_index:
        store.backend.delete(f"index/{i}")
    moved = set(store.backend.list("packs"))
    assert moved and not moved & old_packs, "premise"
    (data / "010" / "01001.txt").write_bytes(b"edited\n")
    result = Workspace(ws.root).add(str(data))
    assert result.counts == (0, 1, 0)
    assert result.staged.new_chunks == 1, "the other files were not stored again"
    again = Workspace(ws.root)
    for page in result.staged.root.pages:
        if page in first.staged.root.pages:
            continue
        raw = again.store.read_object("trees", page.id)
        _, hints = decode_page(raw, page.id)
        assert not set(hints.packs) & old_packs, "a hint names the pack gc removed"
        assert set(hints.packs) & moved, "kept entries name where the chunks went"
    _reads_back(ws, result, {"010/01001.txt": b"edited\n", "010/01002.txt": b"file 1002\n"})


def _chunk_hex(raw: bytes) -> str:
    from datavc.format.hashing import chunk_id

    return chunk_id(raw).hex()


def _reads_back(ws: Workspace, result: object, files: dict[str, bytes]) -> None:
    import datavc

    staged = result.staged  # type: ignore[attr-defined]
    (rec,), _ = Workspace(ws.root).commit([staged.name], "next")
    out = Path(ws.root).parent / f"out-{rec.version}"
    datavc.materialize(f"d@v{rec.version}", str(out), store=str(Path(ws.root).parent / "store"))
    for path, want in files.items():
        assert (out / path).read_bytes() == want


def test_add_stores_again_what_a_lost_pack_held(ws: Workspace, trusted: None) -> None:
    """The store lost its pack since v1: an add keeps no page and no entry that needs it
    (the files are read and stored again), so the new version reads back whole."""
    data = Path(ws.root) / "d"
    many(data, 5000)
    first = ws.add(str(data))
    ws.commit([first.staged.name], "v1")
    store = Path(ws.root).parent / "store"
    for pack in (store / "packs").iterdir():
        pack.unlink()
    (data / "020" / "02001.txt").write_bytes(b"edited\n")
    result = Workspace(ws.root).add(str(data))
    assert result.counts == (0, 1, 0)
    assert result.staged.new_bytes > 5000  # every file stored again
    Workspace(ws.root).commit([result.staged.name], "v2")
    out = Path(ws.root).parent / "out"
    import datavc

    datavc.materialize("d@v2", str(out), store=str(store))
    assert (out / "020" / "02001.txt").read_bytes() == b"edited\n"
    assert (out / "049" / "04999.txt").read_bytes() == b"file 4999\n"


# -- the index searched in place ---------------------------------------------------------


def _place(rng: random.Random) -> Location:
    pack = ObjectId(f"{rng.randrange(4):064x}")
    length = rng.randrange(1, 5000)
    return Location(pack, rng.randrange(8, 1 << 30), length, length, CODEC_RAW)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32), st.lists(st.integers(0, 3), max_size=40))
@example(3615595531, [0, 0, 1, 0, 0, 0, 0, 1])  # a displaced table row came back in table order
def test_index_table_answers_as_the_dict_table_does(seed: int, ops: list[int]) -> None:
    """Two index objects naming some chunks twice, then puts, preferred places and drops:
    the table searched in place gives every answer the dict table gives."""
    rng = random.Random(seed)
    ids = [ChunkId(rng.randbytes(32)) for _ in range(60)]
    objects = [encode_index({c: _place(rng) for c in rng.sample(ids, 30)}) for _ in range(2)]
    plain, searched = LocationTable(), IndexTable()
    for table in (plain, searched):
        for i, data in enumerate(objects):
            table.add_index(data, f"index/{i}")
    for op in ops:
        cid, loc = rng.choice(ids), _place(rng)
        for table in (plain, searched):
            if op == 0:
                table.put(cid, loc)
            elif op == 1 and table.locations(cid):
                table.prefer(cid, table.locations(cid)[-1])
            elif op == 2:
                table.drop(cid)
    for cid in ids:
        assert searched.get(cid) == plain.get(cid)
        assert searched.locations(cid) == plain.locations(cid)
        assert (cid in searched) == (cid in plain)
    assert dict(searched.items()) == dict(plain.items())
    assert searched.encode_index() == plain.encode_index()


def test_index_table_refuses_an_impossible_entry_when_it_is_found() -> None:
    cid = ChunkId(bytes(32))
    good = Location(ObjectId("1" * 64), 8, 10, 10, CODEC_RAW)
    data = bytearray(encode_index({cid: good}))
    data[-5:-1] = (1 << 30).to_bytes(4, "little")  # a plain length no chunk has
    table = IndexTable()
    table.add_index(bytes(data), "index/x")
    with pytest.raises(CorruptObject):
        table.get(cid)


def test_commit_refuses_a_staged_page_whose_pack_is_gone(ws: Workspace, trusted: None) -> None:
    """Staged, then the store loses the pack (its page is still there): commit refuses
    with one line naming the fix, and the add it names stores the data again."""
    data = Path(ws.root) / "d"
    many(data, 300)
    staged = ws.add(str(data)).staged
    store = Path(ws.root).parent / "store"
    for pack in (store / "packs").iterdir():
        pack.unlink()
    with pytest.raises(UsageError, match="run 'datavc add d' again"):
        Workspace(ws.root).commit([staged.name], "v1")
    again = Workspace(ws.root).add(str(data))
    assert again.staged.tree == staged.tree
    assert list((store / "packs").iterdir()), "stored again"
    (rec,), _ = Workspace(ws.root).commit([staged.name], "v1")
    assert rec.version == 1
    import datavc

    out = Path(ws.root).parent / "out"
    datavc.materialize("d@v1", str(out), store=str(store))
    assert (out / "002" / "00299.txt").read_bytes() == b"file 299\n"
