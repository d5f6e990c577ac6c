"""Remotes, push, fetch and pull: a workspace on the embedded store pushes to a remote (a
local folder, S3 on the moto server), a fresh ``git clone`` pulls byte-exact data, a push
killed half-way moves only the rest when rerun, a diverged ``NAME@vN`` is refused, and
what is copied is checked and obeys the destination's gc records.

The command line runs in subprocesses in real git repositories; the store-level rules
(verification, gc records, tags, forgotten versions) run in-process on local folders.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from conftest import BUCKET
from helpers import rand, tree_state, write
from test_cli import assert_error, closed_port, git, run

from datavc.errors import Diverged, IntegrityError, UsageError
from datavc.format.chunker import ChunkerParams
from datavc.format.gcrecord import GcRecord, encode_gc_record
from datavc.format.hashing import ObjectId, is_object_id, object_id
from datavc.format.pointer import decode_pointer
from datavc.format.storeconfig import StoreConfig
from datavc.store import versions
from datavc.store.backend import Backend
from datavc.store.check import fsck
from datavc.store.chunkstore import ChunkStore
from datavc.store.sync import copy_versions
from datavc.workspace.config import load_remotes
from datavc.workspace.core import Workspace
from datavc.workspace.initialize import init_workspace
from datavc.workspace.remotes import add_remote, remove_remote

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

MiB = 1 << 20


# -- helpers ----------------------------------------------------------------------------


def make_data(folder: Path, seed: str, big: int = 300_000) -> None:
    write(folder / "a.bin", rand(f"{seed}-a", big))
    write(folder / "empty", b"")
    write(folder / "tools" / "run.sh", rand(f"{seed}-run", 4_000), executable=True)
    write(folder / "sub" / "c.bin", rand(f"{seed}-c", 90_000))


def new_repo(path: Path, *init: str) -> Path:
    path.mkdir()
    git(path, "init", "-q")
    run(path, "init", *init)
    return path


def commit_data(repo: Path, seed: str, message: str, big: int = 300_000) -> None:
    make_data(repo / "data" / "ds", seed, big)
    run(repo, "add", "data/ds")
    run(repo, "commit", "-m", message)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", message)


def as_json(proc: subprocess.CompletedProcess[str]) -> dict[str, object]:
    doc: dict[str, object] = json.loads(proc.stdout)
    return doc


def store_at(url: str) -> ChunkStore:
    return ChunkStore.open(Backend(url))


def pack_sizes(root: Path) -> dict[str, int]:
    folder = root / "packs"
    if not folder.is_dir():
        return {}
    return {p.name: p.stat().st_size for p in folder.iterdir() if is_object_id(p.name)}


# -- the command line: push, clone, pull ---------------------------------------------------


def test_push_then_pull_into_a_fresh_clone(tmp_path: Path, shared_store_url: str) -> None:
    """A workspace on the embedded store pushes to a remote (a local folder, or S3): the
    remote becomes a sound store; a fresh clone is told to pull, pulls byte-exact data, and
    a second push or pull moves nothing; a new version moves only its new data."""
    a = new_repo(tmp_path / "a")
    commit_data(a, "v1", "data v1", big=2 * MiB)
    run(a, "remote", "add", "origin", shared_store_url)
    git(a, "add", "-A")
    git(a, "commit", "-qm", "remote")
    first = as_json(run(a, "push", "--json"))
    assert first["created_store"] is True
    assert first["versions_copied"] == ["ds@v1"]
    assert fsck(store_at(shared_store_url)).ok
    assert as_json(run(a, "push", "--json"))["bytes_written"] == 0

    b = tmp_path / "b"
    git(tmp_path, "clone", "-q", str(a), str(b))
    line = assert_error(b, ["checkout"], 4, "no datavc store at")
    assert "datavc pull" in line and "'origin'" in line
    pulled = as_json(run(b, "pull", "--json"))
    assert pulled["versions_copied"] == ["ds@v1"]
    assert pulled["checked_out"] == ["ds@v1"]
    assert tree_state(b / "data" / "ds") == tree_state(a / "data" / "ds")
    assert (b / "data" / "ds.datavc").read_text() == (a / "data" / "ds.datavc").read_text()
    assert as_json(run(b, "pull", "--json"))["bytes_written"] == 0

    write(a / "data" / "ds" / "new.bin", rand("new", 200_000))
    run(a, "add", "data/ds")
    run(a, "commit", "-m", "v2")
    git(a, "add", "-A")
    git(a, "commit", "-qm", "v2")
    second = as_json(run(a, "push", "--json"))
    assert second["versions_copied"] == ["ds@v2"]
    assert second["versions_present"] == ["ds@v1"]
    assert 200_000 <= int(second["pack_bytes_copied"]) < 400_000  # v1's 2 MB stay put
    latest = as_json(run(b, "pull", "ds@latest", "--json"))
    assert latest["versions_copied"] == ["ds@v2"] and latest["checked_out"] == ["ds@v2"]
    assert tree_state(b / "data" / "ds") == tree_state(a / "data" / "ds")
    assert decode_pointer((b / "data" / "ds.datavc").read_text(), "p").version == 2
    assert fsck(store_at(shared_store_url)).ok


def test_remote_options_come_from_the_local_config(tmp_path: Path, s3_env: str) -> None:
    """An S3 remote whose endpoint is known only from [remotes.NAME.storage_options] in
    config.local.toml, which is not committed."""
    a = new_repo(tmp_path / "a")
    commit_data(a, "v1", "one")
    url = f"s3://{BUCKET}/{uuid.uuid4().hex}"
    run(a, "remote", "add", "s3", url)
    local = a / ".datavc" / "config.local.toml"
    local.write_text(f'[remotes.s3.storage_options]\nendpoint_url = "{s3_env}"\n')
    dead = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{closed_port()}"}  # only the option works
    assert as_json(run(a, "push", "--json", env=dead))["versions_copied"] == ["ds@v1"]
    assert s3_env not in (a / ".datavc" / "config.toml").read_text()
    assert fsck(store_at(url)).ok


def test_remote_commands_and_their_errors(tmp_path: Path) -> None:
    a = new_repo(tmp_path / "a")
    assert_error(a, ["push"], 4, "no remote configured")
    assert_error(a, ["remote", "add", "o", "s3://KEY:SECRET@bucket/x"], 8, "holds a password")
    assert_error(a, ["remote", "add", "../o", str(tmp_path / "r")], 8, "invalid remote name")
    assert_error(a, ["remote", "add", "self", ".datavc/store"], 2, "own store")
    run(a, "remote", "add", "one", str(tmp_path / "r1"))
    assert_error(a, ["remote", "add", "one", str(tmp_path / "r9")], 2, "exists")
    run(a, "remote", "add", "two.b", str(tmp_path / "r2"))
    assert_error(a, ["push"], 2, "none is the default")
    run(a, "remote", "add", "three", str(tmp_path / "r3"), "--default")
    assert_error(a, ["push", "onne"], 3, "no remote or dataset named 'onne'")
    listed = run(a, "remote", "list").stdout.splitlines()
    assert [x.split()[0] for x in listed] == ["one", "three", "two.b"]
    assert listed[1].endswith("(default)") and not listed[0].endswith("(default)")
    run(a, "push")
    assert (tmp_path / "r3" / "datavc.json").exists()
    assert not (tmp_path / "r1").exists()
    run(a, "push", "two.b")
    assert (tmp_path / "r2" / "datavc.json").exists()
    run(a, "remote", "remove", "three")
    assert_error(a, ["remote", "remove", "three"], 3, "no remote named 'three'")
    config = (a / ".datavc" / "config.toml").read_text()
    assert "three" not in config and '[remotes."two.b"]' in config and "[core]" in config


@pytest.mark.parametrize(
    "table, message",
    [
        ('[remotes."a/b"]\nurl = "/x"\n', "invalid remote name"),
        ('[remotes.o]\nurl = "s3://K:S@b/x"\n', "holds a password"),
        ("[remotes.o]\nurl = 3\n", "url must be"),
        ('[remotes.o]\nurl = "/x"\ndefault = "yes"\n', "default must be"),
        ('remotes = "o"\n', "remotes must be a table"),
    ],
)
def test_a_hostile_remotes_table_is_refused(tmp_path: Path, table: str, message: str) -> None:
    """config.toml arrives with git pull: its remotes are checked before use."""
    root = tmp_path / "ws"
    root.mkdir()
    init_workspace(str(root), None)
    config = root / ".datavc" / "config.toml"
    config.write_text(table + config.read_text())
    assert_error(root, ["push"], 8, message)


def test_a_push_killed_half_way_moves_only_the_rest(tmp_path: Path) -> None:
    """SIGKILL while the push's fourth pack is being stored (1 MiB packs): three are in the
    remote, no version; the rerun stores every byte a whole push stores except those three
    packs and datavc.json, and the remote is then sound."""
    a = new_repo(tmp_path / "a", "--pack-size", "1")
    commit_data(a, "v1", "one", big=9 * MiB)
    whole = tmp_path / "whole"
    run(a, "remote", "add", "whole", str(whole))
    full = as_json(run(a, "push", "whole", "--json"))
    assert int(full["packs_copied"]) >= 8

    remote = tmp_path / "remote"
    run(a, "remote", "add", "origin", str(remote))
    marker = tmp_path / "blocked"
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD_AFTER_PACKS, str(marker), "3", "push", "origin"],
        cwd=a,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not (marker.exists() and len(pack_sizes(remote)) == 3):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    there = pack_sizes(remote)
    assert len(there) == 3
    assert not (remote / "versions").exists()
    assert there.items() <= pack_sizes(whole).items()

    rerun = as_json(run(a, "push", "origin", "--json"))
    moved, total = int(rerun["bytes_written"]), int(full["bytes_written"])
    config = len((whole / "datavc.json").read_bytes())
    assert moved == total - sum(there.values()) - config
    assert rerun["packs_present"] == 3
    assert rerun["packs_copied"] == int(full["packs_copied"]) - 3
    assert pack_sizes(remote) == pack_sizes(whole)
    report = fsck(store_at(str(remote)))
    assert report.ok, report.problems
    print(
        f"killed push: {sum(there.values())} bytes in 3 of {full['packs_copied']} packs "
        "stored before the kill; "
        f"rerun wrote {moved} of the {total} bytes a whole push writes"
    )


# After ``limit`` packs are stored, every other attempt to store one waits forever (in
# the test's process, the marker then exists): the push is killed there.
_HOLD_AFTER_PACKS = """
import sys, threading, time
from datavc.store.backend import Backend
marker, limit = sys.argv[1], int(sys.argv[2])
sys.argv = ["datavc", *sys.argv[3:]]
lock, started = threading.Lock(), [0]
put_path = Backend.put_path
def held(self, key, src, move):
    if key.startswith("packs/"):
        with lock:
            n = started[0]
            started[0] += 1
        if n >= limit:
            open(marker, "w").close()
            time.sleep(3600)
    put_path(self, key, src, move)
