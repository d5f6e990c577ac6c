"""The Python workspace layer (datavc.workspace) on every backend: memory, local folder, S3.

Exactness of round trips, deduplication figures from the version records, integrity checks on
read, and path safety of crafted trees. Data is random bytes from seeded generators, so
compression cannot hide anything.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
import signal
import struct
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path

import fsspec
import pytest
from helpers import forged_record, rand, tree_state, write

import datavc
from datavc.errors import CorruptObject, IntegrityError, UnsafePath, UsageError
from datavc.format.hashing import ChunkId, ObjectId
from datavc.format.packfile import CODEC_RAW, CODEC_ZSTD, Location, read_pack_footer
from datavc.format.pointer import decode_pointer
from datavc.format.record import VersionRecord
from datavc.format.tree import MODE_FILE, FileEntry, PageRef, TreeRoot, encode_page
from datavc.format.treecut import cut_here
from datavc.store import versions
from datavc.store.chunkstore import ChunkStore
from datavc.store.files import TMP_PREFIX
from datavc.workspace import statcache
from datavc.workspace.core import Workspace
from datavc.workspace.initialize import init_workspace

MiB = 1 << 20


# -- helpers ----------------------------------------------------------------------------


def make_dataset(folder: Path, seed: str) -> None:
    """A small but varied tree: nested folders, an executable, an empty file, a file that is
    streamed (> 8 MiB), and files of several chunks."""
    write(folder / "a.bin", rand(f"{seed}-a", 300_000))
    write(folder / "empty", b"")
    write(folder / "sub" / "run.sh", rand(f"{seed}-run", 5_000), executable=True)
    write(folder / "sub" / "deep" / "er" / "c.bin", rand(f"{seed}-c", 70_000))
    write(folder / "sub" / "one", b"x")
    write(folder / "streamed.bin", rand(f"{seed}-s", 9 * MiB + 12345))
    write(folder / "naïve dir" / "file with spaces.bin", rand(f"{seed}-u", 3000))


def pack_keys(ws: Workspace) -> list[str]:
    return [f"packs/{n}" for n in ws.store.backend.list("packs") if not n.startswith(".")]


@pytest.fixture
def ws(tmp_path: Path, store_url: str) -> Iterator[Workspace]:
    root = tmp_path / "ws"
    root.mkdir()
    init_workspace(str(root), store_url)
    yield Workspace(str(root))
    if store_url.startswith("memory://"):
        fs = fsspec.filesystem("memory")
        path = store_url.split("://", 1)[1]
        if fs.exists(path):
            fs.rm(path, recursive=True)


def fresh(ws: Workspace) -> Workspace:
    """A new Workspace object on the same folder, as a new process would make."""
    return Workspace(ws.root)


def commit(ws: Workspace, path: Path, message: str, name: str | None = None) -> VersionRecord:
    result = ws.add(str(path), name)
    records, unchanged = ws.commit([result.staged.name], message)
    assert unchanged == []
    assert len(records) == 1
    return records[0]


# -- round trip -------------------------------------------------------------------------


def test_round_trip_restores_exact_tree(ws: Workspace) -> None:
    data = Path(ws.root) / "data"
    make_dataset(data, "rt")
    expected = tree_state(data)
    rec = commit(ws, data, "first")
    assert (rec.name, rec.version, rec.kind) == ("data", 1, "dir")
    assert rec.stats.files == 7
    assert rec.stats.bytes == sum(len(v[0]) for v in expected.values() if isinstance(v, tuple))
    pointer = decode_pointer((Path(ws.root) / "data.datavc").read_text(), "data.datavc")
    assert (pointer.version, pointer.snapshot) == (1, rec.tree)

    shutil.rmtree(data)
    results = fresh(ws).checkout(["data@v1"])
    assert [(r.name, r.version, r.files, r.written) for r in results] == [("data", 1, 7, 7)]
    assert tree_state(data) == expected

    # Edit, chmod, delete, and add extra files and folders: --force restores the snapshot.
    write(data / "a.bin", rand("edited", 300_000))
    (data / "sub" / "run.sh").chmod(0o644)
    (data / "empty").chmod(0o755)
    (data / "sub" / "one").unlink()
    write(data / "extra.bin", rand("extra", 1000))
    write(data / "newdir" / "deeper" / "x", rand("x", 10))
    (data / "emptydir").mkdir()
    assert tree_state(data) != expected
    with pytest.raises(UsageError, match="not stored"):
        fresh(ws).checkout(["data@v1"])
    fresh(ws).checkout(["data@v1"], force=True)
    assert tree_state(data) == expected


def test_force_checkout_replaces_a_file_that_sits_where_a_folder_belongs(ws: Workspace) -> None:
    data = Path(ws.root) / "data"
    make_dataset(data, "type")
    expected = tree_state(data)
    commit(ws, data, "v1")
    shutil.rmtree(data / "sub" / "deep")
    write(data / "sub" / "deep", b"a file where a folder was")
    results = fresh(ws).checkout(["data@v1"], force=True)
    assert results[0].files == 7
    assert tree_state(data) == expected


def test_force_checkout_replaces_a_file_at_the_dataset_path(ws: Workspace) -> None:
    data = Path(ws.root) / "data"
    make_dataset(data, "type2")
    expected = tree_state(data)
    commit(ws, data, "v1")
    shutil.rmtree(data)
    write(data, b"a file where the dataset folder was")
    fresh(ws).checkout(["data@v1"], force=True)
    assert tree_state(data) == expected


def test_force_checkout_undoes_type_changes_without_following_symlinks(
    ws: Workspace, tmp_path: Path
) -> None:
    data = Path(ws.root) / "data"
    make_dataset(data, "types")
    expected = tree_state(data)
    commit(ws, data, "v1")
    outside = tmp_path / "outside"
    write(outside / "keep.txt", b"outside")
    outside_before = tree_state(outside)

    # A folder where a file belongs, symlinks where a file and a folder belong.
    (data / "a.bin").unlink()
    write(data / "a.bin" / "inner", b"a folder where a file was")
    (data / "empty").unlink()
    os.symlink(outside / "keep.txt", data / "empty")
    shutil.rmtree(data / "sub" / "deep")
    os.symlink(outside, data / "sub" / "deep")
    os.symlink(outside, data / "extra-link")
    fresh(ws).checkout(["data@v1"], force=True)
    assert tree_state(data) == expected
    assert tree_state(outside) == outside_before

    # A symlink where a top folder of the snapshot belongs.
    shutil.rmtree(data / "sub")
    os.symlink(outside, data / "sub")
    fresh(ws).checkout(["data@v1"], force=True)
    assert tree_state(data) == expected
    assert tree_state(outside) == outside_before


def test_symlinked_dataset_path_is_refused(ws: Workspace, tmp_path: Path) -> None:
    data = Path(ws.root) / "data"
    make_dataset(data, "link")
    commit(ws, data, "v1")
    outside = tmp_path / "outside"
    write(outside / "keep.txt", b"outside")
    shutil.rmtree(data)
    os.symlink(outside, data)
    with pytest.raises(UnsafePath):
        fresh(ws).checkout(["data@v1"], force=True)
    assert os.path.islink(data)
    assert sorted(os.listdir(outside)) == ["keep.txt"]
    assert (outside / "keep.txt").read_bytes() == b"outside"


def test_many_small_files_share_packs_and_span_tree_pages(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("datavc.format.treecut.PAGE_MAX_ENTRIES", 1000)  # pages of 1,000 files
    data = Path(ws.root) / "many"
    rng = random.Random("many")
    for i in range(2500):
        write(data / f"d{i % 41:02d}" / f"f{i:05d}", rng.randbytes(rng.randrange(1, 200)))
    expected = tree_state(data)
    rec = commit(ws, data, "many")
    assert rec.stats.files == 2500
    assert rec.stats.new_objects <= 3  # a pack or two and one index, not one per file
    assert len(pack_keys(ws)) <= 2
    pages = rec.root.pages
    assert len(pages) >= 3 and sum(p.files for p in pages) == 2500
    for page in pages[:-1]:  # each ends at a natural cut, or full
        assert cut_here(page.last.encode()) or page.files == 1000
    assert all(p.files <= 1000 for p in pages)
    shutil.rmtree(data)
    fresh(ws).checkout(["many@v1"])
    assert tree_state(data) == expected


def test_single_file_dataset_round_trip(ws: Workspace) -> None:
    table = Path(ws.root) / "tables" / "train.csv"
    content = rand("csv", 200_000)
    write(table, content, executable=True)
    rec = commit(ws, table, "table")
    assert (rec.name, rec.kind, rec.stats.files) == ("train", "file", 1)
    assert (table.parent / "train.csv.datavc").is_file()
    table.unlink()
    fresh(ws).checkout(["train@v1"])
    assert table.read_bytes() == content
    assert os.stat(table).st_mode & 0o777 == 0o755
    write(table, rand("other", 1000))
    fresh(ws).checkout(["train@v1"], force=True)
    assert table.read_bytes() == content
    assert sorted(os.listdir(table.parent)) == ["train.csv", "train.csv.datavc"]


# -- deduplication ------------------------------------------------------------------------


def test_unchanged_data_stores_no_new_bytes(ws: Workspace) -> None:
    data = Path(ws.root) / "data"
    for i in range(4):
        write(data / f"f{i}.bin", rand(f"dd{i}", 400_000))
    original = tree_state(data)
    v1 = commit(ws, data, "v1")
    assert v1.stats.new_bytes >= 4 * 400_000  # random data: stored in full

    # Re-adding the same bytes without any help from the stat cache finds nothing new.
    shutil.rmtree(Path(ws.state) / "stat")
    again = fresh(ws).add(str(data))
    assert again.staged.new_bytes == 0
    assert again.staged.tree == v1.tree
    assert fresh(ws).commit([], "nothing") == ([], ["data"])

    # Change the data (v2), then put the old bytes back: v3 is v1's snapshot, 0 new bytes.
    write(data / "f1.bin", rand("changed", 400_000))
    v2 = commit(fresh(ws), data, "v2")
    assert v2.stats.new_bytes >= 400_000
    for rel, (content, _) in original.items():  # type: ignore[misc]
        write(data / rel, content)
    v3 = commit(fresh(ws), data, "back to v1")
    assert v3.version == 3
    assert v3.tree == v1.tree
    assert v3.stats.new_bytes == 0
    assert v3.stats.new_chunks == 0
    assert versions.read_version(fresh(ws).store, "data", 3).stats.new_bytes == 0


@pytest.fixture
def big(ws: Workspace) -> tuple[Workspace, Path, bytearray, VersionRecord]:
    """A 64 MiB random file committed as v1."""
    data = Path(ws.root) / "big"
    content = bytearray(rand("big", 64 * MiB))
    write(data / "big.bin", bytes(content))
    v1 = commit(ws, data, "64 MiB")
    assert v1.stats.new_bytes >= 64 * MiB
    return ws, data, content, v1


def test_small_changes_to_a_big_file_store_little(
    big: tuple[Workspace, Path, bytearray, VersionRecord],
) -> None:
    ws, data, content, _ = big
    target = data / "big.bin"

    # 1 MiB overwritten in place, in the middle.
    content[32 * MiB : 33 * MiB] = rand("middle", MiB)
    with open(target, "r+b") as f:
        f.seek(32 * MiB)
        f.write(content[32 * MiB : 33 * MiB])
    v2 = commit(fresh(ws), data, "in-place change")
    assert v2.version == 2
    assert MiB <= v2.stats.new_bytes <= 2 * MiB, v2.stats

    # 1 MiB appended.
    tail = rand("tail", MiB)
    content += tail
    with open(target, "ab") as f:
        f.write(tail)
    v3 = commit(fresh(ws), data, "append")
    assert v3.version == 3
    assert v3.stats.bytes == 65 * MiB
    assert MiB <= v3.stats.new_bytes <= 2 * MiB, v3.stats

    # Both new versions come back exactly, and so does v1.
    shutil.rmtree(data)
    fresh(ws).checkout(["big@v2"])
    expected_v2 = bytes(content[: 64 * MiB])
    assert target.read_bytes() == expected_v2
    fresh(ws).checkout(["big@v3"])
    assert target.read_bytes() == bytes(content)
    fresh(ws).checkout(["big@v1"])
    assert target.read_bytes() == rand("big", 64 * MiB)


def test_same_file_in_two_datasets_is_stored_once(ws: Workspace) -> None:
    shared = rand("shared", 6 * MiB)
    first = Path(ws.root) / "first"
    second = Path(ws.root) / "second"
    write(first / "shared.bin", shared)
    write(second / "copy" / "shared.bin", shared)
    write(second / "own.txt", rand("own", 1000))
    a = commit(ws, first, "first")
    b = commit(fresh(ws), second, "second")
    assert (a.name, b.name) == ("first", "second")
    assert a.stats.new_bytes >= len(shared)
    assert b.stats.new_bytes < len(shared) // 100, b.stats
    shutil.rmtree(second)
    fresh(ws).checkout(["second@v1"])
    assert (second / "copy" / "shared.bin").read_bytes() == shared


# -- integrity ----------------------------------------------------------------------------


def test_corrupt_pack_raises_and_leaves_no_half_written_file(ws: Workspace) -> None:
    data = Path(ws.root) / "data"
    names = [f"f{i}.bin" for i in range(6)]
    snapshot = {n: rand(f"snap-{n}", 200_000) for n in names}
    for n in names:
        write(data / n, snapshot[n])
    rec = commit(ws, data, "v1")

    # Flip one byte in the stored bytes of a chunk of f3.bin (files are written in order,
    # so f0-f2 are written before the failure and f4, f5 after it would be).
    entries = {e.path: e for e in ws.tree_entries(rec.root)}
    victim = entries["f3.bin"].chunks[0][0]
    backend = ws.store.backend
    corrupted = None
    for key in pack_keys(ws):
        blob = bytearray(backend.read(key))
        for pe in read_pack_footer(bytes(blob), key):
            if pe.chunk == victim:
                blob[pe.offset + pe.stored_length // 2] ^= 0x01
                backend.replace(key, bytes(blob))
                corrupted = key
    assert corrupted is not None
    # A local cache (remote stores) holds a good copy of what this workspace uploaded:
    # drop it so the store's bytes are read.
    shutil.rmtree(Path(ws.dot) / "cache", ignore_errors=True)

    edited = {n: rand(f"edit-{n}", 150_000) for n in names}
    for n in names:
        write(data / n, edited[n])
    write(data / "extra.bin", b"extra")

    before = tree_state(data)
    with pytest.raises(IntegrityError) as info:
        fresh(ws).checkout(["data@v1"], force=True)
    assert "packs/" in str(info.value)
    assert corrupted in str(info.value)

    # Files are fetched and verified before any is put in place: the workspace is untouched.
    assert tree_state(data) == before
    for n in names:
        assert (data / n).read_bytes() == edited[n], n
    assert (data / "extra.bin").read_bytes() == b"extra"
    leftovers = [
        os.path.join(d, f)
        for d, dirs, files in os.walk(ws.root)
        for f in files + dirs
        if ".datavc-tmp-" in f
    ]
    assert leftovers == []
    # The pointer still names v1 and nothing claims a snapshot was materialized.
    pointer = decode_pointer((Path(ws.root) / "data.datavc").read_text(), "data.datavc")
    assert pointer.snapshot == rec.tree


# -- path safety --------------------------------------------------------------------------


def publish_crafted(ws: Workspace, name: str, entries: list[FileEntry]) -> VersionRecord:
    """Publish a version whose one page holds ``entries`` as given (duplicated, unsafe:
    whatever a hostile writer puts there), with real chunk locations."""
    store = ws.store
    store.load_index()
    page_bytes, content = encode_page(entries, store.locate_stored)
    page_id = store.write_object("trees", page_bytes)
    size = sum(e.size for e in entries)
    page = PageRef(page_id, entries[0].path, entries[-1].path, len(entries), size, content)
    root = TreeRoot(len(entries), size, (page,))
    return versions.publish_version(store, forged_record(name, root))


@pytest.mark.parametrize(
    "bad",
    ["../evil", ".git/x", "n" * 256, "d/" * 990 + "f", ("p" * 255 + "/") * 12 + "q"],
    ids=["dotdot", "git", "long-name", "deep", "long-path"],
)
def test_crafted_tree_with_unsafe_path_is_refused(ws: Workspace, tmp_path: Path, bad: str) -> None:
    data = Path(ws.root) / "data"
    write(data / "a.bin", rand("a", 100_000))
    write(data / "b.bin", rand("b", 120_000))
    before = tree_state(data)
    v1 = commit(ws, data, "v1")
    good = {e.path: e for e in ws.tree_entries(v1.root)}

    # A tree that changes a.bin (to b's content, so a write would show) and also puts a's
    # content at the unsafe path; chunks are real, so nothing but the path check stops it.
    a, b = good["a.bin"], good["b.bin"]
    crafted = [
        FileEntry("a.bin", MODE_FILE, b.size, b.hash, b.chunks),
        FileEntry(bad, MODE_FILE, a.size, a.hash, a.chunks),
    ]
    crafted.sort(key=lambda e: e.path)  # a page in order: only its paths are wrong
    rec = publish_crafted(ws, "data", crafted)
    assert rec.version == 2
    pointer_before = (Path(ws.root) / "data.datavc").read_bytes()

    with pytest.raises(UnsafePath) as info:
        fresh(ws).checkout(["data@v2"], force=True)
    assert bad[:60] in str(info.value)  # (a long path is cut short in the message)

    assert tree_state(data) == before
    assert not (Path(ws.root) / "evil").exists()
    assert not (tmp_path / "evil").exists()
    assert not (data / ".git").exists()
    assert not (Path(ws.root) / ".git" / "x").exists()
    assert (Path(ws.root) / "data.datavc").read_bytes() == pointer_before


def test_a_tree_with_a_path_twice_is_refused_by_open_and_checkout(
    ws: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tree page that names one path twice (different contents) is corrupt: neither
    ``datavc.open(...).materialize()`` nor checkout writes one of the two contents."""
    data = Path(ws.root) / "data"
    write(data / "a.bin", rand("a", 100_000))
    write(data / "b.bin", rand("b", 120_000))
    v1 = commit(ws, data, "v1")
    good = {e.path: e for e in ws.tree_entries(v1.root)}
    a, b = good["a.bin"], good["b.bin"]
    twice = [
        FileEntry("a.bin", MODE_FILE, a.size, a.hash, a.chunks),
        FileEntry("a.bin", MODE_FILE, b.size, b.hash, b.chunks),
    ]
    assert publish_crafted(ws, "data", twice).version == 2
    monkeypatch.chdir(ws.root)
    dest = tmp_path / "out"
    with pytest.raises(CorruptObject, match=r"not in order at 'a\.bin'"):
        datavc.open("data@v2").materialize(str(dest))
    assert not dest.exists()
    before = tree_state(data)
    with pytest.raises(CorruptObject, match=r"not in order at 'a\.bin'"):
        fresh(ws).checkout(["data@v2"], force=True)
    assert tree_state(data) == before
    assert datavc.open("data@v1").materialize(str(dest)) == 2



