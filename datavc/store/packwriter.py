"""The pack writer: stores an upload's new chunks in packs, then writes its index.

Chunks are hashed and compressed on a thread pool and appended, in the order they were
submitted, to a pack file built on local disk (so memory does not grow with the pack size);
each full pack (about ``pack_target`` bytes) is stored by a background thread while the next
one fills, up to ``DATAVC_UPLOADS`` packs at once to a remote store. :meth:`PackWriter.finish`
waits until every pack is stored and only then writes one index object for the packs of the
upload: packs before index, so an index never names a missing pack.

A writer made with ``places=True`` also notes where each chunk it stores goes, in the order
they were stored (:meth:`PackWriter.places`): the tree writer, given the chunks of the new
snapshot's pages in the same order, takes their places from that stream instead of looking
each one up among the upload's rows, which past a million chunks lie in sorted runs on
disk (a search and a read each).
"""

from __future__ import annotations

import contextlib
import os
import struct
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import CorruptObject
from ..format.hashing import ChunkId, ObjectId, chunk_id
from ..format.packfile import (
    CODEC_RAW,
    FOOTER_ROW,
    PACK_MAGIC,
    Location,
    encode_chunk,
    footer_entries_of,
    footer_from_rows,
)
from .spool import AppendFile

if TYPE_CHECKING:
    from concurrent.futures import Future  # imported where threads start (see build.py)

    from .chunkstore import ChunkStore

WORKERS = 2
MAX_INFLIGHT = 64  # batches of chunks being hashed and compressed at once
MAX_INFLIGHT_BYTES = 32 << 20
MAX_HASHING_BYTES = 16 << 20  # blocks waiting for the whole-file hash thread
BATCH_BYTES = 8 << 20  # chunks handed to the pack thread at a time
BATCH_PARTS = 4096  # ... or this many (a tiny chunk's bytes object is mostly overhead)
MAX_PACK_CHUNKS = 32768  # a pack is closed at this many chunks (see _append)
MAX_TASKS = 8  # pack-thread tasks waiting at most (about 64 MiB of chunks)
INLINE_CHUNK = 16 << 10  # smaller chunks are hashed and compressed without a thread hop
UPLOADS = 4  # packs stored at once to a remote store (DATAVC_UPLOADS), each read whole
MAX_UPLOADS = 16
PLACE_ROW = struct.Struct("<32sIQIIB")  # chunk id, pack number in the upload, offset,
# stored length, plain length, codec: where a stored chunk went (PackWriter.places)
PLACES_BUFFER = 1 << 16  # bytes of place rows held before they go to their file


def remote_uploads() -> int:
    """Packs stored at once to a remote store: ``DATAVC_UPLOADS``, 1 to 16, default 4. Each
    is read into memory for its PUT, so up to that many packs (about ``pack_target`` bytes
    each) are in memory at once; a local store takes one at a time (a rename)."""
    text = os.environ.get("DATAVC_UPLOADS", "")
    return min(MAX_UPLOADS, max(1, int(text))) if text.isdigit() else UPLOADS


@dataclass(frozen=True, slots=True)
class UploadStats:
    new_chunks: int = 0
    new_bytes: int = 0
    new_objects: int = 0


@dataclass(slots=True)
class Encoded:
    """A chunk after hashing and compression; ``stored`` is None once the chunk is in a
    pack (or if the store had it), so a file's pending recipe never holds its bytes."""

    cid: ChunkId
    codec: int
    stored: bytes | memoryview | None
    plain_length: int
    looked: int = 0  # the upload's spilled runs when the store was searched for it


