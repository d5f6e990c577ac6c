"""Reading Parquet through ``datavc.open`` with pyarrow, then exiting (issue 15, item 5).

pyarrow's threads drop the files, handler and buffers they took from a datavc filesystem a
moment after a read returns, and need the GIL for it; if the interpreter is finalizing by
then, the process aborts (``terminate called without an active exception``) or hangs at
exit. datavc's exit hook (``datavc.fs.native``) lets them finish first. These tests run the
README's usage in fresh processes, outside any workspace, and check that they exit cleanly.
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import datavc
from datavc.workspace.core import Workspace
from datavc.workspace.initialize import init_workspace

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

ROWS = 60_000
PART_ROWS = 2_000

# Every read the README shows, then one of them again as the program's last act, after
# which the main thread holds the GIL until exit: a long switch interval and a CPU-bound
# tail keep it from yielding, so whatever pyarrow's threads still owe is left for
# finalization. That is the end of an ordinary run in which the read finishes just before
# the script does; held open here, about half the runs abort or hang without the hook.
SCRIPT = """
import sys
import datavc
import pandas as pd
import pyarrow.dataset as ds
import pyarrow.parquet as pq

store, last, rows, part_rows = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
fs = datavc.open("tables@v1", store=store)


def read(how):
    if how == "read_table":
        n, want = pq.read_table("train.parquet", filesystem=fs).num_rows, rows
    elif how == "read_parquet":
        n, want = len(pd.read_parquet("train.parquet", filesystem=fs)), rows
    elif how == "url":
        n, want = len(pd.read_parquet("datavc://tables@v1/train.parquet")), rows
    else:
        n, want = ds.dataset("parts", filesystem=fs).to_table().num_rows, 3 * part_rows
    assert n == want, (how, n, want)


for how in ("read_table", "read_parquet", "url", "dataset"):
    read(how)
sys.setswitchinterval(60)
read(last)
sum(range(2_000_000))
"""

LAST = ["read_table", "read_parquet", "url", "dataset"] * 2


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A store with tables@v1: train.parquet (several row groups) and three parts."""
    import numpy as np

    ws = tmp_path / "ws"
    ws.mkdir()
    monkeypatch.chdir(ws)
    url = str(tmp_path / "store")
    init_workspace(".", url)
    rng = np.random.default_rng(5)
    table = pa.table(
        {
            "id": np.arange(ROWS, dtype=np.int64),
            "x": rng.standard_normal(ROWS),
            "label": rng.integers(0, 10, ROWS),
        }
    )
    data = ws / "data" / "tables"
    (data / "parts").mkdir(parents=True)
    pq.write_table(table, data / "train.parquet", row_group_size=ROWS // 6)
    for i in range(3):
        pq.write_table(table.slice(i * PART_ROWS, PART_ROWS), data / "parts" / f"p{i}.parquet")
    found = Workspace.find(str(ws))
    found.add(str(data))
    published, _ = found.commit([], "tables")
    assert [(r.name, r.version) for r in published] == [("tables", 1)]
    return url


def test_documented_reads_exit_cleanly(store: str, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"  # not a workspace
    elsewhere.mkdir()
    env = {**os.environ, "DATAVC_STORE": store, "PYTHONFAULTHANDLER": "1"}

    def one(last: str) -> tuple[str, int | None, str]:
        args = [sys.executable, "-c", SCRIPT, store, last, str(ROWS), str(PART_ROWS)]
        try:
            proc = subprocess.run(
                args, cwd=elsewhere, env=env, capture_output=True, text=True, timeout=60
            )
        except subprocess.TimeoutExpired:
            return last, None, "hung at exit (60 s)"
        return last, proc.returncode, proc.stderr

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(one, LAST))
    failed = [r for r in results if r[1] != 0 or "terminate called" in r[2]]
    assert not failed, f"{len(failed)} of {len(results)} runs did not exit cleanly: {failed}"
    assert time.monotonic() - started < 60


def test_a_released_file_is_freed_at_once(store: str) -> None:
    """No reference cycle: a file pyarrow drops goes then, not at the next gc pass (the
    exit hook watches for exactly that)."""
    from datavc.fs import native

    fs = datavc.open("tables@v1", store=store)
    gc.disable()
    try:
        f = fs.open("train.parquet")
        assert f.read(4) == b"PAR1"
        assert any(x is f for x in native.live())
        ref = weakref.ref(f)
        del f
        assert ref() is None
    finally:
        gc.enable()


def test_only_files_native_code_holds_are_waited_for(store: str) -> None:
    """Files the program refers to (here from a dict, as from its module's globals at
    exit) are not; one only a pyarrow reader holds is."""
    from datavc.fs import native

    fs = datavc.open("tables@v1", store=store)
    kept = {"open": fs.open("train.parquet")}
    with fs.open("parts/p0.parquet") as f:
        kept["closed"] = f
    del f
    in_pyarrow = pq.ParquetFile("parts/p1.parquet", filesystem=fs)  # holds its file in C++
    live = native.live()
    held = [ref() for ref in native.held_natively(live)]
    for f in kept.values():
        assert any(x is f for x in live)
    assert [f.path for f in held if f is not None and f.fs is fs] == ["parts/p1.parquet"]
    assert in_pyarrow.metadata.num_rows == PART_ROWS


def test_the_hook_is_bounded(store: str) -> None:
    """A file a live pyarrow object keeps (released by the main thread at finalization) is
    waited for LIMIT at most; nothing held: GRACE only."""
    from datavc.fs import native

    fs = datavc.open("tables@v1", store=store)
    started = time.monotonic()
    native.settle()
    assert time.monotonic() - started < native.LIMIT
    in_pyarrow = pq.ParquetFile("parts/p2.parquet", filesystem=fs)
    started = time.monotonic()
    native.settle()
    waited = time.monotonic() - started
    assert native.LIMIT <= waited < native.LIMIT + native.GRACE + 1.0
    assert in_pyarrow.metadata.num_rows == PART_ROWS
