"""Checkout and materialize a tree page at a time (issue 16): the snapshot's pages are
decoded one after another beside a scan of the folder, the stat cache is read a group at a
time, the pages' hints are used where they are and never given to the store, and a shard
takes every n-th file of the whole snapshot across pages."""

from __future__ import annotations

import os
import time
import types
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import write

import datavc
from datavc.errors import UsageError
from datavc.format.hashing import ChunkId
from datavc.format.packfile import Location
from datavc.store import reader
from datavc.store.files import iter_scan
from datavc.workspace import checkout, statcache
from datavc.workspace.core import Workspace
from datavc.workspace.initialize import init_workspace

N = 9000  # files: about four pages at the natural cut rate (1 in 2048)


@pytest.fixture
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Workspace]:
    # a clock 10 s ahead: no file is within the racy window, so every row is trusted
    ahead = types.SimpleNamespace(time_ns=lambda: time.time_ns() + 10 * 10**9)
    monkeypatch.setattr(statcache, "time", ahead)
    root = tmp_path / "ws"
    root.mkdir()
    init_workspace(str(root), str(tmp_path / "store"))
    yield Workspace(str(root))


def content(i: int, version: int = 1) -> bytes:
    return b"file %d v%d\n" % (i, version)


def many(folder: Path, n: int = N) -> None:
    for i in range(n):
        write(folder / f"{i // 100:03d}" / f"{i:05d}.txt", content(i))


def files_of(folder: Path) -> dict[str, bytes]:
    return {f.path: Path(f.abspath).read_bytes() for f in iter_scan(str(folder), "dir")}


class _Page(list[Any]):
    """A page's entry list that a weak reference can follow (a plain list cannot)."""


class _Hints(dict[Any, Any]):
    """A page's hints, likewise."""


