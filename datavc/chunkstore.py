"""The chunk store: deduplication, pack writing and reading, the index, and the local cache.

Writers append new chunks to a pack file built on local disk (about 64 MiB), store each full
pack, and at the end of an upload write one index object for the packs of that upload.
Readers find a chunk through the location hints of the tree page that names it, or else
through the index (loaded whole, once), then fetch the byte ranges they need, merging
neighbouring chunks into one ranged read. Every chunk and metadata object read back is
checked against its BLAKE3 id before use. The store config is read only when needed (by
writers): reading a version needs only the record, a page and the packs.
"""

from __future__ import annotations

import contextlib
import json
import mmap
import os
import threading
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from .backend import Backend
from .chunker import ChunkerParams
from .errors import (
    CorruptObject,
    DatavcError,
    IntegrityError,
    NotARepository,
    ObjectNotFound,
)
from .hashing import ChunkId, ObjectId, chunk_id, file_hasher, object_id
from .packfile import (
    CODEC_RAW,
    PACK_MAGIC,
    Location,
    LocationTable,
    PackEntry,
    decode_chunk,
    encode_chunk,
    pack_footer,
)
from .spool import ALIGN, NOWAIT, AppendFile, open_direct, read_cached, read_into

if TYPE_CHECKING:
    from concurrent.futures import Future  # imported where threads start (see snapshot.py)

    from .tree import Hints

STORE_FORMAT = 2
_T = TypeVar("_T")
CONFIG_KEY = "datavc.json"
DEFAULT_PACK_TARGET = 64 * 1024 * 1024
WORKERS = 2
MAX_INFLIGHT = 64  # batches of chunks being hashed and compressed at once
MAX_INFLIGHT_BYTES = 32 << 20
MAX_HASHING_BYTES = 16 << 20  # blocks waiting for the whole-file hash thread
RUN_BYTES = 8 << 20
BATCH_BYTES = 8 << 20  # chunks handed to the pack thread at a time
MAX_TASKS = 8  # pack-thread tasks waiting at most (about 64 MiB of chunks)
INLINE_CHUNK = 16 << 10  # smaller chunks are hashed and compressed without a thread hop


@dataclass(frozen=True, slots=True)
class StoreConfig:
    chunker: ChunkerParams
    pack_target: int = DEFAULT_PACK_TARGET

    def encode(self) -> bytes:
        doc = {
            "type": "datavc-store",
            "format": STORE_FORMAT,
            "hash": "blake3",
            "compression": "zstd",
            "chunker": self.chunker.to_json(),
            "pack_target": self.pack_target,
        }
        return json.dumps(doc, sort_keys=True, indent=1).encode() + b"\n"

    @classmethod
    def decode(cls, data: bytes) -> StoreConfig:
        try:
            doc = json.loads(data)
            if doc.get("type") != "datavc-store":
                raise CorruptObject(CONFIG_KEY, "not a datavc store config")
            if doc.get("format") != STORE_FORMAT:
                raise CorruptObject(CONFIG_KEY, f"unsupported store format {doc.get('format')}")
            return cls(ChunkerParams.from_json(doc["chunker"]), int(doc["pack_target"]))
        except (ValueError, KeyError, TypeError, AttributeError):
            raise CorruptObject(CONFIG_KEY, "store config is malformed") from None


@dataclass(frozen=True, slots=True)
class UploadStats:
    new_chunks: int = 0
    new_bytes: int = 0
    new_objects: int = 0