def test_a_wrong_location_hint_is_read_where_the_index_says(
    ws: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, trusted: None
) -> None:
    """A crafted page whose entries are v1's but whose hints put a.bin's chunk at b.bin's
    bytes (and 20 small files' each at another's), each chunk of two streamed files (one
    raw, one compressed) a byte past its place, p.bin's past the end of its pack and
    q.bin's across it: its snapshot id is v1's (hints are outside it). Readers find the
    mismatch, or the short range, and read those chunks where the index puts them (before,
    exit 6, and exit 3 for a short range, taken for a pack gone); a cached pack is kept (it
    was dropped as damaged); a writer that keeps the entries carries the hints on, and
    that version reads right as well. fsck still names the hint."""
    from datavc.format.tree import decode_page
    from datavc.store.check import fsck

    data = Path(ws.root) / "data"
    write(data / "a.bin", rand("a", 30_000))
    write(data / "b.bin", rand("b", 30_000))
    write(data / "big.bin", rand("big", 3 * MiB))  # streamed (fetch's STREAM_MIN is 1 MiB)
    text = b"".join(b"line %d of a file that compresses\n" % i for i in range(80_000))
    write(data / "text.bin", text)  # streamed, its chunks compressed
    for i in range(20):
        write(data / "s" / f"{i:02d}", rand(f"s{i}", 3000))
    write(data / "p.bin", rand("p", 5000))
    write(data / "q.bin", rand("q", 5000))
    want = tree_state(data)
    v1 = commit(ws, data, "v1")
    good = {e.path: e for e in ws.tree_entries(v1.root)}
    big = [c for c, _ in good["big.bin"].chunks + good["text.bin"].chunks]
    assert len(big) >= 6
    store = ws.store
    store.load_index()
    assert {store.locate_stored(c).codec for c in big} == {CODEC_RAW, CODEC_ZSTD}
    a, b = good["a.bin"].chunks[0][0], good["b.bin"].chunks[0][0]
    small = [good[f"s/{i:02d}"].chunks[0][0] for i in range(20)]
    swapped = dict(zip(small, reversed(small), strict=True))  # runs of one chunk each
    swapped[a] = b
    entries = sorted(good.values(), key=lambda e: e.path)

    p, q = good["p.bin"].chunks[0][0], good["q.bin"].chunks[0][0]
    pack_size = store.backend.size(f"packs/{store.locate_stored(p).pack}")

    def hint(cid: ChunkId) -> Location:  # b's chunk for a's; big's chunks a byte further on
        if cid in swapped:
            return store.locate_stored(swapped[cid])
        loc = store.locate_stored(cid)
        if cid in (p, q):  # past the end of the pack; across it
            return loc._replace(offset=pack_size + 100 if cid == p else pack_size - 2500)
        return loc._replace(offset=loc.offset + 1) if cid in big else loc

    page_bytes, content = encode_page(entries, hint)
    size = v1.root.bytes
    page = PageRef(store.write_object("trees", page_bytes), "a.bin", "text.bin", 26, size, content)
    root = dataclasses.replace(v1.root, pages=(page,))
    v2 = versions.publish_version(store, forged_record("data", root))
    assert v2.version == 2 and v2.tree == v1.tree
    report = fsck(fresh(ws).store)
    assert [p.message for p in report.problems.values()] == [
        f"a location hint names a place in packs/{store.locate_stored(big[0]).pack[:16]}… "
        "that does not hold its chunk"
    ]

    cache = fresh(ws).store.cache
    cached = set(cache.list("packs")) if cache is not None else set()
    monkeypatch.chdir(ws.root)
    out = tmp_path / "v2"
    fs = datavc.open("data@v2")
    assert fs.materialize(str(out)) == 26
    assert tree_state(out) == want
    assert fs.chunks.backend.stats.lists == 1  # the index, once for all the wrong hints
    for path in ("a.bin", "big.bin", "text.bin", "p.bin", "q.bin"):  # no index loaded before
        assert datavc.open("data@v2").cat(path) == (data / path).read_bytes()
        with datavc.open("data@v2").open(path) as f:
            assert f.read(100) == (data / path).read_bytes()[:100]
    shutil.rmtree(data)
    assert fresh(ws).checkout(["data@v2"], force=True)[0].written == 26
    if cache is not None:
        assert cached and set(cache.list("packs")) >= cached

    # A writer whose workspace is at v2 keeps v2's files (their stat cache rows
    # trusted), and their page's hints.
    assert fresh(ws).checkout(["data@v2"], force=True)[0].version == 2
    write(data / "c.bin", rand("c", 1000))
    want = tree_state(data)
    v3 = commit(fresh(ws), data, "v3")
    (ref,) = v3.root.pages
    _, hints3 = decode_page(fresh(ws).store.read_object("trees", ref.id), "v3")
    assert hints3[good["a.bin"].chunks[0][0]] == store.locate_stored(good["b.bin"].chunks[0][0])
    shutil.rmtree(data)
    assert fresh(ws).checkout(["data@v3"], force=True)[0].version == 3
    assert tree_state(data) == want