def test_checkout_holds_a_page_at_a_time_and_keeps_no_hints_in_the_store(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = Path(ws.root) / "d"
    many(data)
    first = ws.add(str(data))
    ws.commit([first.staged.name], "v1")
    v1 = files_of(data)
    for i in range(0, N, 700):  # a file changed in every page, some removed, some new
        (data / f"{i // 100:03d}" / f"{i:05d}.txt").write_bytes(content(i, 2))
    for i in range(5, N, 1500):
        os.unlink(data / f"{i // 100:03d}" / f"{i:05d}.txt")
    write(data / "new" / "a.txt", b"new\n")
    second = Workspace(ws.root).add(str(data))
    ws.commit([second.staged.name], "v2")
    v2 = files_of(data)
    assert len(second.staged.root.pages) >= 3, "premise: several pages"

    alive: list[weakref.ref[Any]] = []
    most = 0
    real = checkout.decoded_page

    def decoded_page(store: Any, page: Any) -> Any:
        nonlocal most
        entries, hints = real(store, page)
        tracked = _Page(entries), _Hints(hints)
        alive.extend(weakref.ref(part) for part in tracked)
        most = max(most, sum(ref() is not None for ref in alive))
        return tracked

    def all_rows(self: statcache.StatCache) -> None:
        raise AssertionError("checkout read the whole stat cache at once")

    monkeypatch.setattr(checkout, "decoded_page", decoded_page)
    monkeypatch.setattr(statcache.StatCache, "all_rows", all_rows)
    fresh = Workspace(ws.root)
    [result] = fresh.checkout(["d@v1"])
    assert files_of(data) == v1
    assert result.files == len(v1) and 0 < result.written < 50  # only what v2 changed
    assert len(alive) == 2 * len(first.staged.root.pages)
    assert len(fresh.store._hints._rows) == 0, "the pages' hints were given to the store"
    assert not [k for k in fresh.store.backend.stats.read_keys if k.startswith("index/")]
    # back to v2, whose changed files sit side by side in one pack (one run of reads
    # spanning every page): still a page or two at a time
    again = Workspace(ws.root)
    [back] = again.checkout(["d@v2"])
    assert files_of(data) == v2 and back.written < 50
    assert len(alive) == 2 * (len(first.staged.root.pages) + len(second.staged.root.pages))
    assert most <= 2 * 2, f"{most // 2} pages held at once"
    # the cache the checkout left says the folder is v2: status reads no page
    look = Workspace(ws.root)
    assert [s.state for s in look.status()] == ["clean"]
    assert not [k for k in look.store.backend.stats.read_keys if k.startswith("trees/")]


@pytest.mark.parametrize("size", [200_000, 3 << 20])  # read whole, and streamed (STREAM_MIN)
def test_a_single_file_snapshot_is_fetched_through_its_pages_hints(
    ws: Workspace, size: int
) -> None:
    """A file dataset's chunks are found through its page's hints, as a folder's are: a
    fresh checkout reads the record, the page and the pack, and no index (a listing and
    a GET more, each a round trip to a remote store)."""
    path = Path(ws.root) / "data" / "table.bin"
    body = os.urandom(size)
    write(path, body)
    added = ws.add(str(path), "table")
    ws.commit([added.staged.name], "v1")
    os.unlink(path)
    fresh = Workspace(ws.root)
    [result] = fresh.checkout([])
    assert result.written == 1 and path.read_bytes() == body
    assert not fresh.store._indexes_loaded
    assert not [k for k in fresh.store.backend.stats.read_keys if k.startswith("index/")]


def test_a_checkout_over_local_edits_refuses_only_content_stored_nowhere(ws: Workspace) -> None:
    data = Path(ws.root) / "d"
    many(data, 5000)
    first = ws.add(str(data))
    ws.commit([first.staged.name], "v1")
    # a file taking another file's committed content: stored, so checkout may drop it
    (data / "040" / "04001.txt").write_bytes(content(12))
    os.unlink(data / "000" / "00007.txt")
    write(data / "zz" / "copy.txt", content(4999))
    Workspace(ws.root).checkout(["d@v1"])
    assert (data / "040" / "04001.txt").read_bytes() == content(4001)
    assert (data / "000" / "00007.txt").read_bytes() == content(7)
    assert not (data / "zz").exists()
    # content in no version: refused, and nothing changes
    (data / "030" / "03003.txt").write_bytes(b"only here\n")
    before = files_of(data)
    with pytest.raises(UsageError, match=r"030/03003\.txt has changes"):
        Workspace(ws.root).checkout(["d@v1"])
    assert files_of(data) == before


def test_a_staged_snapshot_is_not_dropped_unasked(ws: Workspace) -> None:
    data = Path(ws.root) / "d"
    many(data, 3000)
    first = ws.add(str(data))
    ws.commit([first.staged.name], "v1")
    (data / "010" / "01001.txt").write_bytes(b"staged only\n")
    Workspace(ws.root).add(str(data))
    (data / "010" / "01001.txt").write_bytes(content(1001))  # the folder is v1 again
    with pytest.raises(UsageError, match=r"010/01001.txt \(added, not committed\)"):
        Workspace(ws.root).checkout(["d@v1"])


def test_shards_split_the_whole_snapshot_across_pages(ws: Workspace, tmp_path: Path) -> None:
    data = Path(ws.root) / "d"
    many(data)
    first = ws.add(str(data))
    ws.commit([first.staged.name], "v1")
    assert len(first.staged.root.pages) >= 3, "premise: several pages"
    everything = sorted(files_of(data))
    store = str(tmp_path / "store")
    out = tmp_path / "out"
    for i in range(3):
        written = datavc.materialize("d@v1", str(out / str(i)), shard=(i, 3), store=store)
        got = sorted(files_of(out / str(i)))
        assert got == everything[i::3] and written == len(got)
    for i in range(3):  # all three into one folder: the snapshot
        datavc.materialize("d@v1", str(out / "all"), shard=(i, 3), store=store)
    assert files_of(out / "all") == files_of(data)
    assert datavc.materialize("d@v1", str(out / "none"), shard=(N + 5, N + 6), store=store) == 0


def test_a_run_of_tiny_chunks_is_cut_at_its_chunk_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reader, "RUN_CHUNKS", 10)
    pack = "ab" * 32
    located = [
        (ChunkId(bytes([i]) * 32), Location(pack, 15 * i, 15, 15, 0))  # type: ignore[arg-type]
        for i in range(25)
    ]
    runs = list(reader.group(located))
    assert [len(r) for r in runs] == [10, 10, 5]
    assert [c for r in runs for c in r] == located
