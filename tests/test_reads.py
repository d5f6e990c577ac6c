"""Fast small reads (issue 15, items 2 and 3): chunks read are kept for the process and shared
by every file and filesystem in it; ``cat_ranges`` reads each chunk under its ranges once,
neighbours coalesced into one ranged read; ``block_size`` and ``cache_type`` are honoured."""

from __future__ import annotations

import pickle
import random
from pathlib import Path
from typing import Any

import pytest
from helpers import forget_reads, rand
from test_api import commit, io_of, make_workspace

import datavc
from datavc.errors import IntegrityError, NotFoundError
from datavc.fs import file as file_module
from datavc.store.reader import CHUNKS

KiB, MiB = 1 << 10, 1 << 20


@pytest.fixture(autouse=True)
def new_process() -> None:
    forget_reads()


@pytest.fixture
def big(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store_url: str) -> tuple[Any, dict]:
    """A snapshot of two files (6 MiB and 700 KiB, ~64 KiB chunks), opened from elsewhere."""
    sc = make_workspace(tmp_path, monkeypatch, store_url)
    files = {"big.bin": rand("big", 6 * MiB), "small.bin": rand("small", 700 * KiB)}
    commit(sc.ws, "data/b", files, "v1")
    monkeypatch.chdir(sc.elsewhere)
    return datavc.open("b@v1", store=store_url), files


def test_a_chunk_read_once_is_not_read_again_in_the_process(big: tuple[Any, dict]) -> None:
    fs, files = big
    with io_of(fs) as first, fs.open("big.bin") as f:
        f.seek(3 * MiB)
        assert f.read(4 * KiB) == files["big.bin"][3 * MiB : 3 * MiB + 4 * KiB]
    assert first.range_reads >= 1
    # another handle, cat_file, and a copy unpickled in the process: nothing read again
    copy = pickle.loads(pickle.dumps(fs))
    with io_of(fs) as again, io_of(copy) as copied:
        with fs.open("big.bin") as f:
            f.seek(3 * MiB + 100)
            assert f.read(1000) == files["big.bin"][3 * MiB + 100 : 3 * MiB + 1100]
        assert (
            fs.cat_file("big.bin", 3 * MiB, 3 * MiB + 10)
            == files["big.bin"][3 * MiB : 3 * MiB + 10]
        )
        assert (
            copy.cat_file("big.bin", 3 * MiB + 5, 3 * MiB + 50)
            == files["big.bin"][3 * MiB + 5 : 3 * MiB + 50]
        )
    assert (again.reads, copied.reads) == (0, 0)
    # bounded: a file larger than the cache read whole leaves it within its limit
    assert CHUNKS.size <= CHUNKS.limit


def test_the_chunk_cache_is_bounded(monkeypatch: pytest.MonkeyPatch, big: tuple[Any, dict]) -> None:
    fs, files = big
    monkeypatch.setattr(CHUNKS, "limit", 1 * MiB)
    assert fs.cat_file("big.bin") == files["big.bin"]
    assert 0 < CHUNKS.size <= 1 * MiB


def test_cat_ranges_reads_each_chunk_once_and_answers_each_range(big: tuple[Any, dict]) -> None:
    fs, files = big
    rng = random.Random(5)
    paths, starts, ends = [], [], []
    for _ in range(300):
        name = rng.choice(["big.bin", "small.bin"])
        size = len(files[name])
        lo = rng.randrange(0, size)
        paths.append(name)
        starts.append(lo)
        ends.append(min(size, lo + rng.choice([1, 4 * KiB, 100 * KiB])))
    # fsspec's conventions: None, negative offsets, an empty range, a range past the end
    paths += ["big.bin", "small.bin", "small.bin", "big.bin"]
    starts += [None, -100, 50, 6 * MiB - 10]
    ends += [10, None, 50, 6 * MiB + 500]
    with io_of(fs) as io:
        got = fs.cat_ranges(paths, starts, ends)
    for p, s, e, g in zip(paths, starts, ends, got, strict=True):
        assert g == files[p][s:e], (p, s, e)
    # each stored chunk fetched once at most: no more bytes than the two files hold
    assert io.bytes_read <= sum(len(d) for d in files.values()) + 64 * KiB
    # adjacent chunks coalesced: far fewer reads than ranges
    assert io.range_reads < 100, io.range_reads


def test_adjacent_ranges_are_one_ranged_read(big: tuple[Any, dict]) -> None:
    fs, files = big
    starts = list(range(2 * MiB, 3 * MiB, 4 * KiB))
    ends = [s + 4 * KiB for s in starts]
    with io_of(fs) as io:
        got = fs.cat_ranges(["big.bin"] * len(starts), starts, ends)
    assert b"".join(got) == files["big.bin"][2 * MiB : 3 * MiB]
    assert io.range_reads <= 2, io.keys  # one run, two if it straddles a pack
    assert io.bytes_read <= 1 * MiB + 2 * 256 * KiB


def test_cat_ranges_errors_are_returned_or_raised(big: tuple[Any, dict]) -> None:
    fs, files = big
    got = fs.cat_ranges(["small.bin", "nosuch.bin", "small.bin"], [0, 0, 10], [5, 5, 20])
    assert got[0] == files["small.bin"][:5] and got[2] == files["small.bin"][10:20]
    assert isinstance(got[1], NotFoundError)
    with pytest.raises(NotFoundError):
        fs.cat_ranges(["small.bin", "nosuch.bin"], [0, 0], [5, 5], on_error="raise")
    with pytest.raises(ValueError):
        fs.cat_ranges(["small.bin"], [0, 1], [5])


