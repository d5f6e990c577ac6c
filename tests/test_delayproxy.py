"""The benchmark's delay proxy (scripts/benchlib/delayproxy.py): it delays each direction by
its one-way time, frames HTTP/1.1 (lengths, chunked bodies, HEAD, 100 Continue, kept-alive
connections) to log every request, and counts bytes and connections."""

from __future__ import annotations

import gc
import http.client
import socket
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))

from benchlib.delayproxy import DelayProxy
from benchlib.httpframe import Framer, Head

BODY = b"x" * 70_000


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def do_HEAD(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()

    def do_PUT(self) -> None:
        if self.headers.get("Transfer-Encoding") == "chunked":
            got = 0
            while size := int(self.rfile.readline().split(b";")[0], 16):
                got += len(self.rfile.read(size + 2)) - 2
            self.rfile.readline()
        else:
            got = len(self.rfile.read(int(self.headers["Content-Length"])))
        reply = str(got).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)


@pytest.fixture
def proxy() -> Iterator[DelayProxy]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    p = DelayProxy(("127.0.0.1", server.server_address[1]))
    p.start()
    yield p
    p.stop()
    server.shutdown()
    server.server_close()


def test_requests_on_one_connection_are_framed_and_counted(proxy: DelayProxy) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    conn.request("GET", "/b/packs/1")
    assert conn.getresponse().read() == BODY
    conn.request("HEAD", "/b/packs/1")
    assert conn.getresponse().read() == b""
    conn.request("PUT", "/b/packs/2", body=b"y" * 1000)
    assert conn.getresponse().read() == b"1000"
    conn.request("PUT", "/b/trees/3", body=iter([b"a" * 300, b"b" * 200]), encode_chunked=True)
    assert conn.getresponse().read() == b"500"
    conn.request("PUT", "/b/x", body=b"z" * 10, headers={"Expect": "100-continue"})
    assert conn.getresponse().read() == b"10"
    conn.close()
    time.sleep(0.05)
    got = proxy.take()
    assert [(r.method, r.target, r.status) for r in got.requests] == [
        ("GET", "/b/packs/1", 200),
        ("HEAD", "/b/packs/1", 200),
        ("PUT", "/b/packs/2", 200),
        ("PUT", "/b/trees/3", 200),
        ("PUT", "/b/x", 200),
    ]
    assert got.connections == 1 and got.unframed == 0
    assert all(r.end is not None and r.end >= r.start for r in got.requests)
    assert got.requests[0].down > len(BODY) and got.requests[2].up > 1000
    assert got.up == sum(r.up for r in got.requests)
    assert got.down == sum(r.down for r in got.requests)
    assert proxy.take().requests == []


def test_each_direction_is_delayed_by_the_one_way_time(proxy: DelayProxy) -> None:
    proxy.delay = 0.05
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    start = time.monotonic()
    for _ in range(3):
        conn.request("GET", "/b/k")
        assert conn.getresponse().read() == BODY
    took = time.monotonic() - start
    conn.close()
    assert 0.3 <= took < 1.0  # three round trips of 2 x 50 ms, and no more than a little extra
    requests = proxy.take().requests
    assert len(requests) == 3
    assert all(r.end is not None and r.end - r.start >= 0.1 for r in requests)


def test_a_framer_that_cannot_parse_gives_up_quietly() -> None:
    ends: list[int] = []

    def on_head(head: Head, now: float) -> int:
        return head.body_length()

    framer = Framer(on_head, lambda size, now: ends.append(size))
    framer.feed(b"GET / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc", 0.0)
    framer.feed(b"GET / HTTP/1.1\r\nnot a header\r\n\r\n", 0.0)
    assert ends == [40] and framer.lost


def test_stopping_with_connections_open_leaves_nothing_for_the_collector(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Connections just made, some with a request on its way, when the proxy stops: their
    tasks are cancelled and finish before the loop stops. (A task left pending was closed
    later by the collector, whose "Exception ignored in: <coroutine object
    DelayProxy._serve>" landed in another test; asyncio logged each cancelled one.)"""
    ignored: list[str] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: ignored.append(repr(u.exc_value)))
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        for i in range(30):
            p = DelayProxy(("127.0.0.1", server.server_address[1]), delay=0.01)
            p.start()
            socks = [socket.create_connection(("127.0.0.1", p.port)) for _ in range(3)]
            if i % 2:
                socks[0].sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            p.stop()
            for s in socks:
                s.close()
            del p
            gc.collect()
    finally:
        server.shutdown()
        server.server_close()
    assert ignored == []
    assert [r.getMessage()[:80] for r in caplog.records if r.name == "asyncio"] == []
