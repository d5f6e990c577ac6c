"""``datavc.open``: the read-only fsspec filesystem over one snapshot.

Data is set up with the Python layer (``init_workspace``, ``Workspace.add``/``commit``) and read
back through the public API from folders that are, and are not, a workspace, on every backend.
File contents are seeded random bytes, so compression hides nothing and failures reproduce.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import pickle
import random
import shutil
import stat
import subprocess
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fsspec
import pytest
from conftest import BUCKET
from helpers import forget_reads

import datavc
from datavc.errors import (
    BadInput,
    CorruptObject,
    DatavcError,
    IntegrityError,
    NotARepository,
    NotFoundError,
)
from datavc.store.files import TMP_PREFIX
from datavc.workspace.core import Workspace
from datavc.workspace.initialize import init_workspace

KiB = 1024
MiB = 1024 * KiB


# -- helpers --------------------------------------------------------------------------------


def rand(seed: int, n: int) -> bytes:
    return random.Random(seed).randbytes(n)


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def assert_bytes(got: bytes, want: bytes, what: str = "") -> None:
    """Compare without pytest rendering megabytes of repr on failure."""
    assert len(got) == len(want), f"{what}: {len(got)} bytes, expected {len(want)}"
    assert digest(got) == digest(want), f"{what}: same length, different bytes"


def write_files(root: Path, files: dict[str, bytes], executable: set[str] = frozenset()) -> None:
    """Make ``root`` hold exactly ``files`` (a clean folder each time)."""
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    for rel, data in files.items():
        p = root.joinpath(*rel.split("/"))
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        os.chmod(p, 0o755 if rel in executable else 0o644)


def commit(ws_root: Path, rel: str, files: dict[str, bytes], msg: str, executable=frozenset()):
    write_files(ws_root / rel, files, set(executable))
    ws = Workspace.find(str(ws_root))
    ws.add(str(ws_root / rel))
    published, _ = ws.commit([], msg)
    assert len(published) == 1
    return published[0]


def local_tree(root: Path) -> tuple[dict[str, bytes], set[str]]:
    """Files (path -> bytes) and folders under ``root``, as "/" paths."""
    files: dict[str, bytes] = {}
    dirs: set[str] = set()
    for current, dnames, fnames in os.walk(root):
        rel = os.path.relpath(current, root).replace(os.sep, "/")
        prefix = "" if rel == "." else rel + "/"
        for d in dnames:
            dirs.add(prefix + d)
        for f in fnames:
            files[prefix + f] = Path(current, f).read_bytes()
    return files, dirs


def raw_store(url: str) -> tuple[Any, str]:
    """An fsspec filesystem over the store, independent of datavc's Backend."""
    fs, root = fsspec.core.url_to_fs(url, skip_instance_cache=True)
    return fs, root.rstrip("/")


def pack_objects(url: str) -> dict[str, int]:
    """packs/<id> -> size, listed straight from the store."""
    fs, root = raw_store(url)
    out = {}
    for info in fs.ls(f"{root}/packs", detail=True):
        name = info["name"].rstrip("/").rsplit("/", 1)[-1]
        if not name.startswith("."):
            out[name] = int(info["size"])
    return out


def parent_dirs(paths) -> set[str]:
    out = set()
    for p in paths:
        parts = p.split("/")
        out.update("/".join(parts[:i]) for i in range(1, len(parts)))
    return out


@dataclass
class IO:
    reads: int = 0
    range_reads: int = 0
    bytes_read: int = 0
    keys: list[str] = field(default_factory=list)

    @property
    def pack_keys(self) -> list[str]:
        return [k for k in self.keys if k.startswith("packs/")]


@contextmanager
def io_of(fs: Any) -> Iterator[IO]:
    """The store I/O done inside the block (diff of the backend's counters)."""
    s = fs.chunks.backend.stats
    r0, rr0, b0, k0 = s.reads, s.range_reads, s.bytes_read, len(s.read_keys)
    out = IO()
    yield out
    out.reads = s.reads - r0
    out.range_reads = s.range_reads - rr0
    out.bytes_read = s.bytes_read - b0
    out.keys = list(s.read_keys[k0:])


# -- the shared scenario ----------------------------------------------------------------------

V1 = {
    "a.bin": rand(1, 1000),
    "empty.txt": b"",
    "sub/b.bin": rand(2, 300 * KiB),
    "sub/deep/c.bin": rand(3, 5),
    "sub/deep/run.sh": b"#!/bin/sh\n" + rand(4, 200),
    "z/only.bin": rand(5, 70 * KiB),
}
EXEC = {"sub/deep/run.sh"}
_b2 = bytearray(V1["sub/b.bin"])
_b2[150 * KiB : 150 * KiB + 100] = rand(6, 100)
V2 = {
    "a.bin": rand(7, 1500),
    "empty.txt": b"",
    "new/n.bin": rand(8, 40 * KiB),
    "sub/b.bin": bytes(_b2),
    "sub/deep/c.bin": V1["sub/deep/c.bin"],
    "sub/deep/run.sh": V1["sub/deep/run.sh"],
}


