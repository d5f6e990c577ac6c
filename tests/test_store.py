"""Conformance suite for the store layers, run on every backend (memory, local folder, S3 via
a moto server): the backend contract, the chunk store with snapshots, deduplication, packing,
streaming reads, integrity checks and version publishing."""

from __future__ import annotations

import contextlib
import dataclasses
import mmap
import os
import random
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pytest
from blake3 import blake3

from datavc.errors import (
    BadInput,
    CorruptObject,
    DatasetNotFound,
    IntegrityError,
    NotFoundError,
    ObjectNotFound,
    RangeNotFound,
    VersionNotFound,
)
from datavc.format.chunker import ChunkerParams
from datavc.format.hashing import ChunkId, FileHash, ObjectId, chunk_id
from datavc.format.packfile import CODEC_RAW, Location, encode_index, read_pack_footer
from datavc.format.record import VersionRecord
from datavc.format.spec import parse_spec
from datavc.format.storeconfig import StoreConfig
from datavc.format.tree import (
    MODE_EXEC,
    MODE_FILE,
    FileEntry,
    Hints,
    PageRef,
    TreeRoot,
    decode_page,
)
from datavc.format.treecut import cut_here
from datavc.format.treeroot import snapshot_id
from datavc.store import versions
from datavc.store.backend import Backend, BackendStats, Created
from datavc.store.build import build_entries
from datavc.store.chunkstore import ChunkStore
from datavc.store.fetch import STREAM_MIN
from datavc.store.files import TMP_PREFIX, LocalFile, NoProgress, scan
from datavc.store.materialize import as_pages, materialize
from datavc.store.packwriter import UploadStats
from datavc.store.spool import AppendFile
from datavc.store.trees import diff_entries, diff_trees, find_entry, iter_entries
from datavc.store.treewriter import TreeWriter, write_tree

KIB = 1024
MIB = 1024 * KIB
PARAMS = ChunkerParams()


def randbytes(seed: int | str, n: int) -> bytes:
    return random.Random(seed).randbytes(n)


# -- fixtures and helpers -------------------------------------------------------------------


@pytest.fixture
def backend(store_url: str) -> Iterator[Backend]:
    b = Backend(store_url)
    yield b
    if not b.is_local:  # the memory file system is process-wide, moto keeps everything
        with contextlib.suppress(FileNotFoundError):
            b.fs.rm(b.root, recursive=True)


@pytest.fixture
def store(backend: Backend) -> ChunkStore:
    return ChunkStore.create(backend, StoreConfig(PARAMS))


@pytest.fixture(scope="module")
def big_data() -> bytes:
    """64 MiB of random bytes: compression cannot hide what is stored."""
    return randbytes(64, 64 * MIB)


def reopen(store_url: str) -> ChunkStore:
    """A second client of the same store, with its own connection and empty index."""
    return ChunkStore.open(Backend(store_url))


def make_files(
    root: Path, files: dict[str, bytes], executable: frozenset[str] = frozenset()
) -> None:
    for rel, data in files.items():
        path = root.joinpath(*rel.split("/"))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        path.chmod(0o755 if rel in executable else 0o644)


def folder_state(root: Path) -> dict[str, tuple[bytes, bool]]:
    """Every file and folder under ``root``: content and executable bit (folders: b"/")."""
    state: dict[str, tuple[bytes, bool]] = {}
    for current, dirs, files in os.walk(root):
        rel = os.path.relpath(current, root).replace(os.sep, "/")
        prefix = "" if rel == "." else rel + "/"
        for d in dirs:
            state[prefix + d + "/"] = (b"/", False)
        for f in files:
            path = os.path.join(current, f)
            assert not os.path.islink(path)
            state[prefix + f] = (Path(path).read_bytes(), bool(os.stat(path).st_mode & 0o100))
    return state


def no_reuse(f: LocalFile) -> FileEntry | None:
    return None


def commit(store: ChunkStore, folder: Path) -> tuple[TreeRoot, UploadStats, list[FileEntry]]:
    """Chunk and upload a folder, then write its tree: what ``datavc add`` does."""
    files = scan(str(folder), "dir")
    writer = store.new_writer()
    entries = build_entries(files, store, writer, no_reuse, NoProgress())
    stats = writer.finish()
    return write_tree(store, entries), stats, entries


def same_hash(local: LocalFile, e: FileEntry) -> bool:
    return blake3(Path(local.abspath).read_bytes()).digest() == e.hash


def checkout(
    store: ChunkStore,
    tree: TreeRoot,
    dest: Path,
    unchanged: Callable[[LocalFile, FileEntry], bool] = same_hash,
) -> int:
    entries = list(iter_entries(store, tree))
    return materialize(store, as_pages(entries), str(dest), "dir", unchanged, NoProgress())


def counters(stats: BackendStats) -> dict[str, int]:
    return {
        "reads": stats.reads,
        "range_reads": stats.range_reads,
        "bytes_read": stats.bytes_read,
        "writes": stats.writes,
        "keys": len(stats.read_keys),
    }


def delta(before: dict[str, int], stats: BackendStats) -> dict[str, int]:
    now = counters(stats)
    return {k: now[k] - before[k] for k in now}


def record(name: str, nonce: str | None = None, root: TreeRoot | None = None) -> VersionRecord:
    root = root or TreeRoot(0, 0, ())
    return VersionRecord(
        name=name,
        version=0,
        kind="dir",
        tree=snapshot_id(root),
        root=root,
        parent=None,
        message="test",
        author="Test Author <author@example.invalid>",
        time="2026-01-01T00:00:00Z",
        git_head=None,
        nonce=nonce or uuid.uuid4().hex,
    )


def flip_byte(backend: Backend, key: str, offset: int) -> bytes:
    """Damage one byte of an object in place (behind datavc's back); return the original."""
    original = backend.read(key)
    damaged = bytearray(original)
    damaged[offset] ^= 0x5A
    backend.fs.pipe_file(backend.path(key), bytes(damaged))
    assert backend.read(key) == bytes(damaged)
    return original


# -- backend contract -----------------------------------------------------------------------


def test_backend_read_write_range_list_exists(backend: Backend) -> None:
    backend.write("things/a", b"hello world")
    backend.write("things/b", b"")
    backend.write("things/sub/c", b"x")
    assert backend.read("things/a") == b"hello world"
    assert backend.read("things/b") == b""
    assert backend.read_range("things/a", 6, 11) == b"world"
    assert backend.read_range("things/a", 0, 1) == b"h"
    assert backend.list("things") == ["a", "b", "sub"]
    assert backend.list("things/sub") == ["c"]
    assert backend.list("nothing") == []
    assert backend.exists("things/a")
    assert not backend.exists("things/zzz")
    assert backend.stats.range_reads == 2
    assert backend.stats.reads == 4
    assert backend.stats.read_keys[-2:] == ["things/a", "things/a"]


