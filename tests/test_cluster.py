"""A distributed add and a sharded materialize on a real Dask cluster (issue 16, item 4):
a LocalCluster of two worker processes. The add's snapshot must be the one a local add of
the same files makes; a worker killed in the middle of its shard has the shard redone, and
what it left is referred to by nothing; shards written by several processes make the
snapshot together."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import pytest
from distributed.diagnostics.plugin import WorkerPlugin
from helpers import clean_environment, local_cluster, rand, run, write

import datavc
from datavc.errors import BadInput
from datavc.workspace.cluster import shards
from datavc.workspace.core import Workspace
from datavc.workspace.initialize import init_workspace

KiB, MiB = 1 << 10, 1 << 20


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Two worker processes, one thread each, started once for the module."""
    from distributed import Client

    base = tmp_path_factory.mktemp("dask")
    with pytest.MonkeyPatch.context() as mp:
        clean_environment(mp, base / "home")
        mp.chdir(base)
        local = local_cluster(base)
    with local, Client(local) as client:
        yield client


def files_of(seed: str) -> dict[str, bytes]:
    """Many small files, some equal, a few large (one streamed: over 8 MiB)."""
    out = {f"small/{i:03d}.bin": rand(f"{seed}{i % 40}", 1000 + 997 * i) for i in range(90)}
    out["big/streamed.bin"] = rand(f"{seed}big", 12 * MiB + 123)
    out["big/whole.bin"] = rand(f"{seed}whole", 3 * MiB + 5)
    out["big/copy.bin"] = out["big/whole.bin"]  # the same chunks, perhaps in another shard
    out["empty.txt"] = b""
    return out


def workspace(root: Path, files: dict[str, bytes]) -> Workspace:
    root.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    init_workspace(str(root), None)
    for rel, data in files.items():
        write(root / "data" / rel, data)
    return Workspace(str(root))


def twins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: str
) -> tuple[dict[str, bytes], Workspace, Workspace]:
    """The same files in two workspaces: one to add locally, one to add on the cluster."""
    clean_environment(monkeypatch, tmp_path / "home")
    files = files_of(seed)
    return files, workspace(tmp_path / "local", files), workspace(tmp_path / "spread", files)


def snapshot_files(spec: str, cwd: Path) -> dict[str, bytes]:
    here = os.getcwd()
    os.chdir(cwd)
    try:
        fs = datavc.open(spec)
        return {p: fs.cat_file(p) for p in fs.find("")}
    finally:
        os.chdir(here)


def test_shards_are_consecutive_and_bounded() -> None:
    from datavc.store.files import LocalFile

    files = [LocalFile(f"f{i:04d}", "/x", s, 0o644, 0, 0, i) for i, s in enumerate([5 * MiB] * 10)]
    parts = shards(files, 2)
    assert [f for part in parts for f in part] == files  # every file once, in path order
    assert len(parts) >= 4 and all(sum(f.size for f in p) <= 13 * MiB for p in parts)
    assert shards([], 2) == []


def test_a_dask_add_makes_the_snapshot_a_local_add_makes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cluster: Any
) -> None:
    files, local, spread = twins(tmp_path, monkeypatch, "a")
    want = local.add(f"{local.root}/data").staged
    got = spread.add(f"{spread.root}/data", None, cluster).staged
    assert got.tree == want.tree and (got.files, got.bytes) == (want.files, want.bytes)
    assert got.new_bytes >= want.new_bytes > 10 * MiB  # a chunk may be stored by two shards
    run(tmp_path / "spread", "commit", "-m", "v1")
    assert snapshot_files("data@v1", tmp_path / "spread") == files
    run(tmp_path / "spread", "fsck")
    # a second add with nothing changed reads nothing on the cluster, and says so
    again = spread.add(f"{spread.root}/data", None, cluster)
    assert again.staged.tree == want.tree and again.staged.new_bytes == 0


