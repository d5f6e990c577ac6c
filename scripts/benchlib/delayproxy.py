"""A TCP delay line on 127.0.0.1 in front of an HTTP server, counting what crosses it.

Every byte read from one side at time t is written to the other at t + ``delay`` (the
one-way time: half the round trip), in both directions, with no bandwidth cap: bytes in
flight queue in the proxy (up to ``MAX_QUEUED`` a direction, far above delay x any rate seen
here, so never the limit). TCP's own costs on a long path are not modelled: a new connection
costs no handshake round trip (connections are counted, so they can be added), and there is
no slow start or window to cap a connection's rate at window / RTT.

It reads the HTTP/1.1 framing of both directions (``httpframe``) to log each request: its
method and target, when its first byte reached the proxy, when the last byte of its response
left it (forwarded at read time + delay), and its bytes each way. From that log come the
request counts, and how many requests were in flight at once. It runs its own event loop in
a thread of the benchmark's process, which waits on the measured commands meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from .httpframe import CHUNKED, UNTIL_CLOSE, Framer, Head

READ_SIZE = 256 * 1024
MAX_QUEUED = 256 * 1024 * 1024


@dataclass(slots=True)
class Request:
    """One request as the proxy saw it (times: ``time.monotonic`` seconds)."""

    conn: int
    method: str
    target: str
    start: float  # its first byte reached the proxy
    end: float | None = None  # its response's last byte was forwarded (None: no response)
    status: int = 0
    up: int = 0  # request bytes, head included
    down: int = 0  # response bytes, heads of interim (1xx) responses included
    interim: int = 0  # interim responses (``100 Continue``: the body waited a round trip)


@dataclass(slots=True)
class Traffic:
    """What crossed the proxy between two calls of ``DelayProxy.take``."""

    requests: list[Request] = field(default_factory=list)
    connections: int = 0
    up: int = 0  # bytes client -> server, on the wire
    down: int = 0
    unframed: int = 0  # connection directions whose HTTP could not be followed


class Exchange:
    """One connection's requests and responses, paired in order (HTTP/1.1: no pipelining is
    needed for that; a response answers the oldest request without one)."""

    def __init__(self, conn: int, proxy: DelayProxy) -> None:
        self.conn, self.proxy = conn, proxy
        self.waiting: deque[Request] = deque()  # sent, response not complete
        self.reading: Request | None = None  # the request whose bytes are arriving
        self._start = 0.0
        self.up = Framer(self._request_head, self._request_end, self._request_start)
        self.down = Framer(self._response_head, self._response_end)

    def _request_start(self, now: float) -> None:
        self._start = now

    def _request_head(self, head: Head, now: float) -> int:
        method, target, _ = head.start
        self.reading = Request(self.conn, method, target, self._start)
        self.waiting.append(self.reading)
        self.proxy.log(self.reading)
        return head.body_length()

    def _request_end(self, size: int, now: float) -> None:
        if self.reading is not None:
            self.reading.up += size
        self.reading = None

    def _response_head(self, head: Head, now: float) -> int:
        status = int(head.start[1])
        request = self.waiting[0] if self.waiting else None
        if request is not None:
            request.status = status
            request.interim += 100 <= status < 200
        if 100 <= status < 200 or status in (204, 304):
            return 0
        if request is not None and request.method == "HEAD":
            return 0
        length = head.body_length()
        if length != CHUNKED and "content-length" not in head.fields:
            return UNTIL_CLOSE
        return length

    def _response_end(self, size: int, now: float) -> None:
        if not self.waiting:
            return
        request = self.waiting[0]
        request.down += size
        if 100 <= request.status < 200:
            return  # an interim response (100 Continue): the final one follows
        request.end = now + self.proxy.delay
        self.waiting.popleft()


def _quiet_when_cancelled(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """The loop's handler of errors no task took: a connection's task cancelled by
    ``stop()`` is not one (asyncio reports it), anything else is reported as usual."""
    if not isinstance(context.get("exception"), asyncio.CancelledError):
        loop.default_exception_handler(context)


class DelayProxy:
    """``start()`` listens on 127.0.0.1 (``port``) and forwards to ``target``; ``delay`` (one
    way, seconds) may change between measurements; ``take()`` returns what crossed since the
    last call; ``stop()`` closes it."""

    def __init__(self, target: tuple[str, int], delay: float = 0.0) -> None:
        self.target = target
        self.delay = delay
        self.port = 0
        self._lock = threading.Lock()
        self._traffic = Traffic()
        self._conns = 0
        self._loop = asyncio.new_event_loop()
        self._loop.set_exception_handler(_quiet_when_cancelled)
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # held: a pending task is never collected

    def start(self) -> None:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, "127.0.0.1", 0), self._loop
        ).result(30)
        self.port = int(self._server.sockets[0].getsockname()[1])

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            # Every connection's tasks cancelled, and waited for: one still pending when the
            # loop stops is closed later by the collector, which prints its error into
            # whatever runs then. A connection accepted just before the close starts its
            # task late: looked for again.
            for _ in range(10):
                tasks = asyncio.all_tasks() - {asyncio.current_task()}
                if not tasks:
                    return
                for task in tasks:
                    task.cancel()
                await asyncio.wait(tasks, timeout=5)

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)

    def take(self) -> Traffic:
        with self._lock:
            got, self._traffic = self._traffic, Traffic()
        return got

    def log(self, request: Request) -> None:
        with self._lock:
            self._traffic.requests.append(request)

    def _count(self, up: int = 0, down: int = 0, connections: int = 0, unframed: int = 0) -> None:
        with self._lock:
            t = self._traffic
            t.up, t.down = t.up + up, t.down + down
            t.connections += connections
            t.unframed += unframed

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._conns += 1
        self._count(connections=1)
        ex = Exchange(self._conns, self)
        try:
            await asyncio.gather(
                self._pipe(reader, up_writer, ex.up, True),
                self._pipe(up_reader, writer, ex.down, False),
            )
        finally:
            for w in (writer, up_writer):
                w.close()

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        framer: Framer,
        upward: bool,
    ) -> None:
        """Read one direction, frame and count it at read time, and write each piece at
        read time + delay."""
        loop = asyncio.get_running_loop()
        line: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        room = asyncio.Event()
        room.set()
        queued = [0]

        async def pump_out() -> None:
            try:
                while True:
                    due, data = await line.get()
                    wait = due - loop.time()
                    if wait > 0:
                        await asyncio.sleep(wait)
                    if not data:
                        with contextlib.suppress(OSError):
                            writer.write_eof()
                        return
                    writer.write(data)
                    await writer.drain()
                    queued[0] -= len(data)
                    if queued[0] < MAX_QUEUED:
                        room.set()
            finally:
                room.set()  # a writer gone (the peer reset) must not leave the reader waiting

        out = asyncio.ensure_future(pump_out())
        try:
            while not out.done() and (data := await reader.read(READ_SIZE)):
                now = loop.time()
                framer.feed(data, now)
                if upward:
                    self._count(up=len(data))
                else:
                    self._count(down=len(data))
                queued[0] += len(data)
                line.put_nowait((now + self.delay, data))
                if queued[0] >= MAX_QUEUED:
                    room.clear()
                    await room.wait()
        except OSError:
            pass
        finally:
            framer.close(loop.time())
            if framer.lost:
                self._count(unframed=1)
            line.put_nowait((loop.time() + self.delay, b""))
        with contextlib.suppress(OSError):
            await out
        if upward:  # the client is gone (HTTP clients do not half-close): so is its upstream
            writer.close()