Backend.put_path = held
from datavc.cli.entry import main
main()
"""


def test_a_diverged_version_is_refused(tmp_path: Path) -> None:
    """Two workspaces, each on its own embedded store, commit ds@v1 with different data and
    push to one remote: the second push stops, naming ds@v1, and leaves the remote's v1;
    fetching the remote's v1 into the second store is refused the same way."""
    remote = tmp_path / "remote"
    a = new_repo(tmp_path / "a")
    commit_data(a, "a", "from a")
    run(a, "remote", "add", "origin", str(remote))
    run(a, "push")
    c = new_repo(tmp_path / "c")
    commit_data(c, "c", "from c")
    run(c, "remote", "add", "origin", str(remote))
    before = (remote / "versions" / "ds" / "1.json").read_bytes()
    line = assert_error(c, ["push"], 7, "ds@v1")
    assert "no version was copied or overwritten" in line
    assert (remote / "versions" / "ds" / "1.json").read_bytes() == before
    assert not (remote / "versions" / "ds" / "2.json").exists()
    assert_error(c, ["fetch", "ds@v1"], 7, "ds@v1")
    assert fsck(store_at(str(remote))).ok


# -- the store level: verification, gc records, tags, forgotten versions -------------------


def _workspace(tmp_path: Path, name: str, seed: str, pack_mib: int = 1) -> Workspace:
    root = tmp_path / name
    root.mkdir()
    init_workspace(str(root), None, pack_target=pack_mib * MiB)
    ws = Workspace(str(root))
    make_data(root / "data", seed, big=3 * MiB)
    ws.add(str(root / "data"))
    ws.commit([], "v1")
    return ws


