"""``datavc add --dask ADDRESS``: a folder's files chunked, packed and stored by the workers
of a Dask cluster, a shard each; the driver builds the tree and stages it once.

The driver (the process that runs ``add``) scans the folder and sets aside the files the
stat cache knows unchanged, as a local add does. The rest are cut, in path order, into
shards of about :data:`SHARD_BYTES` (and at most :data:`SHARD_FILES` files), one Dask task
each. A task opens the store itself and runs the local add's pipeline on its shard: it
reads and chunks the files, packs and uploads the new chunks, and writes one index for the
packs it stored (an upload of its own, as the format defines one), then returns the shard's
tree entries. Only entries travel back to the driver, never data.

Once every task has finished, the driver loads the store's index anew (it now holds the
tasks' indexes), writes the tree from all entries in path order and stages the snapshot:
the entries are the ones a local add makes (chunking is deterministic), so the snapshot id
is the same. A task whose worker dies is run again by Dask (``retries``); what it uploaded
before dying is in no index and no tree, so nothing refers to it and ``gc`` deletes it. The
workers must see the files at the same paths as the driver (one machine, or a shared
filesystem) and must be able to reach the store.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from ..errors import DatavcError, UsageError
from ..format.paths import check_paths
from ..format.tree import FileEntry
from ..store.build import build_entries
from ..store.files import LocalFile, NoProgress, Progress, file_mode, scan
from ..store.packwriter import UploadStats
from ..store.retry import RetryPolicy
from ..store.trees import iter_entries, merge_entries
from .add import _Adder, _reference, _staged_result
from .statcache import stat_key

if TYPE_CHECKING:
    from .add import AddResult
    from .core import Dataset, Workspace

SHARD_BYTES = 256 << 20
"""A shard's size in bytes, at most (a file larger than this is a shard of its own)."""

SHARD_FILES = 20_000
"""A shard's number of files, at most (what a task sends back stays small)."""

RETRIES = 3
"""Times Dask runs a shard's task again after its worker died or it failed."""

Reuse = Callable[[LocalFile], FileEntry | None]