class ChunkStore:
    """Chunks and metadata objects of one store, with an optional local cache."""

    def __init__(
        self, backend: Backend, config: StoreConfig | None, cache: Backend | None = None
    ) -> None:
        self.backend = backend
        self._config = config
        self.cache = cache
        self._index = LocationTable()
        self._hints = LocationTable()
        self._indexes_loaded: set[str] = set()
        self._lock = threading.Lock()
        self._loading = threading.Lock()  # one thread lists and reads index objects at a time

    @classmethod
    def create(
        cls, backend: Backend, config: StoreConfig, cache: Backend | None = None
    ) -> ChunkStore:
        """Initialise a store, or open it if one already exists there (keeping its config)."""
        if not backend.create_exclusive(CONFIG_KEY, config.encode()):
            store = cls.open(backend, cache)
            _ = store.config  # joining a store: it must be one this datavc can write
            return store
        return cls(backend, config, cache)

    @classmethod
    def open(cls, backend: Backend, cache: Backend | None = None) -> ChunkStore:
        """A store at ``backend``; its config is read on first use (see :attr:`config`)."""
        return cls(backend, None, cache)

    @property
    def config(self) -> StoreConfig:
        """The store config; raises NotARepository if there is no store here."""
        if self._config is None:
            try:
                data = self.backend.read(CONFIG_KEY)
            except ObjectNotFound:
                raise NotARepository(
                    f"no datavc store at {self.backend.url} (run 'datavc init' to create one)"
                ) from None
            self._config = StoreConfig.decode(data)
        return self._config

    # -- metadata objects -------------------------------------------------------------

    def read_object(self, kind: str, oid: str) -> bytes:
        """Read ``<kind>/<oid>`` (cache first) and check it hashes to ``oid``."""
        key = f"{kind}/{oid}"
        data = None
        if self.cache is not None:
            try:
                data = self.cache.read(key)
            except ObjectNotFound:
                data = None
            if data is not None and object_id(data) != oid:
                data = None  # a damaged cache entry: fall back to the store
        if data is None:
            data = self.backend.read(key)
            got = object_id(data)
            if got != oid:
                raise IntegrityError(key, oid, got)
            if self.cache is not None:
                self.cache.write(key, data)
        return data

    def write_object(self, kind: str, data: bytes | list[bytes]) -> ObjectId:
        """Write an object (whole, or as parts) under the hash of its bytes."""
        parts = [data] if isinstance(data, bytes) else data
        hasher = file_hasher()
        for part in parts:
            hasher.update(part)
        oid = ObjectId(hasher.hexdigest())
        self.backend.write(f"{kind}/{oid}", parts)
        if self.cache is not None:
            self.cache.write(f"{kind}/{oid}", parts)
        return oid

    def put_pack(self, path: str, footer: bytes) -> ObjectId:
        """Store the finished pack file at ``path`` (consumed) under its id: the BLAKE3 of
        its footer, which names every chunk in it (each chunk is checked on read against
        its own id, so hashing the whole pack again would add nothing but a pass)."""
        oid = object_id(footer)
        key = f"packs/{oid}"
        if self.cache is not None:
            self.backend.put_path(key, path, move=False)
            self.cache.put_path(key, path, move=True)
        else:
            self.backend.put_path(key, path, move=True)
        return oid

    def spool_dir(self) -> str | None:
        """Where a writer builds pack files: beside the packs of a local store or cache."""
        return (self.cache or self.backend).spool_dir()

    # -- index ------------------------------------------------------------------------

    def load_index(self) -> None:
        """Read the index objects not loaded yet (new ones appear as others upload). A
        reader may ask from two threads at once (locating runs, and its read-ahead thread
        finding a moved pack): the second waits, then reads only what is still new."""
        with self._loading:
            names = [n for n in self.backend.list("index") if n not in self._indexes_loaded]
            for name in names:
                if name.startswith("."):
                    continue
                data = self.read_object("index", name)
                with self._lock:
                    self._index.add_index(data, f"index/{name}")
                    self._indexes_loaded.add(name)
            if self._indexes_loaded:
                self._hints = LocationTable()  # the index is loaded: hints are not needed

    def location(self, cid: ChunkId) -> Location | None:
        return self._index.get(cid)

    def locate_stored(self, cid: ChunkId) -> Location:
        """Where the index puts a chunk this process stored or found stored (writers)."""
        loc = self._index.get(cid)
        if loc is None:
            raise ObjectNotFound(f"chunk {cid.hex()} (not in the index)")
        return loc

    def add_hints(self, hints: Hints) -> None:
        """Chunk locations read from a tree page: used until the index is loaded, never
        for deduplication (a hint is where a chunk *was* put, not proof it is there)."""
        if self._indexes_loaded:
            return  # the index is loaded and is the authority
        with self._lock:
            self._hints.put_hints(hints.packs, hints.rows)

    def has_chunk(self, cid: ChunkId) -> bool:
        return cid in self._index

    def new_writer(self) -> PackWriter:
        self.load_index()
        return PackWriter(self)

    # -- reading chunks ---------------------------------------------------------------

    def _locate(self, cid: ChunkId) -> Location:
        loc = self._index.get(cid) or self._hints.get(cid)
        if loc is None:
            self.load_index()
            loc = self._index.get(cid)
        if loc is None:
            raise ObjectNotFound(f"chunk {cid.hex()}")
        return loc

    def read_chunks(
        self, ids: Iterable[ChunkId], verify: bool = True
    ) -> Generator[bytes | memoryview, None, None]:
        """Yield the plain bytes of each chunk in order, checked against its id.

        Neighbouring chunks of one pack are fetched with one ranged read (up to 8 MiB);
        when there are several such runs, the next two are fetched while this one is used.
        With ``verify=False``, raw chunks read from the store itself are *not* checked:
        the caller checks the hash of the file they make before anyone sees the bytes."""
        read: Callable[[list[tuple[ChunkId, Location]]], Sequence[bytes | memoryview]]
        read = self._read_run if verify else self._read_run_unchecked
        with contextlib.closing(self._read_ahead(self._runs(ids), read)) as fetched:
            for run in fetched:
                yield from run

    def stream_plain(self, ids: Iterable[ChunkId], use: Callable[[list[memoryview]], None]) -> None:
        """Call ``use`` with the chunks' plain bytes in order, a run of neighbouring chunks
        at a time (one view for a raw run, else one per chunk), read ahead on another
        thread; the views are valid only during the call.

        Runs of raw chunks from the store itself, and from a local store compressed ones
        too (decompressed), are *not checked* chunk by chunk: the caller checks the whole
        file's hash before anyone sees the bytes. Runs from a cache, and compressed runs
        from a remote store, are decoded and checked.

        From a local store with no cache, runs are read into a few reused buffers: copied
        from the page cache if all of a run is there, else with ``O_DIRECT``, so neither the
        page cache nor fresh memory has to be filled (tensor checkout here, packs on disk:
        1.4-3.1 s, 1.4-4.1 s of it kernel CPU, with buffered reads into new buffers; 1.1-1.6
        s, 0.5-1 s kernel CPU, this way; packs in the page cache: 0.6-0.65 s). A pack is
        read from the page cache only while its runs are all there (a one-page probe
        first): a refused cached read starts the kernel's readahead of its range, and
        reading the same bytes directly then read them twice (tensor checkout, packs on
        disk: 1.5-1.6 s before this rule, 1.0-1.4 s after)."""
        runs = self._runs(ids)
        if self.cache is not None or not self.backend.is_local:
            with contextlib.closing(self._read_ahead(runs, self._read_raw_run)) as blocks:
                for block in blocks:
                    use([memoryview(part) for part in block])
            return
        free = [mmap.mmap(-1, RUN_BYTES + 2 * ALIGN) for _ in range(4)]  # 3 in use at most
        files: dict[ObjectId, list[int]] = {}  # direct descriptor, buffered one (or -1)

        def fetch(run: list[tuple[ChunkId, Location]]) -> tuple[mmap.mmap | None, list[Any]]:
            first, last = run[0][1], run[-1][1]
            end = last.offset + last.stored_length
            if end - first.offset > RUN_BYTES:
                return None, list(self._read_run(run))
            fds = files.get(first.pack)
            probe = fds is None
            if fds is None:
                path = self.backend.path(f"packs/{first.pack}")
                try:
                    fds = files[first.pack] = [open_direct(path)[0], -1]
                    if NOWAIT:
                        fds[1] = os.open(path, os.O_RDONLY)
                except FileNotFoundError:
                    return None, list(self._read_run(run))  # moved: found through the index
            buf = free.pop()
            start = first.offset
            if probe and fds[1] >= 0 and read_cached(fds[1], start, start + 1, buf) is None:
                os.close(fds[1])  # a one-page probe: a refused one starts little readahead
                fds[1] = -1
            view = None
            if fds[1] >= 0:
                view = read_cached(fds[1], first.offset, end, buf)
                if view is None:  # not all cached: the rest of this pack comes from disk
                    os.close(fds[1])
                    fds[1] = -1
            if view is None:
                view = read_into(fds[0], first.offset, end, buf)
            if view is None:
                raise CorruptObject(f"packs/{first.pack}", "pack is shorter than its index says")
            if all(loc.codec == CODEC_RAW for _, loc in run):
                return buf, [view]
            return buf, _decode_unchecked(run, view)

        try:
            with contextlib.closing(self._read_ahead(runs, fetch)) as fetched:
                for buf, parts in fetched:
                    use([memoryview(part) for part in parts])
                    del parts
                    if buf is not None:
                        free.append(buf)
        finally:  # the reader thread has stopped: its descriptors can go
            for fds in files.values():
                for fd in fds:
                    if fd >= 0:
                        os.close(fd)

    def _read_ahead(
        self,
        runs: Iterable[list[tuple[ChunkId, Location]]],
        read: Callable[[list[tuple[ChunkId, Location]]], _T],
    ) -> Generator[_T, None, None]:
        """``read(run)`` for each run, in order, the next two on another thread while the
        caller uses one (so at most three results exist at once). ``runs`` is taken as it
        is needed: reading starts once the first two runs are known, not all of them (a
        1 GiB file has ~16,000 chunks to locate)."""
        todo = iter(runs)
        first = next(todo, None)
        if first is None:
            return
        second = next(todo, None)
        if second is None:
            yield read(first)
            return
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(1, thread_name_prefix="datavc-read") as pool:
            ahead: deque[Future[_T]] = deque([pool.submit(read, first), pool.submit(read, second)])
            try:
                for run in todo:
                    ahead.append(pool.submit(read, run))
                    if len(ahead) > 2:
                        yield ahead.popleft().result()
                while ahead:
                    yield ahead.popleft().result()
            finally:
                for future in ahead:
                    future.cancel()

    def _read_raw_run(self, run: list[tuple[ChunkId, Location]]) -> list[bytes]:
        """A run of raw chunks from the store as one unchecked blob; other runs checked."""
        first, last = run[0][1], run[-1][1]
        if self.cache is not None or any(loc.codec != CODEC_RAW for _, loc in run):
            return self._read_run(run)
        try:
            end = last.offset + last.stored_length
            blob = self.backend.read_range(f"packs/{first.pack}", first.offset, end)
        except ObjectNotFound:
            return self._read_run(run)  # moved: found through the index, and checked
        return [blob]

    def _read_run_unchecked(
        self, run: list[tuple[ChunkId, Location]]
    ) -> Sequence[bytes | memoryview]:
        blobs = self._read_raw_run(run)
        if len(blobs) == len(run):
            return blobs  # decoded and checked
        return _decode_unchecked(run, memoryview(blobs[0]))  # a raw run: split, not copied

    def _runs(self, ids: Iterable[ChunkId]) -> Iterator[list[tuple[ChunkId, Location]]]:
        """The chunks' runs, each located as it is needed."""
        return _group((cid, self._locate(cid)) for cid in ids)

    def _relocated(self, run: list[tuple[ChunkId, Location]]) -> list[tuple[ChunkId, Location]]:
        """After a pack named by location hints was not found: where the index puts the
        run's chunks. Raises ObjectNotFound if the index knows no other place."""
        self.load_index()
        moved = []
        for cid, loc in run:
            now = self._index.get(cid)
            if now is None or now.pack == loc.pack:
                raise ObjectNotFound(f"packs/{loc.pack}")
            moved.append((cid, now))
        return moved

    def _read_run(self, run: list[tuple[ChunkId, Location]]) -> list[bytes]:
        try:
            return self._read_run_at(run)
        except ObjectNotFound:
            return [b for r in _group(self._relocated(run)) for b in self._read_run_at(r)]

    def _read_run_at(self, run: list[tuple[ChunkId, Location]]) -> list[bytes]:
        """Fetch one contiguous run of chunks: from the cache if it has the pack and its
        bytes check out, else from the store (a damaged cached pack is dropped)."""
        first, last = run[0][1], run[-1][1]
        key = f"packs/{first.pack}"
        end = last.offset + last.stored_length
        if self.cache is not None:
            try:
                blob = self.cache.read_range(key, first.offset, end)
            except ObjectNotFound:
                blob = None
            if blob is not None:
                try:
                    return _decode_run(run, blob)
                except IntegrityError:
                    with contextlib.suppress(DatavcError):
                        self.cache.delete(key)
        return _decode_run(run, self.backend.read_range(key, first.offset, end))