def test_the_cli_adds_through_a_scheduler_and_refuses_an_unreachable_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cluster: Any
) -> None:
    clean_environment(monkeypatch, tmp_path / "home")
    files = files_of("b")
    ws = workspace(tmp_path / "ws", files)
    address = cluster.scheduler.address
    gone = run(tmp_path / "ws", "add", "data", "--dask", "tcp://127.0.0.1:9", code=2)
    assert "cannot reach the Dask scheduler" in gone.stderr and len(gone.stderr.splitlines()) == 1
    staged = Path(ws.state) / "staged"
    assert not staged.exists() or not list(staged.iterdir())  # nothing staged
    out = run(tmp_path / "ws", "add", "data", "--dask", address)
    assert "staged 94 files" in out.stdout
    run(tmp_path / "ws", "commit", "-m", "v1")
    assert snapshot_files("data@v1", tmp_path / "ws") == files


class _KillFirstShard(WorkerPlugin):  # type: ignore[misc]
    """A worker plugin: the first time a worker starts a shard of an add, it dies as
    soon as that shard has begun writing a pack (the process exits; its nanny starts a
    new one)."""

    name = "datavc-kill-first-shard"

    def __init__(self, marker: str, packs: str) -> None:
        self.marker, self.packs = marker, packs

    def setup(self, worker: Any) -> None:
        pass

    def teardown(self, worker: Any) -> None:
        pass

    def transition(self, key: Any, start: str, finish: str, **kwargs: Any) -> None:
        if finish != "executing" or "add_shard" not in str(key):
            return
        try:
            os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return  # another shard, or the second attempt: left alone

        own = os.path.join(os.path.realpath(self.packs), ".tmp-pack")

        def writing() -> bool:
            """This worker has a pack of its own open (another worker's does not count:
            this one must die leaving a pack half written)."""
            for fd in os.listdir("/proc/self/fd"):
                try:
                    if os.readlink(f"/proc/self/fd/{fd}").startswith(own):
                        return True
                except OSError:
                    continue  # closed since listed
            return False

        def kill_once_writing() -> None:
            while not writing():
                threading.Event().wait(0.002)
            os._exit(1)

        threading.Thread(target=kill_once_writing, daemon=True).start()


def test_a_worker_killed_mid_shard_has_its_shard_redone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cluster: Any
) -> None:
    files, local, spread = twins(tmp_path, monkeypatch, "c")
    want = local.add(f"{local.root}/data").staged.tree
    packs = os.path.join(spread.dot, "store", "packs")
    plugin = _KillFirstShard(str(tmp_path / "killed"), packs)
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import it
    cluster.register_plugin(plugin, name=plugin.name)
    try:
        got = spread.add(f"{spread.root}/data", None, cluster).staged.tree
    finally:
        cluster.unregister_worker_plugin(plugin.name)
    assert (tmp_path / "killed").exists()  # a worker did die in a shard, mid-pack:
    assert any(n.startswith(".tmp-pack") for n in os.listdir(packs))  # it left this
    assert got == want
    run(tmp_path / "spread", "commit", "-m", "v1")
    assert snapshot_files("data@v1", tmp_path / "spread") == files
    run(tmp_path / "spread", "fsck")  # what the dead worker left is referred to by nothing
    run(tmp_path / "spread", "gc", "--yes", code=None)
    assert snapshot_files("data@v1", tmp_path / "spread") == files


def test_shards_materialize_a_snapshot_together(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cluster: Any
) -> None:
    clean_environment(monkeypatch, tmp_path / "home")
    files = files_of("d")
    ws = workspace(tmp_path / "ws", files)
    ws.add(f"{ws.root}/data")
    run(tmp_path / "ws", "commit", "-m", "v1")
    store = os.path.join(ws.dot, "store")
    dest = tmp_path / "out"
    (dest / "small").mkdir(parents=True)
    (dest / "small" / "stray.bin").write_bytes(b"not in the snapshot")
    n = 3
    written = cluster.gather(
        [
            cluster.submit(datavc.materialize, "data@v1", str(dest), shard=(i, n), store=store)
            for i in range(n)
        ]
    )
    assert sum(written) == len(files)
    got = {str(p.relative_to(dest)): p.read_bytes() for p in dest.rglob("*") if p.is_file()}
    assert got == {**files, "small/stray.bin": b"not in the snapshot"}  # a shard prunes nothing
    assert datavc.materialize("data@v1", str(dest), store=store) == 0  # whole: prunes
    assert not (dest / "small" / "stray.bin").exists()
    with pytest.raises(BadInput):
        datavc.materialize("data@v1", str(dest), shard=(3, 3), store=store)
    shutil.rmtree(dest)


