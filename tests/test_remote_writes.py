"""add, commit and checkout on S3 at a distance (issue 16): every request they make,
counted at s3fs's ``_call_s3`` against the moto server, and their timing: what can go at
once does (the fixed requests of each command, several packs), what must wait does (packs,
then index, then pages, then the version record), and a PUT whose answer confirms its bytes
is not checked again with a HEAD or a GET, while one whose answer does not is."""

from __future__ import annotations

import asyncio
import base64
import errno
import hashlib
import shutil
import threading
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from conftest import BUCKET
from helpers import rand, write

from datavc.errors import CorruptObject, StoreUnreachable
from datavc.format.record import VersionRecord
from datavc.store import versions
from datavc.store.packwriter import MAX_TASKS
from datavc.store.s3answers import EXPECT_FROM, answer_confirms
from datavc.store.versions import Start
from datavc.workspace.core import Workspace
from datavc.workspace.initialize import init_workspace

KiB, MiB = 1 << 10, 1 << 20


@dataclass
class Call:
    """One request: ``what`` is the method and the key's first folder under the store root
    ("put_object packs", "list_objects_v2 gc"), ``key`` the key under the store root."""

    what: str
    key: str
    start: float
    end: float = float("inf")


@dataclass
class S3Calls:
    """Every ``_call_s3`` made in this process, with an optional delay before each (as a
    round trip would add) and an optional fault (``fault(call, kwargs)`` may raise, or
    change the request's arguments)."""

    calls: list[Call] = field(default_factory=list)
    delay: Callable[[Call], float] = lambda call: 0.0
    fault: Callable[[Call, dict[str, Any]], None] = lambda call, kwargs: None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def clear(self) -> None:
        with self.lock:
            self.calls = []

    def whats(self) -> Counter[str]:
        with self.lock:
            return Counter(c.what for c in self.calls)

    def of(self, what: str) -> list[Call]:
        with self.lock:
            return [c for c in self.calls if c.what == what]


@pytest.fixture
def s3_calls(monkeypatch: pytest.MonkeyPatch) -> S3Calls:
    import s3fs

    record = S3Calls()
    real = s3fs.S3FileSystem._call_s3

    async def recorded(self: Any, method: str, *args: Any, **kwargs: Any) -> Any:
        key = str(kwargs.get("Key") or kwargs.get("Prefix") or "")
        rel = key.split("/", 1)[1] if "/" in key else key  # under the store's prefix
        call = Call(f"{method} {rel.split('/', 1)[0]}", rel, time.monotonic())
        with record.lock:
            record.calls.append(call)
        try:
            await asyncio.sleep(record.delay(call))
            record.fault(call, kwargs)
            return await real(self, method, *args, **kwargs)
        finally:
            call.end = time.monotonic()

    monkeypatch.setattr(s3fs.S3FileSystem, "_call_s3", recorded)
    return record


def most_at_once(calls: list[Call]) -> int:
    """The most of ``calls`` in flight at one moment."""
    return max((sum(1 for c in calls if c.start <= t.start < c.end) for t in calls), default=0)


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, s3_env: str) -> Workspace:
    root = tmp_path / "ws"
    root.mkdir()
    monkeypatch.chdir(root)
    init_workspace(".", f"s3://{BUCKET}/{uuid.uuid4().hex}", pack_target=1 * MiB)
    return Workspace.find(str(root))


def fresh(ws: Workspace) -> Workspace:
    """The workspace as a new process sees it (a command is a process of its own)."""
    return Workspace.find(ws.root)


def add_commit(ws: Workspace, files: dict[str, bytes], message: str) -> VersionRecord:
    for name, data in files.items():
        write(Path(ws.root) / "data" / name, data)
    fresh(ws).add(str(Path(ws.root) / "data"))
    published, _ = fresh(ws).commit([], message)
    return published[0]


def files_of(seed: int, count: int, size: int) -> dict[str, bytes]:
    return {f"f{i:02d}.bin": rand((seed, i), size) for i in range(count)}


