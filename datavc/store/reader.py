"""Reading chunks: neighbouring chunks of one pack, a *run*, fetched with one ranged read.

A reader locates its chunks (:meth:`.ChunkStore.locate`), groups them into runs (contiguous
in one pack, at most ``RUN_BYTES`` long), reads each run in one request while the caller
uses the one before (:func:`read_ahead`), and splits the run into its chunks: decoded and
checked against their ids, or, for a caller that checks the whole file's hash, unchecked.
The runs of a local store's packs are read around the page cache (:class:`DirectReads`)."""

from __future__ import annotations

import contextlib
import mmap
import os
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import CorruptObject, DatavcError, IntegrityError, ObjectNotFound, RangeNotFound
from ..format.hashing import ChunkId, ObjectId, chunk_id
from ..format.packfile import CODEC_RAW, Location, decode_chunk
from .lru import BytesCache
from .spool import ALIGN, NOWAIT, open_direct, read_cached, read_into

if TYPE_CHECKING:
    from concurrent.futures import Future  # imported where threads start (see build.py)

    from .chunkstore import ChunkStore

RUN_BYTES = 8 << 20
RUN_CHUNKS = 8192  # a run of tiny chunks is cut here: its list, not its bytes, is the cost
CHUNK_CACHE_BYTES = 64 << 20
_T = TypeVar("_T")
_A = TypeVar("_A")
Run = list[tuple[ChunkId, Location]]
"""Neighbouring chunks of one pack, each with where it is stored."""


def group(
    located: Iterable[tuple[ChunkId, Location]],
) -> Iterator[Run]:
    """Group chunks into runs: contiguous in one pack, at most ``RUN_BYTES`` long both as
    stored and decoded (so decoding a run of small zstd frames that each declare a large
    plain length never holds more than that, plus one chunk), and at most ``RUN_CHUNKS``
    chunks (a run of 15-byte chunks would otherwise list half a million)."""
    run: Run = []
    plain = 0
    for cid, loc in located:
        if run:
            last = run[-1][1]
            contiguous = last.pack == loc.pack and last.offset + last.stored_length == loc.offset
            stored = loc.offset + loc.stored_length - run[0][1].offset
            fits = stored <= RUN_BYTES and plain + loc.plain_length <= RUN_BYTES
            if contiguous and fits and len(run) < RUN_CHUNKS:
                run.append((cid, loc))
                plain += loc.plain_length
                continue
            yield run
        run = [(cid, loc)]
        plain = loc.plain_length
    if run:
        yield run


CHUNKS = BytesCache(CHUNK_CACHE_BYTES)
"""Chunks recently read by ``datavc.open``'s files, checked, kept for the process."""


def coalesce(located: Iterable[tuple[ChunkId, Location]], max_gap: int) -> Iterator[Run]:
    """Chunks in pack order, grouped into runs of one pack whose neighbours are at most
    ``max_gap`` bytes apart (the gap is read and not used), at most ``RUN_BYTES`` long."""
    run: Run = []
    for cid, loc in sorted(located, key=lambda item: (item[1].pack, item[1].offset)):
        if run:
            last = run[-1][1]
            gap = loc.offset - (last.offset + last.stored_length)
            length = loc.offset + loc.stored_length - run[0][1].offset
            if last.pack == loc.pack and 0 <= gap <= max_gap and length <= RUN_BYTES:
                run.append((cid, loc))
                continue
            yield run
        run = [(cid, loc)]
    if run:
        yield run


def decode_run(run: Run, blob: bytes, joined: bool = False) -> list[bytes]:
    """Decompress each chunk of a run and check it against its id. ``joined``: a run of
    raw chunks comes back as one blob (each chunk checked in place, nothing copied)."""
    if len(run) == 1 and run[0][1].codec == CODEC_RAW and len(blob) == run[0][1].plain_length:
        cid, loc = run[0]  # one raw chunk: the blob is its bytes, not copied
        got = chunk_id(blob)
        if got != cid:
            obj = f"packs/{loc.pack}"
            raise IntegrityError(obj, cid.hex(), got.hex(), what=f"chunk at offset {loc.offset}")
        return [blob]
    if joined and all(loc.codec == CODEC_RAW for _, loc in run):
        view = memoryview(blob)  # raw chunks: the blob is their bytes, not copied
        base = run[0][1].offset
        for cid, loc in run:
            rel = loc.offset - base
            if loc.stored_length != loc.plain_length or rel + loc.plain_length > len(blob):
                break  # a lying length: decode_chunk below says what is wrong
            got = chunk_id(view[rel : rel + loc.plain_length])
            if got != cid:
                obj = f"packs/{loc.pack}"
                what = f"chunk at offset {loc.offset}"
                raise IntegrityError(obj, cid.hex(), got.hex(), what=what)
        else:
            return [blob]
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