def crafted_index(store: ChunkStore, rows: dict[ChunkId, Location], before: str) -> str:
    """Write an index object listing ``rows`` as given, whose name sorts before ``before``
    (trailing bytes are ignored: padding finds such a name)."""
    from datavc.format.hashing import object_id
    from datavc.format.packfile import INDEX_MAGIC, INDEX_ROW

    packs = sorted({loc.pack for loc in rows.values()})
    body = INDEX_MAGIC + struct.pack("<I", len(packs))
    body += b"".join(bytes.fromhex(p) for p in packs) + struct.pack("<I", len(rows))
    for c in sorted(rows):
        loc = rows[c]
        n = packs.index(loc.pack)
        body += INDEX_ROW.pack(c, n, loc.offset, loc.stored_length, loc.plain_length, loc.codec)
    pad = 0
    while object_id(body + pad.to_bytes(4, "little")) > before:
        pad += 1
    return store.write_object("index", body + pad.to_bytes(4, "little"))


def forge_hints(
    ws: Workspace, rec: VersionRecord, hint: Callable[[ChunkId], Location]
) -> VersionRecord:
    """Publish ``rec``'s snapshot again with its page's hints as ``hint`` gives them."""
    page_bytes, content = encode_page(ws.tree_entries(rec.root), hint)
    (page,) = rec.root.pages
    ref = dataclasses.replace(page, id=ws.store.write_object("trees", page_bytes))
    assert ref.content == content
    root = dataclasses.replace(rec.root, pages=(ref,))
    return versions.publish_version(ws.store, forged_record(rec.name, root))