def test_a_range_past_an_objects_end_is_a_short_read_not_a_missing_object(
    backend: Backend,
) -> None:
    """A place a wrong hint names can lie past its pack's end. That is RangeNotFound (the
    reader then asks the index), not the object missing (the reader skipped every place
    in that pack) nor, on S3, the 416 taken for an unreachable store (exit 5)."""
    backend.write("packs/p", b"hello world")
    for start, end in [(20, 30), (11, 12), (6, 20)]:
        with pytest.raises(RangeNotFound, match=r"packs/p \(range \d+-\d+ past its end\)"):
            backend.read_range("packs/p", start, end)
    with pytest.raises(ObjectNotFound) as missing:
        backend.read_range("packs/absent", 0, 4)
    assert not isinstance(missing.value, RangeNotFound)


def test_backend_write_again_and_replace(backend: Backend) -> None:
    backend.write("packs/p", b"same bytes")
    backend.write("packs/p", b"same bytes")  # immutable objects: writing again is harmless
    assert backend.read("packs/p") == b"same bytes"
    backend.replace("tags/ds/best", b"1\n")
    backend.replace("tags/ds/best", b"2\n")
    assert backend.read("tags/ds/best") == b"2\n"
    assert backend.list("tags/ds") == ["best"]  # no temp file left beside it


def test_create_exclusive_is_exclusive(backend: Backend) -> None:
    assert backend.create_exclusive("versions/ds/1.json", b"first")
    assert not backend.create_exclusive("versions/ds/1.json", b"second")
    assert backend.read("versions/ds/1.json") == b"first"
    assert backend.list("versions/ds") == ["1.json"]


