"""Paths that carry their version (issue 15, item 1): one filesystem serves ``NAME@SPEC/path``
for every dataset and version of a store, resolves each spec once per instance and hands
out paths pinned as ``NAME@vN``; a filesystem rooted at a snapshot gives full URLs; fsspec's
caching wrappers, sharing one cache folder, never mix versions."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import fsspec
import pytest
from fsspec.core import OpenFile
from helpers import run, write

import datavc
from datavc.errors import BadInput, NotFoundError
from datavc.lineage import tracking


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace with x@v1, x@v2 (a.txt changed, sub/b.txt the same) and y@v1, its store
    beside it (a relative path in the config: a copy of the folder is a workspace with its
    own store). Built once; each test works on a copy."""
    base = tmp_path_factory.mktemp("urls")
    root = base / "ws"
    root.mkdir()
    run(root, "init", "--store", "../store")
    write(root / "x" / "a.txt", b"one\n")
    write(root / "x" / "sub" / "b.txt", b"same\n")
    write(root / "y" / "c.csv", b"k,v\n1,2\n")
    run(root, "add", "x")
    run(root, "add", "y")
    run(root, "commit", "-m", "v1")
    write(root / "x" / "a.txt", b"two\n")
    run(root, "add", "x")
    run(root, "commit", "-m", "v2")
    return base


@pytest.fixture
def ws(template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, str]:
    """A copy of the template (the workspace, and its store's path); the cwd is outside."""
    shutil.copytree(template, tmp_path / "t", symlinks=True)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    monkeypatch.delenv("DATAVC_STORE", raising=False)
    return tmp_path / "t" / "ws", str(tmp_path / "t" / "store")


def commit_v3(root: Path) -> None:
    write(root / "x" / "a.txt", b"three\n")
    run(root, "add", "x")
    run(root, "commit", "-m", "v3")


def test_one_filesystem_serves_every_version(ws: tuple[Path, str]) -> None:
    _, store = ws
    fs = fsspec.filesystem("datavc", store=store)
    assert isinstance(fs, datavc.DatavcFileSystem)
    assert sorted(fs.ls("", detail=False)) == ["x", "y"]
    assert fs.cat("x@v1/a.txt") == b"one\n"
    assert fs.cat("datavc://x@v2/a.txt") == b"two\n"
    assert fs.cat("y@latest/c.csv") == b"k,v\n1,2\n"
    # a listing names paths under the spec as written (resolved once for the instance);
    # what leaves it as an identifier is pinned: stripped paths, URLs, glob, file paths
    assert fs.ls("x@latest", detail=False) == ["x@latest/a.txt", "x@latest/sub"]
    assert fs.ls("x@v2", detail=False) == ["x@v2/a.txt", "x@v2/sub"]
    assert fs.ls("x", detail=False) == ["x/a.txt", "x/sub"]
    assert fs.info("x@latest/sub/b.txt")["name"] == "x@latest/sub/b.txt"
    assert fs.find("x@latest") == ["x@latest/a.txt", "x@latest/sub/b.txt"]
    assert list(fs.find("x@latest/sub", detail=True)) == ["x@latest/sub/b.txt"]
    assert fs.glob("x@latest/**/*.txt") == ["x@v2/a.txt", "x@v2/sub/b.txt"]
    assert fs.glob("x@v1/**/*.txt") == ["x@v1/a.txt", "x@v1/sub/b.txt"]
    with fs.open("x@latest/sub/b.txt") as f:
        assert f.path == "x@v2/sub/b.txt"
    assert fs.unstrip_protocol("x@latest/a.txt") == "datavc://x@v2/a.txt"
    assert fs._strip_protocol("datavc://x@latest/./sub//b.txt") == "x@v2/sub/b.txt"
    # without an instance nothing is resolved; a '/' of a git revision stays written %2F
    strip = datavc.DatavcFileSystem._strip_protocol
    assert strip("datavc://x@git:origin%2Fmain/./a//b") == "x@git:origin%2Fmain/a/b"
    run(ws[0], "tag", "x@v1", "gold")
    assert fs.ls("x@gold", detail=False) == ["x@gold/a.txt", "x@gold/sub"]
    assert fs.unstrip_protocol("x@gold/a.txt") == "datavc://x@v1/a.txt"
    with fsspec.open("datavc://x@gold/a.txt", store=store) as f:
        assert f.read() == b"one\n"