def test_damaged_source_bytes_are_never_copied(tmp_path: Path) -> None:
    """A chunk of the source that does not match its id stops the copy before any version
    is published in the destination."""
    ws = _workspace(tmp_path, "ws", "s")
    packs = Path(ws.store.backend.root) / "packs"
    victim = max((p for p in packs.iterdir() if is_object_id(p.name)), key=os.path.getsize)
    data = bytearray(victim.read_bytes())
    data[100] ^= 0xFF
    victim.write_bytes(bytes(data))
    dst = store_at(str(tmp_path / "remote"))
    with pytest.raises(IntegrityError):
        copy_versions(ws.store, dst, [("data", 1)])
    assert versions.version_numbers(dst, "data") == []


def test_a_condemned_destination_pack_is_written_anew(tmp_path: Path) -> None:
    """Packs an interrupted copy left in the destination that a gc run then condemned are
    not reused: the copy deletes and stores them again, so gc's deletion misses them."""
    ws = _workspace(tmp_path, "ws", "g")
    remote = tmp_path / "remote"
    dst = store_at(str(remote))
    copy_versions(ws.store, dst, [("data", 1)])
    (remote / "versions" / "data" / "1.json").unlink()  # as if the copy had stopped there
    condemned = sorted(ObjectId(n) for n in pack_sizes(remote))
    record = encode_gc_record(GcRecord("2026-01-01T00:00:00Z", tuple(condemned), ()))
    (remote / "gc").mkdir()
    (remote / "gc" / object_id(record)).write_bytes(record)
    for name in condemned:
        os.utime(remote / "packs" / name, (1_000_000, 1_000_000))
    report = copy_versions(ws.store, store_at(str(remote)), [("data", 1)])
    assert report.packs_present == 0
    assert report.packs_copied == len(condemned)
    assert all((remote / "packs" / n).stat().st_mtime > 1_000_000 for n in condemned)
    assert fsck(store_at(str(remote))).ok