@dataclass
class Scenario:
    url: str
    ws: Path
    elsewhere: Path
    v1: Any
    v2: Any | None = None


@pytest.fixture(autouse=True)
def new_process() -> None:
    """Each test starts as a new process does: no page or chunk kept (content-addressed,
    they are shared by every store of the process, and tests write the same bytes)."""
    forget_reads()


@pytest.fixture
def url(store_url: str) -> Iterator[str]:
    """The store URL; the global memory filesystem is emptied afterwards."""
    yield store_url
    if store_url.startswith("memory://"):
        fs, root = raw_store(store_url)
        if fs.exists(root):
            fs.rm(root, recursive=True)


@pytest.fixture
def shared_url(shared_store_url: str) -> str:
    return shared_store_url


def make_workspace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store: str, pack_target: int = 32 * MiB
) -> Scenario:
    ws = tmp_path / "ws"
    ws.mkdir(exist_ok=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(ws)
    init_workspace(".", store, pack_target=pack_target)
    return Scenario(store, ws, elsewhere, None)


def scenario(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store: str, v2: bool) -> Scenario:
    sc = make_workspace(tmp_path, monkeypatch, store)
    sc.v1 = commit(sc.ws, "data/x", V1, "v1", EXEC)
    assert sc.v1.version == 1
    if v2:
        sc.v2 = commit(sc.ws, "data/x", V2, "v2", EXEC)
        assert sc.v2.version == 2
        assert sc.v2.tree != sc.v1.tree
    return sc


def check_snapshot(fs: Any, files: dict[str, bytes]) -> None:
    """Listing, metadata and content of ``fs`` match ``files`` exactly."""
    dirs = parent_dirs(files)
    # ls at the root: files and top folders, with types and sizes
    top_files = {p for p in files if "/" not in p}
    top_dirs = {p.split("/", 1)[0] for p in files if "/" in p}
    rows = fs.ls("", detail=True)
    assert sorted(r["name"] for r in rows) == sorted(top_files | top_dirs)
    for r in rows:
        if r["name"] in top_files:
            assert r["type"] == "file"
            assert r["size"] == len(files[r["name"]])
        else:
            assert r["type"] == "directory"
    # ls of every nested folder, without detail
    for d in dirs:
        children = set()
        for p in files:
            if p.startswith(d + "/"):
                children.add(d + "/" + p[len(d) + 1 :].split("/", 1)[0])
        assert sorted(fs.ls(d, detail=False)) == sorted(children), d
    # find: every file, recursively; and under one folder
    assert sorted(fs.find("")) == sorted(files)
    for d in dirs:
        assert sorted(fs.find(d)) == sorted(p for p in files if p.startswith(d + "/")), d
    # info, exists, isdir, isfile
    for p, data in files.items():
        info = fs.info(p)
        assert info["type"] == "file", p
        assert info["size"] == len(data), p
        assert fs.size(p) == len(data)
        assert fs.exists(p) and fs.isfile(p) and not fs.isdir(p), p
        assert bool(info["mode"] & 0o111) == (p in EXEC), (p, oct(info["mode"]))
    for d in dirs:
        assert fs.info(d)["type"] == "directory", d
        assert fs.isdir(d) and fs.exists(d) and not fs.isfile(d), d
    assert fs.isdir("")
    assert not fs.exists("no/such/file.bin")
    assert not fs.isdir("no/such")
    # content: open + read and cat give exactly the committed bytes
    for p, data in files.items():
        with fs.open(p, "rb") as f:
            assert_bytes(f.read(), data, f"open({p}).read()")
        assert_bytes(fs.cat(p), data, f"cat({p})")


# -- opening a snapshot -----------------------------------------------------------------------


def test_open_with_store_argument_outside_a_workspace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    sc = scenario(tmp_path, monkeypatch, url, v2=False)
    monkeypatch.chdir(sc.elsewhere)
    fs = datavc.open("x@v1", store=url)
    assert isinstance(fs, datavc.DatavcFileSystem)
    assert fs.snapshot == sc.v1.tree
    check_snapshot(fs, V1)


def test_open_via_datavc_store_env_outside_a_workspace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    sc = scenario(tmp_path, monkeypatch, url, v2=False)
    monkeypatch.chdir(sc.elsewhere)
    monkeypatch.setenv("DATAVC_STORE", url)
    fs = datavc.open("x@v1")
    assert fs.snapshot == sc.v1.tree
    check_snapshot(fs, V1)


def test_open_inside_the_workspace_finds_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    sc = scenario(tmp_path, monkeypatch, url, v2=False)
    monkeypatch.chdir(sc.ws / "data")  # a subfolder: the workspace is found above it
    fs = datavc.open("x@v1")
    assert fs.snapshot == sc.v1.tree
    check_snapshot(fs, V1)


def test_store_argument_wins_over_datavc_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    sc = scenario(tmp_path, monkeypatch, url, v2=False)
    monkeypatch.chdir(sc.elsewhere)
    empty = tmp_path / "not-a-store"
    empty.mkdir()
    monkeypatch.setenv("DATAVC_STORE", str(empty))
    with pytest.raises(NotARepository):
        datavc.open("x@v1")
    fs = datavc.open("x@v1", store=url)
    assert_bytes(fs.cat("sub/b.bin"), V1["sub/b.bin"])


def test_versions_latest_and_snapshot_prefix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    sc = scenario(tmp_path, monkeypatch, url, v2=False)
    monkeypatch.chdir(sc.elsewhere)
    pinned_latest = datavc.open("x@latest", store=url)
    pinned_v1 = datavc.open("x@v1", store=url)
    assert pinned_latest.snapshot == sc.v1.tree

    monkeypatch.chdir(sc.ws)
    sc.v2 = commit(sc.ws, "data/x", V2, "v2", EXEC)
    monkeypatch.chdir(sc.elsewhere)

    v1 = datavc.open("x@v1", store=url)
    v2 = datavc.open("x@v2", store=url)
    check_snapshot(v2, V2)
    check_snapshot(v1, V1)
    assert v1.cat("a.bin") != v2.cat("a.bin")
    assert v1.exists("z/only.bin") and not v2.exists("z/only.bin")
    assert v2.exists("new/n.bin") and not v1.exists("new/n.bin")
    # filesystems opened before v2 keep showing the snapshot they resolved
    assert_bytes(pinned_latest.cat("a.bin"), V1["a.bin"])
    assert_bytes(pinned_v1.cat("sub/b.bin"), V1["sub/b.bin"])
    # latest now means v2
    latest = datavc.open("x@latest", store=url)
    assert latest.snapshot == sc.v2.tree
    assert_bytes(latest.cat("sub/b.bin"), V2["sub/b.bin"])
    # a snapshot-id prefix picks the version with that snapshot
    for rec, files in ((sc.v1, V1), (sc.v2, V2)):
        prefix = rec.tree[:12]
        assert sc.v1.tree[:12] != sc.v2.tree[:12]
        by_prefix = datavc.open(f"x@{prefix}", store=url)
        assert by_prefix.snapshot == rec.tree
        assert_bytes(by_prefix.cat("a.bin"), files["a.bin"])
        assert sorted(by_prefix.find("")) == sorted(files)


def test_ranged_reads_and_seeks_return_the_right_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    sc = make_workspace(tmp_path, monkeypatch, url)
    data = rand(11, 1 * MiB + 12345)
    commit(sc.ws, "data/r", {"r.bin": data}, "v1")
    monkeypatch.chdir(sc.elsewhere)
    fs = datavc.open("r@v1", store=url)
    rng = random.Random(12)
    with fs.open("r.bin", "rb") as f:
        assert f.size == len(data)
        for _ in range(40):
            start = rng.randrange(0, len(data))
            n = rng.choice([1, 7, 1000, 70 * KiB, 300 * KiB])
            f.seek(start)
            assert f.tell() == start
            assert_bytes(f.read(n), data[start : start + n], f"read at {start}+{n}")
            assert f.tell() == min(start + n, len(data))
        f.seek(-10, 2)
        assert f.read() == data[-10:]
        assert f.read(5) == b""
        f.seek(0)
        assert_bytes(f.read(), data)
    assert fs.cat_file("r.bin", start=100, end=5000) == data[100:5000]
    assert fs.cat_file("r.bin", start=-300) == data[-300:]
    assert fs.cat_file("r.bin", start=len(data) - 5, end=len(data) + 100) == data[-5:]


# -- streaming: only the bytes a read needs ---------------------------------------------------


def test_one_file_of_a_shared_pack_is_read_by_range(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    sc = make_workspace(tmp_path, monkeypatch, url)
    rng = random.Random(21)
    files = {f"f{i:02d}.bin": rand(100 + i, rng.randrange(150 * KiB, 300 * KiB)) for i in range(24)}
    commit(sc.ws, "data/many", files, "v1")
    packs = pack_objects(url)
    assert len(packs) == 1, "premise: the files share one pack"
    pack_size = next(iter(packs.values()))
    assert pack_size >= sum(len(d) for d in files.values())
    monkeypatch.chdir(sc.elsewhere)

    # From a fresh filesystem: metadata is read whole, packs only by range.
    fs = datavc.open("many@v1", store=url)
    target = "f07.bin"
    with io_of(fs) as io, fs.open(target, "rb") as f:
        got = f.read()
    assert_bytes(got, files[target])
    assert io.pack_keys, "the file's bytes must come from a pack"
    assert all(k == f"packs/{next(iter(packs))}" for k in io.pack_keys)
    assert io.range_reads == len(io.pack_keys), "every pack read is ranged, nothing else is"
    assert io.reads - io.range_reads == len(io.keys) - len(io.pack_keys)
    assert io.bytes_read <= len(files[target]) + 64 * KiB, (io.bytes_read, pack_size)
    assert io.bytes_read < pack_size // 10

    # With the metadata loaded, the read itself costs one ranged read of the file's bytes.
    other = "f15.bin"
    fs.info(other)
    fs.chunks.load_index()
    with io_of(fs) as io, fs.open(other, "rb") as f:
        got = f.read()
    assert_bytes(got, files[other])
    assert io.reads == io.range_reads == 1, io.keys
    assert io.pack_keys == io.keys
    size = len(files[other])
    assert size <= io.bytes_read <= size + 4 * KiB, (io.bytes_read, size)


def test_open_and_read_one_file_is_three_store_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    """The version record (it holds the tree root), one tree page, one pack range: no store
    config, no index, no listing, however many pages the tree has."""
    monkeypatch.setattr("datavc.format.treecut.PAGE_MAX_ENTRIES", 10)
    sc = make_workspace(tmp_path, monkeypatch, url)
    files = {f"d{i % 3}/f{i:02d}.bin": rand(300 + i, 64 * KiB) for i in range(40)}
    rec = commit(sc.ws, "data/imgs", files, "v1")
    assert len(rec.root.pages) == 4, "premise: the tree has several pages"
    monkeypatch.chdir(sc.elsewhere)
    fs = datavc.open("imgs@v1", store=url)
    with fs.open("d1/f22.bin", "rb") as f:
        got = f.read()
    assert_bytes(got, files["d1/f22.bin"])
    stats = fs.chunks.backend.stats
    keys = stats.read_keys
    assert stats.reads == 3, keys
    assert keys[0] == "versions/imgs/1.json"
    assert keys[1].startswith("trees/") and keys[2].startswith("packs/")
    assert stats.lists == 0
    assert stats.range_reads == 1


def test_open_and_read_one_file_on_s3_is_three_requests(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, s3_env: str
) -> None:
    """On S3, each of the three reads is one request: no HEAD before a whole object's GET
    (s3fs makes one to read a large object in parallel parts), so three round trips."""
    import s3fs

    url = f"s3://{BUCKET}/{uuid.uuid4().hex}"
    sc = make_workspace(tmp_path, monkeypatch, url)
    files = {f"d/f{i:02d}.bin": rand(700 + i, 64 * KiB) for i in range(10)}
    commit(sc.ws, "data/imgs", files, "v1")
    monkeypatch.chdir(sc.elsewhere)
    forget_reads()
    calls: list[str] = []
    real = s3fs.S3FileSystem._call_s3

    async def counted(self: Any, method: str, *args: Any, **kwargs: Any) -> Any:
        calls.append(method)
        return await real(self, method, *args, **kwargs)

    monkeypatch.setattr(s3fs.S3FileSystem, "_call_s3", counted)
    fs = datavc.open("imgs@v1", store=url)
    assert_bytes(fs.cat_file("d/f03.bin"), files["d/f03.bin"])
    assert calls == ["get_object"] * 3, calls
    calls.clear()  # a listing is one request, also of a folder that is empty or missing
    assert fs.chunks.backend.list("gc") == [] and len(fs.chunks.backend.list("index")) == 1
    assert calls == ["list_objects_v2"] * 2, calls


def test_seek_into_a_64_mib_file_fetches_at_most_two_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    sc = make_workspace(tmp_path, monkeypatch, url)
    data = rand(31, 64 * MiB)
    commit(sc.ws, "data/big", {"big.bin": data}, "v1")
    monkeypatch.chdir(sc.elsewhere)
    fs = datavc.open("big@v1", store=url)
    entry = fs.entry("big.bin")
    fs.chunks.load_index()
    # where each chunk's plain bytes start, and which pack holds it
    starts, pos = [], 0
    for _, length in entry.chunks:
        starts.append(pos)
        pos += length
    locs = [fs.chunks.location(cid) for cid, _ in entry.chunks]
    assert all(loc is not None for loc in locs)
    assert len({loc.pack for loc in locs}) >= 2, "premise: 64 MiB spans more than one pack"
    pack_change = next(i for i in range(1, len(locs)) if locs[i].pack != locs[i - 1].pack)

    def covering(start: int, end: int) -> list[int]:
        return [i for i, s in enumerate(starts) if s < end and s + entry.chunks[i][1] > start]

    positions = (32 * MiB + 12345, 48 * MiB - 512, starts[pack_change] - 512, len(data) - 1024)
    for pos in positions:
        want = covering(pos, pos + 1024)
        forget_reads()  # a new process: nothing read yet
        f = fs.open("big.bin", "rb")
        with io_of(fs) as io:
            f.seek(pos)
            got = f.read(1024)
        f.close()
        assert got == data[pos : pos + 1024], pos
        assert 1 <= io.range_reads <= 2, (pos, io.keys)
        assert io.reads == io.range_reads, "no whole-object reads"
        assert io.pack_keys == io.keys
        assert io.bytes_read <= 512 * KiB, (pos, io.bytes_read)
        # exactly the stored bytes of the one or two chunks under the read
        assert io.bytes_read == sum(locs[i].stored_length for i in want), (pos, want)
        assert sorted(set(io.keys)) == sorted({f"packs/{locs[i].pack}" for i in want})


# -- the fsspec protocol, pandas and pyarrow --------------------------------------------------


def test_fsspec_url_with_datavc_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    scenario(tmp_path, monkeypatch, url, v2=True)
    monkeypatch.chdir(tmp_path / "elsewhere")
    monkeypatch.setenv("DATAVC_STORE", url)
    with fsspec.open("datavc://x@v1/sub/b.bin", "rb") as f:
        assert_bytes(f.read(), V1["sub/b.bin"])
    with fsspec.open("datavc://x@v2/sub/b.bin", "rb") as f:
        assert_bytes(f.read(), V2["sub/b.bin"])
    with fsspec.open("datavc://x@v1/sub/deep/run.sh", "rb") as f:
        assert f.read() == V1["sub/deep/run.sh"]
    fs, path = fsspec.core.url_to_fs("datavc://x@v2/new")
    assert isinstance(fs, datavc.DatavcFileSystem)
    assert path == "x@v2/new"  # one filesystem for the store: the path names its version
    assert fs.ls(path, detail=False) == ["x@v2/new/n.bin"]


def test_fsspec_url_inside_the_workspace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    scenario(tmp_path, monkeypatch, url, v2=True)
    with fsspec.open("datavc://x@v1/a.bin", "rb") as f:
        assert f.read() == V1["a.bin"]
    with fsspec.open("datavc://x@latest/a.bin", "rb") as f:
        assert f.read() == V2["a.bin"]


def _frames() -> tuple[Any, Any]:
    import numpy as np
    import pandas as pd

    frames = []
    for seed in (41, 42):
        rng = np.random.default_rng(seed)
        n = 3000
        frames.append(
            pd.DataFrame(
                {
                    "id": np.arange(n, dtype=np.int64) + seed,
                    "x": rng.standard_normal(n),
                    "label": rng.integers(0, 10, n),
                    "text": [rng.bytes(8).hex() for _ in range(n)],
                }
            )
        )
    return frames[0], frames[1]


def test_pandas_and_pyarrow_read_parquet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    import pandas as pd
    import pyarrow.parquet as pq

    sc = make_workspace(tmp_path, monkeypatch, url)
    df1, df2 = _frames()
    files = {}
    for version, df in ((1, df1), (2, df2)):
        stage = tmp_path / f"stage{version}"
        stage.mkdir()
        df.to_parquet(stage / "train.parquet")
        df.iloc[:100].to_parquet(stage / "test.parquet")
        files[version] = {p.name: p.read_bytes() for p in stage.iterdir()}
        commit(sc.ws, "data/tables", files[version], f"v{version}")
    monkeypatch.chdir(sc.elsewhere)
    monkeypatch.setenv("DATAVC_STORE", url)

    got1 = pd.read_parquet("datavc://tables@v1/train.parquet")
    pd.testing.assert_frame_equal(got1, df1)
    got2 = pd.read_parquet("datavc://tables@v2/train.parquet")
    pd.testing.assert_frame_equal(got2, df2)
    pd.testing.assert_frame_equal(
        pd.read_parquet("datavc://tables@v1/test.parquet"), df1.iloc[:100]
    )

    fs = datavc.open("tables@v1", store=url)
    assert_bytes(fs.cat("train.parquet"), files[1]["train.parquet"])
    table = pq.read_table("train.parquet", filesystem=fs)
    pd.testing.assert_frame_equal(table.to_pandas(), df1)
    table2 = pq.read_table("train.parquet", filesystem=datavc.open("tables@v2"))
    pd.testing.assert_frame_equal(table2.to_pandas(), df2)


# -- pickling, fork and spawn -----------------------------------------------------------------


def _read_pickled(blob: bytes, path: str) -> bytes:
    fs = pickle.loads(blob)
    with fs.open(path, "rb") as f:
        data: bytes = f.read()
    return data


def _read_inherited(fs: Any, path: str, conn: Any) -> None:
    try:
        with fs.open(path, "rb") as f:
            conn.send(("ok", f.read()))
    except BaseException as err:
        conn.send(("error", f"{type(err).__name__}: {err}"))
    finally:
        conn.close()


def test_pickle_round_trip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shared_url: str
) -> None:
    sc = scenario(tmp_path, monkeypatch, shared_url, v2=True)
    monkeypatch.chdir(sc.elsewhere)
    fs = datavc.open("x@v1", store=shared_url)
    assert_bytes(fs.cat("a.bin"), V1["a.bin"])
    copy = pickle.loads(pickle.dumps(fs))
    assert copy is not fs
    assert isinstance(copy, datavc.DatavcFileSystem)
    assert copy.snapshot == sc.v1.tree
    check_snapshot(copy, V1)
    # the copy is pinned to the snapshot, not re-resolved by name
    latest = datavc.open("x@latest", store=shared_url)
    again = pickle.loads(pickle.dumps(latest))
    assert again.snapshot == sc.v2.tree
    assert_bytes(again.cat("sub/b.bin"), V2["sub/b.bin"])
    # an fsspec OpenFile (what Dask ships to workers) pickles with its filesystem
    opened = pickle.loads(pickle.dumps(fsspec.open("datavc://x@v1/sub/b.bin", store=shared_url)))
    with opened as f:
        assert_bytes(f.read(), V1["sub/b.bin"])


def test_fork_child_reads_through_a_parent_filesystem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shared_url: str
) -> None:
    sc = scenario(tmp_path, monkeypatch, shared_url, v2=False)
    monkeypatch.chdir(sc.elsewhere)
    fs = datavc.open("x@v1", store=shared_url)
    assert_bytes(fs.cat("a.bin"), V1["a.bin"])  # connected and used before the fork
    ctx = multiprocessing.get_context("fork")
    parent_end, child_end = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_read_inherited, args=(fs, "sub/b.bin", child_end))
    proc.start()
    child_end.close()
    try:
        assert parent_end.poll(60), "the forked child did not answer within 60 s"
        status, payload = parent_end.recv()
    finally:
        proc.join(30)
        if proc.is_alive():
            proc.kill()
            proc.join()
    assert status == "ok", payload
    assert_bytes(payload, V1["sub/b.bin"])
    assert proc.exitcode == 0
    # the parent's filesystem still works after the fork
    assert_bytes(fs.cat("z/only.bin"), V1["z/only.bin"])