def test_add_and_commit_make_only_the_requests_they_need(
    workspace: Workspace, s3_calls: S3Calls
) -> None:
    """add: the store config, the gc records and the index, then one PUT per pack, the
    index and the page. commit: the config, the versions, the gc records, the packs and the
    page checked, then the record. No HEAD after a PUT and no GET of the record back: each
    PUT's answer confirms its bytes (before: a HEAD after every PUT of add, and a GET)."""
    ws = workspace
    write(Path(ws.root) / "data" / "a.bin", rand(1, 3 * MiB + 5 * KiB))
    s3_calls.clear()
    fresh(ws).add(str(Path(ws.root) / "data"))
    packs = len(s3_calls.of("put_object packs"))
    assert packs >= 3, "premise: several packs"
    assert s3_calls.whats() == Counter(
        {
            "get_object datavc.json": 1,
            "list_objects_v2 gc": 1,
            "list_objects_v2 index": 1,
            "put_object packs": packs,
            "put_object index": 1,
            "put_object trees": 1,
        }
    )
    s3_calls.clear()
    fresh(ws).commit([], "v1")
    assert s3_calls.whats() == Counter(
        {
            "get_object datavc.json": 1,
            "list_objects_v2 versions": 1,
            "list_objects_v2 gc": 1,
            "list_objects_v2 packs": 1,
            "head_object trees": 1,
            "put_object versions": 1,
        }
    )


def test_the_fixed_requests_of_add_and_commit_go_at_once(
    workspace: Workspace, s3_calls: S3Calls
) -> None:
    """With a round trip of 0.2 s on every request: add's config, gc records and index
    listing are in flight together, then its index objects (of three uploads before, read by
    a machine that did not write them); commit's
    five checks together, then the newest records (for a nonce of an earlier attempt)."""
    ws = workspace
    for v in range(3):
        add_commit(ws, files_of(10 + v, 2, 20 * KiB), f"v{v + 1}")
    write(Path(ws.root) / "data" / "new.bin", rand(99, 20 * KiB))
    shutil.rmtree(Path(ws.root) / ".datavc" / "cache" / "index")  # as on another machine
    s3_calls.delay = lambda call: 0.2 if not call.what.startswith("put_object") else 0.0
    s3_calls.clear()
    fresh(ws).add(str(Path(ws.root) / "data"))
    setup = ("get_object datavc.json", "list_objects_v2 gc", "list_objects_v2 index")
    first = [c for c in s3_calls.calls if c.what in setup]
    assert len(first) == 3 and most_at_once(first) == 3, first
    assert most_at_once(s3_calls.of("get_object index")) == 3
    s3_calls.clear()
    fresh(ws).commit([], "v4")
    checks = [c for c in s3_calls.calls if c.what != "put_object versions"]
    recent = s3_calls.of("get_object versions")
    assert len(recent) == 3  # v3, v2, v1: the 8 newest
    first = [c for c in checks if c not in recent]
    assert len(first) == 5 and most_at_once(first) == 5, first
    assert most_at_once(recent) == 3


@pytest.mark.parametrize("uploads", [1, 3])
def test_packs_upload_at_once_and_before_their_index(
    workspace: Workspace, s3_calls: S3Calls, monkeypatch: pytest.MonkeyPatch, uploads: int
) -> None:
    """Each pack's PUT takes 0.4 s: up to DATAVC_UPLOADS are in flight at once, never more
    (each is a pack in memory), and packs are not piled up on disk meanwhile; the index is
    sent only once every pack is stored, the page after the index, the record after the
    page."""
    monkeypatch.setenv("DATAVC_UPLOADS", str(uploads))
    ws = workspace
    spooled: list[int] = []  # pack files on local disk, seen as each pack's PUT starts

    def slow_packs(call: Call) -> float:
        if call.what != "put_object packs":
            return 0.0
        spooled.append(len(list(Path(ws.root, ".datavc", "cache").rglob(".tmp-pack-*"))))
        return 0.4

    s3_calls.delay = slow_packs
    add_commit(ws, files_of(20, 16, 1 * MiB), "v1")
    packs = s3_calls.of("put_object packs")
    assert len(packs) >= 15, "premise: a pack a file"
    assert most_at_once(packs) == uploads
    # those being stored, one waiting for its turn, those queued to the pack thread (two
    # tasks each at least: its last chunks, then storing it), one filling: then the add
    # waits for the store, so pack files do not pile up on disk
    assert max(spooled) <= uploads + 1 + MAX_TASKS // 2 + 1 < len(packs), spooled
    (index,) = s3_calls.of("put_object index")
    (page,) = s3_calls.of("put_object trees")
    (record,) = s3_calls.of("put_object versions")
    assert index.start >= max(p.end for p in packs)
    assert page.start >= index.end
    assert record.start >= page.end


