"""A remote store that fails in passing, or not at all: real s3fs against the moto server on
127.0.0.1, through a small proxy in this process that fails the requests it is told to
(503 SlowDown, 500, 429, a dropped connection, a reset, a lost answer), and dead endpoints (a
refused port, a port that accepts and never answers). Nothing reaches the network.

Checked: transient failures are retried, logged, and bounded (attempts and time); others are
not retried; a retried exclusive create whose lost first attempt succeeded is recognised;
an unreachable store fails within the timeout with one error line and exit code 5; the
timeout and retries are read from the config and the environment, strictly; ``status`` of
an unchanged folder never contacts the store, and reports what it can when it must.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import pytest
from conftest import BUCKET
from helpers import forged_record, rand, write

from datavc.errors import BadInput, ObjectNotFound, StoreUnreachable
from datavc.format.chunker import ChunkerParams
from datavc.format.storeconfig import StoreConfig
from datavc.format.tree import TreeRoot
from datavc.store import retry, versions
from datavc.store.backend import Backend
from datavc.store.chunkstore import ChunkStore
from datavc.store.retry import RetryPolicy
from datavc.workspace.config import load_config
from datavc.workspace.core import Workspace
from datavc.workspace.initialize import init_workspace

# -- a proxy that fails requests on demand ------------------------------------------------

_ERRORS = {
    "503": (503, "Slow Down", "SlowDown"),
    "500": (500, "Internal Server Error", "InternalError"),
    "429": (429, "Too Many Requests", "TooManyRequests"),
    "403": (403, "Forbidden", "AccessDenied"),
}


class FaultProxy:
    """HTTP on 127.0.0.1 in front of ``upstream``: forwards every request (one connection
    each), except the next ones told to fail with :meth:`fail`."""

    def __init__(self, upstream: str) -> None:
        host, port = upstream.rsplit("/", 1)[-1].split(":")
        self.upstream = (host, int(port))
        self.faults: deque[tuple[str, bytes]] = deque()
        self.requests: list[bytes] = []  # the request line of each request seen
        self.lock = threading.Lock()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def fail(self, fault: str, times: int = 1, method: bytes = b"") -> None:
        """Fail the next ``times`` requests (of ``method`` only, if given) with ``fault``:
        an HTTP error of :data:`_ERRORS`, "drop" (close without answering), "reset" (an
        RST), or "lost" (forward the request, then close without relaying the answer)."""
        with self.lock:
            self.faults.extend([(fault, method)] * times)

    def close(self) -> None:
        self.sock.close()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            request = _read_request(conn.makefile("rb"), conn)
            if request is None:
                return
            line = request.split(b"\r\n", 1)[0]
            with self.lock:
                self.requests.append(line)
                fault = self._take_fault(line)
            if fault is None or fault == "lost":
                answer = self._forward(request)
                if fault is None:
                    conn.sendall(answer)
                return
            self._fail(conn, fault, line.startswith(b"HEAD "))

    def _take_fault(self, line: bytes) -> str | None:
        """The first fault waiting for a request like ``line``, taken off the queue."""
        for i, (fault, method) in enumerate(self.faults):
            if line.startswith(method):
                del self.faults[i]
                return fault
        return None

    def _fail(self, conn: socket.socket, fault: str, head: bool) -> None:
        if fault == "reset":
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        if fault in ("drop", "reset"):
            return
        status, reason, code = _ERRORS[fault]
        body = f"<Error><Code>{code}</Code><Message>{reason}</Message></Error>".encode()
        conn.sendall(
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + (b"" if head else body)
        )

    def _forward(self, request: bytes) -> bytes:
        with socket.create_connection(self.upstream) as up:
            up.sendall(request)
            parts = []
            while data := up.recv(1 << 16):
                parts.append(data)
        return b"".join(parts)


def _read_request(reader: BinaryIO, conn: socket.socket) -> bytes | None:
    """One request, rewritten to close its connection (so a response ends at EOF)."""
    head: list[bytes] = []
    while (line := reader.readline(1 << 16)) not in (b"\r\n", b"\n"):
        if not line:
            return None
        head.append(line)
    fields = {
        k.strip().lower(): v.strip()
        for k, _, v in (h.decode("latin-1").partition(":") for h in head[1:])
    }
    if fields.get("expect", "").lower() == "100-continue":
        conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
    if "chunked" in fields.get("transfer-encoding", "").lower():
        body = _read_chunked(reader)
    else:
        body = reader.read(int(fields.get("content-length", "0")))
    dropped = (b"connection", b"expect")
    kept = [h for h in head[1:] if h.split(b":")[0].strip().lower() not in dropped]
    return head[0] + b"".join(kept) + b"Connection: close\r\n\r\n" + body


def _read_chunked(reader: BinaryIO) -> bytes:
    out = []
    while True:
        size_line = reader.readline()
        out.append(size_line)
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            while (trailer := reader.readline()) not in (b"\r\n", b"\n", b""):
                out.append(trailer)
            out.append(b"\r\n")
            return b"".join(out)
        out.append(reader.read(size + 2))


@pytest.fixture
def proxy(s3_env: str) -> Iterator[FaultProxy]:
    p = FaultProxy(s3_env)
    yield p
    p.close()


@pytest.fixture
def silent_endpoint() -> Iterator[str]:
    """A port that accepts connections and never answers (a read times out)."""
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError):
                held.append(server.accept()[0])

    threading.Thread(target=accept, daemon=True).start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    server.close()
    for conn in held:
        conn.close()


@pytest.fixture
def refused_endpoint() -> Iterator[str]:
    """A port bound but not listening: every connection is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{s.getsockname()[1]}"