def test_spawn_child_reads_through_a_pickled_filesystem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shared_url: str
) -> None:
    sc = scenario(tmp_path, monkeypatch, shared_url, v2=False)
    monkeypatch.chdir(sc.elsewhere)
    fs = datavc.open("x@v1", store=shared_url)
    assert_bytes(fs.cat("a.bin"), V1["a.bin"])
    blob = pickle.dumps(fs)
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        got = pool.apply_async(_read_pickled, (blob, "sub/b.bin")).get(timeout=120)
    assert_bytes(got, V1["sub/b.bin"])


# -- materialize -------------------------------------------------------------------------------


def test_materialize_writes_the_exact_tree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    sc = scenario(tmp_path, monkeypatch, url, v2=True)
    monkeypatch.chdir(sc.elsewhere)
    v1 = datavc.open("x@v1", store=url)
    v2 = datavc.open("x@v2", store=url)

    fresh = tmp_path / "fresh"
    assert v1.materialize(str(fresh)) == len(V1)
    files, dirs = local_tree(fresh)
    assert files.keys() == V1.keys()
    for p, data in V1.items():
        assert_bytes(files[p], data, p)
    assert dirs == parent_dirs(V1)
    for p in V1:
        mode = os.stat(fresh.joinpath(*p.split("/"))).st_mode
        assert bool(mode & 0o111) == (p in EXEC), (p, oct(mode))

    # a dirty destination: extra files and folders, a modified file, a lost exec bit
    dest = tmp_path / "dirty"
    write_files(dest, {**V1, "a.bin": rand(99, 1000), "extra.bin": b"x", "junk/deep/j": b"j"})
    (dest / "empty-extra-dir").mkdir()
    run = dest / "sub" / "deep" / "run.sh"
    os.chmod(run, 0o644)
    v1.materialize(str(dest))
    files, dirs = local_tree(dest)
    assert sorted(files) == sorted(V1)
    for p, data in V1.items():
        assert_bytes(files[p], data, p)
    assert dirs == parent_dirs(V1)
    assert os.stat(run).st_mode & stat.S_IXUSR

    # moving the same folder to v2 removes what v2 does not have
    v2.materialize(str(dest))
    files, dirs = local_tree(dest)
    assert sorted(files) == sorted(V2)
    for p, data in V2.items():
        assert_bytes(files[p], data, p)
    assert dirs == parent_dirs(V2)
    assert not (dest / "z").exists()


