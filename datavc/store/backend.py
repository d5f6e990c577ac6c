"""Object storage over fsspec: the only module that imports fsspec's filesystems.

A :class:`Backend` stores whole immutable objects under string keys relative to the store
root ("packs/<id>", "versions/images/3.json"). It gives datavc what fsspec leaves to each
implementation: atomic writes on local disk (temp file, fsync, rename), a truly exclusive
create on every supported protocol, ranged reads, transient failures of a remote store tried
again (:mod:`.retry`), and one translation of errors into :mod:`datavc.errors`. It counts
its I/O so tests and the benchmark can check access patterns.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import inspect
import itertools
import os
import re
import stat
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, overload

from ..errors import DatavcError, ObjectNotFound, RangeNotFound, StoreUnreachable
from .atomic import FILE_MODE, fsync_dir, write_atomic
from .retry import RetryPolicy, failure_kind
from .s3answers import EXPECT_FROM, ExpectContinue, answer_confirms, precondition_failed

T = TypeVar("T")

_MEMORY_LOCK = threading.Lock()

# A password in a URL's user part (``s3://KEY:SECRET@bucket``; a secret may hold "/"), and the
# query parameters that sign or authorize a request (presigned S3 URLs, Azure SAS, tokens).
_USERINFO = re.compile(r"^([A-Za-z][\w+.-]*://[^/?#@]*:)([^@]*)@")
_SIGNING = re.compile(
    r"[?&](x-amz-[\w-]+|sig|signature|se|sp|sv|token|access_token|googleaccessid|secret|"
    r"password|key)=",
    re.IGNORECASE,
)


def url_credentials(url: str) -> str | None:
    """What credential a store URL holds (a password, or a signed query string), or None.
    Credentials never go into datavc's config, which is committed."""
    if _USERINFO.search(url):
        return "a password"
    if "://" in url and _SIGNING.search(url):
        return "a signed or authorizing query string"
    return None


def without_credentials(url: str) -> str:
    """``url`` without what :func:`url_credentials` finds: the user part of a URL that
    holds a password, and a signing or authorizing query string (with the fragment).
    For URLs that datavc records, as a run does the stores it opened."""
    url = _USERINFO.sub(lambda m: m.group(1).split("://", 1)[0] + "://", url, count=1)
    if "://" in url and _SIGNING.search(url):
        url = url.split("?", 1)[0].split("#", 1)[0]
    return url


def redacted(text: str, url: str) -> str:
    """``text`` with every secret that ``url`` holds (its password, its query values)
    replaced by ``***``: for error messages, which may quote the URL."""
    secrets = []
    found = _USERINFO.search(url)
    if found and found.group(2):
        secrets.append(found.group(2))
    if "://" in url and "?" in url:
        query = url.split("?", 1)[1].split("#", 1)[0]
        secrets += [value for _, _, value in (p.partition("=") for p in query.split("&")) if value]
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


class KeyLog:
    """The keys of the last :data:`KEEP` reads, in order. Its length counts every read
    ever made, so ``log[n:]`` is what was read since ``len(log)`` was ``n`` (as long as that
    is kept): a reader that runs for days (a training job's DataLoader worker) does not
    keep a string per read."""

    KEEP = 100_000

    def __init__(self) -> None:
        self._keys: deque[str] = deque(maxlen=self.KEEP)
        self._count = 0

    def append(self, key: str) -> None:
        self._keys.append(key)
        self._count += 1

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._keys))

    def __repr__(self) -> str:
        return repr(list(self._keys))

    @overload
    def __getitem__(self, i: int) -> str: ...

    @overload
    def __getitem__(self, i: slice) -> list[str]: ...

    def __getitem__(self, i: int | slice) -> str | list[str]:
        dropped = self._count - len(self._keys)
        if isinstance(i, slice):
            start, stop, step = i.indices(self._count)
            start, stop = max(start, dropped) - dropped, max(stop, dropped) - dropped
            return list(itertools.islice(self._keys, start, stop, step if step > 0 else None))
        j = i + self._count if i < 0 else i
        if not dropped <= j < self._count:
            raise IndexError(f"read {i} is not kept (the last {self.KEEP} are)")
        return self._keys[j - dropped]