FAST = RetryPolicy(timeout=3.0, retries=5)


@pytest.fixture(autouse=True)
def short_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    """Waits of 10-20 ms, doubling, in this process (commands run in subprocesses keep the
    real ones): the tests count attempts, not seconds."""
    monkeypatch.setattr(retry, "FIRST_WAIT", 0.02)


def backend_via(proxy: FaultProxy, policy: RetryPolicy = FAST) -> Backend:
    url = f"s3://{BUCKET}/{uuid.uuid4().hex}"
    return Backend(url, {"endpoint_url": proxy.url}, policy)


def retry_logs(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "datavc.store"]


# -- transient failures are retried --------------------------------------------------------


@pytest.mark.parametrize("fault", ["503", "500", "429", "drop", "reset"])
def test_a_read_is_retried_after_a_transient_failure(
    proxy: FaultProxy, fault: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="datavc.store")
    b = backend_via(proxy)
    b.write("objects/a", b"hello")
    proxy.fail(fault, times=2)
    assert b.read("objects/a") == b"hello"
    logs = retry_logs(caplog)
    assert 1 <= b.stats.retries <= 2  # a dropped idempotent request: aiohttp tries once more
    assert len(logs) == b.stats.retries
    assert "read objects/a failed" in logs[0]
    assert f"retry 1 of {FAST.retries}" in logs[0]


@pytest.mark.parametrize("operation", ["read_range", "list", "write", "put_path", "exists"])
def test_every_operation_is_retried(proxy: FaultProxy, operation: str, tmp_path: Path) -> None:
    b = backend_via(proxy)
    b.write("objects/a", b"hello")
    src = tmp_path / "src"
    src.write_bytes(b"uploaded")

    def write() -> bool:
        b.write("objects/b", b"x")
        return b.read("objects/b") == b"x"

    def put_path() -> bool:
        b.put_path("objects/c", str(src), move=True)
        return not src.exists()

    calls = {
        "read_range": lambda: b.read_range("objects/a", 1, 4) == b"ell",
        "list": lambda: b.list("objects") == ["a"],
        "write": write,
        "put_path": put_path,
        "exists": lambda: b.exists("objects/a"),
    }
    proxy.fail("503", times=2)
    assert calls[operation]()
    assert b.stats.retries == 2
    if operation == "put_path":
        assert b.read("objects/c") == b"uploaded"


@pytest.mark.parametrize("fault", ["403", "404"])
def test_a_final_answer_is_not_retried(proxy: FaultProxy, fault: str) -> None:
    b = backend_via(proxy)
    b.write("objects/a", b"hello")
    before = len(proxy.requests)
    if fault == "404":
        with pytest.raises(ObjectNotFound):
            b.read("objects/missing")
    else:
        proxy.fail(fault)
        with pytest.raises(StoreUnreachable, match=r"Forbidden|Access Denied"):
            b.read("objects/a")
    assert b.stats.retries == 0
    assert len(proxy.requests) - before <= 2  # s3fs reads with a HEAD, then a GET


def test_retries_stop_at_the_budget(proxy: FaultProxy, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="datavc.store")
    b = backend_via(proxy, RetryPolicy(timeout=3.0, retries=2))
    b.write("objects/a", b"hello")
    before = len(proxy.requests)
    proxy.fail("503", times=50)
    started = time.monotonic()
    with pytest.raises(StoreUnreachable, match=r"\(3 attempts in"):
        b.read("objects/a")
    assert time.monotonic() - started < 2.0  # two short waits, three quick answers
    assert len(proxy.requests) - before == 3
    assert len(retry_logs(caplog)) == 2