def test_create_exclusive_race_has_one_winner(store_url: str, backend: Backend) -> None:
    clients = [Backend(store_url) for _ in range(8)]
    barrier = threading.Barrier(len(clients))
    results: dict[int, bool] = {}

    def race(i: int) -> None:
        barrier.wait()
        results[i] = clients[i].create_exclusive("race/key", f"writer {i}".encode())

    threads = [threading.Thread(target=race, args=(i,)) for i in range(len(clients))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [i for i, won in results.items() if won]
    assert len(results) == len(clients)
    assert len(winners) == 1
    assert backend.read("race/key") == f"writer {winners[0]}".encode()
    assert backend.list("race") == ["key"]


def test_missing_key_is_object_not_found(backend: Backend) -> None:
    backend.write("packs/present", b"0123456789")
    for call in (
        lambda: backend.read("packs/absent"),
        lambda: backend.read_range("packs/absent", 0, 4),
    ):
        with pytest.raises(ObjectNotFound) as info:
            call()
        assert isinstance(info.value, FileNotFoundError)
        assert info.value.key == "packs/absent"
    with pytest.raises(FileNotFoundError):
        backend.read("absent-folder/absent")


def test_store_create_twice_keeps_the_first_config(store_url: str, store: ChunkStore) -> None:
    other = StoreConfig(ChunkerParams(avg_size=8192, min_size=2048, max_size=32768))
    again = ChunkStore.create(Backend(store_url), other)
    assert again.config == StoreConfig(PARAMS)
    assert ChunkStore.open(Backend(store_url)).config == StoreConfig(PARAMS)


# -- snapshots through the chunk store ------------------------------------------------------

SOURCE = {
    "README.md": b"# a dataset\n" * 50,
    "empty.txt": b"",
    "run.sh": b"#!/bin/sh\necho hello\n",
    "train/0001.bin": randbytes(1, 300 * KIB),
    "train/0002.bin": randbytes(2, 5),
    "train/deep/er/table.csv": b"a,b,c\n" + b"1,2,3\n" * 40000,
    "valid/données é.txt": "ünïcödé\n".encode(),
}


def test_snapshot_round_trip(store_url: str, store: ChunkStore, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_files(src, SOURCE, frozenset({"run.sh"}))
    tree, stats, entries = commit(store, src)
    assert stats.new_chunks > 0
    reader = reopen(store_url)
    root = tree
    assert (root.files, root.bytes) == (len(SOURCE), sum(len(d) for d in SOURCE.values()))
    assert list(iter_entries(reader, root)) == entries
    assert [e.path for e in entries] == sorted(SOURCE, key=str.encode)
    found = find_entry(reader, root, "train/deep/er/table.csv")
    assert found is not None and found.hash == blake3(SOURCE["train/deep/er/table.csv"]).digest()
    dest = tmp_path / "dest"
    assert checkout(reader, tree, dest) == len(SOURCE)
    assert folder_state(dest) == folder_state(src)
    assert folder_state(dest)["run.sh"][1] is True
    assert folder_state(dest)["README.md"][1] is False


def test_materialize_makes_the_folder_exact(
    store_url: str, store: ChunkStore, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    make_files(src, SOURCE, frozenset({"run.sh"}))
    tree, _, _ = commit(store, src)
    dest = tmp_path / "dest"
    make_files(
        dest,
        {
            "README.md": b"# a dataset\n" * 50,  # same content, but the mode below is wrong
            "train/0001.bin": b"locally modified",
            "train/0002.bin/inner": b"a folder where a file belongs",
            "extra.txt": b"not in the snapshot",
            "old/deep/file": b"not in the snapshot either",
            "valid/other.txt": b"extra beside a wanted file",
            "run.sh/x": b"",
        },
        executable=frozenset({"README.md"}),
    )
    written = checkout(reopen(store_url), tree, dest)
    assert folder_state(dest) == folder_state(src)
    assert written == len(SOURCE) - 1  # README.md only needed its mode fixed
    # A second checkout finds nothing to do.
    assert checkout(reopen(store_url), tree, dest) == 0
    assert folder_state(dest) == folder_state(src)


def test_long_file_name_round_trip(store: ChunkStore, tmp_path: Path) -> None:
    name = "n" * 250
    src = tmp_path / "src"
    make_files(src, {name: b"long name"})
    tree, _, _ = commit(store, src)
    dest = tmp_path / "dest"
    checkout(store, tree, dest)
    assert folder_state(dest) == folder_state(src)


# -- deduplication --------------------------------------------------------------------------


def test_same_data_twice_stores_nothing_new(
    store_url: str, store: ChunkStore, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    data = randbytes(3, 2 * MIB)
    make_files(src, {"a.bin": data, "copy/a.bin": data, "b.bin": randbytes(4, 100 * KIB)})
    tree, first, entries = commit(store, src)
    unique = {c for e in entries for c, _ in e.chunks}
    assert first.new_chunks == len(unique)  # the copy inside one upload is stored once
    assert first.new_bytes < 2 * MIB + 100 * KIB + 64 * KIB
    packs = store.backend.list("packs")

    again, second, _ = commit(reopen(store_url), src)  # another client, index read from store
    assert again == tree
    assert second == UploadStats(0, 0, 0)
    assert store.backend.list("packs") == packs
    assert len(store.backend.list("index")) == 1


def test_large_file_edits_store_little(store: ChunkStore, tmp_path: Path, big_data: bytes) -> None:
    src = tmp_path / "src"
    make_files(src, {"big.bin": big_data})
    path = src / "big.bin"
    _, first, entries = commit(store, src)
    assert first.new_bytes >= len(big_data)  # random data: stored raw, nothing deduplicated
    assert first.new_chunks == len(entries[0].chunks)

    # 1 MiB changed in place, in the middle.
    patch = randbytes(5, MIB)
    at = 32 * MIB - 300 * KIB
    with open(path, "r+b") as f:
        f.seek(at)
        f.write(patch)
    _, second, entries = commit(store, src)
    assert 0 < second.new_bytes <= 2 * MIB
    expected = blake3(memoryview(big_data)[:at])
    expected.update(patch)
    expected.update(memoryview(big_data)[at + MIB :])
    assert entries[0].hash == expected.digest()

    # 1 MiB appended.
    with open(path, "ab") as f:
        f.write(randbytes(6, MIB))
    _, third, entries = commit(store, src)
    assert 0 < third.new_bytes <= 2 * MIB
    assert entries[0].size == len(big_data) + MIB


# -- packing --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """5,000 random files of 1-20 KiB in a few folders."""
    root = tmp_path_factory.mktemp("small-files")
    rnd = random.Random(5000)
    for i in range(5000):
        folder = root / f"part-{i % 7}"
        folder.mkdir(exist_ok=True)
        (folder / f"{i:05d}.bin").write_bytes(rnd.randbytes(rnd.randint(KIB, 20 * KIB)))
    return root


def test_many_small_files_share_few_objects(
    store_url: str, store: ChunkStore, small_files: Path
) -> None:
    backend = store.backend
    before = counters(backend.stats)
    tree, stats, entries = commit(store, small_files)
    published = versions.publish_version(store, record("small", root=tree))
    assert published.version == 1
    assert len(entries) == 5000
    written = delta(before, backend.stats)["writes"]
    listed = sum(len(backend.list(k)) for k in ("packs", "index", "trees", "versions/small"))
    assert written <= 10, f"{written} objects written for one upload of 5,000 files"
    assert listed <= 10
    assert written >= listed >= 4  # at least a pack, an index, a page, a record
    assert stats.new_objects == len(backend.list("packs")) + len(backend.list("index"))
    # Spot check: files read back from the shared packs are right.
    reader = reopen(store_url)
    root = tree
    for e in entries[::1250]:
        data = b"".join(reader.read_chunks(c for c, _ in e.chunks))
        assert data == (small_files / e.path).read_bytes()
        assert find_entry(reader, root, e.path) == e


def test_blocks_waiting_for_the_whole_file_hash_are_bounded(tmp_path: Path) -> None:
    """A reader that runs ahead of the hashing thread waits once MAX_HASHING_BYTES are
    queued, so its blocks do not pile up in memory (a file whose chunks are all known)."""
    from datavc.store.packwriter import MAX_HASHING_BYTES

    store = ChunkStore.create(Backend(str(tmp_path / "s")), StoreConfig(PARAMS))

    release = threading.Event()

    class SlowHasher:
        def __init__(self) -> None:
            self.fed = 0

        def update(self, block: bytes) -> None:
            release.wait(30)
            self.fed += len(block)

        def digest(self) -> bytes:
            return b"%d" % self.fed

    block = bytes(MAX_HASHING_BYTES // 4)
    hasher = SlowHasher()
    with store.new_writer() as writer:
        for _ in range(4):  # up to the limit: queued at once
            writer.hash_in_order(hasher, [block])
        more = threading.Thread(target=writer.hash_in_order, args=(hasher, [block]))
        more.start()
        more.join(0.3)
        assert more.is_alive(), "a block over the limit must wait for the hashing thread"
        release.set()
        more.join(30)
        assert not more.is_alive()
        assert writer.digest(hasher).result(30) == b"%d" % (5 * len(block))


def test_an_upload_that_fails_before_its_index_leaves_nothing_to_dedup_against(
    tmp_path: Path,
) -> None:
    """Packs stored by an upload that never wrote its index are not counted as stored: the
    next upload stores those chunks again, and its index names them."""
    store = ChunkStore.create(
        Backend(str(tmp_path / "s")), StoreConfig(ChunkerParams(), pack_target=4 * KIB)
    )
    blobs = [randbytes(f"f{i}", 3 * KIB) for i in range(4)]
    with pytest.raises(RuntimeError), store.new_writer() as writer:
        for b in blobs:
            writer.add(chunk_id(b), b)
        writer._drain(0)
        while writer._tasks:
            writer._tasks.popleft().result()
        assert store.has_chunk(chunk_id(blobs[0])), "premise: a pack was stored"
        raise RuntimeError("the upload fails before finish()")
    assert not any(store.has_chunk(chunk_id(b)) for b in blobs)
    assert store.backend.list("index") == []
    with store.new_writer() as writer:
        assert all(writer.add(chunk_id(b), b) for b in blobs)
        writer.finish()
    fresh = ChunkStore.open(Backend(str(tmp_path / "s")))
    fresh.load_index()
    for b in blobs:
        assert b"".join(fresh.read_chunks([chunk_id(b)])) == b


def test_a_pack_whose_write_failed_is_never_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write to a pack file that fails (a full disk) must not leave that pack stored
    under its id, nor a temporary file; the same chunks stored again read back right."""
    monkeypatch.setattr("datavc.store.packwriter.BATCH_BYTES", 8 * KIB)
    store = ChunkStore.create(
        Backend(str(tmp_path / "s")), StoreConfig(ChunkerParams(), pack_target=64 * KIB)
    )
    blobs = [randbytes(f"w{i}", 6 * KIB) for i in range(30)]
    calls = {"n": 0}

    class FailingFile(AppendFile):
        def writelines(self, parts: Iterable[bytes | memoryview]) -> None:
            calls["n"] += 1
            if calls["n"] == 3:
                first = next(iter(parts))
                super().writelines([first[: len(first) // 2]])
                self.close()  # the half part reaches the file
                raise OSError(28, "No space left on device")
            super().writelines(parts)

    monkeypatch.setattr("datavc.store.packwriter.AppendFile", FailingFile)
    with pytest.raises(OSError, match="No space"), store.new_writer() as writer:
        for b in blobs:
            writer.add(chunk_id(b), b)
        writer.finish()
    monkeypatch.undo()
    packs_dir = tmp_path / "s" / "packs"
    assert not [p for p in os.listdir(packs_dir) if p.startswith(".")], "no temporary file"
    for name in store.backend.list("packs"):  # every pack stored is whole
        data = store.backend.read(f"packs/{name}")
        read_pack_footer(data, name)
    with store.new_writer() as writer:
        for b in blobs:
            writer.add(chunk_id(b), b)
        writer.finish()
    fresh = ChunkStore.open(Backend(str(tmp_path / "s")))
    fresh.load_index()
    for b in blobs:
        assert b"".join(fresh.read_chunks([chunk_id(b)])) == b


def test_a_full_disk_during_add_removes_every_temporary_pack_and_names_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENOSPC while writing a pack, and again while closing each pack file in cleanup: every
    temporary pack file is removed all the same (before, the first failed close stopped the
    cleanup and left the rest), and the error names the file it happened to."""
    monkeypatch.setattr("datavc.store.packwriter.BATCH_BYTES", 8 * KIB)
    store = ChunkStore.create(
        Backend(str(tmp_path / "s")), StoreConfig(ChunkerParams(), pack_target=64 * KIB)
    )
    blobs = [randbytes(f"f{i}", 6 * KIB) for i in range(40)]
    calls = {"n": 0}

    class FullDisk(AppendFile):
        def writelines(self, parts: Iterable[bytes | memoryview]) -> None:
            calls["n"] += 1
            if calls["n"] >= 4:
                raise OSError(28, "No space left on device")
            super().writelines(parts)

        def close(self) -> None:
            super().close()
            raise OSError(28, "No space left on device")

    monkeypatch.setattr("datavc.store.packwriter.AppendFile", FullDisk)
    full = pytest.raises(OSError, match=r"No space left on device: '.*\.tmp-pack-")
    with full, store.new_writer() as writer:
        for b in blobs:
            writer.add(chunk_id(b), b)
        writer.finish()
    packs_dir = tmp_path / "s" / "packs"
    assert calls["n"] >= 4
    assert not [p for p in os.listdir(packs_dir) if p.startswith(".tmp-pack-")]


def test_same_files_same_snapshot_id_in_any_store(store: ChunkStore, tmp_path: Path) -> None:
    """The snapshot id depends on the files only, not on where their chunks were put."""
    src, mixed = tmp_path / "src", tmp_path / "mixed"
    files = {f"f{i}.bin": randbytes(f"s{i}", 90 * KIB) for i in range(4)}
    make_files(src, files)
    make_files(mixed, {"a-first.bin": randbytes("x", 300 * KIB), **files})
    here, _, _ = commit(store, src)
    elsewhere = ChunkStore.create(Backend(str(tmp_path / "b")), StoreConfig(ChunkerParams()))
    commit(elsewhere, mixed)  # src's chunks are stored there, after another file's
    there, stats, _ = commit(elsewhere, src)
    assert stats.new_chunks == 0
    assert [p.id for p in here.pages] != [p.id for p in there.pages]
    assert snapshot_id(here) == snapshot_id(there)
    assert list(iter_entries(elsewhere, there)) == list(iter_entries(store, here))


def test_a_moved_chunk_is_found_through_the_index(
    store_url: str, store: ChunkStore, tmp_path: Path
) -> None:
    """Pages carry where each chunk was stored; if that pack is gone (as after a repack)
    but the index knows the chunk's new place, reads still work: hints never win over it."""
    src = tmp_path / "src"
    files = {f"f{i}.bin": randbytes(f"m{i}", 200 * KIB) for i in range(3)}
    make_files(src, files)
    tree, _, _ = commit(store, src)
    backend = store.backend
    [old_pack] = backend.list("packs")
    [old_index] = backend.list("index")
    # "Repack": the same bytes under another name, a new index, the old pack and index gone.
    new_pack = ObjectId("0" * 63 + "1")
    backend.write(f"packs/{new_pack}", backend.read(f"packs/{old_pack}"))
    reader = reopen(store_url)
    reader.load_index()
    moved = {cid: loc._replace(pack=new_pack) for cid, loc in reader._index.items()}
    reader.write_object("index", encode_index(moved))
    backend.delete(f"packs/{old_pack}")
    backend.delete(f"index/{old_index}")

    fresh = reopen(store_url)
    entries = list(iter_entries(fresh, tree))
    assert fresh.location(entries[0].chunks[0][0]) is None, "premise: index not loaded yet"
    for e in entries:
        assert b"".join(fresh.read_chunks(c for c, _ in e.chunks)) == files[e.path]
    dest = tmp_path / "dest"
    assert checkout(reopen(store_url), tree, dest) == len(files)
    assert folder_state(dest) == folder_state(src)
    # With neither the old pack nor any index entry for the chunks, the error names the pack.
    backend.delete(f"packs/{new_pack}")
    gone = reopen(store_url)
    with pytest.raises(ObjectNotFound, match=f"packs/{old_pack}|packs/{new_pack}"):
        list(gone.read_chunks(c for c, _ in next(iter(iter_entries(gone, tree))).chunks))


@pytest.mark.parametrize("seed", range(3))
def test_diff_trees_matches_a_diff_of_the_whole_lists(
    store_url: str, store: ChunkStore, monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    """The streaming, page-skipping diff agrees with comparing the two full file lists;
    pages equal in both trees are not read."""
    monkeypatch.setattr("datavc.format.treecut.PAGE_MAX_ENTRIES", 7)
    rng = random.Random(seed)
    writer = store.new_writer()
    blobs = [randbytes(f"d{seed}/{i}", 100 + i) for i in range(6)]
    for b in blobs:
        writer.add(chunk_id(b), b)
    writer.finish()

    def entry(path: str, k: int, mode: int = MODE_FILE) -> FileEntry:
        b = blobs[k]
        return FileEntry(path, mode, len(b), FileHash(blake3(b).digest()), ((chunk_id(b), len(b)),))

    old = {f"f{i:03d}": entry(f"f{i:03d}", rng.randrange(6)) for i in range(60)}
    new = dict(old)
    for path in rng.sample(sorted(old)[30:], 5):  # the first pages stay as they were
        del new[path]
    for path in rng.sample(sorted(new)[30:], 4):
        new[path] = entry(path, rng.randrange(6))
    new["f035"] = dataclasses.replace(old["f035"], mode=MODE_EXEC)
    for i in range(3):
        new[f"g{i}"] = entry(f"g{i}", i)
    a = write_tree(store, [old[p] for p in sorted(old)])
    b = write_tree(store, [new[p] for p in sorted(new)])
    got = [(kind, e.path) for kind, e in diff_trees(store, a, b)]
    want = diff_entries(old.values(), new.values())
    assert sorted(p for k, p in got if k == "added") == list(want.added)
    assert sorted(p for k, p in got if k == "removed") == list(want.removed)
    assert sorted(p for k, p in got if k == "modified") == list(want.modified)
    assert [p for _, p in got] == sorted(p for _, p in got)  # path order
    assert "f035" in want.modified or "f035" in want.removed
    # Pages the two trees share are not read.
    shared = {p.id for p in a.pages} & {p.id for p in b.pages}  # same content, same hints
    assert shared, "premise: the trees share pages"
    reader = reopen(store_url)
    list(diff_trees(reader, a, b))
    read = {k.split("/", 1)[1] for k in reader.backend.stats.read_keys}
    assert not read & shared
    assert [(k, e.path) for k, e in diff_trees(store, None, b)] == [
        ("added", p) for p in sorted(new)
    ]


# -- streaming reads ------------------------------------------------------------------------


def test_reading_one_file_reads_only_its_pack_ranges(
    store_url: str, store: ChunkStore, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    files = {f"f{i}.bin": randbytes(f"s{i}", (i + 1) * 150 * KIB) for i in range(6)}
    make_files(src, files)
    tree, _, _ = commit(store, src)
    reader = reopen(store_url)
    root = tree
    wanted = find_entry(reader, root, "f3.bin")
    assert wanted is not None
    reader.load_index()
    locs = [reader.location(c) for c, _ in wanted.chunks]
    assert all(loc is not None for loc in locs)
    before = counters(reader.backend.stats)
    data = b"".join(reader.read_chunks(c for c, _ in wanted.chunks))
    assert data == files["f3.bin"]
    d = delta(before, reader.backend.stats)
    keys = reader.backend.stats.read_keys[before["keys"] :]
    assert keys and all(k.startswith("packs/") for k in keys)
    assert d["reads"] == d["range_reads"] == len(keys)
    # Only this file's bytes: no whole pack, nothing of its neighbours.
    assert d["bytes_read"] == sum(loc.stored_length for loc in locs if loc is not None)
    assert d["bytes_read"] <= wanted.size


def test_reading_one_chunk_of_a_large_file_is_one_small_range(
    store_url: str, store: ChunkStore, tmp_path: Path, big_data: bytes
) -> None:
    src = tmp_path / "src"
    make_files(src, {"big.bin": big_data})
    _, _, entries = commit(store, src)
    recipe = entries[0].chunks
    middle = len(recipe) // 2
    cid, length = recipe[middle]
    start = sum(n for _, n in recipe[:middle])
    reader = reopen(store_url)
    reader.load_index()
    before = counters(reader.backend.stats)
    assert list(reader.read_chunks([cid])) == [big_data[start : start + length]]
    d = delta(before, reader.backend.stats)
    assert (d["reads"], d["range_reads"]) == (1, 1)
    assert reader.backend.stats.read_keys[-1].startswith("packs/")
    assert d["bytes_read"] <= PARAMS.max_size + 64


# -- integrity ------------------------------------------------------------------------------


def test_flipped_byte_in_a_pack_is_detected(
    store_url: str, store: ChunkStore, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    make_files(src, {"random.bin": randbytes(7, MIB), "text.csv": b"x,y,z\n" * 100000})
    _, _, entries = commit(store, src)
    backend = store.backend
    (pack,) = backend.list("packs")
    key = f"packs/{pack}"
    for e in entries:  # one file stored raw, one compressed
        cid = e.chunks[len(e.chunks) // 2][0]
        loc = store.location(cid)
        assert loc is not None and loc.pack == pack
        original = flip_byte(backend, key, loc.offset + loc.stored_length // 2)
        with pytest.raises(IntegrityError) as info:
            b"".join(reopen(store_url).read_chunks(c for c, _ in e.chunks))
        assert info.value.obj == key
        assert key in str(info.value)
        backend.fs.pipe_file(backend.path(key), original)
        assert (
            b"".join(reopen(store_url).read_chunks(c for c, _ in e.chunks))
            == (src / e.path).read_bytes()
        )


@pytest.mark.parametrize("compressed", [False, True])
@pytest.mark.parametrize("spot", [10, -10])
def test_materialize_from_a_damaged_pack_changes_nothing(
    store_url: str, store: ChunkStore, tmp_path: Path, compressed: bool, spot: int
) -> None:
    """A damaged chunk of a streamed (large) file, stored raw or compressed, near its
    start or its end: an error naming the pack, and the folder as it was."""
    src = tmp_path / "src"
    make_files(src, {"a.txt": b"unchanged\n", "data.bin": randbytes(8, MIB)})
    tree1, _, _ = commit(store, src)
    dest = tmp_path / "dest"
    assert checkout(store, tree1, dest) == 2
    before = folder_state(dest)
    assert before == folder_state(src)
    packs_before = set(store.backend.list("packs"))

    rows = b"".join(b"%d,row,%d\n" % (i, i * 7 % 1000) for i in range(400_000))
    make_files(
        src,
        {
            "data.bin": rows if compressed else randbytes(9, MIB),
            "new.bin": randbytes(10, 300 * KIB),
        },
    )
    tree2, _, entries = commit(store, src)
    (pack,) = set(store.backend.list("packs")) - packs_before
    data_entry = next(e for e in entries if e.path == "data.bin")
    assert data_entry.size >= STREAM_MIN  # streamed, not read with its neighbours
    cid = data_entry.chunks[len(data_entry.chunks) // 2][0]  # written after half the file
    loc = store.location(cid)
    assert loc is not None and loc.pack == pack
    assert (loc.codec != CODEC_RAW) == compressed
    flip_byte(store.backend, f"packs/{pack}", loc.offset + spot % loc.stored_length)

    with pytest.raises(IntegrityError) as info:
        checkout(reopen(store_url), tree2, dest)
    assert f"packs/{pack}" in str(info.value)
    assert folder_state(dest) == before  # old content kept, no temp file, no new.bin
    assert not [n for n in folder_state(dest) if TMP_PREFIX in n]


def test_checkout_of_many_small_files_is_exact_and_a_damaged_one_changes_nothing(
    store_url: str, store: ChunkStore, tmp_path: Path
) -> None:
    """Small files of one or several chunks (read a run at a time, checked by their file
    hash), empty ones, executables and large streamed files come out exact. A damaged
    chunk of a small file, met half-way, names its pack and leaves no folder behind."""
    src = tmp_path / "src"
    files = {
        f"d{i % 7}/f{i:03}.bin": randbytes(f"s{i}", (i * 977) % (40 * KIB)) for i in range(120)
    }
    files |= {"big/large.bin": randbytes("big", 3 * MIB), "z/multi.bin": randbytes("m", 600 * KIB)}
    make_files(src, {**SOURCE, **files}, frozenset({"run.sh", "d3/f003.bin"}))
    tree, _, entries = commit(store, src)
    dest = tmp_path / "dest"
    assert checkout(reopen(store_url), tree, dest) == len(entries)
    assert folder_state(dest) == folder_state(src)

    victim = next(e for e in entries if e.path == "d5/f061.bin")
    loc = store.location(victim.chunks[0][0])
    assert loc is not None
    original = flip_byte(store.backend, f"packs/{loc.pack}", loc.offset + 1)
    fresh = tmp_path / "fresh"
    with pytest.raises(IntegrityError) as info:
        checkout(reopen(store_url), tree, fresh)
    assert f"packs/{loc.pack}" in str(info.value)
    assert not fresh.exists()
    assert not [n for n in os.listdir(tmp_path) if n.startswith(TMP_PREFIX)]
    store.backend.fs.pipe_file(store.backend.path(f"packs/{loc.pack}"), original)
    assert checkout(reopen(store_url), tree, fresh) == len(entries)
    assert folder_state(fresh) == folder_state(src)


def test_stream_plain_gives_the_file_across_packs_and_codecs(
    store_url: str, backend: Backend, tmp_path: Path
) -> None:
    """A file over several packs, with raw and compressed runs, streams back whole (direct
    reads into reused buffers on a local store); a pack cut short is an error, not a short
    file."""
    store = ChunkStore.create(backend, StoreConfig(PARAMS, pack_target=MIB))
    data = randbytes("a", 3 * MIB) + b"compressible row\n" * 100_000 + randbytes("b", 2 * MIB)
    src = tmp_path / "src"
    make_files(src, {"f.bin": data})
    _, _, (entry,) = commit(store, src)
    ids = [c for c, _ in entry.chunks]
    packs = {loc.pack for loc in map(store.location, ids) if loc is not None}
    assert len(packs) >= 4
    assert any(loc.codec != CODEC_RAW for loc in map(store.location, ids) if loc is not None)
    got: list[bytes] = []
    reopen(store_url).stream_plain(ids, lambda views: got.extend(bytes(v) for v in views))
    assert b"".join(got) == data

    last = store.location(ids[-1])
    assert last is not None
    key = f"packs/{last.pack}"
    whole = backend.read(key)
    backend.fs.pipe_file(backend.path(key), whole[: last.offset + 10])
    damaged = reopen(store_url)
    before = _open_fds()
    with pytest.raises((CorruptObject, ObjectNotFound)):
        damaged.stream_plain(ids, lambda views: None)
    if before is not None and damaged.backend.is_local:  # the pack files it opened are
        kept = damaged.backend._fs()._open.values()  # closed (the backend keeps some open)
        assert _open_fds() - {str(fd) for fd in kept} <= before


def test_stream_plain_starts_before_every_chunk_is_located(
    store_url: str, backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Runs are located as they are needed: the first one is used while most of a large
    file's chunks are not looked up yet (a 1 GiB file has ~16,000), and all come back. (A
    remote store's reads run DATAVC_READ_AHEAD runs ahead: 4 here.)"""
    monkeypatch.setenv("DATAVC_READ_AHEAD", "4")
    store = ChunkStore.create(backend, StoreConfig(PARAMS, pack_target=MIB))
    data = randbytes("lazy", 16 * MIB)  # 1 MiB packs: 16 runs or more
    src = tmp_path / "src"
    make_files(src, {"f.bin": data})
    _, _, (entry,) = commit(store, src)
    ids = [c for c, _ in entry.chunks]
    pulled = 0

    def counted() -> Iterator[ChunkId]:
        nonlocal pulled
        for cid in ids:
            pulled += 1
            yield cid

    at_first_use: list[int] = []
    got: list[bytes] = []

    def use(views: list[memoryview]) -> None:
        at_first_use.append(pulled)
        got.extend(bytes(v) for v in views)

    reopen(store_url).stream_plain(counted(), use)
    assert b"".join(got) == data
    assert len(at_first_use) > 3
    assert at_first_use[0] < len(ids) // 2, (at_first_use[0], len(ids))


def test_load_index_from_two_threads_reads_each_index_once(
    store_url: str, backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader locating runs and its read-ahead thread may both load the index: each
    index object is read once, and both then see every chunk."""
    store = ChunkStore.create(backend, StoreConfig(PARAMS))
    entries = []
    for i in range(3):  # three uploads: three index objects
        src = tmp_path / f"src{i}"
        make_files(src, {"f.bin": randbytes(f"ix{i}", 100 * KIB)})
        entries += commit(store, src)[2]
    reader = reopen(store_url)
    read = reader.read_object
    reads: list[str] = []

    def slow_read(kind: str, name: str) -> bytes:
        if kind == "index":
            reads.append(name)
            threading.Event().wait(0.05)  # the other thread arrives while this one reads
        return read(kind, name)

    monkeypatch.setattr(reader, "read_object", slow_read)
    threads = [threading.Thread(target=reader.load_index) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(reads) == len(set(reads)) == 3, reads
    assert all(reader.location(c) is not None for e in entries for c, _ in e.chunks)


@pytest.mark.parametrize("where", ["memory", "disk", "some packs", "half a pack"])
def test_stream_plain_reads_packs_in_memory_from_it_and_the_rest_from_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """A local store's runs are copied from the page cache while all of their pack is in
    it, and read with O_DIRECT from where a pack is not (from the first run that is not
    cached on); the file comes back exact every way."""
    from datavc.store import reader, spool

    if not spool.NOWAIT:
        pytest.skip("no RWF_NOWAIT here")
    store = ChunkStore.create(
        Backend(str(tmp_path / "s")), StoreConfig(PARAMS, pack_target=20 * MIB)
    )
    data = randbytes("p", 45 * MIB) + b"compressible row\n" * 200_000
    src = tmp_path / "src"
    make_files(src, {"f.bin": data})
    _, _, (entry,) = commit(store, src)
    ids = [c for c, _ in entry.chunks]
    packs = sorted({loc.pack for loc in map(store.location, ids) if loc is not None})
    assert len(packs) >= 3
    paths = [store.backend.path(f"packs/{p}") for p in packs]
    if not spool.open_direct(paths[0])[1]:
        pytest.skip("no O_DIRECT: a memory filesystem, whose pages always stay")
    for i, path in enumerate(paths):
        _read_into_page_cache(path)
        if where == "disk" or (where == "some packs" and i % 2):
            _drop_from_page_cache(path)
        elif where == "half a pack" and i == 0:
            _drop_from_page_cache(path, os.path.getsize(path) // 2)
    counts = {"memory": 0, "disk": 0}

    def cached(fd: int, start: int, end: int, buf: mmap.mmap) -> memoryview | None:
        view = spool.read_cached(fd, start, end, buf)
        counts["memory"] += view is not None and end - start > 1  # not the one-page probe
        return view

    def direct(fd: int, start: int, end: int, buf: mmap.mmap) -> memoryview | None:
        counts["disk"] += 1
        return spool.read_into(fd, start, end, buf)

    monkeypatch.setattr(reader, "read_cached", cached)
    monkeypatch.setattr(reader, "read_into", direct)
    got: list[bytes] = []
    ChunkStore.open(Backend(str(tmp_path / "s"))).stream_plain(
        ids, lambda views: got.extend(map(bytes, views))
    )
    assert b"".join(got) == data
    if where == "memory":
        assert counts["memory"] > 0 and counts["disk"] == 0, counts
    elif where == "disk":
        assert counts["memory"] == 0 and counts["disk"] > 0, counts
    else:
        assert counts["memory"] > 0 and counts["disk"] > 0, counts


def _read_into_page_cache(path: str) -> None:
    with open(path, "rb", buffering=0) as f:
        while f.read(MIB):
            pass


def _drop_from_page_cache(path: str, start: int = 0) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, start, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def _open_fds() -> set[str] | None:
    """This process's open descriptors (Linux), or None."""
    if not os.path.isdir("/proc/self/fd"):
        return None
    return set(os.listdir("/proc/self/fd"))


# -- versions -------------------------------------------------------------------------------


def test_concurrent_publish_gets_distinct_numbers(store_url: str, store: ChunkStore) -> None:
    writers = [reopen(store_url) for _ in range(4)]
    nonces = [uuid.uuid4().hex for _ in writers]
    barrier = threading.Barrier(len(writers))
    got: dict[int, VersionRecord] = {}
    errors: list[BaseException] = []

    def publish(i: int) -> None:
        barrier.wait()
        try:
            got[i] = versions.publish_version(writers[i], record("ds", nonces[i]))
        except BaseException as err:  # reported below, with the others
            errors.append(err)

    threads = [threading.Thread(target=publish, args=(i,)) for i in range(len(writers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(r.version for r in got.values()) == [1, 2, 3, 4]
    assert versions.version_numbers(store, "ds") == [1, 2, 3, 4]
    for i, rec in got.items():
        assert rec.nonce == nonces[i]
        assert versions.read_version(store, "ds", rec.version) == rec


def test_lost_response_inside_create_is_recognised(
    store: ChunkStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The create succeeded but its answer was lost; a retried create then says 'exists'."""
    real = store.backend.create
    calls: list[str] = []

    def create_then_lose_answer(key: str, data: bytes) -> Created:
        calls.append(key)
        real(key, data)
        return Created.EXISTS

    versions.publish_version(store, record("ds"))  # v1 belongs to someone else
    monkeypatch.setattr(store.backend, "create", create_then_lose_answer)
    mine = record("ds")
    published = versions.publish_version(store, mine)
    assert calls == ["versions/ds/2.json"]
    assert published == dataclasses.replace(mine, version=2)
    assert versions.version_numbers(store, "ds") == [1, 2]


def test_publishing_the_same_record_again_returns_it(store: ChunkStore) -> None:
    mine = record("ds")
    first = versions.publish_version(store, mine)
    again = versions.publish_version(store, mine)  # the caller never saw the first answer
    assert again == first
    assert versions.version_numbers(store, "ds") == [1]


def test_lost_response_error_is_retried_and_recognised(
    store: ChunkStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The create succeeds but its answer is lost (a connection reset after the write): the
    backend tries again, finds the key there, and the publish recognises its own nonce."""
    if store.backend.is_local:
        pytest.skip("a local create has no answer to lose")
    real = store.backend.fs.pipe_file
    failed: list[str] = []

    def write_then_reset(path: str, data: bytes, **kwargs: object) -> None:
        real(path, data, **kwargs)
        if path.endswith(".json") and "/versions/" in path and not failed:
            failed.append(path)
            raise ConnectionResetError(104, "Connection reset by peer")

    monkeypatch.setattr(store.backend.fs, "pipe_file", write_then_reset)
    mine = record("ds")
    published = versions.publish_version(store, mine)
    assert failed
    assert published == dataclasses.replace(mine, version=1)
    assert versions.version_numbers(store, "ds") == [1]
    assert store.backend.stats.retries == 1


def two_roots_with_a_common_prefix(digits: int) -> tuple[TreeRoot, TreeRoot]:
    """Two snapshot roots whose ids share their first ``digits`` hex digits (a search)."""
    seen: dict[str, TreeRoot] = {}
    for i in range(1, 10**6):
        page = PageRef(ObjectId("1" * 64), "a", "a", 1, i, ObjectId("2" * 64))
        root = TreeRoot(1, i, (page,))
        prefix = snapshot_id(root)[:digits]
        if prefix in seen:
            return seen[prefix], root
        seen[prefix] = root
    raise AssertionError("no two roots share a prefix")


def test_only_canonical_version_keys_are_versions(store: ChunkStore) -> None:
    """``versions/<name>/<N>.json`` has no leading zero: a planted ``01.json`` or
    ``0.json`` is not a version (before, ``01.json`` was read as a second v1)."""
    one = versions.publish_version(store, record("ds"))
    two = versions.publish_version(store, record("ds"))
    for key in ("01.json", "0.json", "002.json", "3.json.tmp", "v4.json"):
        store.backend.write(f"versions/ds/{key}", b"{}")
    assert versions.version_numbers(store, "ds") == [1, 2]
    assert versions.resolve(store, parse_spec("ds@latest")) == two
    assert versions.read_version(store, "ds", 1) == one


def test_resolve(store: ChunkStore) -> None:
    one, two = two_roots_with_a_common_prefix(6)
    other = TreeRoot(0, 0, ())
    roots = [one, two, other, one]
    recs = [versions.publish_version(store, record("ds", root=r)) for r in roots]
    common = snapshot_id(one)[:6]
    assert snapshot_id(two).startswith(common) and not snapshot_id(other).startswith(common)
    assert [r.version for r in recs] == [1, 2, 3, 4]
    store.backend.replace("tags/ds/best", b"2\n")

    def resolve(text: str) -> VersionRecord:
        return versions.resolve(store, parse_spec(text))

    assert resolve("ds") == recs[3]
    assert resolve("ds@latest") == recs[3]
    assert resolve("ds@v1") == recs[0]
    assert resolve("ds@v3") == recs[2]
    assert resolve("ds@best") == recs[1]
    assert resolve(f"ds@{snapshot_id(other)[:8]}") == recs[2]
    assert resolve(f"ds@{snapshot_id(two)[:12]}") == recs[1]
    assert resolve(f"ds@{snapshot_id(one)[:12]}") == recs[3]  # the newest with that snapshot
    with pytest.raises(BadInput):
        resolve(f"ds@{common}")  # two snapshots start like that
    ids = [snapshot_id(r) for r in roots]
    absent = next(
        p for p in ("fedcba", "abcdef", "012345") if not any(i.startswith(p) for i in ids)
    )
    for text in ("ds@v5", f"ds@{absent}", "ds@no-such-tag"):
        with pytest.raises(VersionNotFound):
            resolve(text)
    for text in ("other", "other@latest", "other@abcdef", "other@v1"):
        with pytest.raises(DatasetNotFound):
            resolve(text)
    with pytest.raises(NotFoundError):
        versions.read_version(store, "ds", 9)
    assert versions.dataset_names(store) == ["ds"]


def test_the_read_log_keeps_the_last_keys_and_counts_them_all(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from datavc.store.backend import KeyLog

    monkeypatch.setattr(KeyLog, "KEEP", 3)
    log = KeyLog()
    for key in "abcde":
        log.append(key)
    assert len(log) == 5 and list(log) == ["c", "d", "e"]  # memory: the last KEEP
    assert log[-1] == "e" and log[4] == "e" and log[2] == "c"
    assert log[3:] == ["d", "e"] and log[0:] == ["c", "d", "e"] and log[-2:] == ["d", "e"]
    with pytest.raises(IndexError):
        log[1]  # dropped


@pytest.mark.parametrize("depth, most", [(2, 1), (5, 5)])
def test_read_ahead_keeps_depth_reads_in_flight_and_yields_in_order(depth: int, most: int) -> None:
    """A remote store's runs are read several at once (each a round trip); a local
    store's on one thread. Results come in the runs' order whatever order reads end in."""
    import threading
    import time

    from datavc.store.reader import read_ahead

    lock = threading.Lock()
    running, peak = [0], [0]

    def read(run: int) -> int:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.02 if run % 3 else 0.05)  # some end later than those after them
        with lock:
            running[0] -= 1
        return int(run) * 10

    got = list(read_ahead(iter(range(20)), read, depth))  # type: ignore[arg-type]
    assert got == [i * 10 for i in range(20)]
    assert peak[0] == most


def _made_up(path: str, n: int) -> tuple[FileEntry, ChunkId]:
    """An entry of one chunk of ``n`` bytes that no store holds (its id from its path)."""
    cid = ChunkId(blake3(path.encode()).digest())
    return FileEntry(path, MODE_FILE, n, FileHash(bytes(32)), ((cid, n),)), cid


def _raw_at(pack: str, offset: int, n: int) -> Location:
    return Location(ObjectId(pack * 32), offset, n, n, CODEC_RAW)


def test_a_page_that_names_a_chunk_with_two_lengths_is_not_carried_on(tmp_path: Path) -> None:
    """A crafted page names one chunk twice, at 10 and at 11 bytes, each with a hint that
    fits its length: it decodes (each row is plausible), but looking its hints up by chunk
    id is an error naming it, so a writer that keeps both entries stops there, not writing
    a page whose hint for one of them no reader takes (it took the first row for both)."""
    from datavc.format.tree import encode_page

    store = ChunkStore.create(Backend(str(tmp_path / "store")), StoreConfig(PARAMS))
    cid = ChunkId(bytes(range(32)))
    lengths = iter([10, 11])
    a = FileEntry("a", MODE_FILE, 10, FileHash(bytes(32)), ((cid, 10),))
    b = FileEntry("b", MODE_FILE, 11, FileHash(bytes(32)), ((cid, 11),))
    data, _ = encode_page([a, b], lambda c: _raw_at("bb", 8, next(lengths)))
    entries, hints = decode_page(data, "trees/crafted")
    assert [e.chunks for e in entries] == [a.chunks, b.chunks]
    assert [row[3:5] for row in hints.rows] == [(10, 10), (11, 11)]
    with pytest.raises(CorruptObject, match=r"trees/crafted: .*twice, with two lengths"):
        hints.index()
    with TreeWriter(store) as tw, pytest.raises(CorruptObject, match="trees/crafted"):
        tw.add_kept(entries, 0, hints)
        tw.end()


@pytest.mark.parametrize(("olds", "places"), [(1, False), (1, True), (2, True)])
def test_a_written_page_hints_each_chunk_where_the_writer_was_told(
    tmp_path: Path, olds: int, places: bool
) -> None:
    """Each chunk's hint in a written page is the place given with its entry, else the one
    in the old page's hints it was kept from, else the index's; a chunk named twice gets
    one place. Entries kept from ``olds`` old pages, with entries whose places are given
    (``places``) or not (kept entries of one old page and new ones: the quick path)."""
    store = ChunkStore.create(Backend(str(tmp_path / "store")), StoreConfig(PARAMS))
    make_files(tmp_path / "f", {f"{i}.bin": randbytes(i, 100 + i) for i in range(3)})
    _, _, stored = commit(store, tmp_path / "f")
    want: dict[str, Location] = {}  # by path (each entry has one chunk)
    kept: list[tuple[list[FileEntry], Hints]] = []
    for source, pack in enumerate(["bb", "cc"][:olds]):
        run, rows = [], []
        for k in range(3):
            e, cid = _made_up(f"b{source}-{k}", 10 + k)
            want[e.path] = _raw_at(pack if k else "dd", 1000 * source + k, 10 + k)
            run.append(e)
            rows.append((cid, 0 if k else 1, 1000 * source + k, 10 + k, 10 + k, CODEC_RAW))
        kept.append((run, Hints((ObjectId(pack * 32), ObjectId("dd" * 32)), tuple(rows))))
    given = []
    if places:
        for k in range(2):
            e, cid = _made_up(f"a{k}", 20 + k)
            want[e.path] = _raw_at("ee", 500 + k, 20 + k)
            given.append((e, {cid: want[e.path]}))
        twin = FileEntry("c-twin", MODE_FILE, 20, FileHash(bytes(32)), given[0][0].chunks)
        want[twin.path] = want["a0"]
    for e in stored:
        want["d/" + e.path] = store.locate_stored(e.chunks[0][0])
    paths = sorted(want)
    assert not any(cut_here(p.encode()) for p in paths)  # one page

    with TreeWriter(store) as tw:
        for e, places in given:
            assert not tw.add(e, places)
        for run, hints in kept:
            assert tw.add_kept(run, 0, hints) == len(run)
        if places:
            assert not tw.add(twin)
        for e in stored:
            assert not tw.add(FileEntry("d/" + e.path, e.mode, e.size, e.hash, e.chunks))
        assert tw.end()
        tw.attach(b"")
        root = tw.finish()
    [page] = root.pages
    entries, hints = decode_page(store.read_object("trees", page.id), "trees/p", page.content)
    assert [e.path for e in entries] == paths
    rows = zip(entries, hints.rows, strict=True)
    got = {e.path: Location(hints.packs[row[1]], *row[2:]) for e, row in rows}
    assert got == want
    assert len(hints.packs) == len({loc.pack for loc in want.values()})  # each pack named once