def test_a_dask_add_keeps_the_whole_trees_path_rules(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cluster: Any
) -> None:
    """Paths that differ only by case, in two shards: refused as a local add refuses
    them (each worker sees only its shard), and nothing is staged."""
    from datavc.errors import UnsafePath

    clean_environment(monkeypatch, tmp_path / "home")
    ws = workspace(tmp_path / "ws", {"A.bin": rand("A", 3 * MiB), "a.bin": rand("a", 3 * MiB)})
    with pytest.raises(UnsafePath):
        ws.add(f"{ws.root}/data", None, cluster)
    staged = Path(ws.state) / "staged"
    assert not staged.exists() or not list(staged.iterdir())


def test_shards_write_through_stale_things_in_the_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cluster: Any
) -> None:
    """A file and a symlink where the snapshot has folders: shards written at once each
    clear only what is in their own way, as they go, and lose none of the others' files."""
    clean_environment(monkeypatch, tmp_path / "home")
    files = {f"f{d}/x{i:02d}.bin": rand(f"s{d}{i}", 2000 + i) for d in range(4) for i in range(30)}
    ws = workspace(tmp_path / "ws", files)
    ws.add(f"{ws.root}/data")
    run(tmp_path / "ws", "commit", "-m", "v1")
    store = os.path.join(ws.dot, "store")
    for attempt in range(3):
        dest = tmp_path / f"out{attempt}"
        dest.mkdir()
        (dest / "f2").write_bytes(b"a file where a folder goes")
        os.symlink(str(tmp_path), dest / "f3")
        n = 4
        jobs = [
            cluster.submit(datavc.materialize, "data@v1", str(dest), shard=(i, n), store=store)
            for i in range(n)
        ]
        assert sum(cluster.gather(jobs)) == len(files)
        got = {str(p.relative_to(dest)): p.read_bytes() for p in dest.rglob("*") if p.is_file()}
        assert got == files


def test_stale_stages_of_other_hosts_are_left_alone(tmp_path: Path) -> None:
    """On a shared filesystem another host's writer's pid means nothing here."""
    from datavc.store import materialize as m

    dead = 2**22 + 12345  # above any pid this machine hands out
    mine = tmp_path / f"{m.TMP_PREFIX}{dead}-{m._host()}-abc"
    other = tmp_path / f"{m.TMP_PREFIX}{dead}-0badc0de-abc"
    legacy = tmp_path / f"{m.TMP_PREFIX}{dead}-abc"
    for p in (mine, other, legacy):
        p.mkdir()
    m._remove_stale_stages(str(tmp_path))
    assert other.exists() and not mine.exists() and not legacy.exists()


@pytest.mark.parametrize("shard", [(1,), (0, 2, 3), (True, 2), [0, 2], (-1, 2), (2, 2), (0, 0)])
def test_a_bad_shard_is_one_clear_error(shard: Any, tmp_path: Path) -> None:
    with pytest.raises(BadInput):
        datavc.materialize("x@v1", str(tmp_path / "out"), shard=shard, store=str(tmp_path))


def test_a_malformed_scheduler_address_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clean_environment(monkeypatch, tmp_path / "home")
    workspace(tmp_path / "ws", {"a.bin": b"a"})
    for address in ("foo", "http://127.0.0.1:9"):
        out = run(tmp_path / "ws", "add", "data", "--dask", address, code=2)
        assert "Dask scheduler" in out.stderr and len(out.stderr.splitlines()) == 1
