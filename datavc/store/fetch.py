"""Fetching a snapshot's files into a staging folder, each checked against its hash
(the first phase of :mod:`.materialize`).

The files come as a stream, in path order, each with the location hints of its tree page:
small files are read a run of neighbouring chunks at a time (a snapshot's small files sit in
pack order, so one ranged read serves many files) at the places their page names, and handed
in groups to two threads that check each file's hash and write it; large files are streamed
one at a time after them. Only what is in flight is held: the runs read ahead, the files
waiting for them.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

from ..errors import IntegrityError
from ..format.hashing import ChunkId, file_hasher
from ..format.packfile import Location
from ..format.tree import FileEntry
from .chunkstore import ChunkStore
from .files import Progress

if TYPE_CHECKING:
    from concurrent.futures import Future  # imported where threads start (see build.py)

STREAM_MIN = 1 << 20  # smaller files are read with their neighbours; larger ones streamed
WRITERS = 2
GROUP_FILES = 64
GROUP_BYTES = 4 << 20
WRITE_PIECE = 128 << 10

Fetch = tuple[str, FileEntry, Mapping[ChunkId, Location]]
"""Where to write a file, its entry, and the hints of its page (chunk id -> place)."""


def fetch_all(store: ChunkStore, todo: Iterable[Fetch], progress: Progress) -> None:
    """Write each entry's content to its path, checked. ``todo`` is taken as the reads
    need it (it may be a generator that decides what to fetch as it goes): each stretch
    of small files goes through one read-ahead pipeline, each large file is streamed."""
    for large, stretch in itertools.groupby(todo, key=lambda item: item[1].size >= STREAM_MIN):
        if large:
            for path, e, hints in stretch:
                fetch_file(store, e, path, progress, hints)
        else:
            _fetch_small(store, stretch, progress)


def _fetch_small(store: ChunkStore, todo: Iterator[Fetch], progress: Progress) -> None:
    """Small files: runs of their chunks read ahead, checked and written by two threads."""
    from concurrent.futures import ThreadPoolExecutor

    def placed() -> Iterator[tuple[str, FileEntry, tuple[Location, ...]]]:
        # each file with its chunks' places, not its page's hints: what waits below holds
        # a file each, not a page each (the files of one run can span many pages)
        locate, loaded = store.locate, store.indexes_loaded  # hints until an index is loaded
        for path, e, hints in todo:
            places = (hints.get(cid) if hints and not loaded else None for cid, _ in e.chunks)
            yield path, e, tuple(p or locate(c) for p, (c, _) in zip(places, e.chunks, strict=True))

    # two readers of one stream: the chunks' places (read ahead) and the files they fill;
    # tee holds what lies between them, the files of the runs in flight (a run is at most
    # RUN_CHUNKS chunks, and a few runs are in flight)
    ahead, files = itertools.tee(placed())

    def located() -> Iterator[tuple[ChunkId, Location]]:
        for _, e, places in ahead:
            for (cid, _), loc in zip(e.chunks, places, strict=True):
                yield cid, loc

    with (
        contextlib.closing(store.reader.read_located(located(), verify=False)) as chunks,
        ThreadPoolExecutor(WRITERS, thread_name_prefix="datavc-write") as pool,
    ):
        writes: deque[Future[None]] = deque()
        group: list[tuple[str, list[bytes | memoryview], FileEntry]] = []
        group_bytes = 0
        try:
            for path, e, _ in files:
                group.append((path, [next(chunks) for _ in e.chunks], e))
                group_bytes += e.size
                if len(group) >= GROUP_FILES or group_bytes >= GROUP_BYTES:
                    writes.append(pool.submit(_write_files, store, group, progress))
                    group, group_bytes = [], 0
                    while len(writes) > 2 * WRITERS:
                        writes.popleft().result()
            writes.append(pool.submit(_write_files, store, group, progress))
            while writes:
                writes.popleft().result()
        finally:
            for future in writes:
                future.cancel()


def _write_files(
    store: ChunkStore,
    group: list[tuple[str, list[bytes | memoryview], FileEntry]],
    progress: Progress,
) -> None:
    """Check each file's content against its hash, then write it. The files that fail are
    read again, checked (see :func:`_read_again`)."""
    bad = [k for k, (_, parts, e) in enumerate(group) if _digest(parts) != e.hash]
    if bad:
        again = _read_again(store, [group[k][2] for k in bad])
        for k, parts in zip(bad, again, strict=True):
            group[k] = (group[k][0], parts, group[k][2])
    for path, parts, e in group:
        _write_file(path, parts, e)
        progress.advance(e.size)


def _read_again(store: ChunkStore, entries: list[FileEntry]) -> list[list[bytes | memoryview]]:
    """The entries' chunks read again with the chunk checks, together (neighbours in one
    ranged read: a run read through wrong hints fails each of its files): a chunk that is
    not where its page's hint said is read where the index puts it, a damaged one is an
    error naming its pack, and a file whose hash is still wrong an error naming it."""
    out = []
    ids = (cid for e in entries for cid, _ in e.chunks)
    with contextlib.closing(store.read_chunks(ids)) as chunks:
        for e in entries:
            parts = [next(chunks) for _ in e.chunks]
            got = _digest(parts)
            if got != e.hash:
                raise IntegrityError(f"file {e.path}", e.hash.hex(), got.hex(), what="file content")
            out.append(parts)
    return out


def _digest(parts: Sequence[bytes | memoryview]) -> bytes:
    hasher = file_hasher()
    for part in parts:
        hasher.update(part)
    return hasher.digest()


def _write_file(path: str, parts: list[bytes | memoryview], e: FileEntry) -> None:
    """Create ``path`` with ``parts`` as its content and the entry's mode."""
    from .atomic import UMASK

    mode = file_mode(e)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        _write_parts(fd, parts)
        if mode & UMASK:  # the umask took bits the snapshot's mode has
            os.fchmod(fd, mode)
    finally:
        os.close(fd)


