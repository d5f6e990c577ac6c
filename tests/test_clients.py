"""Clients proven by tests (issue 15, item 4): pandas, pyarrow.dataset (hive partitioning,
filters), polars (file objects), duckdb (``register_filesystem``), Hugging Face
``datasets.load_dataset`` (parquet and csv, also streaming), zarr and xarray by ``datavc://``
URL, Dask distributed ``read_parquet`` on a 2-worker process cluster, PyTorch's DataLoader
with 2 workers under fork and spawn (marker ``heavy``: ``make test-all``), and fsspec's
caching wrappers (simplecache, filecache, blockcache) with one cache folder for two versions.

One workspace commits four datasets twice, on the local store and on S3 (moto server):
``tables`` (hive-partitioned parquet, ``year=2024/`` and ``year=2025/``), ``csvs``,
``cube`` (a zarr group written by zarr) and ``files`` (small binary files). Every value
depends on the version, and v2's files have v1's sizes: a client that mixed the versions
up, or served one from another's cache, reads the wrong values. Each check compares what a
client read with what was written for that exact version.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pytest
from conftest import BUCKET, S3_ENV
from helpers import SnapshotFiles, clean_environment, forget_reads, local_cluster, rand, write

import datavc
from datavc.workspace.core import Workspace
from datavc.workspace.initialize import init_workspace

BACKENDS = ("local", "s3")
VERSIONS = (1, 2)
YEARS = (2024, 2025)
ROWS = {1: 40, 2: 48}  # rows per parquet file: v2 has more, so a mix shows in counts too
COLUMNS = ["id", "x", "label", "text", "year"]
CSVS = ("a.csv", "b.csv")
FILES = 24  # small binary files, for the DataLoader and the caches
DATASETS = ("tables", "csvs", "cube", "files")


# -- what each version holds ------------------------------------------------------------


def table(version: int, year: int) -> pd.DataFrame:
    """The rows of ``tables@vN/year=YEAR/part-0.parquet`` (without the partition column)."""
    rng = np.random.default_rng([version, year])
    n = ROWS[version]
    return pd.DataFrame(
        {
            "id": np.arange(n, dtype=np.int64) + 100_000 * version + 1000 * (year - 2000),
            "x": rng.standard_normal(n),
            "label": rng.integers(0, 5, n, dtype=np.int64),
            "text": [f"v{version}-{year}-{i}" for i in range(n)],
        }
    )


def rows(version: int, years: tuple[int, ...] = YEARS) -> pd.DataFrame:
    """Every row of ``tables@vN`` in the given partitions, with the ``year`` column."""
    parts = [table(version, y).assign(year=np.int64(y)) for y in years]
    return canonical(pd.concat(parts))


def canonical(df: pd.DataFrame) -> pd.DataFrame:
    """The columns of ``rows`` in order, ``year`` as int64 (readers give it as a category,
    int32 or a string), sorted by id: frames from any reader compare with ``rows``."""
    out = df.reset_index(drop=True)[[c for c in COLUMNS if c in df.columns]].copy()
    if "year" in out.columns:
        out["year"] = out["year"].astype(str).astype(np.int64)
    out["text"] = out["text"].astype(object)
    return out.sort_values("id").reset_index(drop=True)


def csv_frame(version: int, name: str) -> pd.DataFrame:
    rng = np.random.default_rng([version, ord(name[0])])
    n = 10 + version
    return pd.DataFrame(
        {
            "k": np.arange(n, dtype=np.int64) + 1000 * version,
            "word": [f"{name[0]}{version}w{i}" for i in range(n)],
            "value": rng.integers(0, 1_000_000, n, dtype=np.int64),
        }
    )


def cube(version: int) -> np.ndarray:
    return np.arange(24, dtype=np.float64).reshape(6, 4) * version + 0.5 * version


def file_bytes(version: int, i: int) -> bytes:
    """``files@vN/fIII.bin``: the same size in both versions, different bytes."""
    return rand(("files", version, i), 200 + 37 * i)


def file_path(i: int) -> str:
    return f"f{i:03d}.bin"


# -- building the store -------------------------------------------------------------------


def write_version(root: Path, version: int) -> None:
    """The four datasets' folders as version ``version`` has them (written afresh)."""
    for name in DATASETS:
        shutil.rmtree(root / name, ignore_errors=True)
    for year in YEARS:
        folder = root / "tables" / f"year={year}"
        folder.mkdir(parents=True)
        table(version, year).to_parquet(folder / "part-0.parquet", index=False)
    (root / "csvs").mkdir()
    for name in CSVS:
        csv_frame(version, name).to_csv(root / "csvs" / name, index=False)
    for i in range(FILES):
        write(root / "files" / file_path(i), file_bytes(version, i))
    write_cube(root / "cube", version)


