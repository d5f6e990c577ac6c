"""add never believes the index alone (issue 12, item 2): a chunk counts as stored only if
its pack exists and the pack's footer lists it there, so re-adding the original files heals
a store that lost a pack, or whose index points chunks where they are not."""

from __future__ import annotations

import shutil
from pathlib import Path

from helpers import rand, run, tree_state, write
from test_fsck import backend

from datavc.format.packfile import Location, LocationTable, decode_index
from datavc.store.check import fsck
from datavc.store.chunkstore import ChunkStore


def make_repo(tmp_path: Path, url: str) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    run(root, "init", "--store", url)
    for i in range(4):
        write(root / "data" / "d" / f"f{i}.bin", rand(("heal", i), 150_000))
    run(root, "add", "data/d")
    run(root, "commit", "-m", "v1")
    return root


def test_readding_restores_a_lost_pack(tmp_path: Path, shared_store_url: str) -> None:
    repo = make_repo(tmp_path, shared_store_url)
    want = tree_state(repo / "data" / "d")
    b = backend(repo)
    for info in b.list_detail("packs"):
        b.delete(f"packs/{info.name}")
    shutil.rmtree(repo / ".datavc" / "cache", ignore_errors=True)
    assert not ChunkStore.open(b).backend.list("packs")
    proc = run(repo, "add", "data/d")  # the files and the stat cache are unchanged
    assert "new data stored: 0 B" not in proc.stdout, proc.stdout
    assert fsck(ChunkStore.open(backend(repo))).ok
    shutil.rmtree(repo / "data" / "d")
    shutil.rmtree(repo / ".datavc" / "cache", ignore_errors=True)
    run(repo, "checkout", "d@v1")
    assert tree_state(repo / "data" / "d") == want


def test_an_index_that_lies_is_not_believed(tmp_path: Path) -> None:
    """An index that places every chunk one byte off in its (intact) pack: add stores the
    chunks again, and writes an index that places them right; fsck names the liar."""
    repo = make_repo(tmp_path, str(tmp_path / "store"))
    b = backend(repo)
    (index,) = b.list("index")
    places = decode_index(b.read(f"index/{index}"), "index")
    assert all(loc.codec == 0 for loc in places.values()), "premise: random data is stored raw"
    lying = LocationTable()
    for cid, loc in places.items():
        lying.put(cid, Location(loc.pack, loc.offset + 1, loc.stored_length, loc.plain_length, 0))
    b.delete(f"index/{index}")
    lie = ChunkStore.open(b).write_object("index", b"".join(lying.encode_index()))
    write(repo / "data" / "d" / "f0.bin", rand(("heal", 0), 150_000))  # same bytes, new mtime
    run(repo, "add", "data/d")
    assert sorted(b.list("index")) == sorted([lie, index]), "the true index is written again"
    report = fsck(ChunkStore.open(b))
    assert list(report.problems) == [f"index/{lie}"], [p.line() for p in report.problems.values()]
    assert "where its footer does not" in report.problems[f"index/{lie}"].message


def test_a_damaged_index_or_record_does_not_stop_later_commits(tmp_path: Path) -> None:
    """One damaged index, and one damaged record among the newest: add and commit go on
    (the index is skipped, its chunks stored again if needed; the record is no nonce of
    ours), fsck names both, repair replaces the index."""
    repo = make_repo(tmp_path, str(tmp_path / "store"))
    b = backend(repo)
    fake = "ab" * 32
    b.write(f"index/{fake}", b"DVCIDX\x00\x01 not what its name says")
    write(repo / "data" / "d" / "more.bin", rand("more", 100_000))
    run(repo, "add", "data/d")
    run(repo, "commit", "-m", "v2")
    b.write("versions/d/3.json", b'{"type": "datavc-version"')  # cut short
    write(repo / "data" / "d" / "more.bin", rand("more2", 100_000))
    run(repo, "add", "data/d")
    assert "d@v4" in run(repo, "commit", "-m", "v4").stdout
    report = fsck(ChunkStore.open(b))
    assert sorted(report.problems) == [f"index/{fake}", "versions/d/3.json"], report.problems
    out = run(repo, "repair", code=6).stdout  # a damaged record is not repair's to rewrite
    assert "still damaged: versions/d/3.json" in out and fake not in out
    assert fake not in b.list("index")
    shutil.rmtree(repo / "data" / "d")
    run(repo, "checkout", "d@v4")
    assert (repo / "data" / "d" / "more.bin").read_bytes() == rand("more2", 100_000)