def shards(files: list[LocalFile], workers: int) -> list[list[LocalFile]]:
    """``files`` (in path order) cut into consecutive shards: at least two per worker when
    there is enough data, none over :data:`SHARD_BYTES` or :data:`SHARD_FILES`."""
    total = sum(f.size for f in files)
    target = max(1 << 20, min(SHARD_BYTES, total // max(1, 2 * workers) + 1))
    out: list[list[LocalFile]] = []
    current: list[LocalFile] = []
    size = 0
    for f in files:
        if current and (size + f.size > target or len(current) >= SHARD_FILES):
            out.append(current)
            current, size = [], 0
        current.append(f)
        size += f.size
    if current:
        out.append(current)
    return out


def add_shard(
    url: str, options: dict[str, Any], retry: RetryPolicy, files: list[LocalFile]
) -> tuple[list[FileEntry], UploadStats] | tuple[str, int]:
    """On a worker: store a shard's new chunks (packs and one index) and return its
    entries, in path order, and what it stored. A failure that running the task again
    would not mend (a datavc error, a file that cannot be read) comes back as its one line
    and exit code, so that Dask does not retry it; Dask retries the others."""
    from .core import open_store

    try:
        store = open_store(url, options, None, retry)
        with store.new_writer() as writer:
            entries = build_entries(files, store, writer, lambda f: None, NoProgress())
            stats = writer.finish()
    except DatavcError as err:
        return str(err), err.exit_code
    except OSError as err:
        return f"cannot read {err.filename or 'a file'}: {err.strerror or err}", 1
    return entries, stats


def build_on_cluster(
    client: Any,
    files: list[LocalFile],
    store: Any,
    reuse: Reuse,
    progress: Progress,
    settled: Callable[[LocalFile, FileEntry], None],
) -> tuple[list[FileEntry], UploadStats]:
    """The entries of ``files`` (in path order), the changed ones made by the cluster's
    workers; ``files`` is emptied. What was stored, summed over the tasks."""
    check_paths(f.path for f in files)  # the whole tree's rules: a shard sees only its own
    known: dict[str, FileEntry] = {}
    todo: list[LocalFile] = []
    for f in files:
        e = reuse(f)
        if e is not None and all(store.has_chunk(c) for c, _ in e.chunks):
            known[f.path] = FileEntry(f.path, file_mode(f.mode), e.size, e.hash, e.chunks)
            progress.advance(f.size)
        else:
            todo.append(f)
    backend = store.backend
    url = backend.root if backend.is_local else backend.url
    workers = max(1, len(client.scheduler_info().get("workers", {})))
    parts = shards(todo, workers)
    futures = [
        client.submit(
            add_shard,
            url,
            backend.storage_options,
            backend.retry,
            part,
            pure=False,
            retries=RETRIES,
        )
        for part in parts
    ]
    _first_failure(client, futures)
    made: dict[str, FileEntry] = {}
    stored = [0, 0, 0]
    for future, part in zip(futures, parts, strict=True):
        entries, done = _result(future)
        made.update((e.path, e) for e in entries)
        stored = [
            stored[0] + done.new_chunks,
            stored[1] + done.new_bytes,
            stored[2] + done.new_objects,
        ]
        progress.advance(sum(f.size for f in part))
    store.load_index()  # the tasks' indexes: where their chunks are, for the pages' hints
    out = []
    for f in files:
        e = known.get(f.path) or made[f.path]
        settled(f, e)
        out.append(e)
    files.clear()
    return out, UploadStats(*stored)


def _first_failure(client: Any, futures: list[Any]) -> None:
    """Wait for every task, or for the first to fail: then cancel the others (they would
    go on uploading for nothing) and raise its error."""
    from distributed import as_completed

    try:
        for future in as_completed(futures):  # type: ignore[no-untyped-call]
            if future.status == "error" or isinstance(future.result()[0], str):
                _result(future)  # raises
    except BaseException:
        client.cancel([f for f in futures if not f.done()])
        raise


def _result(future: Any) -> tuple[list[FileEntry], UploadStats]:
    """A task's result; its failure, after Dask's retries, as one datavc error."""
    try:
        first, second = future.result()
    except DatavcError:
        raise
    except Exception as err:  # a worker lost too often, the scheduler gone
        reason = f"{type(err).__name__}: {err}".splitlines()[0][:300]
        raise UsageError(f"a shard of the add failed on the Dask cluster ({reason})") from None
    if isinstance(first, str):  # the task's own error: its line and exit code
        failed = DatavcError(first)
        failed.exit_code = second
        raise failed
    return first, second


def connect(address: str) -> Any:
    """A Dask client of the scheduler at ``address`` (``tcp://host:8786``)."""
    try:
        from distributed import Client
    except ImportError:
        raise UsageError(
            "--dask needs Dask's distributed package: pip install 'datavc[dask]'"
        ) from None
    text = os.environ.get("DATAVC_DASK_TIMEOUT", "30")
    try:
        timeout = float(text)
    except ValueError:
        raise UsageError(f"DATAVC_DASK_TIMEOUT is {text!r}, not a number of seconds") from None
    # distributed logs its own errors (a lost scheduler) besides the one line datavc prints
    logging.getLogger("distributed").setLevel(logging.CRITICAL)
    try:
        return Client(address, timeout=timeout)  # type: ignore[no-untyped-call]
    except (OSError, TimeoutError, ValueError, TypeError) as err:
        reason = str(err).splitlines()[0][:300] if str(err) else type(err).__name__
        raise UsageError(f"cannot reach the Dask scheduler at {address} ({reason})") from None


def add_on_cluster(ws: Workspace, ds: Dataset, absolute: str, client: Any) -> AddResult:
    """An add whose changed files are chunked and stored by a Dask cluster's workers
    (:mod:`.cluster`). The driver lists the files and holds their entries: its memory
    grows with the number of files, as it does not on one machine."""
    files = scan(absolute, ds.kind)
    by_path = {f.path: f for f in files}
    reference = _reference(ws, ds)
    store = ws.store
    rows = ws.stat_cache(ds.name).all_rows()
    previous = _Cursor(iter_entries(store, reference, hints=False) if reference else iter(()))

    def reuse(f: LocalFile) -> FileEntry | None:
        row = rows.get(f.path)
        if row is None or row.key != stat_key(f):
            return None
        e = previous.at(f.path)
        return e if e is not None and e.hash == row.hash else None

    bar = ws.progress(f"adding {ds.path}", sum(f.size for f in files))
    try:
        with store.new_writer() as writer, _Adder(ws, ds, reference, writer, bar) as adder:
            entries, done = build_on_cluster(client, files, store, reuse, bar, lambda f, e: None)
            stats = _sum(writer.finish(), done)
            old = iter_entries(store, reference, hints=False) if reference else iter(())
            for change, e in merge_entries(old, iter(entries)):
                adder.changes.note(change, e.path)
            for e in entries:
                adder.put(by_path[e.path], e)
            root, tree = adder.finish()
    finally:
        ws.progress.close()
    return _staged_result(ws, ds, root, tree, stats, adder.changes)


def _sum(a: UploadStats, b: UploadStats) -> UploadStats:
    return UploadStats(
        a.new_chunks + b.new_chunks, a.new_bytes + b.new_bytes, a.new_objects + b.new_objects
    )


class _Cursor:
    """Walks a snapshot's entries in path order, for lookups made in path order."""

    def __init__(self, entries: Iterator[FileEntry]) -> None:
        self._entries = entries
        self._current = next(entries, None)

    def at(self, path: str) -> FileEntry | None:
        while self._current is not None and self._current.path < path:
            self._current = next(self._entries, None)
        current = self._current
        return current if current is not None and current.path == path else None