def test_a_failed_pack_upload_leaves_no_index(workspace: Workspace, s3_calls: S3Calls) -> None:
    """One pack's PUT fails while others are in flight: add fails with one line, writes no
    index (so none names a pack that is missing), leaves no pack file behind; a new add
    then stores what is missing."""
    ws = workspace
    s3_calls.delay = lambda call: 0.3 if call.what == "put_object packs" else 0.0

    def third_pack_fails(call: Call, kwargs: dict[str, Any]) -> None:
        puts = s3_calls.of("put_object packs")  # (the third may not be listed yet)
        if call.what == "put_object packs" and len(puts) > 2 and call is puts[2]:
            raise PermissionError(errno.EACCES, "injected: access denied")

    s3_calls.fault = third_pack_fails
    files = files_of(30, 7, 1 * MiB)
    for name, data in files.items():
        write(Path(ws.root) / "data" / name, data)
    with pytest.raises(StoreUnreachable) as failed:
        fresh(ws).add(str(Path(ws.root) / "data"))
    assert "injected: access denied" in str(failed.value) and "\n" not in str(failed.value)
    assert most_at_once(s3_calls.of("put_object packs")) >= 2, "premise: others in flight"
    assert s3_calls.of("put_object index") == [] and s3_calls.of("put_object trees") == []
    backend = fresh(ws).store.backend
    assert backend.list("index") == []
    assert list(Path(ws.root, ".datavc", "cache").rglob(".tmp-pack-*")) == []
    assert fresh(ws).datasets() == {}  # nothing staged
    s3_calls.fault = lambda call, kwargs: None
    s3_calls.delay = lambda call: 0.0
    rec = add_commit(ws, {}, "v1")
    assert rec.version == 1 and rec.root.files == 7
    store = fresh(ws).store
    store.load_index()
    packs = set(backend.list("packs"))
    for name in backend.list("index"):
        from datavc.format.packfile import decode_index

        index = decode_index(store.read_object("index", name), name)
        assert {f"{loc.pack}" for loc in index.values()} <= packs