def fetch_file(
    store: ChunkStore,
    e: FileEntry,
    tmp: str,
    progress: Progress,
    hints: Mapping[ChunkId, Location] | None = None,
) -> None:
    """Write one file's content to ``tmp``, check its hash and set its mode (``hints``:
    its page's places for its chunks, else the store's).

    A large file is streamed a run of chunks at a time (read ahead, hashed and written
    as it comes) and checked by its whole-file hash; if that hash is wrong, or a chunk
    does not decompress, the file is fetched again chunk by chunk, checked: a chunk that
    is not where its page's hint says is then read where the index puts it, and a damaged
    one is an error naming its pack."""
    if e.size >= STREAM_MIN and _stream_file(store, e, tmp, hints):
        os.chmod(tmp, file_mode(e))
        progress.advance(e.size)
        return
    hasher = file_hasher()
    with open(tmp, "wb") as out:
        for data in store.read_chunks((c for c, _ in e.chunks), True, hints):
            hasher.update(data)
            out.write(data)
            progress.advance(len(data))
    got = hasher.digest()
    if got != e.hash:
        raise IntegrityError(f"file {e.path}", e.hash.hex(), got.hex(), what="file content")
    os.chmod(tmp, file_mode(e))


def _stream_file(
    store: ChunkStore, e: FileEntry, tmp: str, hints: Mapping[ChunkId, Location] | None
) -> bool:
    """Stream the file's chunks into ``tmp``, unchecked: True if its hash is right."""
    hasher = file_hasher()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(1, thread_name_prefix="datavc-write") as writer:

            def use(parts: list[memoryview]) -> None:
                # one hand-off per run: a run of compressed chunks comes a chunk a part
                written = writer.submit(_write_parts, fd, parts)
                for part in parts:
                    hasher.update(part)  # while the run is written
                written.result()

            store.stream_plain((c for c, _ in e.chunks), use, hints)
    except IntegrityError:
        return False  # a chunk that does not decompress, a short run: read checked
    finally:
        os.close(fd)
    return hasher.digest() == e.hash


def _write_all(fd: int, data: bytes | memoryview) -> None:
    """Write all of ``data``, ``WRITE_PIECE`` bytes per call at most. Linux gives a buffered
    write page-cache folios as large as the write allows (up to 2 MiB), and large free
    blocks are the memory a VM's host takes back when it is free and is slow to touch
    again: on the test machine one 1 GiB file written 8 MiB at a time took 0.61-2.3 s
    (kernel time), 128 KiB at a time 0.41-0.46 s (dd, same file, alternating runs)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view[:WRITE_PIECE]) :]


def file_mode(e: FileEntry) -> int:
    """The permission bits a checked-out file gets."""
    return 0o755 if e.executable else 0o644


def _write_parts(fd: int, parts: Sequence[bytes | memoryview]) -> None:
    for part in parts:
        _write_all(fd, part)