def test_one_policy_retries_not_three(proxy: FaultProxy) -> None:
    """botocore and s3fs retry too (a SlowDown: 5 x 5 attempts with their defaults): the
    backend turns theirs off, so a request is sent 1 + retries times, no more."""
    b = backend_via(proxy, RetryPolicy(timeout=3.0, retries=1))
    b.write("objects/a", b"hello")
    for fault in ("503", "500"):
        before = len(proxy.requests)
        proxy.fail(fault, times=50)
        with pytest.raises(StoreUnreachable):
            b.list("objects")
        assert len(proxy.requests) - before == 2
        with proxy.lock:
            proxy.faults.clear()


def test_user_config_kwargs_still_win(proxy: FaultProxy) -> None:
    """Storage options given by the user win over datavc's, key by key."""
    options = {"endpoint_url": proxy.url, "config_kwargs": {"read_timeout": 42}}
    b = Backend(f"s3://{BUCKET}/{uuid.uuid4().hex}", options, FAST)
    config = b.fs._prepare_config_kwargs()
    assert config["read_timeout"] == 42
    assert config["connect_timeout"] == FAST.timeout
    assert config["retries"] == {"total_max_attempts": 1}


def test_a_lost_create_is_recognised_by_its_nonce(proxy: FaultProxy) -> None:
    """The conditional PUT of a version record reaches the store, and its answer is lost:
    the backend tries again, gets 412 (the key exists), and the publish finds its nonce."""
    store = ChunkStore.create(backend_via(proxy), StoreConfig(ChunkerParams()))
    mine = forged_record("ds", TreeRoot(0, 0, ()))
    proxy.fail("lost", method=b"PUT ")
    proxy.fail("drop", method=b"PUT ")  # aiohttp may resend a PUT once itself: not this one
    published = versions.publish_version(store, mine)
    assert published.version == 1 and published.nonce == mine.nonce
    assert versions.version_numbers(store, "ds") == [1]
    puts = [line for line in proxy.requests if line.startswith(b"PUT ")]
    assert len(puts) >= 4 and len(set(puts[1:])) == 1  # datavc.json; the record: lost, ...
    assert store.backend.stats.retries >= 1


# -- unreachable stores --------------------------------------------------------------------


def _workspace_at(tmp_path: Path, endpoint: str, core: str = "") -> Path:
    """A workspace whose S3 store is at ``endpoint`` (no store needs to exist there)."""
    root = tmp_path / "ws"
    (root / ".datavc").mkdir(parents=True)
    (root / ".datavc" / "config.toml").write_text(
        f'[core]\nstore = "s3://{BUCKET}/{uuid.uuid4().hex}"\n{core}'
    )
    _point_at(root, endpoint)
    return root


def _point_at(root: Path, endpoint: str) -> None:
    (root / ".datavc" / "config.local.toml").write_text(
        f'[storage_options]\nendpoint_url = "{endpoint}"\n'
    )


def datavc(
    root: Path, *args: str, env: dict[str, str] | None = None
) -> tuple[int, str, str, float]:
    """Run a command line: exit code, stdout, stderr, seconds."""
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "datavc", *args],
        cwd=root,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    return proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started


def assert_one_error_line(stderr: str, text: str) -> None:
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("datavc: error: store s3://") and text in lines[0], stderr


@pytest.mark.parametrize("kind", ["refused", "silent"])
def test_an_unreachable_store_fails_within_the_timeout(
    kind: str, tmp_path: Path, s3_env: str, request: pytest.FixtureRequest
) -> None:
    endpoint = request.getfixturevalue(f"{kind}_endpoint")
    root = _workspace_at(tmp_path, endpoint)
    code, out, err, took = datavc(root, "log", "ds")
    assert code == 5, (out, err)
    assert_one_error_line(err, "is unreachable")
    assert took < 6.0  # the 2.5 s timeout, start-up, and margin (before: 4.5-12.6 s; 7 min)


def test_the_timeout_is_configurable(tmp_path: Path, s3_env: str, silent_endpoint: str) -> None:
    root = _workspace_at(tmp_path, silent_endpoint, "timeout = 0.5\n")
    code, _, err, took = datavc(root, "log", "ds")
    assert code == 5 and took < 2.5, err  # 0.5 s, and start-up


def test_transient_failures_through_the_command(tmp_path: Path, proxy: FaultProxy) -> None:
    """A command rides out transient failures (shown with -v only), and fails with exit
    code 5 within the bounded time when they outlast the retries."""
    root = _workspace_at(tmp_path, proxy.url, "retries = 2\n")
    ws = Workspace(str(root))
    ChunkStore.create(ws.store.backend, StoreConfig(ChunkerParams()))
    write(root / "ds" / "a.bin", b"data")
    ws.add(str(root / "ds"))
    ws.commit(["ds"], "first")
    proxy.fail("503", times=2)
    code, out, err, _ = datavc(root, "log", "ds")
    assert (code, err) == (0, "") and out.startswith("v1  ")  # retries not shown
    proxy.fail("500", times=2)
    code, out, err, _ = datavc(root, "-v", "log", "ds")
    assert code == 0 and out.startswith("v1  ")
    assert err.count("; retry ") == 2 and err.startswith("datavc: store s3://"), err
    proxy.fail("503", times=50)
    code, _, err, took = datavc(root, "log", "ds")
    assert code == 5
    assert_one_error_line(err, "(3 attempts in")
    assert took < 6.0


