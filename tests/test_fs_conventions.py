"""``datavc.open`` follows the conventions of fsspec's LocalFileSystem (issue 15, item 2,
in part): fsspec's standard arguments are accepted; a folder opened as a file is an
IsADirectoryError, a path through a file a NotADirectoryError, a missing one a
FileNotFoundError; every write is a PermissionError (an OSError), ``makedirs`` included;
``info`` carries the version's commit time, as ``created`` and ``modified`` do."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import fsspec
import pytest
from helpers import run, write

import datavc


@pytest.fixture
def fs(tmp_path: Path) -> datavc.DatavcFileSystem:
    root = tmp_path / "ws"
    root.mkdir()
    store = tmp_path / "store"
    run(root, "init", "--store", str(store))
    write(root / "d" / "a.txt", b"a\n")
    write(root / "d" / "sub" / "b.txt", b"b\n")
    run(root, "add", "d")
    run(root, "commit", "-m", "v1")
    return datavc.open("d@v1", store=str(store))


def test_fsspec_standard_arguments_are_accepted(fs: datavc.DatavcFileSystem) -> None:
    other = datavc.DatavcFileSystem(
        "d@v1",
        store=fs.store_url,
        asynchronous=True,
        loop=None,
        use_listings_cache=False,
        listings_expiry_time=10.0,
        max_paths=5,
        skip_instance_cache=True,
    )
    assert other.cat_file("sub/b.txt") == b"b\n"
    opened = fsspec.open("datavc://d@v1/a.txt", store=fs.store_url, use_listings_cache=False)
    with opened as f:
        assert f.read() == b"a\n"


def test_the_exceptions_local_files_raise(fs: datavc.DatavcFileSystem) -> None:
    for unlisted in (True, False):
        if not unlisted:
            fs.ls("")  # the listing is read: the same answers from it
        with pytest.raises(IsADirectoryError):
            fs.open("sub")
        with pytest.raises(IsADirectoryError):
            fs.cat_file("")
        with pytest.raises(NotADirectoryError):
            fs.open("a.txt/x")
        with pytest.raises(FileNotFoundError):
            fs.open("nothing.txt")
    assert not fs.exists("a.txt/x") and fs.isdir("sub") and fs.isfile("a.txt")


@pytest.mark.parametrize(
    "write_call",
    [
        lambda fs: fs.open("new.txt", "wb"),
        lambda fs: fs.pipe_file("new.txt", b"x"),
        lambda fs: fs.touch("new.txt"),
        lambda fs: fs.makedirs("newdir", exist_ok=True),
        lambda fs: fs.mkdir("newdir"),
        lambda fs: fs.rm("a.txt"),
        lambda fs: fs.rm_file("a.txt"),
        lambda fs: fs.cp_file("a.txt", "c.txt"),
        lambda fs: fs.mv("a.txt", "c.txt"),
    ],
)
def test_every_write_is_a_permission_error(fs: datavc.DatavcFileSystem, write_call: object) -> None:
    with pytest.raises(PermissionError) as err:
        write_call(fs)  # type: ignore[operator]
    assert isinstance(err.value, OSError) and "read-only" in str(err.value)
    assert fs.cat_file("a.txt") == b"a\n"


def test_info_carries_the_commit_time(fs: datavc.DatavcFileSystem) -> None:
    committed = datetime.strptime(fs.record.time, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    for path in ("a.txt", "sub", "sub/b.txt"):
        info = fs.info(path)
        assert info["created"] == info["mtime"] == committed.timestamp()
        assert fs.modified(path) == fs.created(path) == committed
    assert abs((datetime.now(timezone.utc) - committed).total_seconds()) < 600
    with pytest.raises(FileNotFoundError):
        fs.modified("nothing")
    json.dumps(fs.info("a.txt"))  # what tools serialise


def test_to_json_round_trips_pinned_to_the_version(fs: datavc.DatavcFileSystem) -> None:
    import pickle

    from fsspec.spec import AbstractFileSystem

    text = fs.to_json()
    doc = json.loads(text)
    assert doc["args"] == ["d@v1"] and doc["store"] == fs.store_url
    back = AbstractFileSystem.from_json(text)
    assert isinstance(back, datavc.DatavcFileSystem)
    assert back.snapshot == fs.snapshot and back.cat_file("sub/b.txt") == b"b\n"
    assert pickle.loads(pickle.dumps(fs)).to_json() == text  # an unpickled copy too
    latest = datavc.open("d@latest", store=fs.store_url)
    assert json.loads(latest.to_json())["args"] == ["d@v1"]  # pinned, not "latest"
    secret = datavc.open("d@v1", store=fs.store_url, storage_options={"password": "pw"})
    assert "pw" in secret.to_json() and "pw" not in secret.to_json(include_password=False)


@pytest.mark.parametrize("path", ["./a.txt", "//a.txt", "sub/../a.txt", "sub/./../a.txt/"])
def test_paths_are_normalised(fs: datavc.DatavcFileSystem, path: str) -> None:
    assert fs.cat_file(path) == b"a\n"
    assert fs.cat_file(f"datavc://d@v1/{path}") == b"a\n"


@pytest.mark.parametrize("path", ["../a.txt", "sub/../../a.txt"])
def test_a_path_above_the_root_names_nothing(fs: datavc.DatavcFileSystem, path: str) -> None:
    with pytest.raises(FileNotFoundError):
        fs.cat_file(path)