# -- errors ------------------------------------------------------------------------------------


def test_unknown_dataset_or_version_is_not_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    sc = scenario(tmp_path, monkeypatch, url, v2=False)
    monkeypatch.chdir(sc.elsewhere)
    for spec in ("nosuch@v1", "nosuch@latest", "x@v2", "x@v99", "x@nosuchtag", "x@abcdef1234"):
        with pytest.raises(NotFoundError) as info:
            datavc.open(spec, store=url)
        assert isinstance(info.value, FileNotFoundError), spec
    with pytest.raises(FileNotFoundError):
        fsspec.open("datavc://nosuch@v1/a.bin", store=url).open()


def test_missing_path_is_file_not_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    sc = scenario(tmp_path, monkeypatch, url, v2=False)
    monkeypatch.chdir(sc.elsewhere)
    fs = datavc.open("x@v1", store=url)
    for path in ("nope.bin", "sub/nope.bin", "sub/deep/c.bin.x", "nosuchdir/a.bin"):
        with pytest.raises(FileNotFoundError):
            fs.open(path, "rb")
        with pytest.raises(FileNotFoundError):
            fs.cat(path)
        with pytest.raises(FileNotFoundError):
            fs.info(path)
        assert not fs.exists(path)
    with pytest.raises(FileNotFoundError):
        fs.ls("nosuchdir")
    # the lookup of a missing file on a fresh filesystem (no listing loaded) too
    fresh = datavc.open("x@v1", store=url)
    with pytest.raises(NotFoundError):
        fresh.open("z/nope.bin", "rb")