def test_crafted_indexes_that_list_chunks_elsewhere_first_are_passed_over(
    ws: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Index objects whose names sort first (so their places come first) list every chunk
    1, 2, ... bytes past its place, and v2's hints put it a byte past: a reader tries each
    place the index gives until the bytes check out (before, only the first: an integrity
    error blaming a good pack, found by a probe); past MAX_PLACES crafted places it stops
    with an integrity error (a crafted store cost N x K reads before)."""
    from datavc.store.relocate import MAX_PLACES

    data = Path(ws.root) / "data"
    write(data / "a.bin", rand("crafted-a", 30_000))
    write(data / "big.bin", rand("crafted-big", 3 * MiB))
    want = tree_state(data)
    v1 = commit(ws, data, "v1")
    store = ws.store
    store.load_index()
    cids = sorted({c for e in ws.tree_entries(v1.root) for c, _ in e.chunks})
    real = {c: store.locate_stored(c) for c in cids}

    def off(k: int) -> dict[ChunkId, Location]:
        return {c: loc._replace(offset=loc.offset + k) for c, loc in real.items()}

    first = min(store.backend.list("index"))
    for k in range(1, MAX_PLACES - 1):  # with v2's hint: MAX_PLACES - 1 wrong places
        crafted_index(store, off(k), first)
    assert forge_hints(ws, v1, lambda c: off(1)[c]).version == 2
    probe = fresh(ws).store
    probe.load_index()
    assert probe.locations(cids[0])[-1] == real[cids[0]]  # premise: the real place last
    assert len(probe.locations(cids[0])) == MAX_PLACES - 1
    monkeypatch.chdir(ws.root)
    for path in ("a.bin", "big.bin"):
        assert datavc.open("data@v2").cat(path) == (data / path).read_bytes()
    out = tmp_path / "v2"
    assert datavc.open("data@v2").materialize(str(out)) == 2
    assert tree_state(out) == want
    shutil.rmtree(data)
    assert fresh(ws).checkout(["data@v2"], force=True)[0].written == 2
    assert tree_state(data) == want

    for k in (MAX_PLACES - 1, MAX_PLACES):  # the real place is now past the first MAX_PLACES
        crafted_index(store, off(k), first)
    with pytest.raises(IntegrityError, match="integrity check failed in packs/"):
        datavc.open("data@v2").cat("a.bin")


def test_damage_is_blamed_on_the_chunks_own_pack_not_on_a_place_a_crafted_index_adds(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """a.bin's pack is damaged where the index (and the hint) put its chunk; crafted indexes
    list the chunk in another real pack and in a pack that does not exist: the error is an
    integrity error, and a reader that read through the hint names the damaged pack
    (before: the last place tried, or 'missing', exit 3)."""
    data = Path(ws.root) / "data"
    write(data / "a.bin", rand("blame-a", 30_000))  # (no chunk another test read: the
    v1 = commit(ws, data, "v1")  # process's chunk cache would serve it, checked)
    write(data / "b.bin", rand("blame-b", 40_000))
    v2 = commit(fresh(ws), data, "v2")
    store = fresh(ws).store
    store.load_index()
    a = ws.tree_entries(v1.root)[0].chunks[0][0]
    b = next(e for e in ws.tree_entries(v2.root) if e.path == "b.bin").chunks[0][0]
    own, other = store.locate_stored(a), store.locate_stored(b)
    assert own.pack != other.pack
    first = min(store.backend.list("index"))
    crafted_index(store, {a: own._replace(pack=other.pack, offset=other.offset)}, first)
    crafted_index(store, {a: own._replace(pack=ObjectId("ab" * 32))}, first)
    key = f"packs/{own.pack}"
    blob = bytearray(store.backend.read(key))
    blob[own.offset + 100] ^= 0xFF
    store.backend.replace(key, bytes(blob))
    if store.cache is not None:
        store.cache.delete(key)
    monkeypatch.chdir(ws.root)
    with pytest.raises(IntegrityError, match=f"packs/{own.pack}: chunk at offset {own.offset}"):
        datavc.open("data@v1").cat("a.bin")
    shutil.rmtree(data)
    with pytest.raises(IntegrityError):  # (it reads the index's first place first: B's)
        fresh(ws).checkout(["data@v1"], force=True)


def test_a_page_decoded_for_one_version_is_checked_again_for_another(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """v3's root is v1's (v1's snapshot id) with v2's page id in it: page ids are outside
    the snapshot id. A process that had read v2's file got v2's bytes for v3's file from
    its cache of decoded pages, which was keyed by page id alone (found by a probe)."""
    data = Path(ws.root) / "data"
    write(data / "f.txt", b"v1 content\n" * 10)
    v1 = commit(ws, data, "v1")
    write(data / "f.txt", b"v2 content\n" * 10)
    v2 = commit(fresh(ws), data, "v2")
    page = dataclasses.replace(v1.root.pages[0], id=v2.root.pages[0].id)
    root = dataclasses.replace(v1.root, pages=(page,))
    v3 = versions.publish_version(ws.store, forged_record("data", root))
    assert v3.version == 3 and v3.tree == v1.tree
    monkeypatch.chdir(ws.root)
    assert datavc.open("data@v2").cat("f.txt") == b"v2 content\n" * 10
    for read in (lambda fs: fs.cat("f.txt"), lambda fs: fs.open("f.txt").read()):
        with pytest.raises(CorruptObject, match="page content does not match"):
            read(datavc.open("data@v3"))
    assert datavc.open("data@v1").cat("f.txt") == b"v1 content\n" * 10


def test_datavc_open_refuses_a_crafted_tree_deeper_than_the_path_rules(
    ws: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fsspec's find, walk and du recurse by folder: a crafted path 990 folders deep was a
    RecursionError from them; it is the path rule's error, as in checkout."""
    data = Path(ws.root) / "data"
    write(data / "a.bin", rand("a", 1000))
    v1 = commit(ws, data, "v1")
    [a] = ws.tree_entries(v1.root)
    deep = FileEntry("d/" * 990 + "f", MODE_FILE, a.size, a.hash, a.chunks)
    assert publish_crafted(ws, "data", [a, deep]).version == 2
    monkeypatch.chdir(ws.root)
    calls = {
        "find": lambda f: f.find(""),
        "walk": lambda f: list(f.walk("")),
        "du": lambda f: f.du(""),
        "ls": lambda f: f.ls("d"),
        "materialize": lambda f: f.materialize(str(tmp_path / "out")),
    }
    for call in calls.values():
        with pytest.raises(UnsafePath, match="deeper than 128 components"):
            call(datavc.open("data@v2"))
    assert not (tmp_path / "out").exists()
    assert datavc.open("data@v2").cat("a.bin") == (data / "a.bin").read_bytes()



def test_a_path_too_long_for_the_target_folder_is_refused_before_anything_is_written(
    ws: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The path rules bound a snapshot path at 3,072 bytes; under a long target folder
    the whole path can still pass PATH_MAX. Checkout removed files, then failed with
    ENAMETOOLONG: now the first phase refuses it, and a short target takes it."""
    data = Path(ws.root) / "data"
    write(data / "a.bin", rand("a", 1000))
    v1 = commit(ws, data, "v1")
    [a] = ws.tree_entries(v1.root)
    long_path = ("p" * 250 + "/") * 11 + "f"  # 2,762 bytes: within the rules
    deep = FileEntry(long_path, a.mode, a.size, a.hash, a.chunks)
    assert publish_crafted(ws, "data", [a, deep]).version == 2
    monkeypatch.chdir(ws.root)
    far = tmp_path.joinpath(*["x" * 250] * 6)  # over 1,500 bytes
    write(far / "keep", b"k")
    with pytest.raises(UnsafePath, match="too long to write under"):
        datavc.open("data@v2").materialize(str(far))
    assert sorted(p.name for p in far.iterdir()) == ["keep"]
    near = tmp_path / "near"
    assert datavc.open("data@v2").materialize(str(near)) == 2
    assert (near / long_path).read_bytes() == (data / "a.bin").read_bytes()


def test_ctrl_c_while_files_are_placed_waits_for_the_placement(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An interrupt that comes while checkout renames files into place is held until the
    folder is wholly the new version and the pointer file says so, then raised (before, the
    folder was left half v1 and half v2)."""
    data = Path(ws.root) / "data"
    for i in range(12):
        write(data / f"f{i:02d}.bin", rand(f"one{i}", 3000))
    commit(ws, data, "v1")
    for i in range(12):
        write(data / f"f{i:02d}.bin", rand(f"two{i}", 3000))
    write(data / "new.bin", rand("new", 100))
    commit(ws, data, "v2")
    v2 = tree_state(data)
    assert fresh(ws).checkout(["data@v1"])[0].written == 12
    replace, calls = os.replace, {"n": 0}

    def interrupted(src: str, dst: str) -> None:
        if os.path.basename(os.path.dirname(src)).startswith(TMP_PREFIX):  # placing a file
            calls["n"] += 1
            if calls["n"] == 3:
                os.kill(os.getpid(), signal.SIGINT)
        replace(src, dst)

    with monkeypatch.context() as m, pytest.raises(KeyboardInterrupt):
        m.setattr(os, "replace", interrupted)
        fresh(ws).checkout(["data@v2"])
    assert calls["n"] > 3  # the placement went on after the interrupt
    assert tree_state(data) == v2
    assert decode_pointer((Path(ws.root) / "data.datavc").read_text(), "p").version == 2
    assert [s.state for s in fresh(ws).status()] == ["clean"]


def test_status_of_an_unchanged_folder_reads_no_cache_rows(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stat cache's digest of each group's (path, stat) pairs answers 'unchanged' for
    status without reading its rows or the store; a change of path or stat values reads
    the rows of that group alone."""
    data = Path(ws.root) / "d"
    for i in range(20):
        write(data / f"f{i:02d}.bin", rand(f"s{i}", 1000 + i))
    # A clock 10 s ahead: no file is within the racy window, so rows are kept and trusted.
    ahead = types.SimpleNamespace(time_ns=lambda: time.time_ns() + 10 * 10**9)
    monkeypatch.setattr(statcache, "time", ahead)
    commit(ws, data, "v1")
    reads: list[str] = []
    original = statcache.StatCache.rows

    def counting(self: statcache.StatCache, g: statcache.Group) -> dict[str, statcache.Row]:
        reads.append(self.path)
        return original(self, g)

    monkeypatch.setattr(statcache.StatCache, "rows", counting)
    clean = fresh(ws)
    assert [s.state for s in clean.status()] == ["clean"]
    assert reads == [], "an unchanged folder needs no rows"
    assert clean._store is None, "nor the store"
    # Same size and mtime, new content: the ctime differs, so the rows are read.
    target = data / "f03.bin"
    before = target.stat()
    target.write_bytes(rand("other", 1003))
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    status = fresh(ws).status()
    assert [s.state for s in status] == ["modified"]
    assert status[0].diff.modified == ("f03.bin",)
    # once to compare, once more to look for a committed version the folder may hold
    # (its file count and bytes are v1's)
    assert len(reads) == 2
    # A new file: also seen.
    target.write_bytes(rand("s3", 1003))  # back to the committed content
    write(data / "new.bin", b"new")
    status = fresh(ws).status()
    assert [s.state for s in status] == ["modified"] and status[0].diff.added == ("new.bin",)


def test_status_after_a_refused_checkout_still_sees_the_edit(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkout refused because of an unsaved edit records the edited file's hash in the
    stat cache; the cache must not go on claiming the folder matches the snapshot."""
    ahead = types.SimpleNamespace(time_ns=lambda: time.time_ns() + 10 * 10**9)
    monkeypatch.setattr(statcache, "time", ahead)  # no row is racy: all are trusted
    data = Path(ws.root) / "d"
    write(data / "a.bin", rand("a1", 5000))
    write(data / "b.bin", rand("b1", 5000))
    commit(ws, data, "v1")
    write(data / "a.bin", rand("a2", 5000))  # same size, new content, not added
    with pytest.raises(UsageError, match="not stored"):
        fresh(ws).checkout(["d@v1"])
    status = fresh(ws).status()
    assert [s.state for s in status] == ["modified"]
    assert status[0].diff.modified == ("a.bin",)


def test_writers_refuse_a_store_of_another_format(ws: Workspace, tmp_path: Path) -> None:
    data = Path(ws.root) / "d"
    write(data / "a.bin", rand("a", 1000))
    ws.add(str(data))
    store = ws.store.backend
    doc = json.loads(store.read("datavc.json"))
    store.replace("datavc.json", json.dumps({**doc, "format": 1}).encode())
    with pytest.raises(CorruptObject, match="unsupported store format 1"):
        fresh(ws).commit([], "v1")
    assert store.list("versions") == []
    with pytest.raises(CorruptObject, match="unsupported store format 1"):
        init_workspace(str(tmp_path / "other"), ws.store.backend.url)


# -- reading the workspace --------------------------------------------------------------


def _atimes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_atime_ns for p in folder.iterdir()}


@pytest.mark.skipif(not hasattr(os, "O_NOATIME"), reason="no O_NOATIME on this system")
@pytest.mark.parametrize("owner", [True, False], ids=["owner", "not-owner"])
def test_add_leaves_the_files_access_times_alone_where_the_system_allows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, owner: bool
) -> None:
    """A read updates a file's atime (relatime: when it is not after the mtime), which
    dirties its inode; add reads with O_NOATIME, and without it where that is refused
    (EPERM: not the file's owner), so it reads every file either way."""
    data = tmp_path / "ws" / "data"
    files = {"small": b"s" * 100, "large": rand("noatime", 9 * MiB)}  # read whole; streamed
    for name, content in files.items():
        write(data / name, content)
    for p in data.iterdir():
        os.utime(p, ns=(10**9, p.stat().st_mtime_ns))  # atime well before mtime
    control = tmp_path / "control"
    write(control, b"c")
    os.utime(control, ns=(10**9, control.stat().st_mtime_ns))
    control.read_bytes()
    if control.stat().st_atime_ns == 10**9:
        pytest.skip("this file system does not update access times on read")

    real_open = os.open
    refused: list[str] = []

    def not_the_owner(path: str, flags: int, *args: int, **kw: int) -> int:
        if flags & os.O_NOATIME:
            refused.append(os.path.basename(path))
            raise PermissionError(1, "Operation not permitted", path)  # EPERM
        return real_open(path, flags, *args, **kw)

    if not owner:
        monkeypatch.setattr(os, "open", not_the_owner)
    init_workspace(str(tmp_path / "ws"), str(tmp_path / "store"))
    ws = Workspace(str(tmp_path / "ws"))
    rec = commit(ws, data, "v1")
    monkeypatch.undo()
    assert rec.stats.files == 2 and rec.stats.bytes == sum(map(len, files.values()))
    atimes = _atimes(data)
    if owner:
        assert atimes == {name: 10**9 for name in files}
    else:
        assert sorted(refused) == sorted(files)
        assert all(t > 10**9 for t in atimes.values())
    shutil.rmtree(data)
    fresh(ws).checkout(["data@v1"])
    assert {p.name: p.read_bytes() for p in data.iterdir()} == files


def test_status_and_add_refuse_a_folder_deeper_than_the_path_rules_allow(ws: Workspace) -> None:
    """A folder 900 deep in a tracked dataset was a RecursionError traceback from the walk
    (status), and every later status failed: now the path rule's one error. (300 deep here:
    the test's own mkdir and rmtree recurse too.)"""
    data = Path(ws.root) / "data"
    write(data / "top", b"y")
    commit(ws, data, "v1")
    deep = data.joinpath(*["d"] * 300)
    write(deep / "f", b"x")
    with pytest.raises(UnsafePath, match="deeper than 128 components"):
        fresh(ws).status()
    with pytest.raises(UnsafePath, match="deeper than 128 components"):
        fresh(ws).add(str(data))
    shutil.rmtree(data / "d")
    assert [s.state for s in fresh(ws).status()] == ["clean"]