@dataclass(slots=True)
class BackendStats:
    """I/O counters; ``reads`` counts every GET, whole or ranged."""

    reads: int = 0
    range_reads: int = 0
    bytes_read: int = 0
    writes: int = 0
    bytes_written: int = 0
    lists: int = 0
    retries: int = 0
    read_keys: KeyLog = field(default_factory=KeyLog)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count_read(self, key: str, n: int, ranged: bool) -> None:
        with self.lock:
            self.reads += 1
            self.range_reads += ranged
            self.bytes_read += n
            self.read_keys.append(key)

    def count_write(self, n: int) -> None:
        with self.lock:
            self.writes += 1
            self.bytes_written += n


_S3 = ("s3", "s3a")
# A remote file up to this size is stored with one PUT from memory, whose answer can confirm
# it (below s3fs's own limit for one PUT, 2 x its 50 MiB part size); a larger one in parts.
WHOLE_PUT = 96 << 20


class Created(enum.Enum):
    """What an exclusive create did."""

    EXISTS = "exists"  # the key existed: nothing written
    CREATED = "created"  # created; whether the store kept the bytes whole is not known
    CONFIRMED = "confirmed"  # created, and the answer confirms the store keeps exactly them


def _options(protocol: str, given: dict[str, Any], policy: RetryPolicy) -> dict[str, Any]:
    """The storage options for ``protocol``: datavc's defaults, ``given`` winning (inside
    ``config_kwargs`` too, key by key)."""
    if protocol not in _S3:
        return dict(given)
    # botocore's timeouts, and no retries of its own: s3fs and botocore each retry some
    # failures (5 x 5 attempts of a SlowDown, measured: 47 s), the backend retries all.
    botocore: dict[str, Any] = {
        "connect_timeout": policy.timeout,
        "read_timeout": policy.timeout,
        "retries": {"total_max_attempts": 1},
    }
    mine = given.get("config_kwargs", {})
    # Other writers change the store behind our back: never trust a cached listing.
    options = {"use_listings_cache": False, "skip_instance_cache": True, **given}
    if isinstance(mine, dict):  # else not ours to fix: s3fs says what is wrong with it
        options["config_kwargs"] = {**botocore, **mine}
    return options


class LocalFiles:
    """The few filesystem calls the backend makes, for a local folder, with plain os calls.

    Ranged reads keep a few descriptors open (objects are immutable), so reading many
    small files out of one pack does not reopen the pack each time."""

    KEEP_OPEN = 64

    def __init__(self) -> None:
        self._open: dict[str, int] = {}
        self._lock = threading.Lock()

    def __del__(self) -> None:
        for fd in self._open.values():
            os.close(fd)

    def cat_file(self, path: str, start: int | None = None, end: int | None = None) -> bytes:
        if start is None:
            with open(path, "rb") as f:
                return f.read()
        fd = self._fd(path)
        stop = end if end is not None else os.fstat(fd).st_size
        return os.pread(fd, stop - start, start)

    def _fd(self, path: str) -> int:
        with self._lock:
            fd = self._open.get(path)
            if fd is None:
                if len(self._open) >= self.KEEP_OPEN:
                    os.close(self._open.pop(next(iter(self._open))))
                fd = self._open[path] = os.open(path, os.O_RDONLY)
            return fd

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def ls(self, path: str, detail: bool = False) -> list[str]:
        if not os.path.isdir(path):
            raise FileNotFoundError(path)
        return [os.path.join(path, name) for name in os.listdir(path)]

    def rm_file(self, path: str) -> None:
        with self._lock:
            fd = self._open.pop(path, None)
        if fd is not None:
            os.close(fd)
        os.unlink(path)

    def pipe_file(self, path: str, data: bytes) -> None:
        write_atomic(path, data)