def decode_unchecked(run: Run, view: memoryview) -> list[bytes | memoryview]:
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


def remote_depth() -> int:
    """Runs read at once from a remote store (:func:`read_ahead`): ``DATAVC_READ_AHEAD``,
    1 to 64, default 8 (each run is at most ``RUN_BYTES``, so 8 hold up to 64 MiB)."""
    text = os.environ.get("DATAVC_READ_AHEAD", "")
    return min(64, max(1, int(text))) if text.isdigit() else 8


def read_ahead(
    runs: Iterable[_A],
    read: Callable[[_A], _T],
    depth: int = 2,
) -> Generator[_T, None, None]:
    """``read(run)`` for each run, in order, the next ``depth`` on other threads while the
    caller uses one (so at most ``depth + 1`` results exist at once): on one thread for a
    depth of 2 (a local store's reads are copies from the page cache), on ``depth`` threads
    for more (a remote store's wait on the network, each request a round trip). ``runs``
    is taken as it is needed: reading starts once the first two runs are known, not all of
    them (a 1 GiB file has ~16,000 chunks to locate)."""
    todo = iter(runs)
    first = next(todo, None)
    if first is None:
        return
    second = next(todo, None)
    if second is None:
        yield read(first)
        return
    from concurrent.futures import ThreadPoolExecutor

    depth = max(2, depth)
    threads = 1 if depth == 2 else depth
    with ThreadPoolExecutor(threads, thread_name_prefix="datavc-read") as pool:
        ahead: deque[Future[_T]] = deque([pool.submit(read, first), pool.submit(read, second)])
        try:
            for run in todo:
                ahead.append(pool.submit(read, run))
                if len(ahead) > depth:
                    yield ahead.popleft().result()
            while ahead:
                yield ahead.popleft().result()
        finally:
            for future in ahead:
                future.cancel()


class DirectReads:
    """Runs read from a local store's pack files into a few reused buffers: copied from the
    page cache if all of a run is there, else with ``O_DIRECT``, so neither the page cache
    nor fresh memory has to be filled (tensor checkout here, packs on disk: 1.4-3.1 s, 1.4-4.1
    s of it kernel CPU, with buffered reads into new buffers; 1.1-1.6 s, 0.5-1 s kernel CPU,
    this way; packs in the page cache: 0.6-0.65 s). A pack is read from the page cache only
    while its runs are all there (a one-page probe first): a refused cached read starts the
    kernel's readahead of its range, and reading the same bytes directly then read them
    twice (tensor checkout, packs on disk: 1.5-1.6 s before this rule, 1.0-1.4 s after).

    Runs are *not checked*: raw ones come as one view, compressed ones decompressed. A run
    longer than ``RUN_BYTES``, or of a pack that is not where ``path_of`` says (moved), is
    read by ``fallback`` instead. :meth:`fetch` may run on a read-ahead thread; give each
    buffer back with :meth:`release` once its views are gone, and :meth:`close` once the
    reading thread has stopped."""

    def __init__(
        self, path_of: Callable[[str], str], fallback: Callable[[Run], list[bytes]]
    ) -> None:
        self._path_of = path_of
        self._fallback = fallback
        self._free = [mmap.mmap(-1, RUN_BYTES + 2 * ALIGN) for _ in range(4)]  # 3 in use at most
        self._files: dict[ObjectId, list[int]] = {}  # direct descriptor, buffered one (or -1)

    def fetch(self, run: Run) -> tuple[mmap.mmap | None, list[Any]]:
        """A run's chunks, and the buffer they are views into (None: not a buffer of ours)."""
        first, last = run[0][1], run[-1][1]
        end = last.offset + last.stored_length
        if end - first.offset > RUN_BYTES:
            return None, list(self._fallback(run))
        fds = self._files.get(first.pack)
        probe = fds is None
        if fds is None:
            path = self._path_of(f"packs/{first.pack}")
            try:
                fds = self._files[first.pack] = [open_direct(path)[0], -1]
                if NOWAIT:
                    fds[1] = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                return None, list(self._fallback(run))  # moved: found through the index
        buf = self._free.pop()
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
        return buf, decode_unchecked(run, view)

    def release(self, buf: mmap.mmap) -> None:
        self._free.append(buf)

    def close(self) -> None:
        for fds in self._files.values():
            for fd in fds:
                if fd >= 0:
                    os.close(fd)
        self._files.clear()


