"""``datavc add``: track a folder or file, store its new data, stage its snapshot.

Files the stat cache knows unchanged since the last snapshot are not read again; the rest
are chunked and their new chunks stored (:mod:`datavc.store.build`). The snapshot's tree is
written, and the dataset is staged for the next commit (``.datavc/state/staged``); its
path goes into the root ``.gitignore``.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import BadInput, PathNotFound, VersionForgotten
from ..format.paths import check_name
from ..format.pointer import SUFFIX
from ..format.tree import FileEntry, TreeRoot, snapshot_id
from ..store.build import build_entries
from ..store.files import LocalFile, scan
from ..store.trees import TreeDiff, iter_entries, merge_entries, write_tree
from .core import Dataset, Staged, write_staged
from .git import ignore_path
from .lock import workspace_lock
from .statcache import StatCache

if TYPE_CHECKING:
    from ..store.packwriter import UploadStats
    from .core import Workspace


@dataclass(frozen=True, slots=True)
class AddResult:
    dataset: Dataset
    staged: Staged
    diff: TreeDiff


def add(ws: Workspace, path: str, name: str | None = None, client: Any = None) -> AddResult:
    """Track ``path``; with a Dask ``client``, its changed files are chunked and stored by
    the cluster's workers (:mod:`.cluster`)."""
    with workspace_lock(ws.state):
        return add_locked(ws, path, name, client)


def add_locked(ws: Workspace, path: str, name: str | None, client: Any = None) -> AddResult:
    """:func:`add`, for a caller that holds the workspace lock already."""
    rel = ws.rel(path)
    absolute = ws.abs(rel)
    if not os.path.lexists(absolute):
        raise PathNotFound(path)
    kind = "dir" if os.path.isdir(absolute) and not os.path.islink(absolute) else "file"
    existing = {d.path: d for d in ws.datasets().values()}
    if name is None:
        name = existing[rel].name if rel in existing else _default_name(rel, kind)
    check_name(name)
    known = ws.datasets().get(name)
    if known is not None and known.path != rel:
        raise BadInput(f"dataset {name!r} already tracks {known.path}; pick another --name")
    if rel in existing and existing[rel].name != name:
        raise BadInput(f"{rel} is already tracked as {existing[rel].name!r}")
    _check_nesting(rel, existing)
    if known is not None and known.conflict is not None:
        raise BadInput(known.conflict)  # resolve it first: which version is this data after?
    files = scan(absolute, kind)
    ds = known or Dataset(name, rel, kind, None, None)
    reference = _reference(ws, ds)
    cache = ws.stat_cache(name, files)
    cache.load()  # before build_entries empties the scan list
    store = ws.store
    previous = _Cursor(iter_entries(store, reference, hints=False) if reference else iter(()))
    bar = ws.progress(f"adding {rel}", sum(f.size for f in files))
    try:
        with store.new_writer() as writer:
            reuse = functools.partial(_reuse, cache, previous)

            def put(f: LocalFile, e: FileEntry) -> None:
                cache.put(f, e.hash)

            if client is None:
                entries = build_entries(files, store, writer, reuse, bar, put)  # empties files
            else:
                from .cluster import build_on_cluster

                entries, stats = build_on_cluster(client, files, store, reuse, bar, put)
            stats = _sum(writer.finish(), stats) if client is not None else writer.finish()
    finally:
        ws.progress.close()
    cache.retain((e.path for e in entries), len(entries))  # each got a row as it settled
    root = write_tree(store, entries)
    tree = snapshot_id(root)
    cache.mark(tree)
    cache.save()
    carried = ds.staged if ds.staged else None
    staged = Staged(
        name,
        rel,
        kind,
        tree,
        len(entries),
        sum(e.size for e in entries),
        stats.new_bytes + (carried.new_bytes if carried else 0),
        stats.new_chunks + (carried.new_chunks if carried else 0),
        stats.new_objects + (carried.new_objects if carried else 0),
        carried.nonce if carried and carried.tree == tree else new_nonce(),
        root,
    )
    if ds.pointer is not None and ds.pointer.snapshot == tree:
        ws.unstage(name)
    else:
        write_staged(ws.staged_path(name), staged)
    ignore_path(ws.root, rel)
    changes: dict[str, list[str]] = {"added": [], "removed": [], "modified": []}
    old = iter_entries(store, reference, hints=False) if reference else iter(())
    for kind, e in merge_entries(old, iter(entries)):  # the new entries are in memory
        changes[kind].append(e.path)
    diff = TreeDiff(*(tuple(changes[k]) for k in ("added", "removed", "modified")))
    return AddResult(ds, staged, diff)


def _sum(a: UploadStats, b: UploadStats) -> UploadStats:
    from ..store.packwriter import UploadStats

    return UploadStats(
        a.new_chunks + b.new_chunks, a.new_bytes + b.new_bytes, a.new_objects + b.new_objects
    )


def _check_nesting(rel: str, existing: dict[str, Dataset]) -> None:
    for other in existing:
        if other != rel and (rel.startswith(other + "/") or other.startswith(rel + "/")):
            raise BadInput(f"{rel} overlaps the tracked dataset at {other}")


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


def new_nonce() -> str:
    """A commit's nonce: fixed when the data is added, so a retried commit is recognised.
    An add that stages the snapshot already staged keeps its nonce: after a commit that
    died between creating its record and writing the pointer file, add+commit run again
    finds that record instead of publishing the same snapshot a second time."""
    import uuid  # uuid and datetime are imported when a version is made, not by status

    return uuid.uuid4().hex


def _reuse(cache: StatCache, previous: _Cursor, f: LocalFile) -> FileEntry | None:
    """The previous snapshot's entry for ``f`` if the stat cache says it is unchanged
    (files come in path order, so the previous snapshot is read one page at a time)."""
    known = cache.get(f)
    if known is None:
        return None
    e = previous.at(f.path)
    return e if e is not None and e.hash == known else None


def _default_name(rel: str, kind: str) -> str:
    base = rel.rsplit("/", 1)[-1]
    if kind == "file" and "." in base.lstrip("."):
        base = base.rsplit(".", 1)[0]
    return base


def _reference(ws: Workspace, ds: Dataset) -> TreeRoot | None:
    """The snapshot whose entries this add may reuse: staged, else the pointer's. Staged
    pages that gc has removed since (staged long ago) are skipped, and so is a pointer
    that names a forgotten version."""
    if ds.staged is not None:
        root = ds.staged.root
        if all(ws.store.backend.exists(f"trees/{p.id}") for p in root.pages):
            return root
    if ds.pointer is None:
        return None
    try:
        return ws.pointed(ds.pointer, ds.path + SUFFIX).root
    except VersionForgotten:
        return None
