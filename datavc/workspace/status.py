"""``datavc status``: how each dataset's folder differs from what it should hold.

A folder is compared with its staged snapshot, else its pointer's. When the stat cache says
every file is unchanged and the folder matched that snapshot when last checked, the snapshot
is not read at all: one ``lstat`` per file, and the store is not contacted. Nothing here
changes the workspace but the stat cache.

When a comparison needs the store and the store is unreachable, every dataset is still
reported: those whose state needs the store as ``unknown`` (or ``staged`` without counts),
each carrying the store's error, which the command reports after the lines (exit code 5).
The store is tried once: after it failed, the other datasets do not wait for it again.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from ..errors import StoreUnreachable
from ..format.pointer import SUFFIX
from ..format.tree import FileEntry
from ..store.files import LocalFile, file_mode, scan
from ..store.trees import TreeDiff, diff_entries

if TYPE_CHECKING:
    from ..format.pointer import Pointer
    from ..format.tree import TreeRoot
    from .core import Dataset, Workspace

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Status:
    name: str
    path: str
    state: str  # "clean", "staged", "modified", "moved", "missing", "new", "unknown", "conflict"
    diff: TreeDiff
    detail: str
    error: StoreUnreachable | None = None  # the store was needed, and unreachable


EMPTY = TreeDiff((), (), ())


def status(ws: Workspace) -> list[Status]:
    rows: list[Status] = []
    for ds in sorted(ws.datasets().values(), key=lambda d: d.path):
        failed = next((r.error for r in rows if r.error is not None), None)
        rows.append(_status_one(ws, ds, failed))
    return rows


def _status_one(ws: Workspace, ds: Dataset, failed: StoreUnreachable | None) -> Status:
    """``failed``: the store was found unreachable for an earlier dataset (not tried again)."""
    absolute = ws.abs(ds.path)
    if ds.conflict is not None:
        return Status(ds.name, ds.path, "conflict", EMPTY, ds.conflict)
    ref = ws.reference_tree(ds)
    if not os.path.lexists(absolute):
        return Status(
            ds.name, ds.path, "missing", EMPTY, "not in the workspace: run datavc checkout"
        )
    local = scan(absolute, ds.kind)
    cache = ws.stat_cache(ds.name, local)
    diff = EMPTY
    held = cache.matches  # the snapshot the folder equalled when last checked
    pointer = ds.pointer if ds.staged is None else None
    if pointer is not None and held is not None and held != ref and cache.covers(local):
        moved = _from_store(failed, lambda: _version_with(ws, ds.name, held))  # committed?
        if moved is not None:
            return _moved(ds, pointer, moved)
    if ref is None or cache.matches != ref or not cache.covers(local):
        try:
            entries = _from_store(failed, lambda: ws.reference_entries(ds))
        except StoreUnreachable as err:
            detail = f"cannot compare with {_reference(ds)}: the store is unreachable"
            return Status(ds.name, ds.path, "unknown", EMPTY, detail, err)
        current = [FileEntry(f.path, _mode(f), f.size, ws.hash_of(cache, f), ()) for f in local]
        diff = diff_entries(entries, current)
        cache.mark(ref if diff.empty else None)
        cache.save()
    if not diff.empty and ds.staged is None and ds.pointer is not None:
        moved = _from_store(failed, lambda: _version_like(ws, ds.name, current))
        if moved is not None:
            return _moved(ds, ds.pointer, moved)
    if not diff.empty:
        return Status(ds.name, ds.path, "modified", diff, "changed since add: run datavc add")
    if ds.staged is not None and ds.pointer is None:
        return Status(ds.name, ds.path, "new", diff, "added, not committed yet")
    if ds.staged is not None and ds.pointer is not None:
        return _staged(ws, ds, ds.staged.root, ds.pointer, failed)
    return Status(
        ds.name, ds.path, "clean", diff, f"matches v{ds.pointer.version if ds.pointer else '?'}"
    )


def _staged(
    ws: Workspace, ds: Dataset, staged: TreeRoot, pointer: Pointer, failed: StoreUnreachable | None
) -> Status:
    """A dataset added since its pointer's version: the changes from that version."""
    detail = "added, not committed yet"
    try:
        pointed = _from_store(failed, lambda: ws.pointed(pointer, ds.path + SUFFIX))
        diff = diff_entries(ws.tree_entries(pointed.root), ws.tree_entries(staged))
    except StoreUnreachable as err:
        detail += " (the store is unreachable: changes not counted)"
        return Status(ds.name, ds.path, "staged", EMPTY, detail, err)
    return Status(ds.name, ds.path, "staged", diff, detail)


MOVED_SEARCH = 50  # newest versions compared with a folder that differs from its pointer


def _moved(ds: Dataset, pointer: Pointer, version: int) -> Status:
    """The folder holds another committed version than its pointer file names: the pointer
    moved (git checkout, pull, merge), the data did not change."""
    spec = f"{ds.name}@v{version}"
    return Status(
        ds.name,
        ds.path,
        "moved",
        EMPTY,
        f"holds {spec}, but its pointer file names v{pointer.version}: run 'datavc checkout' "
        f"to get v{pointer.version}, or 'datavc checkout {spec}' to keep {spec}",
    )


def _version_with(ws: Workspace, name: str, snapshot: str) -> int | None:
    """The newest live version of ``name`` whose snapshot is ``snapshot``."""
    from ..format.record import VersionRecord
    from ..store import versions

    for n in reversed(versions.version_numbers(ws.store, name)[-MOVED_SEARCH:]):
        rec = versions.read_entry(ws.store, name, n)
        if isinstance(rec, VersionRecord) and rec.tree == snapshot:
            return n
    return None


def _version_like(ws: Workspace, name: str, current: list[FileEntry]) -> int | None:
    """The newest live version of ``name`` (of the last ``MOVED_SEARCH``) whose files are
    exactly ``current`` (paths, hashes, modes). Only versions with the same file count and
    bytes have their pages read."""
    from ..format.record import VersionRecord
    from ..store import versions

    files, total = len(current), sum(e.size for e in current)
    want = {e.path: (e.hash, e.mode) for e in current}
    for n in reversed(versions.version_numbers(ws.store, name)[-MOVED_SEARCH:]):
        rec = versions.read_entry(ws.store, name, n)
        if not isinstance(rec, VersionRecord) or (rec.root.files, rec.root.bytes) != (files, total):
            continue
        if {e.path: (e.hash, e.mode) for e in ws.tree_entries(rec.root)} == want:
            return n
    return None


def _from_store(failed: StoreUnreachable | None, read: Callable[[], T]) -> T:
    """``read()``, which needs the store; if the store already failed, that failure."""
    if failed is not None:
        raise failed
    return read()


def _reference(ds: Dataset) -> str:
    if ds.staged is not None:
        return "the staged snapshot"
    return f"v{ds.pointer.version}" if ds.pointer else "its snapshot"


def _mode(f: LocalFile) -> int:
    return file_mode(f.mode)
