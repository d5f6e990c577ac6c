"""What one measured operation sent through the delay proxy, in figures: requests by method
and by the kind of object, bytes each way, connections, and requests in flight."""

from __future__ import annotations

from collections import Counter
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from .delayproxy import Request, Traffic


def in_flight_max(requests: list[Request]) -> int:
    """The most requests that were open at once (first byte in, to response out)."""
    edges = sorted(
        [(r.start, 1) for r in requests if r.end is not None]
        + [(r.end, -1) for r in requests if r.end is not None]
    )
    most = now = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most


def summarize(traffic: Traffic, wall: float, since: float = 0.0) -> dict[str, float]:
    """Figures of the requests that began at ``since`` or later (monotonic seconds), over
    ``wall`` seconds: ``in_flight_mean`` is the requests' summed durations / ``wall``."""
    reqs = [r for r in traffic.requests if r.start >= since]
    done = [r for r in reqs if r.end is not None]
    methods = Counter(method_kind(r) for r in reqs)
    whole = since == 0.0
    return {
        "requests": len(reqs),
        "gets": methods["GET"],
        "puts": methods["PUT"] + methods["POST"],
        "heads": methods["HEAD"],
        "lists": methods["LIST"],
        "deletes": methods["DELETE"],
        "up": traffic.up if whole else sum(r.up for r in reqs),
        "down": traffic.down if whole else sum(r.down for r in reqs),
        "connections": traffic.connections if whole else len({r.conn for r in reqs}),
        "in_flight_max": in_flight_max(done),
        "in_flight_mean": sum(r.end - r.start for r in done if r.end) / wall if wall else 0.0,
        "continued": sum(1 for r in reqs if r.interim),
        "unanswered": sum(1 for r in reqs if r.end is None),  # the client left first
        "server_errors": sum(1 for r in reqs if r.status >= 500),
        "unframed": traffic.unframed,
    }


def method_kind(request: Request) -> str:
    """GET, PUT, HEAD, DELETE, POST, or LIST (a GET of a bucket with a listing query)."""
    query = urlsplit(request.target).query
    if request.method == "GET" and ("list-type" in query or "delimiter" in query):
        return "LIST"
    return request.method


def object_kind(request: Request, prefix: str) -> str:
    """The first folder of the object under the store's ``prefix`` (``packs``, ``trees``,
    ``versions``, DVC's ``files``), a top-level name (``datavc.json``), or ``bucket``."""
    url = urlsplit(request.target)
    path = unquote(url.path).strip("/")
    path = path.split("/", 1)[1] if "/" in path else ""  # the bucket
    if not path:  # a listing: what it lists
        path = parse_qs(url.query).get("prefix", [""])[0]
    rest = path[len(prefix) :].strip("/") if path.startswith(prefix) else path
    if not rest:
        return "bucket"
    return rest.split("/", 1)[0]


def by_kind(traffic: Traffic, prefix: str, since: float = 0.0) -> dict[str, int]:
    """``"GET packs": 12``-style counts, most first."""
    counts = Counter(
        f"{method_kind(r)} {object_kind(r, prefix)}" for r in traffic.requests if r.start >= since
    )
    return dict(counts.most_common())


def timeline(traffic: Traffic, prefix: str, since: float, limit: int) -> list[list[Any]]:
    """The first ``limit`` requests as [start, seconds, method, kind, sent, received, 100
    Continue], times relative to ``since`` (or to the first request)."""
    reqs = [r for r in traffic.requests if r.start >= since]
    zero = since or (reqs[0].start if reqs else 0.0)
    return [
        [
            round(r.start - zero, 4),
            round(r.end - r.start, 4) if r.end is not None else None,
            method_kind(r),
            object_kind(r, prefix),
            r.up,
            r.down,
            bool(r.interim),
        ]
        for r in reqs[:limit]
    ]