class ChunkReader:
    """Reads a store's chunks, a run at a time, read ahead on another thread: from the cache
    if it has the pack and its bytes check out, else from the store."""

    def __init__(self, store: ChunkStore) -> None:
        self.store = store
        self._gone: set[ObjectId] = set()  # packs found missing (see relocate.Elsewhere)

    def read_chunks(
        self,
        ids: Iterable[ChunkId],
        verify: bool = True,
        hints: Mapping[ChunkId, Location] | None = None,
    ) -> Generator[bytes | memoryview, None, None]:
        """Yield the plain bytes of each chunk in order, checked against its id.

        Neighbouring chunks of one pack are fetched with one ranged read (up to 8 MiB);
        when there are several such runs, the next two are fetched while this one is used.
        With ``verify=False``, raw chunks read from the store itself are *not* checked:
        the caller checks the hash of the file they make before anyone sees the bytes.
        ``hints``: places the caller knows (its tree page's), tried before the store's."""
        return self.read_located(self._located(ids, hints), verify)

    def read_located(
        self, located: Iterable[tuple[ChunkId, Location]], verify: bool = True
    ) -> Generator[bytes | memoryview, None, None]:
        """:meth:`read_chunks` for chunks the caller located (from the hints of the tree
        pages it reads, held for a page's lifetime, not by the store). A place whose pack
        is gone is looked up in the index, as a hint's is."""
        read: Callable[[Run], Sequence[bytes | memoryview]]
        read = self._read_run if verify else self._read_run_unchecked
        with contextlib.closing(read_ahead(group(located), read, self._depth())) as fetched:
            for run in fetched:
                yield from run

    def read_one(self, cid: ChunkId, cache: BytesCache | None, keep: bool = True) -> bytes:
        """One chunk's plain bytes, checked: from ``cache`` if it has them (a small file),
        else read and, with ``keep``, put there."""
        hit = cache.get(cid) if cache is not None else None
        if hit is None:
            hit = self._read_run([(cid, self.store.locate(cid))])[0]
            if cache is not None and keep:
                cache.put(cid, hit)
        return hit

    def read_whole(self, ids: Sequence[ChunkId]) -> bytes:
        """Chunks' plain bytes joined, each checked (a file read whole): raw chunks stored
        together in one pack, as a small file's are written, take one ranged read and no
        copy. Not through :data:`CHUNKS`: a file read whole is seldom read again soon (a
        DataLoader epoch), and one-chunk files go through :meth:`read_one`."""
        parts: list[bytes] = []
        for run in group((cid, self.store.locate(cid)) for cid in ids):
            parts.extend(self._read_run(run, joined=True))
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def read_many(
        self, ids: Iterable[ChunkId], workers: int, max_gap: int, cache: BytesCache | None
    ) -> dict[ChunkId, bytes]:
        """Each chunk's plain bytes, checked: from ``cache`` if it has them, the others
        read in pack order, runs no more than ``max_gap`` apart coalesced into one ranged
        read, up to ``workers`` reads in flight. The caller bounds how many it asks for."""
        out: dict[ChunkId, bytes] = {}
        wanted: list[tuple[ChunkId, Location]] = []
        for cid in dict.fromkeys(ids):
            hit = cache.get(cid) if cache is not None else None
            if hit is not None:
                out[cid] = hit
            else:
                wanted.append((cid, self.store.locate(cid)))
        runs = list(coalesce(wanted, max_gap))
        if len(runs) <= 1 or workers <= 1:
            results: Iterable[list[bytes]] = map(self._read_run, runs)
        else:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(min(workers, len(runs)), "datavc-read") as pool:
                results = list(pool.map(self._read_run, runs))
        for run, plains in zip(runs, results, strict=True):
            for (cid, _), plain in zip(run, plains, strict=True):
                out[cid] = plain
                if cache is not None:
                    cache.put(cid, plain)
        return out

    def stream_plain(
        self,
        ids: Iterable[ChunkId],
        use: Callable[[list[memoryview]], None],
        hints: Mapping[ChunkId, Location] | None = None,
    ) -> None:
        """Call ``use`` with the chunks' plain bytes in order, a run of neighbouring chunks
        at a time (one view for a raw run, else one per chunk), read ahead on another
        thread; the views are valid only during the call.

        Runs of raw chunks from the store itself, and from a local store compressed ones
        too (decompressed), are *not checked* chunk by chunk: the caller checks the whole
        file's hash before anyone sees the bytes. Runs from a cache, and compressed runs
        from a remote store, are decoded and checked. A local store with no cache is read
        around the page cache (:class:`DirectReads`). ``hints``: as for :meth:`read_chunks`."""
        runs = group(self._located(ids, hints))
        if self.store.cache is not None or not self.store.backend.is_local:
            depth = self._depth()
            with contextlib.closing(read_ahead(runs, self._read_raw_run, depth)) as blocks:
                for block in blocks:
                    use([memoryview(part) for part in block])
            return
        direct = DirectReads(self.store.backend.path, self._read_run)
        try:
            with contextlib.closing(read_ahead(runs, direct.fetch)) as fetched:
                for buf, parts in fetched:
                    use([memoryview(part) for part in parts])
                    del parts
                    if buf is not None:
                        direct.release(buf)
        finally:  # the reader thread has stopped: its descriptors can go
            direct.close()

    def _depth(self) -> int:
        """Runs in flight: two from a local store, :func:`remote_depth` from a remote one."""
        return 2 if self.store.backend.is_local else remote_depth()

    def _read_raw_run(self, run: Run) -> list[bytes]:
        """A run of raw chunks from the store as one unchecked blob; other runs checked."""
        first, last = run[0][1], run[-1][1]
        if self.store.cache is not None or any(loc.codec != CODEC_RAW for _, loc in run):
            return self._read_run(run)
        try:
            end = last.offset + last.stored_length
            blob = self.store.backend.read_range(f"packs/{first.pack}", first.offset, end)
        except ObjectNotFound:
            return self._read_run(run)  # moved: found through the index, and checked
        return [blob]

    def _read_run_unchecked(self, run: Run) -> Sequence[bytes | memoryview]:
        blobs = self._read_raw_run(run)
        if len(blobs) == len(run):
            return blobs  # decoded and checked
        return decode_unchecked(run, memoryview(blobs[0]))  # a raw run: split, not copied

    def _located(
        self, ids: Iterable[ChunkId], hints: Mapping[ChunkId, Location] | None
    ) -> Iterator[tuple[ChunkId, Location]]:
        """Each chunk with its place, found as it is needed: in ``hints`` until the store has
        loaded an index, else the store's."""
        locate, loaded = self.store.locate, self.store.indexes_loaded
        for cid in ids:
            loc = hints.get(cid) if hints and not loaded else None
            yield cid, loc if loc is not None else locate(cid)

    def _read_run(self, run: Run, joined: bool = False) -> list[bytes]:
        """A run's chunks, checked; ``joined``: see :func:`decode_run`. If the run is not
        where it says (its pack not found, a range past the pack's end, bytes that do not
        check out: a stale or wrong hint, or damage), see :class:`.relocate.Elsewhere`."""
        try:
            return self._read_run_at(run, joined)
        except (ObjectNotFound, IntegrityError) as err:
            from .relocate import Elsewhere  # only when a run was not where it said

            return Elsewhere(self.store, self._read_run_at, self._gone).read(run, joined, err)

    def _read_run_at(self, run: Run, joined: bool = False) -> list[bytes]:
        """Fetch one contiguous run of chunks: from the cache if it has the pack and its
        bytes check out, else from the store. A cached pack is dropped if its bytes do not
        check out and the store's do (else the place is wrong, not the cache)."""
        first, last = run[0][1], run[-1][1]
        key = f"packs/{first.pack}"
        end = last.offset + last.stored_length
        cached: Exception | None = None  # why the cache's copy did not serve, if it has one
        if self.store.cache is not None:
            try:
                return decode_run(run, self.store.cache.read_range(key, first.offset, end), joined)
            except RangeNotFound as err:
                cached = err
            except ObjectNotFound:
                pass
            except IntegrityError as err:
                cached = err
        try:
            blob = self.store.backend.read_range(key, first.offset, end)
        except ObjectNotFound as err:
            if cached is None or isinstance(err, RangeNotFound):
                raise
            raise cached from None  # the cache has the pack: the place is wrong, not gone
        plains = decode_run(run, blob, joined)
        if isinstance(cached, IntegrityError):
            with contextlib.suppress(DatavcError):
                self.store.cache.delete(key)  # type: ignore[union-attr]
        return plains