class PackWriter:
    """Stores new chunks: hashing and compression run on a thread pool; chunks are appended
    to a pack file on local disk (so memory does not grow with the pack size), and full
    packs are stored by a background thread while the next one fills; :meth:`finish`
    stores the last pack and writes the index. Use as a context manager so the threads
    always stop and unfinished pack files are removed."""

    def __init__(self, store: ChunkStore, workers: int = WORKERS, places: bool = False) -> None:
        self.store = store
        self._spool: AppendFile | None = None
        self._spool_path = ""
        self._spools: dict[str, AppendFile] = {}  # pack files not stored yet
        self._failed: set[str] = set()  # pack files a write to failed
        self._batch: list[bytes | memoryview] = []  # chunks not handed to the pack thread yet
        self._batch_size = 0
        self._entries = bytearray()  # the footer rows of the pack being filled
        self._size = len(PACK_MAGIC)
        self._pending: set[ChunkId] = set()  # in a pack not stored yet (then in _rows)
        self._rows = store.new_rows()  # the chunks this upload stored, for its index
        self._lock = threading.Lock()
        self._done = threading.Lock()
        from concurrent.futures import ThreadPoolExecutor

        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="datavc-chunk")
        self._packer = ThreadPoolExecutor(1, thread_name_prefix="datavc-pack")
        self._inflight: deque[tuple[Future[list[Encoded]], int]] = deque()
        self._inflight_bytes = 0
        self._hashing = ThreadPoolExecutor(1, thread_name_prefix="datavc-hash")
        uploads = 1 if store.backend.is_local else remote_uploads()
        self._uploader = ThreadPoolExecutor(uploads, thread_name_prefix="datavc-upload")
        self._slots = threading.BoundedSemaphore(uploads)  # packs in the uploader at most
        self._uploads: list[Future[None]] = []
        self._handed: set[str] = set()  # closed pack files handed to the uploader
        self._tasks: deque[Future[None]] = deque()
        self._hash_queue: deque[tuple[Future[None], int]] = deque()
        self._hash_bytes = 0
        self._indexed = False  # the index object of this upload is written
        self._packs = -1  # the number of the pack being filled, in this upload
        self._numbers: dict[str, int] = {}  # pack files not stored yet: their numbers
        self._pack_ids: dict[int, ObjectId] = {}  # stored packs by number
        self._places: Any = None  # a temporary file of PLACE_ROW rows, in storing order
        self._places_buf = bytearray()
        if places:
            import tempfile

            self._places = tempfile.TemporaryFile(dir=store.spool_dir())  # noqa: SIM115
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
        self._uploader.shutdown(wait=True, cancel_futures=True)
        for path in list(self._handed):  # an upload cancelled before it started
            with contextlib.suppress(OSError):
                os.unlink(path)
        self._handed.clear()
        for path, spool in self._spools.items():  # never stored (an error stopped the upload)
            try:
                spool.close()  # may fail too (a full disk): the file goes all the same
            except OSError:
                pass
            finally:
                with contextlib.suppress(OSError):
                    os.unlink(path)
        self._spools.clear()
        self._spool = None
        if self._places is not None:
            self._places.close()
        if not self._indexed:
            self.store.unindex(self._rows)  # stored, but no index names them

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
        looked = self._rows.spills
        if self._has(cid):
            return Encoded(cid, CODEC_RAW, None, len(data))
        codec, stored = encode_chunk(data)
        return Encoded(cid, codec, stored, len(data), looked)

    def _drain(self, keep: int) -> None:
        """Append finished chunks, oldest batch first, until at most ``keep`` batches are
        in flight."""
        while len(self._inflight) > keep:
            future, size = self._inflight.popleft()
            self._inflight_bytes -= size
            for done in future.result():
                if done.stored is not None:
                    with self._lock:
                        self._append(done, done.stored)
                    done.stored = None

    def add(self, cid: ChunkId, data: bytes | memoryview) -> bool:
        """Store a chunk now unless the store or this upload already has it; True if new."""
        self._drain(0)
        looked = self._rows.spills
        if self._has(cid):
            return False
        codec, stored = encode_chunk(data)
        with self._lock:
            return self._append(Encoded(cid, codec, None, len(data), looked), stored)

    def _has(self, cid: ChunkId) -> bool:
        """True if the store or this upload has the chunk. _pending is checked before
        the store's index: a chunk moves from the first to the second, never back."""
        return cid in self._pending or self.store.has_chunk(cid)

    def _append(self, chunk: Encoded, stored: bytes | memoryview) -> bool:
        """Append a chunk the store lacked when it was looked for, unless this upload has
        stored it since (another copy of it was encoded meanwhile)."""
        cid, codec, plain_length = chunk.cid, chunk.codec, chunk.plain_length
        if cid in self._pending or self._rows.holds_since(cid, chunk.looked):
            return False
        if self._spool is None:
            import tempfile

            fd, path = tempfile.mkstemp(prefix=".tmp-pack-", dir=self.store.spool_dir())
            self._spool, self._spool_path = AppendFile(fd), path
            self._spools[path] = self._spool
            self._batch.append(PACK_MAGIC)
            self._packs += 1
            self._numbers[path] = self._packs
        self._pending.add(cid)
        if self._places is not None:
            self._places_buf += PLACE_ROW.pack(
                cid, self._packs, self._size, len(stored), plain_length, codec
            )
            if len(self._places_buf) >= PLACES_BUFFER:
                self._places.write(self._places_buf)
                self._places_buf.clear()
        self._entries += FOOTER_ROW.pack(cid, self._size, len(stored), plain_length, codec)
        self._batch.append(stored)
        self._batch_size += len(stored)
        self._size += len(stored)
        self.new_chunks += 1
        full = len(self._entries) >= MAX_PACK_CHUNKS * FOOTER_ROW.size
        if full or self._size >= self.store.config.pack_target:
            self._flush_locked()
        elif self._batch_size >= BATCH_BYTES or len(self._batch) >= BATCH_PARTS:
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
        except BaseException as err:
            self._failed.add(path)  # this pack must never be stored
            raise _naming(err, path) from None

    def _queue(self, task: Future[None]) -> None:
        self._tasks.append(task)
        while len(self._tasks) > MAX_TASKS:
            self._tasks.popleft().result()

    def _flush_locked(self) -> None:
        """Close the current pack: its last chunks and footer are written, then it is
        stored, both on the pack thread, while the next pack fills."""
        if not self._entries or self._spool is None:
            return
        footer = footer_from_rows(self._entries)
        self._batch.append(footer)
        self._write_batch()
        path, size = self._spool_path, self._size + len(footer)
        self._queue(self._packer.submit(self._store_pack, path, footer, size))
        self._spool, self._entries, self._size = None, bytearray(), len(PACK_MAGIC)

    def _store_pack(self, path: str, footer: bytes, size: int) -> None:
        """On the pack thread: close a finished pack file and hand it to the uploader, once
        fewer than its ``uploads`` packs are being stored (so at most that many packs are
        read into memory at once, and this thread, then the caller, waits for the store)."""
        try:
            try:
                self._spools[path].close()
            except OSError as err:
                raise _naming(err, path) from None
            if path in self._failed or os.path.getsize(path) != size:
                raise CorruptObject(path, "a write to this pack file failed: not stored")
            self._slots.acquire()
            try:
                self._raise_failed_upload()  # stop filling packs once one could not be stored
                self._handed.add(path)
                self._uploads.append(self._uploader.submit(self._upload, path, footer, size))
            except BaseException:
                self._handed.discard(path)
                self._slots.release()
                raise
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise
        finally:
            self._spools.pop(path, None)

    def _upload(self, path: str, footer: bytes, size: int) -> None:
        """On an upload thread: store a pack (the file is consumed), then record its chunks
        as stored by this upload, for its index."""
        try:
            pack = self.store.put_pack(path, footer)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise
        finally:
            self._handed.discard(path)
            self._slots.release()
        with self._done:  # not self._lock: a flush holds it while waiting for this thread
            self._pack_ids[self._numbers.pop(path)] = pack
            # new: each chunk was in neither the rows nor _pending when appended, and is in
            # _pending until now, so no other pack of this upload holds it
            self.store.index_pack(pack, footer, self._rows, new=True)
            for cid, *_ in footer_entries_of(footer):
                self._pending.discard(ChunkId(cid))
            self.new_bytes += size
            self.new_objects += 1

    def _raise_failed_upload(self) -> None:
        """The error of the first upload that failed, if one has."""
        for future in self._uploads:
            if future.done() and future.exception() is not None:
                future.result()
        self._uploads = [f for f in self._uploads if not f.done()]

    def _wait_uploads(self) -> None:
        """Until every pack handed to the uploader is stored; the first error, in order,
        once none is still being stored (an index must wait for them all)."""
        from concurrent.futures import wait

        wait(self._uploads)
        for future in self._uploads:
            future.result()
        self._uploads = []

    def finish(self) -> UploadStats:
        """Wait for every chunk and pack, then write the index of this upload."""
        self._drain(0)
        with self._lock:
            self._flush_locked()
        while self._tasks:
            self._tasks.popleft().result()
        self._wait_uploads()  # every pack stored before the index that names them
        with self._lock, self._done:
            if not self._indexed:
                if self._rows.count:
                    _, size = self.store.write_index(self._rows)
                    self.new_bytes += size
                    self.new_objects += 1
                else:
                    self.store.unindex(self._rows)  # nothing to search
            self._indexed = True
            self._pending.clear()
        return UploadStats(self.new_chunks, self.new_bytes, self.new_objects)

    def places(self) -> Iterator[tuple[ChunkId, Location]]:
        """After :meth:`finish`: each chunk this upload stored, and where, in the order they
        were stored (for a writer made with ``places=True``; else nothing)."""
        if self._places is None:
            return
        assert self._indexed, "finish() first: a pack's id is known once it is stored"
        f, ids = self._places, self._pack_ids
        f.write(self._places_buf)
        self._places_buf.clear()
        f.seek(0)
        step = PLACE_ROW.size * 4096
        while block := f.read(step):
            for cid, number, offset, stored, plain, codec in PLACE_ROW.iter_unpack(block):
                yield ChunkId(cid), Location(ids[number], offset, stored, plain, codec)


def _update(hasher: Any, blocks: list[bytes | memoryview]) -> None:
    for block in blocks:
        hasher.update(block)


def _naming(err: BaseException, path: str) -> BaseException:
    """An OS error that names the pack file it happened to (a full disk said only "No space
    left on device"); other errors as they are."""
    if isinstance(err, OSError) and err.filename is None:
        return OSError(err.errno, err.strerror, path)
    return err