def write_cube(path: Path, version: int) -> None:
    """A zarr (format 3) group: ``t`` (6 x 4, in four 3 x 2 chunks) and its coordinates
    ``x`` and ``y``, with dimension names, so that xarray reads it as a dataset."""
    import zarr

    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    t = group.create_array("t", shape=(6, 4), chunks=(3, 2), dtype="f8", dimension_names=("x", "y"))
    t[:] = cube(version)
    for dim, n in (("x", 6), ("y", 4)):
        coord = group.create_array(dim, shape=(n,), dtype="i8", dimension_names=(dim,))
        coord[:] = np.arange(n, dtype=np.int64) * 10 * version


def build(root: Path, url: str) -> None:
    """A workspace on ``url`` with the four datasets committed as v1, then v2; the tag
    ``first`` names each one's v1."""
    root.mkdir(parents=True)
    init_workspace(str(root), url)
    ws = Workspace.find(str(root))
    for version in VERSIONS:
        write_version(root, version)
        for name in DATASETS:
            ws.add(str(root / name), name)
        published, _ = ws.commit([], f"v{version}")
        assert sorted((r.name, r.version) for r in published) == [
            (n, version) for n in sorted(DATASETS)
        ]
    for name in DATASETS:
        ws.tag(f"{name}@v1", "first")


@dataclass(frozen=True)
class Store:
    kind: str
    url: str
    options: dict[str, Any]  # the store's own storage options (S3: endpoint and keys)
    workspace: Path

    @property
    def so(self) -> dict[str, Any]:
        """The ``storage_options`` a client passes with a ``datavc://`` URL."""
        return {"store": self.url, "storage_options": self.options}

    def open(self, spec: str) -> datavc.DatavcFileSystem:
        return datavc.open(spec, store=self.url, storage_options=self.options)

    def whole(self) -> Any:
        """The store-wide filesystem: paths ``NAME@SPEC/path``."""
        return fsspec.filesystem("datavc", store=self.url, storage_options=self.options)


@dataclass
class Stores:
    """One store per backend, built the first time a test of this module asks for it."""

    base: Path
    built: dict[str, Store] = field(default_factory=dict)

    def get(self, kind: str, endpoint: str | None = None) -> Store:
        if kind not in self.built:
            self.built[kind] = self._build(kind, endpoint)
        return self.built[kind]

    def _build(self, kind: str, endpoint: str | None) -> Store:
        root = self.base / kind / "ws"
        with pytest.MonkeyPatch.context() as mp:
            clean_environment(mp, self.base / kind / "home")
            mp.chdir(self.base)
            if kind == "local":
                url, options = str(self.base / kind / "store"), {}
            else:
                assert endpoint is not None
                for key, value in S3_ENV.items():
                    mp.setenv(key, value)
                mp.setenv("AWS_ENDPOINT_URL", endpoint)
                url = f"s3://{BUCKET}/clients-{os.getpid()}-{id(self)}"
                options = {
                    "endpoint_url": endpoint,
                    "key": S3_ENV["AWS_ACCESS_KEY_ID"],
                    "secret": S3_ENV["AWS_SECRET_ACCESS_KEY"],
                    "client_kwargs": {"region_name": S3_ENV["AWS_DEFAULT_REGION"]},
                }
            build(root, url)
        return Store(kind, url, options, root)


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Stores:
    return Stores(tmp_path_factory.mktemp("clients"))