def test_a_missing_tree_page_is_damage_not_an_empty_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    """ObjectNotFound is a FileNotFoundError, which fsspec's find, walk, exists and du take
    for "no such path": a page the root names that the store lacks must be an error."""
    sc = scenario(tmp_path, monkeypatch, url, v2=False)
    monkeypatch.chdir(sc.elsewhere)
    assert sc.v1 is not None
    fs, root = raw_store(url)
    for page in sc.v1.root.pages:
        fs.rm(f"{root}/trees/{page.id}")
    calls = {
        "find": lambda f: f.find(""),
        "walk": lambda f: list(f.walk("")),
        "glob": lambda f: f.glob("**"),
        "du": lambda f: f.du(""),
        "exists": lambda f: f.exists("a.bin"),
        "isfile": lambda f: f.isfile("a.bin"),
        "info": lambda f: f.info("a.bin"),
        "ls": lambda f: f.ls(""),
    }
    got = {}
    for what, call in calls.items():
        forget_reads()
        try:
            got[what] = f"no error: {call(datavc.open('x@v1', store=url))!r}"
        except CorruptObject as err:
            got[what] = "missing" if "missing from the store" in str(err) else str(err)
        except Exception as err:
            got[what] = f"{type(err).__name__}: {err}"
    assert got == dict.fromkeys(calls, "missing")