def _group(
    located: Iterable[tuple[ChunkId, Location]],
) -> Iterator[list[tuple[ChunkId, Location]]]:
    """Group chunks into runs: contiguous in one pack, at most ``RUN_BYTES`` long."""
    run: list[tuple[ChunkId, Location]] = []
    for cid, loc in located:
        if run:
            last = run[-1][1]
            contiguous = last.pack == loc.pack and last.offset + last.stored_length == loc.offset
            if contiguous and loc.offset + loc.stored_length - run[0][1].offset <= RUN_BYTES:
                run.append((cid, loc))
                continue
            yield run
        run = [(cid, loc)]
    if run:
        yield run


def _update(hasher: Any, blocks: list[bytes | memoryview]) -> None:
    for block in blocks:
        hasher.update(block)


def _decode_run(run: list[tuple[ChunkId, Location]], blob: bytes) -> list[bytes]:
    """Decompress each chunk of a run and check it against its id."""
    view = memoryview(blob)
    base = run[0][1].offset
    out = []
    for cid, loc in run:
        rel = loc.offset - base
        obj = f"packs/{loc.pack}"
        plain = decode_chunk(loc.codec, view[rel : rel + loc.stored_length], loc.plain_length, obj)
        got = chunk_id(plain)
        if got != cid:
            raise IntegrityError(obj, cid.hex(), got.hex(), what=f"chunk at offset {loc.offset}")
        out.append(plain)
    return out