def test_a_bare_url_works_in_any_client(
    ws: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import pandas as pd

    _, store = ws
    monkeypatch.setenv("DATAVC_STORE", store)  # the store found as datavc.open finds it
    with fsspec.open("datavc://x@v1/a.txt", "rb") as f:
        assert f.read() == b"one\n"
    got = pd.read_csv("datavc://y@v1/c.csv")
    assert got.to_dict("list") == {"k": [1], "v": [2]}
    opened = fsspec.open("datavc://x@latest/a.txt")
    assert opened.full_name == "datavc://x@v2/a.txt"
    with opened as f:
        assert f.path == "x@v2/a.txt"  # the path as the filesystem names it: pinned


def test_a_spec_is_resolved_once_per_instance(ws: tuple[Path, str]) -> None:
    root, store = ws
    fs = fsspec.filesystem("datavc", store=store)
    assert fs.cat("x@latest/a.txt") == b"two\n"
    commit_v3(root)
    assert fs.cat("x@latest/a.txt") == b"two\n"  # what it resolved, for the instance's life
    assert fs._strip_protocol("x@latest/a.txt") == "x@v2/a.txt"
    fresh = datavc.DatavcFileSystem(store=store, skip_instance_cache=True)
    assert fresh.cat("x@latest/a.txt") == b"three\n"
    fs.invalidate_cache()
    assert fs.cat("x@latest/a.txt") == b"three\n"
    assert fs.cat("x@v1/a.txt") == b"one\n"


def test_instances_are_cached_by_store_and_options(
    ws: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, store = ws
    a = fsspec.filesystem("datavc", store=store)
    assert fsspec.filesystem("datavc", store=store) is a
    assert datavc.DatavcFileSystem(store=store) is a
    assert fsspec.filesystem("datavc", store=store, storage_options={"auto_mkdir": False}) is not a
    other = tmp_path / "other"
    shutil.copytree(store, other)  # the same versions, in another store
    assert fsspec.filesystem("datavc", store=str(other)) is not a
    # without store=, where the store is found is part of the key
    monkeypatch.setenv("DATAVC_STORE", store)
    b = fsspec.filesystem("datavc")
    assert b.store_url == a.store_url and b is not a
    monkeypatch.setenv("DATAVC_STORE", str(other))
    assert fsspec.filesystem("datavc") is not b
    # one rooted at a snapshot is never shared: its latest is resolved when made
    assert datavc.open("x@latest", store=store) is not datavc.open("x@latest", store=store)


def test_a_rooted_filesystem_gives_full_urls(ws: tuple[Path, str]) -> None:
    root, store = ws
    fs = datavc.open("x@latest", store=store)
    assert fs.ls("", detail=False) == ["a.txt", "sub"]
    assert fs.unstrip_protocol("sub/b.txt") == "datavc://x@v2/sub/b.txt"
    assert OpenFile(fs, "a.txt").full_name == "datavc://x@v2/a.txt"
    # its own URLs, by the spec it was opened with or the pinned one, are accepted
    assert fs.cat("datavc://x@latest/a.txt") == b"two\n"
    assert fs.cat("datavc://x@v2/a.txt") == b"two\n"
    with pytest.raises(BadInput):
        fs.cat("datavc://x@v1/a.txt")
    commit_v3(root)
    # a URL it handed out opens the same bytes in any filesystem, later
    url = fs.unstrip_protocol("a.txt")
    with fsspec.open(url, store=store) as f:
        assert f.read() == b"two\n"
    assert fs.to_dict()["args"] == ["x@v2"]


def test_ukey_and_checksum_never_mix_versions(ws: tuple[Path, str]) -> None:
    _, store = ws
    fs = datavc.DatavcFileSystem(store=store)
    assert fs.ukey("x@v1/a.txt") != fs.ukey("x@v2/a.txt")
    assert fs.checksum("x@v1/a.txt") != fs.checksum("x@v2/a.txt")
    assert fs.ukey("x@v1/sub/b.txt") == fs.ukey("x@v2/sub/b.txt")  # the same bytes
    assert fs.ukey("x@v1/sub") != fs.ukey("x@v2/sub")
    v1, v2 = datavc.open("x@v1", store=store), datavc.open("x@v2", store=store)
    assert v1.ukey("a.txt") != v2.ukey("a.txt")
    assert v1.checksum("a.txt") != v2.checksum("a.txt")


@pytest.mark.parametrize("wrapper", ["simplecache", "filecache", "blockcache"])
def test_caching_wrappers_with_one_cache_folder_never_mix_versions(
    ws: tuple[Path, str], tmp_path: Path, wrapper: str
) -> None:
    root, store = ws
    cache = str(tmp_path / "cache")

    def read(url: str) -> bytes:
        options = {wrapper: {"cache_storage": cache}, "datavc": {"store": store}}
        with fsspec.open(f"{wrapper}::{url}", "rb", **options) as f:
            data: bytes = f.read()
        return data

    assert read("datavc://x@v2/a.txt") == b"two\n"
    assert read("datavc://x@v1/a.txt") == b"one\n"
    assert read("datavc://x@latest/a.txt") == b"two\n"
    commit_v3(root)
    # as in a new process: nothing cached but the cache folder; latest is v3 now
    datavc.DatavcFileSystem.clear_instance_cache()
    fsspec.get_filesystem_class(wrapper).clear_instance_cache()
    assert read("datavc://x@latest/a.txt") == b"three\n"
    assert read("datavc://x@v2/a.txt") == b"two\n"


def test_pickled_copies_keep_the_versions_resolved(ws: tuple[Path, str]) -> None:
    root, store = ws
    fs = datavc.DatavcFileSystem(store=store)
    assert fs.cat("x@latest/a.txt") == b"two\n"
    commit_v3(root)
    copy = pickle.loads(pickle.dumps(fs))
    assert copy is not fs
    assert copy.cat("x@latest/a.txt") == b"two\n"  # what its parent resolved
    assert copy.cat("y@v1/c.csv") == b"k,v\n1,2\n"
    rooted = pickle.loads(pickle.dumps(datavc.open("x@latest", store=store)))
    assert rooted.cat("a.txt") == b"three\n"
    assert rooted.unstrip_protocol("a.txt") == "datavc://x@v3/a.txt"


def test_a_run_notes_each_version_once(ws: tuple[Path, str]) -> None:
    _, store = ws
    fs = datavc.DatavcFileSystem(store=store)
    fs.cat("x@v1/a.txt")  # before any run: nothing to tell
    for _ in range(2):  # two runs in a row, the same cached instance: each hears of it
        heard: list[tuple[str, int]] = []

        def listener(url: str, name: str, version: int, tree: str, heard: list = heard) -> None:
            heard.append((name, version))

        tracking.listen(listener)
        try:
            fs.cat("x@v1/a.txt")
            fs.cat("x@v1/sub/b.txt")
            fs.cat("x@latest/a.txt")
            fs.ls("y@v1")
        finally:
            tracking.stop_listening(listener)
        assert sorted(heard) == [("x", 1), ("x", 2), ("y", 1)]


@pytest.mark.parametrize(
    "path",
    ["x@v1/../../ws/x/a.txt", "x@v9/a.txt", "nosuch@v1/a.txt", "x@v1/zzz"],
)
def test_paths_that_name_nothing(ws: tuple[Path, str], path: str) -> None:
    fs = datavc.DatavcFileSystem(store=ws[1])
    with pytest.raises(NotFoundError):
        fs.cat(path)
    with pytest.raises(FileNotFoundError):
        fs.info("datavc://" + path)


@pytest.mark.parametrize(
    "path", [".datavc@v1/a", "../x@v1/a.txt", "x@v1%00/a", "x@git:-p/a", "x@/a", "a b@v1/c"]
)
def test_malformed_specs_are_refused(ws: tuple[Path, str], path: str) -> None:
    fs = datavc.DatavcFileSystem(store=ws[1])
    with pytest.raises(BadInput):
        fs.cat(path)