@pytest.fixture(params=BACKENDS)
def store(
    request: pytest.FixtureRequest, stores: Stores, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Store:
    """The committed datasets on one backend; the test runs outside any workspace."""
    endpoint = request.getfixturevalue("moto_endpoint") if request.param == "s3" else None
    found = stores.get(request.param, endpoint)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    return found


@pytest.fixture(autouse=True)
def nothing_read_yet() -> None:
    """Each test starts with the process's page and chunk caches empty, as a new process
    does: they are content-addressed and shared by every store, and both backends hold the
    same bytes, so an S3 test must not be served what a local test read."""
    forget_reads()


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No client reaches the network from the test's process: a connection or a name
    lookup to anything but the loopback fails the test (worker processes are not watched:
    they only read what the test's process reads, from the same stores)."""
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo
    attempts: list[str] = []

    def check(host: Any) -> None:
        if isinstance(host, bytes):
            host = host.decode()
        if host in (None, "localhost"):
            return
        try:
            loopback = ipaddress.ip_address(str(host).split("%")[0]).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            attempts.append(str(host))  # kept: a client may swallow the error
            raise OSError(f"test_clients reached for the network: {host}")

    def connect(sock: socket.socket, address: Any) -> Any:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            check(address[0])
        return real_connect(sock, address)

    def connect_ex(sock: socket.socket, address: Any) -> Any:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            check(address[0])
        return real_connect_ex(sock, address)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        check(host)
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield
    assert not attempts, f"tried to reach beyond the loopback: {attempts}"


def assert_frame(got: pd.DataFrame, want: pd.DataFrame, what: str) -> None:
    assert len(got) == len(want), f"{what}: {len(got)} rows, expected {len(want)}"
    pd.testing.assert_frame_equal(got, want, check_dtype=False, obj=what)


# -- filesystem objects: pyarrow.dataset, pandas, polars -------------------------------------


def test_pyarrow_dataset_hive_partitioning_and_filters(store: Store) -> None:
    for version in VERSIONS:
        fs = store.open(f"tables@v{version}")
        dataset = ds.dataset("", filesystem=fs, format="parquet", partitioning="hive")
        assert sorted(dataset.files) == [f"year={y}/part-0.parquet" for y in YEARS]
        assert_frame(canonical(dataset.to_table().to_pandas()), rows(version), f"v{version}")
        # a partition filter prunes the other folder's file before any read
        only_2024 = dataset.get_fragments(filter=ds.field("year") == 2024)
        assert [f.path for f in only_2024] == ["year=2024/part-0.parquet"]
        # a filter on a partition and a column: the rows of that version that pass it
        cond = (ds.field("year") == 2025) & (ds.field("label") >= 2)
        got = canonical(dataset.to_table(filter=cond, columns=COLUMNS).to_pandas())
        want = rows(version, (2025,))
        want = want[want["label"] >= 2].reset_index(drop=True)
        assert len(want) > 0
        assert_frame(got, want, f"v{version} filtered")


@pytest.mark.parametrize(
    "spec",
    ["v1", "first", "snapshot", "latest"],
)
def test_pandas_and_pyarrow_read_a_folder_named_by_any_spec(store: Store, spec: str) -> None:
    """A folder by version number, tag, snapshot-id prefix or latest: the store-wide
    filesystem lists its files under the folder's own name (``tables@first/...``), which
    pyarrow requires, and they are the version the spec names."""
    version = 2 if spec == "latest" else 1
    if spec == "snapshot":
        spec = store.open("tables@v1").snapshot[:12]
    url = f"datavc://tables@{spec}/"
    got = pd.read_parquet(url, storage_options=store.so)
    assert_frame(canonical(got), rows(version), url)
    dataset = ds.dataset(
        f"tables@{spec}", filesystem=store.whole(), format="parquet", partitioning="hive"
    )
    got = dataset.to_table(filter=ds.field("year") == 2024).to_pandas()
    assert_frame(canonical(got), rows(version, (2024,)), f"ds.dataset tables@{spec}")


def test_pandas_with_a_filesystem_and_by_url(store: Store) -> None:
    for version in VERSIONS:
        fs = store.open(f"tables@v{version}")
        got = pd.read_parquet("", filesystem=fs, filters=[("year", "==", 2024)])
        assert_frame(canonical(got), rows(version, (2024,)), f"parquet v{version}")
        csvs = store.open(f"csvs@v{version}")
        for name in CSVS:
            with csvs.open(name, "rb") as f:
                assert_frame(pd.read_csv(f), csv_frame(version, name), f"{name} v{version}")
            url = f"datavc://csvs@v{version}/{name}"
            by_url = pd.read_csv(url, storage_options=store.so)
            assert_frame(by_url, csv_frame(version, name), url)
        url = f"datavc://tables@v{version}/year=2025/part-0.parquet"
        by_url = pd.read_parquet(url, storage_options=store.so)
        assert_frame(by_url, table(version, 2025), url)


def test_pandas_url_finds_the_store_in_the_environment_or_the_workspace(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No ``store`` option: DATAVC_STORE names it, or the workspace in the cwd does."""
    if store.kind == "s3":
        monkeypatch.setenv("AWS_ENDPOINT_URL", store.options["endpoint_url"])
        for key, value in S3_ENV.items():
            monkeypatch.setenv(key, value)
    monkeypatch.setenv("DATAVC_STORE", store.url)
    for version in VERSIONS:
        got = pd.read_csv(f"datavc://csvs@v{version}/b.csv")
        assert_frame(got, csv_frame(version, "b.csv"), f"DATAVC_STORE v{version}")
    monkeypatch.delenv("DATAVC_STORE")
    monkeypatch.chdir(store.workspace)
    for version in VERSIONS:
        got = pd.read_csv(f"datavc://csvs@v{version}/a.csv")
        assert_frame(got, csv_frame(version, "a.csv"), f"workspace v{version}")


def test_polars_through_file_objects(store: Store) -> None:
    import polars as pl

    for version in VERSIONS:
        fs = store.open(f"tables@v{version}")
        for year in YEARS:
            with fs.open(f"year={year}/part-0.parquet", "rb") as f:
                got = pl.read_parquet(f)
            want = table(version, year)
            assert_frame(got.to_pandas(), want, f"parquet v{version} {year}")
            with fs.open(f"year={year}/part-0.parquet", "rb") as f:
                some = pl.read_parquet(f, columns=["id", "text"])
            assert some["id"].to_list() == want["id"].tolist()
            assert some["text"].to_list() == want["text"].tolist()
        csvs = store.open(f"csvs@v{version}")
        for name in CSVS:
            with csvs.open(name, "rb") as f:
                got = pl.read_csv(f)
            assert_frame(got.to_pandas(), csv_frame(version, name), f"{name} v{version}")


# -- by URL: duckdb, Hugging Face datasets, zarr, xarray -------------------------------------


def test_duckdb_through_register_filesystem(store: Store) -> None:
    import duckdb

    con = duckdb.connect()
    con.register_filesystem(store.whole())
    cols = ", ".join(COLUMNS)
    for version in (1, 2, 1):
        url = f"datavc://tables@v{version}/*/*.parquet"
        every = con.sql(f"select {cols} from read_parquet('{url}', hive_partitioning=true)")
        assert_frame(canonical(every.df()), rows(version), f"duckdb v{version}")
        query = (
            f"select {cols} from read_parquet('{url}', hive_partitioning=true) "
            "where year = 2025 and label < 3"
        )
        want = rows(version, (2025,))
        want = want[want["label"] < 3].reset_index(drop=True)
        assert_frame(canonical(con.sql(query).df()), want, f"duckdb v{version} filtered")
        for name in CSVS:
            got = con.sql(f"select * from read_csv('datavc://csvs@v{version}/{name}')").df()
            assert_frame(got, csv_frame(version, name), f"duckdb {name} v{version}")
    # both versions in one query, and @latest read as the version it is (v2)
    both = con.sql(
        "select count(*) from read_parquet("
        "['datavc://tables@v1/*/*.parquet', 'datavc://tables@v2/*/*.parquet'])"
    ).fetchall()
    assert both == [(len(YEARS) * (ROWS[1] + ROWS[2]),)]
    latest = con.sql(
        "select distinct filename from read_parquet('datavc://tables@latest/*/*.parquet', "
        "filename=true) order by filename"
    ).fetchall()
    assert latest == [(f"datavc://tables@v2/year={y}/part-0.parquet",) for y in YEARS]


def hugging_face_offline(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, datasets_offline: bool
) -> Path:
    """Hugging Face's libraries with their caches in the test's folder, telemetry and
    download counts off, the Hub client offline. ``datasets_offline`` False: datasets' own
    offline switch off, for datasets treats every URL that is not a local path as online and
    refuses a datavc:// file in offline mode ("Offline mode is enabled. Tried to reach
    datavc://..."); the loopback guard then proves that nothing left the machine. Set in
    the environment and in the modules, which read it once at import."""
    cache = tmp_path / "hf"
    env = {
        "HF_HOME": str(cache),
        "HF_DATASETS_CACHE": str(cache / "datasets"),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1" if datasets_offline else "0",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_UPDATE_DOWNLOAD_COUNTS": "0",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", datasets_offline)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", datasets_offline)
    monkeypatch.setattr(datasets.config, "HF_UPDATE_DOWNLOAD_COUNTS", False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache / "datasets")
    return cache / "datasets"


@pytest.mark.parametrize("streaming", [False, True], ids=["arrow", "streaming"])
def test_hugging_face_load_dataset_parquet_and_csv(
    store: Store, streaming: bool, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Arrow (files fetched into datasets' cache, then converted) and streaming; v1 then
    v2 with one cache folder, so a cache that mixed the versions up would show."""
    import datasets

    cache = hugging_face_offline(monkeypatch, tmp_path, datasets_offline=streaming)
    for version in VERSIONS:
        parquet = datasets.load_dataset(
            "parquet",
            data_files={"train": f"datavc://tables@v{version}/year=*/*.parquet"},
            storage_options=store.so,
            streaming=streaming,
            cache_dir=str(cache),
        )["train"]
        got = canonical(pd.DataFrame(list(parquet)))
        want = rows(version)
        if "year" not in got.columns:  # the parquet builder may leave out partition columns
            want = want.drop(columns="year")
        assert_frame(got, want, f"parquet v{version}")
        csv = datasets.load_dataset(
            "csv",
            data_files={"train": [f"datavc://csvs@v{version}/{n}" for n in CSVS]},
            storage_options=store.so,
            streaming=streaming,
            cache_dir=str(cache),
        )["train"]
        got = pd.DataFrame(list(csv))
        want = pd.concat([csv_frame(version, n) for n in CSVS]).reset_index(drop=True)
        assert_frame(got, want, f"csv v{version}")
    # a pattern on @latest resolves to pinned files: datasets' download cache, keyed on
    # the URL (datavc gives no ETag), cannot serve an older version's file for it later
    builder = datasets.load_dataset_builder(
        "parquet",
        data_files={"train": "datavc://tables@latest/year=*/*.parquet"},
        storage_options=store.so,
        cache_dir=str(cache),
    )
    pinned = sorted(builder.config.data_files["train"])
    assert pinned == [f"datavc://tables@v2/year={y}/part-0.parquet" for y in YEARS]


def test_zarr_by_url(store: Store) -> None:
    import zarr

    groups = {}
    for version in VERSIONS:
        spec = f"v{version}"
        group = zarr.open_group(f"datavc://cube@{spec}", mode="r", storage_options=store.so)
        assert sorted(group.array_keys()) == ["t", "x", "y"]  # listed, through pinned paths
        t = group["t"]
        assert t.shape == (6, 4) and t.chunks == (3, 2)
        np.testing.assert_array_equal(t[:], cube(version))
        np.testing.assert_array_equal(t[4:, 1:3], cube(version)[4:, 1:3])  # two chunks
        np.testing.assert_array_equal(group["y"][:], np.arange(4) * 10 * version)
        groups[spec] = group
    # two versions open at once do not share chunks
    np.testing.assert_array_equal(groups["v1"]["t"][:] * 2, groups["v2"]["t"][:])


def test_xarray_by_url(store: Store) -> None:
    import xarray as xr

    for version in VERSIONS:
        url = f"datavc://cube@v{version}"
        lazy = xr.open_zarr(url, storage_options=store.so, consolidated=False)
        assert lazy["t"].dims == ("x", "y")
        np.testing.assert_array_equal(lazy["t"].values, cube(version))
        np.testing.assert_array_equal(lazy["x"].values, np.arange(6) * 10 * version)
        picked = lazy["t"].sel(x=20 * version).values  # by label: row 2
        np.testing.assert_array_equal(picked, cube(version)[2])
        eager = xr.open_dataset(
            url, engine="zarr", storage_options=store.so, consolidated=False, chunks=None
        )
        np.testing.assert_array_equal(eager["t"].values, cube(version))


@pytest.mark.filterwarnings("ignore:Object at cube@v")
@pytest.mark.parametrize("spec", ["first", "latest"])
def test_zarr_and_xarray_by_a_tag_or_latest(store: Store, spec: str) -> None:
    """A group named by a tag or by latest lists its members: zarr and xarray find them
    under the path they opened (``cube@first``), and they are the version it names."""
    import xarray as xr
    import zarr

    version = 1 if spec == "first" else 2
    url = f"datavc://cube@{spec}"
    group = zarr.open_group(url, mode="r", storage_options=store.so)
    assert sorted(group.array_keys()) == ["t", "x", "y"]
    np.testing.assert_array_equal(group["t"][:], cube(version))
    lazy = xr.open_zarr(url, storage_options=store.so, consolidated=False)
    assert sorted(lazy.data_vars) == ["t"]
    np.testing.assert_array_equal(lazy["t"].values, cube(version))


# -- Dask distributed -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Two worker processes, one thread each, started once for the module."""
    base = tmp_path_factory.mktemp("dask")
    with pytest.MonkeyPatch.context() as mp:
        clean_environment(mp, base / "home")
        mp.chdir(base)  # the workers' folder: no workspace in it
        local = local_cluster(base)
    with local:
        yield local


def test_dask_distributed_read_parquet(stores: Stores, moto_endpoint: str, cluster: Any) -> None:
    """Both backends, in one test: the cluster starts once per test process."""
    import dask.dataframe as dd
    from distributed import Client

    with Client(cluster) as client:
        workers = set(client.run(os.getpid).values())
        assert len(workers) == 2 and os.getpid() not in workers
        for kind in BACKENDS:
            store = stores.get(kind, moto_endpoint)
            forget_reads()  # the backends hold the same bytes: S3 is read, not the caches
            client.run(forget_reads)
            for version in VERSIONS:
                url = f"datavc://tables@v{version}/"
                frame = dd.read_parquet(url, storage_options=store.so)
                got = frame.map_partitions(lambda df: df.assign(pid=os.getpid())).compute()
                assert set(got["pid"]) <= workers, "read outside the workers"
                assert_frame(canonical(got), rows(version), f"{kind} v{version}")
            fs = store.open("tables@v1")  # a filesystem object, pickled to the workers
            frame = dd.read_parquet("", filesystem=fs, filters=[("year", "==", 2025)])
            assert_frame(canonical(frame.compute()), rows(1, (2025,)), f"{kind} filesystem=")


# -- PyTorch DataLoader (heavy: torch's wheel pulls gigabytes) --------------------------------


@pytest.mark.heavy
@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_torch_dataloader_two_workers(store: Store, context: str) -> None:
    """One loader over the files of both versions, interleaved: each worker reads v1 and
    v2 files through the two filesystems it was given."""
    torch_data = pytest.importorskip("torch.utils.data")
    views = {v: store.open(f"files@v{v}") for v in VERSIONS}
    for version, fs in views.items():  # used (connected) before the workers start
        assert fs.cat_file(file_path(0)) == file_bytes(version, 0)
    wanted = [(v, i) for i in range(FILES) for v in VERSIONS]
    loader = torch_data.DataLoader(
        SnapshotFiles([(views[v], file_path(i)) for v, i in wanted]),
        batch_size=3,
        num_workers=2,
        multiprocessing_context=context,
        collate_fn=list,  # the items as they are: bytes stay bytes
    )
    items = [item for batch in loader for item in batch]
    assert len(items) == len(wanted)
    for (version, i), (data, _, _) in zip(wanted, items, strict=True):
        assert data == file_bytes(version, i), f"{file_path(i)} of v{version} via {context}"
    assert {worker for _, worker, _ in items} == {0, 1}
    assert os.getpid() not in {pid for _, _, pid in items}


# -- fsspec's caching wrappers ----------------------------------------------------------------


WRAPPERS = ("simplecache", "filecache", "blockcache")


@pytest.mark.parametrize("wrapper", WRAPPERS)
def test_caching_wrapper_urls_keep_versions_apart(
    store: Store, wrapper: str, tmp_path: Path
) -> None:
    """``WRAPPER::datavc://files@vN/...`` with one cache folder: v1, v2, then v1 and v2
    again (from the cache), each read as that version wrote it."""
    cache = tmp_path / "cache"
    options = {"datavc": store.so, wrapper: {"cache_storage": str(cache)}}
    for version in (1, 2, 1, 2):
        for i in range(0, FILES, 5):
            url = f"{wrapper}::datavc://files@v{version}/{file_path(i)}"
            with fsspec.open(url, "rb", **options) as f:
                assert f.read() == file_bytes(version, i), url
    assert any(cache.iterdir()), "nothing was cached"


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="known limitation (README): a wrapper around a rooted datavc.open filesystem keys "
    "its cache on the snapshot-relative path (f000.bin), the same in v1 and v2, and fsspec "
    "gives the filesystem no say in the key: v2 is served v1's bytes. datavc:// URLs and the "
    "store-wide filesystem key on pinned paths (test_caching_wrapper_urls_keep_versions_apart)",
)
@pytest.mark.parametrize("wrapper", WRAPPERS)
def test_caching_wrappers_over_snapshots_keep_versions_apart(
    store: Store, wrapper: str, tmp_path: Path
) -> None:
    """The wrappers around ``datavc.open`` filesystems of two versions, one cache folder."""
    cache = tmp_path / "cache"
    views = {v: store.open(f"files@v{v}") for v in VERSIONS}
    assert views[1].ukey(file_path(3)) != views[2].ukey(file_path(3))
    for version in (1, 2, 1, 2):
        cached = fsspec.filesystem(
            wrapper, fs=views[version], cache_storage=str(cache), skip_instance_cache=True
        )
        for i in range(0, FILES, 5):
            with cached.open(file_path(i), "rb") as f:
                got = f.read()
            assert got == file_bytes(version, i), f"{wrapper} {file_path(i)} v{version}"
    assert any(cache.iterdir()), "nothing was cached"