def test_tags_and_forgotten_versions(tmp_path: Path) -> None:
    """A tag naming a copied version is copied; one that differs in the destination is
    left and reported; a forgotten version is not copied."""
    ws = _workspace(tmp_path, "ws", "t")
    write(Path(ws.root) / "data" / "more", b"more")
    ws.add(str(Path(ws.root) / "data"))
    ws.commit([], "v2")
    ws.store.backend.replace("tags/data/best", b"2\n")
    ws.store.backend.replace("tags/data/old", b"2\n")
    remote = tmp_path / "remote"
    dst = store_at(str(remote))
    dst.backend.create_exclusive("datavc.json", ws.store.config.encode())
    dst.backend.replace("tags/data/old", b"1\n")
    versions.forget_version(ws.store, "data", 1, "me", "2026-01-01T00:00:00Z")
    report = copy_versions(ws.store, store_at(str(remote)), [("data", 1), ("data", 2)])
    assert report.copied == ["data@v2"]
    assert report.forgotten_here == ["data@v1"]
    assert report.tags_copied == ["data@best"]
    assert any("tag data@old" in n for n in report.notes)
    assert (remote / "tags" / "data" / "old").read_bytes() == b"1\n"
    assert not (remote / "versions" / "data" / "1.json").exists()


def test_other_chunker_parameters_are_refused(tmp_path: Path) -> None:
    ws = _workspace(tmp_path, "ws", "p")
    remote = tmp_path / "remote"
    other = StoreConfig(ChunkerParams(avg_size=16384, min_size=4096, max_size=65536))
    ChunkStore.create(Backend(str(remote)), other)
    with pytest.raises(UsageError, match="other parameters"):
        copy_versions(ws.store, store_at(str(remote)), [("data", 1)])
    assert not (remote / "packs").exists()