@pytest.mark.parametrize("kind", ["packs", "index", "trees", "versions"])
def test_a_put_the_store_kept_part_of_is_caught(
    workspace: Workspace, s3_calls: S3Calls, kind: str
) -> None:
    """A store that keeps half of a PUT's body and says it kept it (here the request is
    cut before it leaves): the answer's checksum is not that of the bytes meant, so the
    object is checked as before: a page or index is written again, the record too, a pack
    fails the add; nothing damaged is ever referenced."""
    ws = workspace
    cut: list[str] = []

    def keep_half(call: Call, kwargs: dict[str, Any]) -> None:
        if call.what == f"put_object {kind}" and not cut:
            cut.append(call.key)
            kwargs["Body"] = kwargs["Body"][: len(kwargs["Body"]) // 2]

    s3_calls.fault = keep_half
    files = files_of(40, 2, 300 * KiB)
    if kind == "packs":
        with pytest.raises(CorruptObject, match="did not keep"):
            add_commit(ws, files, "v1")
        assert fresh(ws).store.backend.list("index") == []
        return
    rec = add_commit(ws, files, "v1")
    whats = [c.what for c in s3_calls.calls]
    after = whats[whats.index(f"put_object {kind}") + 1 :]
    checked = "get_object versions" if kind == "versions" else f"head_object {kind}"
    again = [f"delete_object {kind}", f"put_object {kind}"]  # deleted, written again
    if kind == "versions":
        again = [f"put_object {kind}"]  # replaced
    assert after[: 1 + len(again)] == [checked, *again], whats
    store = fresh(ws).store
    if kind == "versions":
        assert versions.read_version(store, "data", 1) == rec
    else:
        store.read_object(kind, cut[0].rsplit("/", 1)[1])  # whole: checked against its id


def test_small_puts_go_without_waiting_for_100_continue(
    workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """botocore asks for ``100 Continue`` before every PUT body (a round trip each): datavc
    keeps the ask only for bodies of EXPECT_FROM (8 MiB) or more, and only until the store
    has taken one such body."""
    import aiobotocore.httpsession as http

    seen: list[tuple[str, int, bool]] = []
    real = http.AIOHTTPSession.send

    async def send(self: Any, request: Any) -> Any:
        if request.method == "PUT":
            size = int(request.headers.get("Content-Length", -1))
            folder = urlsplit(request.url).path.split("/")[3]  # /bucket/prefix/folder/...
            seen.append((folder, size, "Expect" in request.headers))
        return await real(self, request)

    monkeypatch.setattr(http.AIOHTTPSession, "send", send)
    ws = workspace
    add_commit(ws, files_of(50, 3, 100 * KiB), "v1")
    backend = fresh(ws).store.backend  # a new process: it has sent no large body yet
    for name in ("probe-1", "probe-2"):  # as packs of 8 MiB
        big = Path(ws.root) / "big.bin"
        big.write_bytes(rand(7, EXPECT_FROM + 1))
        backend.put_path(name, str(big), move=True)
    assert {folder for folder, _, _ in seen} >= {"packs", "index", "trees", "versions"}
    assert [(size, expect) for _, size, expect in seen if expect] == [(EXPECT_FROM + 1, True)]
    assert seen[-1] == ("probe-2", EXPECT_FROM + 1, False)  # once the store took one


def test_a_412_without_its_condition_still_means_the_key_exists(
    workspace: Workspace, s3_calls: S3Calls
) -> None:
    """SeaweedFS answers a refused ``If-None-Match: *`` with a 412 that does not name the
    condition, which s3fs then reports as EINVAL, not FileExistsError: it is still the
    other writer's record, so the publish goes on to the next number (it used to fail as
    an unreachable store)."""
    from botocore.exceptions import ClientError

    ws = workspace
    theirs = add_commit(ws, files_of(60, 1, 10 * KiB), "theirs")
    answer = {
        "Error": {"Code": "PreconditionFailed", "Message": "At least one of the pre-conditions"},
        "ResponseMetadata": {"HTTPStatusCode": 412},
    }

    def as_seaweedfs(call: Call, kwargs: dict[str, Any]) -> None:
        if kwargs.get("IfNoneMatch") == "*" and call.key.endswith("/1.json"):
            raise OSError(errno.EINVAL, "pre-conditions") from ClientError(answer, "PutObject")

    s3_calls.fault = as_seaweedfs
    store = fresh(ws).store
    mine = versions.publish_version(store, _renonced(theirs), Start(1))  # as if v1 were free
    assert mine.version == 2
    assert [v.nonce for v in versions.live_versions(store, "data")] == [theirs.nonce, mine.nonce]


def _clone(ws: Workspace, tmp_path: Path, pointer: str) -> Workspace:
    """A fresh clone of ``ws``: its config and one pointer file, no data, an empty cache."""
    clone = tmp_path / "clone"
    (clone / ".datavc").mkdir(parents=True)
    shutil.copy(Path(ws.root, ".datavc", "config.toml"), clone / ".datavc")
    (clone / pointer).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(Path(ws.root, pointer), clone / pointer)
    return Workspace.find(str(clone))


@pytest.mark.parametrize("single", [None, 200 * KiB, 2 * MiB])  # a folder; a file, streamed
def test_a_fresh_clone_checkout_reads_the_record_once_and_no_index(
    workspace: Workspace, s3_calls: S3Calls, tmp_path: Path, single: int | None
) -> None:
    """A checkout into a fresh clone (no data there, an empty cache) reads the version
    record, its page, then pack ranges: it has nothing to lose, so it reads no version to
    compare with (it read the record a second time for that: one round trip more), and it
    finds the chunks through the page's hints, also for a dataset that is one file (whose
    hints were dropped: a LIST and a GET of the index more)."""
    ws = workspace
    if single is None:
        add_commit(ws, files_of(70, 3, 300 * KiB), "v1")
        pointer, written = "data.datavc", 3
    else:
        write(Path(ws.root, "data", "t.bin"), rand(71, single))
        fresh(ws).add(str(Path(ws.root, "data", "t.bin")), "table")
        fresh(ws).commit([], "v1")
        pointer, written = "data/t.bin.datavc", 1
    clone = _clone(ws, tmp_path, pointer)
    # the record and the page the pointer hints at go together: each waits 0.3 s here
    s3_calls.delay = lambda call: 0.3 if call.what.split()[1] in ("versions", "trees") else 0.0
    s3_calls.clear()
    (done,) = clone.checkout([])
    assert done.written == written
    whats = [c.what for c in s3_calls.calls]
    assert sorted(whats[:2]) == ["get_object trees", "get_object versions"], whats
    assert set(whats[2:]) == {"get_object packs"}, whats
    assert most_at_once(s3_calls.calls[:2]) == 2, "the page waited for the record"


def test_a_pointer_hints_at_its_first_page_and_a_wrong_hint_costs_one_read(
    workspace: Workspace, s3_calls: S3Calls, tmp_path: Path
) -> None:
    """commit writes the first page's id into the pointer file (``page``); a hint that the
    record does not name first (another store's page, or an edited one) is read and
    dropped, and the checkout reads the record's page and is exact."""
    ws = workspace
    files = files_of(73, 3, 100 * KiB)
    rec = add_commit(ws, files, "v1")
    text = Path(ws.root, "data.datavc").read_text()
    assert f"\npage: {rec.root.pages[0].id}\n" in text
    clone = _clone(ws, tmp_path, "data.datavc")
    wrong = "0" * 64
    Path(clone.root, "data.datavc").write_text(text.replace(rec.root.pages[0].id, wrong))
    clone = Workspace.find(clone.root)
    s3_calls.clear()
    (done,) = clone.checkout([])
    assert done.written == len(files)
    assert {p.name: p.read_bytes() for p in Path(clone.root, "data").iterdir()} == files
    pages = [c.key for c in s3_calls.of("get_object trees")]
    assert sorted(pages) == sorted([f"trees/{wrong}", f"trees/{rec.root.pages[0].id}"])
    assert not clone.store._early


def test_a_checkout_reads_the_next_pages_while_it_writes_one(
    workspace: Workspace, s3_calls: S3Calls, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each page read from a remote store is a round trip: a checkout of many pages has the
    next few read while it uses one (at most PAGES_AHEAD + 1 at once), in order."""
    from datavc.store.trees import PAGES_AHEAD

    monkeypatch.setattr("datavc.format.treecut.PAGE_MAX_ENTRIES", 3)
    ws = workspace
    files = files_of(72, 24, 2 * KiB)
    add_commit(ws, files, "v1")
    clone = _clone(ws, tmp_path, "data.datavc")
    s3_calls.delay = lambda call: 0.2 if call.what == "get_object trees" else 0.0
    s3_calls.clear()
    (done,) = clone.checkout([])
    assert done.written == len(files)
    assert {p.name: p.read_bytes() for p in Path(clone.root, "data").iterdir()} == files
    pages = s3_calls.of("get_object trees")
    assert len(pages) == 8, "premise: a page every 3 files"
    assert 2 <= most_at_once(pages) <= PAGES_AHEAD + 1


def _renonced(rec: VersionRecord) -> VersionRecord:
    import dataclasses

    return dataclasses.replace(rec, version=0, nonce=uuid.uuid4().hex)


def _crc(data: bytes) -> str:
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


@pytest.mark.parametrize(
    ("answer", "confirms"),
    [
        ({"ChecksumCRC32": _crc(b"data"), "ETag": '"0"'}, True),
        ({"ChecksumCRC32": _crc(b"dat"), "ETag": f'"{hashlib.md5(b"data").hexdigest()}"'}, False),
        ({"ETag": f'"{hashlib.md5(b"data").hexdigest()}"'}, True),
        ({"ETag": f'"{hashlib.md5(b"dat").hexdigest()}"'}, False),
        ({"ETag": f'"{hashlib.md5(b"data").hexdigest()}-2"'}, False),  # multipart
        ({}, False),
        (None, False),
    ],
)
def test_what_an_answer_confirms(answer: object, confirms: bool) -> None:
    assert answer_confirms(answer, b"data") is confirms
