"""Copying versions between stores (datavc.store.sync): what is copied is checked, obeys
the destination's gc records, never overwrites a diverged version or a tag, and skips
forgotten versions. In-process, on local folders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import rand, write

from datavc.errors import Diverged, IntegrityError, UsageError
from datavc.format.chunker import ChunkerParams
from datavc.format.gcrecord import GcRecord, encode_gc_record
from datavc.format.hashing import ObjectId, is_object_id, object_id
from datavc.format.storeconfig import StoreConfig
from datavc.store import versions
from datavc.store.backend import Backend
from datavc.store.check import fsck
from datavc.store.chunkstore import ChunkStore
from datavc.store.sync import copy_versions
from datavc.workspace.core import Workspace
from datavc.workspace.initialize import init_workspace

MiB = 1 << 20


# -- helpers ----------------------------------------------------------------------------


def make_data(folder: Path, seed: str, big: int = 300_000) -> None:
    write(folder / "a.bin", rand(f"{seed}-a", big))
    write(folder / "empty", b"")
    write(folder / "tools" / "run.sh", rand(f"{seed}-run", 4_000), executable=True)
    write(folder / "sub" / "c.bin", rand(f"{seed}-c", 90_000))


def store_at(url: str) -> ChunkStore:
    return ChunkStore.open(Backend(url))


def pack_sizes(root: Path) -> dict[str, int]:
    folder = root / "packs"
    if not folder.is_dir():
        return {}
    return {p.name: p.stat().st_size for p in folder.iterdir() if is_object_id(p.name)}


# -- the store level: verification, gc records, tags, forgotten versions -------------------


def _workspace(tmp_path: Path, name: str, seed: str, pack_mib: int = 1) -> Workspace:
    root = tmp_path / name
    root.mkdir()
    init_workspace(str(root), None, pack_target=pack_mib * MiB)
    ws = Workspace(str(root))
    make_data(root / "data", seed, big=3 * MiB)
    ws.add(str(root / "data"))
    ws.commit([], "v1")
    return ws


def test_damaged_source_bytes_are_never_copied(tmp_path: Path) -> None:
    """A chunk of the source that does not match its id stops the copy before any version
    is published in the destination."""
    ws = _workspace(tmp_path, "ws", "s")
    packs = Path(ws.store.backend.root) / "packs"
    victim = max((p for p in packs.iterdir() if is_object_id(p.name)), key=os.path.getsize)
    data = bytearray(victim.read_bytes())
    data[100] ^= 0xFF
    victim.write_bytes(bytes(data))
    dst = store_at(str(tmp_path / "remote"))
    with pytest.raises(IntegrityError):
        copy_versions(ws.store, dst, [("data", 1)])
    assert versions.version_numbers(dst, "data") == []


def test_a_condemned_destination_pack_is_written_anew(tmp_path: Path) -> None:
    """Packs an interrupted copy left in the destination that a gc run then condemned are
    not reused: the copy deletes and stores them again, so gc's deletion misses them."""
    ws = _workspace(tmp_path, "ws", "g")
    remote = tmp_path / "remote"
    dst = store_at(str(remote))
    copy_versions(ws.store, dst, [("data", 1)])
    (remote / "versions" / "data" / "1.json").unlink()  # as if the copy had stopped there
    condemned = sorted(ObjectId(n) for n in pack_sizes(remote))
    record = encode_gc_record(GcRecord("2026-01-01T00:00:00Z", tuple(condemned), ()))
    (remote / "gc").mkdir()
    (remote / "gc" / object_id(record)).write_bytes(record)
    for name in condemned:
        os.utime(remote / "packs" / name, (1_000_000, 1_000_000))
    report = copy_versions(ws.store, store_at(str(remote)), [("data", 1)])
    assert report.packs_present == 0
    assert report.packs_copied == len(condemned)
    assert all((remote / "packs" / n).stat().st_mtime > 1_000_000 for n in condemned)
    assert fsck(store_at(str(remote))).ok


def test_tags_and_forgotten_versions(tmp_path: Path) -> None:
    """A tag naming a copied version is copied; one that differs in the destination is
    left and reported; a forgotten version is not copied."""
    ws = _workspace(tmp_path, "ws", "t")
    write(Path(ws.root) / "data" / "more", b"more")
    ws.add(str(Path(ws.root) / "data"))
    ws.commit([], "v2")
    ws.store.backend.replace("tags/data/best", b"2\n")
    ws.store.backend.replace("tags/data/old", b"2\n")
    remote = tmp_path / "remote"
    dst = store_at(str(remote))
    dst.backend.create_exclusive("datavc.json", ws.store.config.encode())
    dst.backend.replace("tags/data/old", b"1\n")
    versions.forget_version(ws.store, "data", 1, "me", "2026-01-01T00:00:00Z")
    report = copy_versions(ws.store, store_at(str(remote)), [("data", 1), ("data", 2)])
    assert report.copied == ["data@v2"]
    assert report.forgotten_here == ["data@v1"]
    assert report.tags_copied == ["data@best"]
    assert any("tag data@old" in n for n in report.notes)
    assert (remote / "tags" / "data" / "old").read_bytes() == b"1\n"
    assert not (remote / "versions" / "data" / "1.json").exists()


def test_other_chunker_parameters_are_refused(tmp_path: Path) -> None:
    ws = _workspace(tmp_path, "ws", "p")
    remote = tmp_path / "remote"
    other = StoreConfig(ChunkerParams(avg_size=16384, min_size=4096, max_size=65536))
    ChunkStore.create(Backend(str(remote)), other)
    with pytest.raises(UsageError, match="other parameters"):
        copy_versions(ws.store, store_at(str(remote)), [("data", 1)])
    assert not (remote / "packs").exists()


def test_a_diverged_version_is_named_in_the_error(tmp_path: Path) -> None:
    one, two = _workspace(tmp_path, "one", "x"), _workspace(tmp_path, "two", "y")
    dst = store_at(str(tmp_path / "remote"))
    copy_versions(one.store, dst, [("data", 1)])
    with pytest.raises(Diverged) as err:
        copy_versions(two.store, dst, [("data", 1)])
    assert err.value.versions == ("data@v1",)