def test_a_diverged_version_is_named_in_the_error(tmp_path: Path) -> None:
    one, two = _workspace(tmp_path, "one", "x"), _workspace(tmp_path, "two", "y")
    dst = store_at(str(tmp_path / "remote"))
    copy_versions(one.store, dst, [("data", 1)])
    with pytest.raises(Diverged) as err:
        copy_versions(two.store, dst, [("data", 1)])
    assert err.value.versions == ("data@v1",)


def test_config_toml_is_rewritten_around_its_remotes(tmp_path: Path) -> None:
    """remote add and remove rewrite only the [remotes] tables: other lines stay, committed
    storage options are kept, local ones (secrets) never reach config.toml, init --force
    keeps the remotes, and a file that cannot be rewritten safely is left as it was."""
    root = tmp_path / "ws"
    root.mkdir()
    init_workspace(str(root), None)
    config = root / ".datavc" / "config.toml"
    config.write_text(
        '# mine\n[core]\nstore = ".datavc/store"\n\n[remotes.a]\nurl = "/a"  # note\n\n'
        '[remotes.a.storage_options]\nclient_kwargs = { region_name = "x" }\nanon = false\n\n'
        "[storage_options]\nx = 1\n"
    )
    (root / ".datavc" / "config.local.toml").write_text(
        '[remotes.a.storage_options]\nsecret = "s3cr3t"\n'
    )
    ws = Workspace(str(root))
    add_remote(ws, "b", "s3://bucket/b", default=True)
    text = config.read_text()
    assert text.startswith("# mine\n[core]\n") and "s3cr3t" not in text
    options = {"client_kwargs": {"region_name": "x"}, "anon": False}
    assert tomllib.loads(text) == {
        "core": {"store": ".datavc/store"},
        "storage_options": {"x": 1},
        "remotes": {
            "a": {"url": "/a", "storage_options": options},
            "b": {"url": "s3://bucket/b", "default": True},
        },
    }
    assert load_remotes(str(root))["a"].storage_options == {**options, "secret": "s3cr3t"}
    remove_remote(ws, "a")
    init_workspace(str(root), str(tmp_path / "other"), force=True)
    assert list(load_remotes(str(root))) == ["b"]
    config.write_text('remotes.c.url = "/c"\n[core]\nstore = ".datavc/store"\n')
    with pytest.raises(UsageError, match="by hand"):
        add_remote(Workspace(str(root)), "d", "/d")
    assert config.read_text() == 'remotes.c.url = "/c"\n[core]\nstore = ".datavc/store"\n'


@pytest.mark.stress
def test_pushes_killed_at_random_points_resume(tmp_path: Path, shared_store_url: str) -> None:
    """Real SIGKILLs from outside, once 1 to 6 packs are in the remote (local folder or S3):
    each rerun stores what a whole push stores less the packs found there, the remote is
    then sound, and a clone pulls byte-exact data."""
    a = new_repo(tmp_path / "a", "--pack-size", "1")
    commit_data(a, "v1", "one", big=12 * MiB)
    run(a, "remote", "add", "whole", str(tmp_path / "whole"))
    whole = as_json(run(a, "push", "whole", "--json"))
    config = len((tmp_path / "whole" / "datavc.json").read_bytes())
    landed = 0
    for k in range(1, 7):
        url = f"{shared_store_url}-{k}"
        run(a, "remote", "add", f"r{k}", url)
        remote = store_at(url)
        proc = subprocess.Popen(
            [sys.executable, "-m", "datavc", "push", f"r{k}"],
            cwd=a,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        while proc.poll() is None and len(remote.backend.list("packs")) < k:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if versions.version_numbers(remote, "ds"):
            continue  # the push ended before the kill
        landed += 1
        there = {
            i.name: i.size for i in remote.backend.list_detail("packs") if is_object_id(i.name)
        }
        rerun = as_json(run(a, "push", f"r{k}", "--json"))
        assert (
            int(rerun["bytes_written"])
            == int(whole["bytes_written"]) - sum(there.values()) - config
        )
        assert fsck(store_at(url)).ok
    assert landed >= 3
    git(a, "add", "-A")
    git(a, "commit", "-qm", "remotes")
    b = tmp_path / "b"
    git(tmp_path, "clone", "-q", str(a), str(b))
    run(b, "pull", "r6")
    assert tree_state(b / "data" / "ds") == tree_state(a / "data" / "ds")
