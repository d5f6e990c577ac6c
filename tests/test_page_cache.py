"""Tree pages kept per process (issue 15, item 3, in part): a filesystem that is not listed
reads a page once for every file it opens in it, not once per file; copies unpickled in the
same process (a DataLoader worker) and other filesystems of the process share the pages; a
worker process reads each page at most once. The cache is bounded, and fsck never uses it.
Counted in store reads, on the local store and on S3 (moto server)."""

from __future__ import annotations

import multiprocessing
import pickle
from pathlib import Path
from typing import Any

import pytest
from helpers import forget_reads, run, write

import datavc
from datavc.store.trees import PAGES, PageCache

FILES = 1000  # tiny files, in one tree page (a page holds up to 65,536)


def page_reads(fs: Any) -> int:
    return sum(1 for k in fs.chunks.backend.stats.read_keys if k.startswith("trees/"))


@pytest.fixture
def snapshot(tmp_path: Path, shared_store_url: str) -> str:
    root = tmp_path / "ws"
    root.mkdir()
    run(root, "init", "--store", shared_store_url)
    for i in range(FILES):
        write(root / "d" / f"f{i:05d}.txt", f"file {i}\n".encode())
    run(root, "add", "d")
    run(root, "commit", "-m", "v1")
    forget_reads()  # this test counts reads
    return shared_store_url


def test_an_unlisted_filesystem_reads_each_page_once(snapshot: str) -> None:
    fs = datavc.open("d@v1", store=snapshot)
    pages = len(fs.tree.pages)
    assert pages == 1
    for i in range(0, FILES, 7):
        assert fs.cat_file(f"f{i:05d}.txt") == f"file {i}\n".encode()
    assert page_reads(fs) == pages  # 143 files opened: the page read once
    copy = pickle.loads(pickle.dumps(fs))  # what a DataLoader worker gets
    other = datavc.open("d@v1", store=snapshot)
    for f in (copy, other):
        assert f.cat_file("f00001.txt") == b"file 1\n"
        assert f.cat_file(f"f{FILES - 1:05d}.txt") == f"file {FILES - 1}\n".encode()
        assert page_reads(f) == 0


def _worker(fs: Any, start: int, conn: Any) -> None:
    try:
        for i in range(start, FILES, 5):
            assert fs.cat_file(f"f{i:05d}.txt") == f"file {i}\n".encode()
        conn.send(page_reads(fs))
    except BaseException as err:
        conn.send(f"{type(err).__name__}: {err}")
    finally:
        conn.close()


def test_each_worker_process_reads_each_page_at_most_once(snapshot: str) -> None:
    """Two spawned workers (a DataLoader with num_workers=2 under spawn) each open 200
    files through a pickled filesystem."""
    fs = datavc.open("d@v1", store=snapshot)
    ctx = multiprocessing.get_context("spawn")
    results = []
    for start in (0, 1):
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_worker, args=(fs, start, child))
        proc.start()
        child.close()
        results.append(parent.recv())
        proc.join(60)
    assert results == [len(fs.tree.pages)] * 2, results


def test_the_cache_is_bounded() -> None:
    cache = PageCache(limit=100)
    cache.put("a", b"x" * 60)
    cache.put("b", b"y" * 30)
    assert cache.get("a") is not None  # a is now the most recently used
    cache.put("c", b"z" * 30)  # 120 > 100: the least recently used (b) goes
    assert cache.get("b") is None and cache.get("a") and cache.get("c")
    assert cache.size == 90
    cache.put("big", b"w" * 101)  # larger than the whole cache: not kept
    assert cache.get("big") is None and cache.size == 90


def test_fsck_reads_the_store_not_the_cache(tmp_path: Path) -> None:
    """A page damaged after a filesystem cached it is still found by fsck in the same
    process."""
    root = tmp_path / "ws"
    root.mkdir()
    run(root, "init")
    write(root / "d" / "a.txt", b"a\n")
    run(root, "add", "d")
    run(root, "commit", "-m", "v1")
    store = root / ".datavc" / "store"
    fs = datavc.open("d@v1", store=str(store))
    assert fs.cat_file("a.txt") == b"a\n"
    page = store / "trees" / fs.tree.pages[0].id
    assert PAGES.get(page.name) is not None
    page.write_bytes(page.read_bytes()[:-1] + b"\x00")
    from datavc.store.check import fsck
    from datavc.workspace.core import open_store

    report = fsck(open_store(str(store), {}, None))
    assert not report.ok
    assert any(page.name in obj for obj in report.problems), report.problems