def _decode_unchecked(
    run: list[tuple[ChunkId, Location]], view: memoryview
) -> list[bytes | memoryview]:
    """A run's chunks, raw ones as views into ``view`` and the others decompressed, with no
    check against their ids: for a caller that checks the whole file's hash."""
    base = run[0][1].offset
    out: list[bytes | memoryview] = []
    for _, loc in run:
        stored = view[loc.offset - base : loc.offset - base + loc.stored_length]
        if loc.codec == CODEC_RAW:
            out.append(stored)
        else:
            out.append(decode_chunk(loc.codec, stored, loc.plain_length, f"packs/{loc.pack}"))
    return out


@dataclass(slots=True)
class Encoded:
    """A chunk after hashing and compression; ``stored`` is None once the chunk is in a
    pack (or if the store had it), so a file's pending recipe never holds its bytes."""

    cid: ChunkId
    codec: int
    stored: bytes | memoryview | None
    plain_length: int


class PackWriter:
    """Stores new chunks: hashing and compression run on a thread pool; chunks are appended
    to a pack file on local disk (so memory does not grow with the pack size), and full
    packs are stored by a background thread while the next one fills; :meth:`finish`
    stores the last pack and writes the index. Use as a context manager so the threads
    always stop and unfinished pack files are removed."""

    def __init__(self, store: ChunkStore, workers: int = WORKERS) -> None:
        self.store = store
        self._spool: AppendFile | None = None
        self._spool_path = ""
        self._spools: dict[str, AppendFile] = {}  # pack files not stored yet
        self._failed: set[str] = set()  # pack files a write to failed
        self._batch: list[bytes | memoryview] = []  # chunks not handed to the pack thread yet
        self._batch_size = 0
        self._entries: list[PackEntry] = []
        self._size = len(PACK_MAGIC)
        self._pending: set[ChunkId] = set()  # in a pack not stored yet (then in _stored)
        self._stored: list[ChunkId] = []  # stored by this upload, in the store's index table
        self._lock = threading.Lock()
        self._done = threading.Lock()
        from concurrent.futures import ThreadPoolExecutor

        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="datavc-chunk")
        self._packer = ThreadPoolExecutor(1, thread_name_prefix="datavc-pack")
        self._inflight: deque[tuple[Future[list[Encoded]], int]] = deque()
        self._inflight_bytes = 0
        self._hashing = ThreadPoolExecutor(1, thread_name_prefix="datavc-hash")
        self._tasks: deque[Future[None]] = deque()
        self._hash_queue: deque[tuple[Future[None], int]] = deque()
        self._hash_bytes = 0
        self.new_chunks = 0
        self.new_bytes = 0
        self.new_objects = 0

    def __enter__(self) -> PackWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._hashing.shutdown(wait=True, cancel_futures=True)
        self._packer.shutdown(wait=True, cancel_futures=True)
        for path, spool in self._spools.items():  # never stored (an error stopped the upload)
            spool.close()
            with contextlib.suppress(OSError):
                os.unlink(path)
        self._spools.clear()
        self._spool = None
        with self.store._lock:  # stored, but no index names them: not usable for dedup
            for cid in self._stored:
                self.store._index.drop(cid)
        self._stored = []

    def submit(self, pieces: Sequence[bytes | memoryview]) -> Future[list[Encoded]]:
        """Hash and compress a batch of chunks in the background; the future gives their
        ids first. (A batch, not a chunk: one hand-off per chunk costs as much as
        hashing it.)

        Chunks enter packs in the order they were submitted (so a file's chunks stay
        contiguous and read back in one range); at most ``MAX_INFLIGHT`` batches and
        ``MAX_INFLIGHT_BYTES`` wait at once. A small batch is done at once on this thread."""
        size = sum(len(p) for p in pieces)
        while self._inflight and (
            len(self._inflight) >= MAX_INFLIGHT or self._inflight_bytes + size > MAX_INFLIGHT_BYTES
        ):
            self._drain(len(self._inflight) - 1)
        future: Future[list[Encoded]]
        if size < INLINE_CHUNK:
            from concurrent.futures import Future

            future = Future()
            future.set_result([self._encode(p) for p in pieces])
        else:
            future = self._pool.submit(self._encode_many, list(pieces))
        self._inflight.append((future, size))
        self._inflight_bytes += size
        return future

    def hash_in_order(self, hasher: Any, blocks: Sequence[bytes | memoryview]) -> None:
        """Feed ``blocks`` to ``hasher`` on the hashing thread, in call order. Waits while
        ``MAX_HASHING_BYTES`` are queued: a reader that runs ahead of the hashing thread
        (a file whose chunks are all stored already) must not pile its blocks up."""
        size = sum(len(b) for b in blocks)
        while self._hash_queue and self._hash_bytes + size > MAX_HASHING_BYTES:
            done, n = self._hash_queue.popleft()
            done.result()
            self._hash_bytes -= n
        self._hash_queue.append((self._hashing.submit(_update, hasher, list(blocks)), size))
        self._hash_bytes += size

    def digest(self, hasher: Any) -> Future[bytes]:
        """The hasher's digest once every block handed to :meth:`hash_in_order` is in."""
        return self._hashing.submit(hasher.digest)

    def _encode_many(self, pieces: list[bytes | memoryview]) -> list[Encoded]:
        return [self._encode(p) for p in pieces]

    def _encode(self, data: bytes | memoryview) -> Encoded:
        cid = chunk_id(data)
        if self._has(cid):
            return Encoded(cid, CODEC_RAW, None, len(data))
        codec, stored = encode_chunk(data)
        return Encoded(cid, codec, stored, len(data))

    def _drain(self, keep: int) -> None:
        """Append finished chunks, oldest batch first, until at most ``keep`` batches are
        in flight."""
        while len(self._inflight) > keep:
            future, size = self._inflight.popleft()
            self._inflight_bytes -= size
            for done in future.result():
                if done.stored is not None:
                    with self._lock:
                        self._append(done.cid, done.codec, done.stored, done.plain_length)
                    done.stored = None

    def add(self, cid: ChunkId, data: bytes | memoryview) -> bool:
        """Store a chunk now unless the store or this upload already has it; True if new."""
        self._drain(0)
        if self._has(cid):
            return False
        codec, stored = encode_chunk(data)
        with self._lock:
            return self._append(cid, codec, stored, len(data))

    def _has(self, cid: ChunkId) -> bool:
        """True if the store or this upload has the chunk. _pending is checked before
        the store's index: a chunk moves from the first to the second, never back."""
        return cid in self._pending or self.store.has_chunk(cid)

    def _append(
        self, cid: ChunkId, codec: int, stored: bytes | memoryview, plain_length: int
    ) -> bool:
        if self._has(cid):
            return False
        if self._spool is None:
            import tempfile

            fd, path = tempfile.mkstemp(prefix=".tmp-pack-", dir=self.store.spool_dir())
            self._spool, self._spool_path = AppendFile(fd), path
            self._spools[path] = self._spool
            self._batch.append(PACK_MAGIC)
        self._pending.add(cid)
        self._entries.append(PackEntry(cid, self._size, len(stored), plain_length, codec))
        self._batch.append(stored)
        self._batch_size += len(stored)
        self._size += len(stored)
        self.new_chunks += 1
        if self._size >= self.store.config.pack_target:
            self._flush_locked()
        elif self._batch_size >= BATCH_BYTES:
            self._write_batch()
        return True

    def _write_batch(self) -> None:
        """Hand the batched chunks to the pack thread, which writes them to the pack file
        (so this thread never waits on the disk); at most ``MAX_TASKS`` wait."""
        if self._spool is None or not self._batch:
            return
        task = self._packer.submit(self._write_parts, self._spool_path, self._spool, self._batch)
        self._queue(task)
        self._batch, self._batch_size = [], 0

    def _write_parts(self, path: str, spool: AppendFile, parts: list[bytes | memoryview]) -> None:
        try:
            spool.writelines(parts)
        except BaseException:
            self._failed.add(path)  # this pack must never be stored
            raise

    def _queue(self, task: Future[None]) -> None:
        self._tasks.append(task)
        while len(self._tasks) > MAX_TASKS:
            self._tasks.popleft().result()

    def _flush_locked(self) -> None:
        """Close the current pack: its last chunks and footer are written, then it is
        stored, both on the pack thread, while the next pack fills."""
        if not self._entries or self._spool is None:
            return
        footer = pack_footer(self._entries)
        self._batch.append(footer)
        self._write_batch()
        path, entries, size = self._spool_path, self._entries, self._size + len(footer)
        self._queue(self._packer.submit(self._store_pack, path, footer, entries, size))
        self._spool, self._entries, self._size = None, [], len(PACK_MAGIC)

    def _store_pack(self, path: str, footer: bytes, entries: list[PackEntry], size: int) -> None:
        try:
            self._spools[path].close()
            if path in self._failed or os.path.getsize(path) != size:
                raise CorruptObject(path, "a write to this pack file failed: not stored")
            pack = self.store.put_pack(path, footer)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise
        finally:
            self._spools.pop(path, None)
        with self._done:  # not self._lock: a flush holds it while waiting for this thread
            with self.store._lock:
                for e in entries:
                    loc = Location(pack, e.offset, e.stored_length, e.plain_length, e.codec)
                    self.store._index.put(e.chunk, loc)
            self._stored.extend(e.chunk for e in entries)
            for e in entries:
                self._pending.discard(e.chunk)
            self.new_bytes += size
            self.new_objects += 1

    def finish(self) -> UploadStats:
        """Wait for every chunk and pack, then write the index of this upload."""
        self._drain(0)
        with self._lock:
            self._flush_locked()
        while self._tasks:
            self._tasks.popleft().result()
        with self._lock, self._done:
            if self._stored:
                index = self.store._index.encode_index(self._stored)
                name = self.store.write_object("index", index)
                self.new_bytes += sum(len(part) for part in index)
                self.new_objects += 1
                with self.store._lock:
                    self.store._indexes_loaded.add(name)
                self._stored = []
            self._pending.clear()
        return UploadStats(self.new_chunks, self.new_bytes, self.new_objects)