def test_writing_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    sc = scenario(tmp_path, monkeypatch, url, v2=False)
    monkeypatch.chdir(sc.elsewhere)
    fs = datavc.open("x@v1", store=url)
    for mode in ("wb", "ab", "w", "xb", "r+b"):
        with pytest.raises(BadInput):
            fs.open("a.bin", mode)
    for mode in ("wb", "w"):
        with pytest.raises(BadInput):
            fs.open("brand-new.bin", mode)
    with pytest.raises(BadInput):
        fs.pipe_file("brand-new.bin", b"data")
    with pytest.raises(BadInput):
        fs.rm("a.bin")
    with pytest.raises(BadInput):
        fs.mkdir("newdir")
    # nothing changed
    check_snapshot(datavc.open("x@v1", store=url), V1)
    with pytest.raises(NotFoundError):
        datavc.open("x@v2", store=url)


def test_no_store_anywhere_is_not_a_repository(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nowhere = tmp_path / "nowhere"
    nowhere.mkdir()
    monkeypatch.chdir(nowhere)
    with pytest.raises(NotARepository):
        datavc.open("x@v1")
    with pytest.raises(NotARepository):
        fsspec.open("datavc://x@v1/a.bin", "rb").open()
    # a store URL with no store behind it is not a repository either
    with pytest.raises(NotARepository):
        datavc.open("x@v1", store=str(nowhere))


def test_a_flipped_byte_in_a_pack_is_an_integrity_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    sc = make_workspace(tmp_path, monkeypatch, url)
    data = rand(51, 400 * KiB)
    commit(sc.ws, "data/c", {"c.bin": data, "ok.bin": rand(52, 10)}, "v1")
    packs = pack_objects(url)
    assert len(packs) == 1
    (pack,) = packs
    raw, root = raw_store(url)
    key = f"{root}/packs/{pack}"
    blob = bytearray(raw.cat_file(key))
    at = len(blob) // 2  # inside c.bin's chunks: the pack is mostly that file
    blob[at] ^= 0x01
    raw.pipe_file(key, bytes(blob))
    assert raw.cat_file(key) == bytes(blob)

    monkeypatch.chdir(sc.elsewhere)
    fs = datavc.open("c@v1", store=url)
    with pytest.raises(IntegrityError) as info:
        fs.cat("c.bin")
    assert "packs/" in str(info.value)
    assert pack in str(info.value)
    with pytest.raises(IntegrityError), fs.open("c.bin", "rb") as f:
        f.read()
    dest = tmp_path / "out"
    with pytest.raises(IntegrityError):
        fs.materialize(str(dest))
    assert not (dest / "c.bin").exists(), "no damaged file may be left behind"
    leftovers, _ = local_tree(dest) if dest.exists() else ({}, set())
    assert not any(p.endswith("c.bin") or TMP_PREFIX in p for p in leftovers), leftovers


def test_errors_share_one_base() -> None:
    for cls in (NotFoundError, BadInput, NotARepository, IntegrityError):
        assert issubclass(cls, DatavcError)
    assert issubclass(NotFoundError, FileNotFoundError)


# -- more ways to name a version; concurrency; the workspace cache -----------------------------


def test_tag_in_the_store_names_a_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    sc = scenario(tmp_path, monkeypatch, url, v2=True)
    monkeypatch.chdir(sc.elsewhere)
    raw, root = raw_store(url)
    raw.makedirs(f"{root}/tags/x", exist_ok=True)
    raw.pipe_file(f"{root}/tags/x/best", b"1\n")
    fs = datavc.open("x@best", store=url)
    assert fs.snapshot == sc.v1.tree
    assert_bytes(fs.cat("a.bin"), V1["a.bin"])
    raw.pipe_file(f"{root}/tags/x/best", b"2")
    assert datavc.open("x@best", store=url).snapshot == sc.v2.tree


def git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def git_scenario(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store: str) -> Scenario:
    """v1 committed to git; v2 committed to the store and the pointer file, not to git."""
    ws = tmp_path / "ws"
    ws.mkdir()
    git(ws, "init", "-q")
    sc = scenario(tmp_path, monkeypatch, store, v2=False)
    git(ws, "add", "-A")
    git(ws, "commit", "-q", "-m", "data v1")
    sc.v2 = commit(sc.ws, "data/x", V2, "v2", EXEC)
    return sc


def test_git_revision_and_bare_name_inside_a_git_workspace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = str(tmp_path / "store")  # resolution is the workspace's business: one backend is enough
    sc = git_scenario(tmp_path, monkeypatch, url)
    monkeypatch.chdir(sc.ws / "data")
    at_head = datavc.open("x@git:HEAD")
    assert at_head.snapshot == sc.v1.tree
    assert_bytes(at_head.cat("a.bin"), V1["a.bin"])
    assert datavc.open("x").snapshot == sc.v2.tree  # the pointer file on disk says v2
    Workspace.find(str(sc.ws)).checkout(["x@v1"])
    assert datavc.open("x").snapshot == sc.v1.tree  # now it says v1, though v2 is the latest
    assert datavc.open("x@latest").snapshot == sc.v2.tree
    with pytest.raises(NotFoundError):
        datavc.open("x@git:no-such-rev")
    # outside a workspace there is no pointer file: git specs are refused, a bare name is latest
    monkeypatch.chdir(sc.elsewhere)
    with pytest.raises(BadInput):
        datavc.open("x@git:HEAD", store=url)
    assert datavc.open("x", store=url).snapshot == sc.v2.tree


def test_git_revision_inside_a_workspace_with_datavc_store_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = str(tmp_path / "store")
    sc = git_scenario(tmp_path, monkeypatch, store)
    monkeypatch.setenv("DATAVC_STORE", store)  # the same store the config names
    assert datavc.open("x@git:HEAD").snapshot == sc.v1.tree


def test_bare_name_inside_a_workspace_with_datavc_store_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = str(tmp_path / "store")
    sc = git_scenario(tmp_path, monkeypatch, store)
    Workspace.find(str(sc.ws)).checkout(["x@v1"])
    monkeypatch.setenv("DATAVC_STORE", store)
    assert datavc.open("x").snapshot == sc.v1.tree


def test_threads_share_one_filesystem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    sc = scenario(tmp_path, monkeypatch, url, v2=False)
    monkeypatch.chdir(sc.elsewhere)
    fs = datavc.open("x@v1", store=url)  # fresh: the index is loaded by the racing threads
    big = V1["sub/b.bin"]
    rng = random.Random(61)
    ranges = [(s, s + rng.randrange(1, 100 * KiB)) for s in rng.sample(range(len(big)), 24)]

    def whole(p: str) -> tuple[str, str]:
        with fs.open(p, "rb") as f:
            return p, digest(f.read())

    def part(r: tuple[int, int]) -> bytes:
        return bytes(fs.cat_file("sub/b.bin", start=r[0], end=r[1]))

    with ThreadPoolExecutor(8) as pool:
        got = dict(pool.map(whole, list(V1) * 3))
        parts = list(pool.map(part, ranges))
    assert got == {p: digest(d) for p, d in V1.items()}
    for (s, e), data in zip(ranges, parts, strict=True):
        assert data == big[s:e], (s, e)


def test_a_damaged_cached_pack_is_read_from_the_store_instead(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = f"memory://datavc-{uuid.uuid4().hex}"  # a remote store: the workspace caches it
    try:
        sc = make_workspace(tmp_path, monkeypatch, store)
        data = rand(71, 200 * KiB)
        commit(sc.ws, "data/c", {"c.bin": data}, "v1")
        (cached,) = (sc.ws / ".datavc" / "cache" / "packs").iterdir()
        blob = bytearray(cached.read_bytes())
        blob[len(blob) // 2] ^= 0x01
        os.chmod(cached, 0o644)
        cached.write_bytes(bytes(blob))
        assert_bytes(datavc.open("c@v1", store=store).cat("c.bin"), data)  # the store is fine
        assert_bytes(datavc.open("c@v1").cat("c.bin"), data)  # inside: the cache is damaged
    finally:
        fs, root = raw_store(store)
        if fs.exists(root):
            fs.rm(root, recursive=True)
