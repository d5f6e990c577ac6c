"""Transient store failures: which failures pass, and how long a request is tried again.

A remote store fails now and then for reasons that pass: a 5xx answer, throttling (S3's
``SlowDown``, HTTP 429), a connection reset, a timeout. :class:`~.backend.Backend` tries such
a request again after a wait that doubles each time, with jitter, a bounded number of times
within a bounded time, and logs each retry on the ``datavc.store`` logger (level INFO: not
shown unless asked for). Any other failure (403, 404, 400, a missing bucket, a certificate
refused) is reported at once.

A store that has not answered once in this process (a refused port, an address that drops
packets, a server that accepts and never replies) is tried only for ``timeout`` seconds from
the request's start, so a command against a dead store fails within about that time. Once it
has answered, a failure to connect or to read is a blip, and gets the full retry budget.

Failures are recognised by type, and by the status and code that an S3 error carries as
data; the types of botocore and aiohttp are looked up only if those libraries are loaded
(nothing here imports them, so a local store never pays for them).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

DEFAULT_TIMEOUT = 2.5  # seconds: connect and read timeout of one request (a dead store fails
# within 3 s, start-up included, on an idle machine)
DEFAULT_RETRIES = 5  # retries after the first attempt
TIMEOUT_RANGE = (0.1, 600.0)
RETRIES_RANGE = (0, 10)
FIRST_WAIT = 0.2  # seconds: the longest first wait; each next one may be twice as long
MAX_WAIT = 5.0  # seconds: the longest single wait
DEADLINE = 30.0  # seconds after a request first failed: no retry starts later than this

# The store answered, and asked to be tried again (S3 error codes, which are data).
BUSY_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequests",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "RequestTimeout",  # S3 sends it with status 400: the upload stalled
        "RequestTimeoutException",
        "InternalError",
        "ServiceUnavailable",
        "ConditionalRequestConflict",  # 409: a concurrent conditional write to the same key
    }
)
BUSY_STATUS = frozenset({429, 500, 502, 503, 504})

BUSY = "busy"  # the store answered: try again later
NO_ANSWER = "no answer"  # no connection, or no reply in time


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How long a remote request may take and how often it is tried again.

    ``timeout``: the connect and read timeout of one request (applied to S3), and how long
    a store that never answered is tried. ``retries``: how many times a request is tried
    again after a transient failure."""

    timeout: float = DEFAULT_TIMEOUT
    retries: int = DEFAULT_RETRIES

    def wait(self, retry: int) -> float:
        """The wait before retry number ``retry`` (1, 2, ...): "equal jitter", between half
        of ``FIRST_WAIT * 2**(retry-1)`` (at most ``MAX_WAIT``) and all of it, so clients
        throttled together do not come back together."""
        import random  # imported on the first retry only: start-up cost

        longest = min(MAX_WAIT, FIRST_WAIT * 2.0 ** (retry - 1))
        return longest / 2 + random.random() * longest / 2

    def next_wait(
        self, kind: str | None, retry: int, running: float, failing: float, answered: bool
    ) -> float | None:
        """The wait before retry number ``retry`` (1, 2, ...) of a request that has run for
        ``running`` seconds and failed for ``failing`` (since its first failure), now with a
        failure of ``kind``; None: give up. ``answered``: the store answered in this process."""
        if kind is None or retry > self.retries:
            return None
        wait = self.wait(retry)
        if kind == NO_ANSWER and not answered:
            return wait if running + wait < self.timeout else None
        return wait if failing + wait < DEADLINE else None


def failure_kind(err: BaseException) -> str | None:
    """:data:`BUSY` or :data:`NO_ANSWER` if ``err`` is a failure that passes, else None.

    Walks the chain of causes: s3fs raises an ``OSError`` caused by botocore's
    ``ClientError``, whose ``response`` holds the HTTP status and the S3 error code."""
    never, no_answer = _library_types()
    current: BaseException | None = err
    for _ in range(8):
        if current is None:
            return None
        response = getattr(current, "response", None)
        if isinstance(response, dict):
            return _answer_kind(response)
        if isinstance(current, never):
            return None
        if isinstance(current, no_answer):
            return NO_ANSWER
        current = current.__cause__ or current.__context__
    return None


def _answer_kind(response: dict[str, object]) -> str | None:
    """What an error response (botocore's parsed form) says: busy, or a final answer."""
    error, meta = response.get("Error"), response.get("ResponseMetadata")
    code = error.get("Code") if isinstance(error, dict) else None
    status = meta.get("HTTPStatusCode") if isinstance(meta, dict) else None
    if code in BUSY_CODES or status in BUSY_STATUS:
        return BUSY
    return None


def _library_types() -> tuple[tuple[type[BaseException], ...], tuple[type[BaseException], ...]]:
    """(never transient, no answer): the built-in types, and those of botocore, aiohttp and
    asyncio if they are loaded (if one is not, none of its errors can be raised)."""
    never: list[type[BaseException]] = []
    no_answer: list[type[BaseException]] = [ConnectionError, TimeoutError]
    botocore = sys.modules.get("botocore.exceptions")
    if botocore is not None:
        never.append(botocore.SSLError)  # a refused certificate does not pass
        no_answer += [botocore.ConnectionError, botocore.HTTPClientError]
        no_answer.append(botocore.IncompleteReadError)
    aiohttp = sys.modules.get("aiohttp")
    if aiohttp is not None:
        never.append(aiohttp.ClientSSLError)
        no_answer += [aiohttp.ClientConnectionError, aiohttp.ClientPayloadError]
    asyncio = sys.modules.get("asyncio")
    if asyncio is not None:
        no_answer.append(asyncio.TimeoutError)  # fsspec's FSTimeoutError; built in from 3.11
    return tuple(never), tuple(no_answer)