# -- configuration -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "core",
    [
        "timeout = true",
        'timeout = "3"',
        "timeout = 0",
        "timeout = 601",
        "timeout = nan",
        "timeout = inf",
        "retries = 1.5",
        "retries = -1",
        "retries = 11",
        "retries = false",
        'retries = "2"',
    ],
)
def test_bad_network_settings_are_refused(tmp_path: Path, core: str) -> None:
    root = _workspace_at(tmp_path, "http://127.0.0.1:1", core + "\n")
    with pytest.raises(BadInput, match=r"\[core\] (timeout|retries) must be"):
        load_config(str(root))


def test_network_settings_layer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _workspace_at(tmp_path, "http://127.0.0.1:1", "timeout = 7\nretries = 1\n")
    assert load_config(str(root)).retry == RetryPolicy(7.0, 1)
    local = root / ".datavc" / "config.local.toml"
    local.write_text("[core]\ntimeout = 0.5\n" + local.read_text())
    assert load_config(str(root)).retry == RetryPolicy(0.5, 1)
    monkeypatch.setenv("DATAVC_TIMEOUT", "2.5")
    monkeypatch.setenv("DATAVC_RETRIES", "0")
    assert load_config(str(root)).retry == RetryPolicy(2.5, 0)
    for name, value in (("DATAVC_TIMEOUT", "soon"), ("DATAVC_RETRIES", "99")):
        monkeypatch.setenv(name, value)
        with pytest.raises(BadInput, match=name):
            load_config(str(root))
        monkeypatch.setenv(name, "1")


# -- status without the store --------------------------------------------------------------


@pytest.fixture
def committed(tmp_path: Path, s3_env: str) -> Path:
    """A workspace with two committed datasets on S3 (moto), whose stat caches know that
    their folders match (files older than the stat cache's 2 s racy window)."""
    root = tmp_path / "ws"
    root.mkdir()
    for name in ("images", "tables"):
        write(root / name / "a.bin", rand(name, 10_000))
        write(root / name / "sub" / "b.bin", rand(name + "b", 1_000))
    time.sleep(2.1)
    init_workspace(str(root), f"s3://{BUCKET}/{uuid.uuid4().hex}")
    ws = Workspace(str(root))
    for name in ("images", "tables"):
        ws.add(str(root / name))
    ws.commit([], "v1", all_tracked=False)
    return root


def test_status_without_the_store(
    committed: Path,
    silent_endpoint: str,
    s3_env: str,
    refused_endpoint: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An unchanged folder: clean, the store never opened. Changed folders: every dataset
    reported, the store tried once, exit code 5 with its error. Staged changes: staged,
    without counts."""
    _point_at(committed, silent_endpoint)  # any request would wait 3 s
    ws = Workspace(str(committed))
    assert [(s.name, s.state) for s in ws.status()] == [("images", "clean"), ("tables", "clean")]
    assert ws._store is None  # the store was never opened
    code, out, err, took = datavc(committed, "status")
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        "images (images): clean: matches v1",
        "tables (tables): clean: matches v1",
    ]
    assert took < 2.0

    (committed / "images" / "a.bin").write_bytes(b"changed")
    (committed / "tables" / "new.bin").write_bytes(b"new")
    monkeypatch.setenv("DATAVC_TIMEOUT", "1")
    first, second = Workspace(str(committed)).status()
    assert first.error is not None and second.error is first.error  # tried once
    code, out, err, _ = datavc(committed, "status")
    assert code == 5
    assert out.splitlines() == [
        "images (images): unknown: cannot compare with v1: the store is unreachable",
        "tables (tables): unknown: cannot compare with v1: the store is unreachable",
    ]
    assert_one_error_line(err, "ReadTimeoutError")

    _point_at(committed, s3_env)
    Workspace(str(committed)).add(str(committed / "images"))
    _point_at(committed, refused_endpoint)
    code, out, err, _ = datavc(committed, "status")
    assert code == 5, err
    assert out.splitlines()[0] == (
        "images (images): staged: added, not committed yet "
        "(the store is unreachable: changes not counted)"
    )
    assert_one_error_line(err, "is unreachable")