def test_a_damaged_chunk_fails_its_ranges_only(
    big: tuple[Any, dict], monkeypatch: pytest.MonkeyPatch
) -> None:
    fs, files = big
    bad = fs.entry("big.bin").chunks[0][0]
    real = fs.chunks._reader()._read_run

    def damaged(run: Any) -> list[bytes]:
        if any(cid == bad for cid, _ in run):
            raise IntegrityError("packs/x", bad.hex(), "0" * 64, what="chunk")
        out: list[bytes] = real(run)
        return out

    monkeypatch.setattr(fs.chunks._reader(), "_read_run", damaged)
    got = fs.cat_ranges(["big.bin", "small.bin"], [0, 0], [10, 10])
    assert isinstance(got[0], IntegrityError)
    assert got[1] == files["small.bin"][:10]
    with pytest.raises(IntegrityError):
        fs.cat_ranges(["big.bin"], [0], [10], on_error="raise")


def test_block_size_and_cache_type_are_honoured(
    big: tuple[Any, dict], monkeypatch: pytest.MonkeyPatch
) -> None:
    fs, files = big
    fetched: list[tuple[int, int]] = []
    real = file_module.DatavcFile._fetch_range

    def counting(self: Any, start: int, end: int, ahead: int = 0) -> bytes:
        fetched.append((start, end))
        out: bytes = real(self, start, end, ahead)
        return out

    monkeypatch.setattr(file_module.DatavcFile, "_fetch_range", counting)
    with fs.open("big.bin", block_size=1 * MiB, cache_type="readahead") as f:
        assert f.blocksize == 1 * MiB and f.cache.name == "readahead"
        for i in range(10):
            assert f.read(1000) == files["big.bin"][i * 1000 : (i + 1) * 1000]
    assert len(fetched) == 1 and fetched[0][1] - fetched[0][0] >= 1 * MiB
    fetched.clear()
    with fs.open("big.bin") as f:  # the default: no fsspec cache, every read to the chunks
        assert f.cache.name == "none"
        for i in range(10):
            assert f.read(1000) == files["big.bin"][i * 1000 : (i + 1) * 1000]
    assert len(fetched) == 10 and all(e - s == 1000 for s, e in fetched)
    fetched.clear()
    with fs.open("big.bin", block_size=256 * KiB, cache_type="blockcache") as f:
        f.seek(5 * MiB)
        assert f.read(10) == files["big.bin"][5 * MiB : 5 * MiB + 10]
    assert fetched == [(5 * MiB, 5 * MiB + 256 * KiB)]


def test_a_small_file_read_whole_is_one_ranged_read_and_is_not_kept(
    big: tuple[Any, dict],
) -> None:
    """A file of several chunks read whole (a DataLoader's item): its chunks, stored
    together, come in one ranged read, each checked; an epoch does not churn the cache."""
    fs, files = big
    assert len(fs.entry("small.bin").chunks) > 3
    with io_of(fs) as io, fs.open("small.bin") as f:
        assert f.read() == files["small.bin"]
        assert f.tell() == len(files["small.bin"]) and f.read() == b""
    assert io.range_reads == 1 and io.bytes_read == len(files["small.bin"])
    assert CHUNKS.size == 0
    with io_of(fs) as io:
        assert fs.cat_file("small.bin") == files["small.bin"]
        assert fs.cat_file("small.bin", 10, -10) == files["small.bin"][10:-10]
    assert io.range_reads == 1 + 1  # a part: through the chunk cache, which keeps it
    assert CHUNKS.size > 0


def test_a_file_keeps_the_conventions_of_a_python_file(big: tuple[Any, dict]) -> None:
    fs, files = big
    data = files["small.bin"]
    f = fs.open("small.bin")
    assert f.read(0) == b"" and f.read(None)[:10] == data[:10] and f.read(5) == b""
    f.seek(-20, 2)
    assert f.tell() == len(data) - 20 and f.read(100) == data[-20:]
    f.seek(7)
    buf = bytearray(9)
    assert f.readinto(buf) == 9 and bytes(buf) == data[7:16]
    f.close()
    with pytest.raises(ValueError):
        f.read()
    with fs.open("small.bin", "rb", cache_type="bytes") as g:
        g.seek(100)
        assert g.read(50) == data[100:150] and g.cache.name == "bytes"
    with fs.open("small.bin", "r", encoding="latin-1") as t:
        assert t.read(3) == data[:3].decode("latin-1")


def test_a_sequential_reader_of_a_remote_file_is_read_ahead(big: tuple[Any, dict]) -> None:
    """Small reads that go on where the last ended: on a remote store, the chunks ahead come
    in a few parallel batches, not a request per read; local stores read as asked."""
    fs, files = big
    data = files["big.bin"]
    with io_of(fs) as io, fs.open("big.bin") as f:
        got = b"".join(iter(lambda: f.read(64 * KiB), b""))
    assert got == data
    reads = len(data) // (64 * KiB)  # 96
    if fs.chunks.backend.is_local:
        assert io.range_reads >= reads // 2  # a chunk at a time (~64 KiB each)
    else:
        assert io.range_reads <= 12, io.range_reads  # 1, 2, 4 MiB windows: a few batches
        assert io.bytes_read <= len(data) + 64 * KiB  # nothing fetched twice