class Backend:
    """Objects under one store URL (fsspec, or plain files for a local folder).
    Thread-safe; reconnects after a fork. A remote store's transient failures are tried
    again under ``retry`` (:mod:`.retry`)."""

    def __init__(
        self,
        url: str,
        storage_options: dict[str, Any] | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.shown_url = redacted(self.url, self.url)  # for messages: no credentials
        self.storage_options = dict(storage_options or {})
        self.retry = retry or RetryPolicy()
        self.stats = BackendStats()
        self.answered = False  # the store has answered a request in this process
        self._pid = -1
        self._hooked: Any = None  # the S3 client whose PUTs _expect oversees
        self._expect = ExpectContinue()
        self._connect()

    def _connect(self) -> None:
        protocol = self.url.split("://", 1)[0] if "://" in self.url else "file"
        self._whole: dict[str, Any] = {}  # keyword arguments of a whole object's read
        self._s3 = protocol in _S3
        self.is_local = protocol in ("file", "local")
        self.is_memory = protocol == "memory"
        if self.is_local:  # plain os calls: no fsspec import, no per-call overhead
            self.fs: Any = LocalFiles()
            self.root = os.path.abspath(self.url.split("://", 1)[-1])
        else:
            import fsspec

            options = _options(protocol, self.storage_options, self.retry)
            try:
                self.fs, self.root = fsspec.core.url_to_fs(self.url, **options)
            except (ImportError, ValueError, TypeError) as err:
                reason = redacted(f"cannot open this URL ({err})", self.url)
                raise StoreUnreachable(self.shown_url, reason) from None
            self.root = self.root.rstrip("/")
            if protocol in _S3:
                self.fs.retries = 1  # s3fs's own loop: one pass (the backend retries)
                if "max_concurrency" in inspect.signature(self.fs._cat_file).parameters:
                    # s3fs asks for a whole object's size (a HEAD, one more round trip)
                    # before reading it, to read a large one in parallel parts; the
                    # objects datavc reads whole are small (records, pages, indexes)
                    self._whole = {"max_concurrency": 1}
        self._pid = os.getpid()

    def _fs(self) -> Any:
        if self._pid != os.getpid():
            self._connect()
        return self.fs

    def path(self, key: str) -> str:
        return f"{self.root}/{key}" if self.root else key

    def _run(self, what: str, key: str, call: Callable[[], T], writing: bool = False) -> T:
        """``call()``; on a remote store tried again after a transient failure (:mod:`.retry`).
        A failure that stays is translated into :mod:`datavc.errors` here, for every call."""
        started = time.monotonic()
        first_failure = 0.0
        retry = 0
        while True:
            try:
                result = call()
            except DatavcError:
                raise
            except Exception as err:
                now = time.monotonic()
                first_failure = first_failure or now
                wait = self._wait(err, retry + 1, now - started, now - first_failure)
                if wait is None:
                    raise self._failure(err, key, writing, retry, now - started) from None
                retry += 1
                self._log_retry(what, key, err, retry, wait)
                time.sleep(wait)
            else:
                self.answered = True
                return result

    def _wait(self, err: Exception, retry: int, running: float, failing: float) -> float | None:
        """How long to wait before trying again after ``err``; None: do not."""
        if isinstance(err, (FileNotFoundError, IsADirectoryError, NotADirectoryError)):
            self.answered = True  # a definite answer
            return None
        kind = None if self.is_local else failure_kind(err)
        return self.retry.next_wait(kind, retry, running, failing, self.answered)

    def _failure(
        self, err: Exception, key: str, writing: bool, retries: int, running: float
    ) -> DatavcError:
        """The datavc error for a backend failure that stays."""
        if isinstance(err, FileNotFoundError) and not writing:
            return ObjectNotFound(key)
        if isinstance(err, (IsADirectoryError, NotADirectoryError)) and not writing:
            return ObjectNotFound(f"{key} (a folder where an object belongs, or the reverse)")
        if isinstance(err, FileNotFoundError):  # a write cannot miss its object
            reason = self._one_line(f"the bucket or folder does not exist ({err})")
        else:
            reason = self._one_line(f"{type(err).__name__}: {err}")
        if retries:
            reason += f" ({retries + 1} attempts in {running:.1f} s)"
        return StoreUnreachable(self.shown_url, reason)

    def _one_line(self, text: str) -> str:
        """``text`` without the URL's secrets, its first line, at most 300 characters."""
        return (redacted(text, self.url).splitlines() or [""])[0][:300]

    def _log_retry(self, what: str, key: str, err: Exception, retry: int, wait: float) -> None:
        import logging  # only when a retry happens: start-up cost

        with self.stats.lock:
            self.stats.retries += 1
        logging.getLogger("datavc.store").info(
            "store %s: %s %s failed (%s); retry %d of %d in %.2f s",
            self.shown_url,
            what,
            key,
            self._one_line(f"{type(err).__name__}: {err}"),
            retry,
            self.retry.retries,
            wait,
        )

    def read(self, key: str) -> bytes:
        data: bytes = self._run(
            "read", key, lambda: self._fs().cat_file(self.path(key), **self._whole)
        )
        self.stats.count_read(key, len(data), ranged=False)
        return data

    def read_range(self, key: str, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` of an object."""
        data: bytes
        if self.is_local and self._pid == os.getpid():  # one pread; the retry loop only
            try:  # for a failure, to translate it
                data = self.fs.cat_file(f"{self.root}/{key}", start, end)
            except OSError:
                data = self._read_range(key, start, end)
        else:
            data = self._read_range(key, start, end)
        if len(data) != end - start:
            raise RangeNotFound(f"{key} (range {start}-{end} past its end)")
        self.stats.count_read(key, len(data), ranged=True)
        return data

    def _read_range(self, key: str, start: int, end: int) -> bytes:
        def call() -> bytes:
            try:
                data: bytes = self._fs().cat_file(self.path(key), start=start, end=end)
            except OSError as err:  # S3's 416 for a range that starts past the end
                if err.errno == errno.EINVAL and "range" in str(err).lower():
                    return b""  # short, as a local read past the end is
                raise
            return data

        return self._run("read", key, call)

    def exists(self, key: str) -> bool:
        return bool(self._run("check", key, lambda: self._fs().exists(self.path(key))))

    def list_detail(self, prefix: str) -> list[ObjectInfo]:
        """Objects directly under ``prefix`` with their size and modification time (the
        store's clock: S3 ``LastModified``, a file's mtime); folders are left out."""
        with self.stats.lock:
            self.stats.lists += 1
        if self.is_local:
            return self._run("list", prefix, lambda: _list_local(self.path(prefix)))
        entries = self._run("list", prefix, lambda: self._ls(prefix, detail=True))
        out = []
        for e in entries:
            if e.get("type") == "directory":
                continue
            name = str(e["name"]).rstrip("/").rsplit("/", 1)[-1]
            out.append(ObjectInfo(name, int(e.get("size") or 0), _mtime(e)))
        return sorted(out)

    def list(self, prefix: str) -> list[str]:
        """Names directly under ``prefix`` (a folder key); empty if there is none."""
        with self.stats.lock:
            self.stats.lists += 1
        entries = self._run("list", prefix, lambda: self._ls(prefix))
        return sorted(str(e).rstrip("/").rsplit("/", 1)[-1] for e in entries)

    def size(self, key: str) -> int:
        """An object's size in bytes."""
        if self.is_local:
            return self._run("size", key, lambda: os.path.getsize(self.path(key)))
        return self._run("size", key, lambda: int(self._fs().size(self.path(key))))

    def _ls(self, prefix: str, detail: bool = False) -> Sequence[Any]:
        fs, path = self._fs(), self.path(prefix)
        try:
            if self._s3:  # one LIST: s3fs's ls lists the parent too when a folder is empty
                from fsspec.asyn import sync

                found: list[dict[str, Any]] = sync(fs.loop, fs._lsdir, path, refresh=True)
                return found if detail else [e["name"] for e in found]
            entries: Sequence[Any] = fs.ls(path, detail=detail)
            return entries
        except FileNotFoundError:
            return []

    def write(self, key: str, data: bytes | Sequence[bytes]) -> bool:
        """Store an immutable object (bytes, or parts written one after another, so a
        large object is never copied into one buffer on local disk); writing the same key
        again is harmless. True if the store's answer shows that it holds exactly these
        bytes (:func:`answer_confirms`); False if that is not known, and the caller who
        must know checks (:meth:`size`)."""
        return self._put(key, data, "once")

    def replace(self, key: str, data: bytes) -> bool:
        """Overwrite a mutable object (tags) atomically; True as for :meth:`write`."""
        return self._put(key, data, "replace")

    def _put(self, key: str, data: bytes | Sequence[bytes], how: str) -> bool:
        size = len(data) if isinstance(data, bytes) else sum(len(p) for p in data)
        confirmed = False
        if self.is_local:
            written = self._run(
                "write", key, lambda: self._write_local(self.path(key), data, how), writing=True
            )
        else:
            whole = data if isinstance(data, bytes) else b"".join(data)
            path = self.path(key)
            confirmed = self._run("write", key, lambda: self._pipe(path, whole, False), True)
            written = True
        if written:
            self.stats.count_write(size)
        return confirmed

    def _pipe(self, path: str, data: bytes, create: bool) -> bool:
        """One PUT of ``data`` (exclusive with ``create``: FileExistsError if the key
        exists); True if its answer confirms the store keeps exactly ``data``."""
        fs = self._fs()
        if not self._s3:
            if create:
                fs.pipe_file(path, data, mode="create")
            else:
                fs.pipe_file(path, data)
            return False
        self._oversee_expect(fs)
        try:
            answer = fs.pipe_file(path, data, mode="create" if create else "overwrite")
        except OSError as err:
            if create and precondition_failed(err):
                raise FileExistsError(path) from None
            raise
        if len(data) >= EXPECT_FROM:
            self._expect.taken = True
        return answer_confirms(answer, data)

    def _oversee_expect(self, fs: Any) -> None:
        """Have the S3 client ask for ``100 Continue`` only where it may pay
        (:class:`.ExpectContinue`); once per client (s3fs makes a new one after a fork, or
        when its connections are closed)."""
        from fsspec.asyn import sync

        client = sync(fs.loop, fs.set_session)  # the client s3fs uses (no request made)
        if client is not self._hooked:
            client.meta.events.register_last(
                "before-call.s3", self._expect, unique_id=f"datavc-expect-{id(self)}"
            )
            self._hooked = client

    def spool_dir(self) -> str | None:
        """A local folder where an object can be built before :meth:`put_path` (beside the
        objects on a local store, so putting it is a rename); None if not local."""
        if not self.is_local:
            return None
        folder = self.path("packs")
        os.makedirs(folder, exist_ok=True)
        return folder

    def put_path(self, key: str, src: str, move: bool) -> bool:
        """Store the local file ``src`` as the immutable object ``key``; with ``move`` the
        file is consumed (renamed into place on a local store, deleted after upload). True
        as for :meth:`write`."""
        size = os.path.getsize(src)
        path = self.path(key)
        confirmed = False
        if self.is_local:
            if not move:
                raise StoreUnreachable(self.shown_url, "a local put must move its file")
            written = self._run("write", key, lambda: _move_local(src, path), writing=True)
        elif self._s3 and size <= WHOLE_PUT:
            with open(src, "rb") as f:  # s3fs's put_file reads it whole as well
                data = f.read()
            confirmed = self._run("write", key, lambda: self._pipe(path, data, False), True)
            written = True
            del data
        else:
            self._run("write", key, lambda: self._fs().put_file(src, path), writing=True)
            written = True
        if not self.is_local and move:
            os.unlink(src)
        if written:
            self.stats.count_write(size)
        return confirmed

    def create_exclusive(self, key: str, data: bytes) -> bool:
        """Create ``key`` only if it does not exist; False if it already did. A retried
        create whose first attempt succeeded but whose answer was lost returns False: the
        caller tells its own object by what it holds (a version record's nonce)."""
        return self.create(key, data) is not Created.EXISTS

    def create(self, key: str, data: bytes) -> Created:
        """:meth:`create_exclusive`, also saying whether the store's answer confirms it
        keeps exactly ``data`` (as for :meth:`write`)."""
        path = self.path(key)
        created = self._run("create", key, lambda: self._create(path, data), writing=True)
        if created is not Created.EXISTS:
            self.stats.count_write(len(data))
        return created

    def delete(self, key: str) -> None:
        self._run("delete", key, lambda: self._fs().rm_file(self.path(key)))

    def _create(self, path: str, data: bytes) -> Created:
        if self.is_local:
            done = self._write_local(path, data, "exclusive")
        elif self.is_memory:
            done = self._create_memory(path, data)
        else:
            return self._create_remote(path, data)
        return Created.CREATED if done else Created.EXISTS

    def _create_memory(self, path: str, data: bytes) -> bool:
        with _MEMORY_LOCK:
            if self.fs.exists(path):
                return False
            self.fs.pipe_file(path, data)
            return True

    def _create_remote(self, path: str, data: bytes) -> Created:
        try:
            confirmed = self._pipe(path, data, True)
        except FileExistsError:
            return Created.EXISTS
        return Created.CONFIRMED if confirmed else Created.CREATED

    def _write_local(self, path: str, data: bytes | Sequence[bytes], how: str) -> bool:
        """Temp file, fsync, then rename (or link, which fails if ``path`` exists)."""
        if how == "once" and os.path.exists(path):
            return False
        return write_atomic(path, data, durable=True, exclusive=how == "exclusive")


@dataclass(frozen=True, slots=True, order=True)
class ObjectInfo:
    name: str
    size: int
    mtime: float | None  # seconds since the epoch, by the store's clock; None: not known


def _list_local(folder: str) -> list[ObjectInfo]:
    out = []
    try:
        names = os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return []
    for name in names:
        try:
            st = os.lstat(os.path.join(folder, name))
        except FileNotFoundError:
            continue  # deleted since listed
        if stat.S_ISREG(st.st_mode):
            out.append(ObjectInfo(name, st.st_size, st.st_mtime))
    return sorted(out)


def _mtime(info: dict[str, Any]) -> float | None:
    """The modification time in an fsspec listing entry (each filesystem names it its own
    way); None if it gives none (gc never deletes such an object: its age is unknown)."""
    for key in ("LastModified", "mtime", "last_modified", "created", "updated"):
        value = info.get(key)
        if value is None:
            continue
        if hasattr(value, "timestamp"):
            return float(value.timestamp())
        try:
            return float(value)
        except (TypeError, ValueError):
            continue
    return None


def _move_local(src: str, path: str) -> bool:
    """fsync ``src`` and rename it to ``path`` (same folder tree, same filesystem). If
    ``path`` exists with the same size, it is the same object (the key names its content),
    so ``src`` is dropped; with another size it is a damaged copy, and is replaced."""
    with contextlib.suppress(FileNotFoundError):
        if os.path.getsize(path) == os.path.getsize(src):
            os.unlink(src)
            return False
    fd = os.open(src, os.O_RDONLY)
    try:
        os.fchmod(fd, FILE_MODE)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    os.replace(src, path)
    fsync_dir(os.path.dirname(path))
    return True
