"""Where HTTP/1.1 messages begin and end in one direction of a connection, read incrementally.

The delay proxy (``delayproxy``) counts requests and times them from the bytes it forwards:
it must know where a request's head ends, how long its body is (``Content-Length``, or
``Transfer-Encoding: chunked``), and the same of each response, to find the next message in
a kept-alive connection. Bodies are skipped, never copied; only head and chunk-size lines are
buffered. Anything it cannot parse stops the framing of that direction (``lost``): the bytes
are still forwarded and counted, the requests no longer are.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

CHUNKED = -1  # body length: chunked transfer coding
UNTIL_CLOSE = -2  # body length: until the connection closes (a response without a length)
MAX_LINE = 64 * 1024  # a head or chunk-size line longer than this is not HTTP we understand


@dataclass(frozen=True, slots=True)
class Head:
    """A message's start line split in three (``GET /b/k HTTP/1.1``, ``HTTP/1.1 200 OK``) and
    its header fields, names lower-cased."""

    start: tuple[str, str, str]
    fields: dict[str, str]

    def body_length(self) -> int:
        """The body's framing as the headers declare it (a request without either: none)."""
        if "chunked" in self.fields.get("transfer-encoding", "").lower():
            return CHUNKED
        length = self.fields.get("content-length")
        return int(length) if length is not None else 0


class FrameError(ValueError):
    """The bytes are not HTTP/1.1 as this framer reads it."""


def parse_head(lines: list[bytes]) -> Head:
    first = lines[0].decode("latin-1").strip().split(" ", 2)
    if len(first) < 2:
        raise FrameError(f"not an HTTP start line: {lines[0][:80]!r}")
    start = (first[0], first[1], first[2] if len(first) > 2 else "")
    fields: dict[str, str] = {}
    for raw in lines[1:]:
        name, sep, value = raw.decode("latin-1").partition(":")
        if not sep:
            raise FrameError(f"not a header field: {raw[:80]!r}")
        fields[name.strip().lower()] = value.strip()
    return Head(start, fields)


class Framer:
    """Feeds on one direction's bytes; calls ``on_head(head, now)`` when a message's head is
    complete (it returns the body's length, ``CHUNKED`` or ``UNTIL_CLOSE``) and
    ``on_end(size, now)`` when the message is complete (``size``: its bytes, head included).
    ``on_start(now)`` marks the time of a message's first byte."""

    def __init__(
        self,
        on_head: Callable[[Head, float], int],
        on_end: Callable[[int, float], None],
        on_start: Callable[[float], None] = lambda now: None,
    ) -> None:
        self.on_head, self.on_end, self.on_start = on_head, on_end, on_start
        self.lost = False
        self._mode = "head"  # head | chunk-size | trailer | until-close
        self._remaining = 0  # body bytes still to skip (a chunk's: its data and CRLF)
        self._in_chunk = False
        self._line = bytearray()
        self._lines: list[bytes] = []
        self._size = 0

    def feed(self, data: bytes, now: float) -> None:
        if self.lost:
            return
        try:
            self._feed(data, now)
        except (FrameError, ValueError):
            self.lost = True

    def _feed(self, data: bytes, now: float) -> None:
        pos, n = 0, len(data)
        while pos < n:
            if self._remaining:
                take = min(self._remaining, n - pos)
                self._remaining -= take
                self._size += take
                pos += take
                if not self._remaining:
                    self._body_done(now)
                continue
            if self._mode == "until-close":
                self._size += n - pos
                return
            if self._mode == "head" and not self._lines and not self._line:
                if data[pos : pos + 2] == b"\r\n":  # a stray CRLF between messages
                    pos += 2
                    continue
                self.on_start(now)
            end = data.find(b"\n", pos)
            stop = n if end < 0 else end + 1
            self._line += data[pos:stop]
            self._size += stop - pos
            pos = stop
            if len(self._line) > MAX_LINE:
                raise FrameError("line too long")
            if end >= 0:
                line = bytes(self._line)
                self._line.clear()
                self._on_line(line, now)

    def _on_line(self, line: bytes, now: float) -> None:
        blank = line in (b"\r\n", b"\n")
        if self._mode == "head":
            if not blank:
                self._lines.append(line)
                return
            head, self._lines = parse_head(self._lines), []
            self._begin_body(self.on_head(head, now), now)
        elif self._mode == "chunk-size":
            size = int(line.split(b";", 1)[0].strip(), 16)
            if size:
                self._remaining, self._in_chunk = size + 2, True  # the data and its CRLF
            else:
                self._mode = "trailer"
        elif self._mode == "trailer" and blank:
            self._message_done(now)

    def _begin_body(self, length: int, now: float) -> None:
        if length == CHUNKED:
            self._mode = "chunk-size"
        elif length == UNTIL_CLOSE:
            self._mode = "until-close"
        elif length > 0:
            self._remaining, self._in_chunk = length, False
        else:
            self._message_done(now)

    def _body_done(self, now: float) -> None:
        if self._in_chunk:
            self._in_chunk = False  # back to the next chunk's size line
        else:
            self._message_done(now)

    def _message_done(self, now: float) -> None:
        size, self._size, self._mode = self._size, 0, "head"
        self.on_end(size, now)

    def close(self, now: float) -> None:
        """The connection closed: a body read until close is complete."""
        if self._mode == "until-close" and not self.lost:
            self._message_done(now)
