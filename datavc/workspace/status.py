"""``datavc status``: how each dataset's folder differs from what it should hold.

A folder is compared with its staged snapshot, else its pointer's. When the stat cache says
every file is unchanged and the folder matched that snapshot when last checked, the snapshot
is not read at all: one ``lstat`` per file. Nothing here changes the workspace but the stat
cache.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..format.pointer import SUFFIX
from ..format.tree import FileEntry
from ..store.files import LocalFile, file_mode, scan
from ..store.trees import TreeDiff, diff_entries

if TYPE_CHECKING:
    from .core import Dataset, Workspace


@dataclass(frozen=True, slots=True)
class Status:
    name: str
    path: str
    state: str  # "clean", "staged", "modified", "missing", "new"
    diff: TreeDiff
    detail: str


def status(ws: Workspace) -> list[Status]:
    return [_status_one(ws, ds) for ds in sorted(ws.datasets().values(), key=lambda d: d.path)]


def _status_one(ws: Workspace, ds: Dataset) -> Status:
    absolute = ws.abs(ds.path)
    ref = ws.reference_tree(ds)
    empty = TreeDiff((), (), ())
    if not os.path.lexists(absolute):
        return Status(
            ds.name, ds.path, "missing", empty, "not in the workspace: run datavc checkout"
        )
    local = scan(absolute, ds.kind)
    cache = ws.stat_cache(ds.name, local)
    diff = empty
    if ref is None or cache.matches != ref or not cache.covers(local):
        entries = ws.reference_entries(ds)
        current = [FileEntry(f.path, _mode(f), f.size, ws.hash_of(cache, f), ()) for f in local]
        diff = diff_entries(entries, current)
        cache.mark(ref if diff.empty else None)
        cache.save()
    if not diff.empty:
        return Status(ds.name, ds.path, "modified", diff, "changed since add: run datavc add")
    if ds.staged is not None and ds.pointer is None:
        return Status(ds.name, ds.path, "new", diff, "added, not committed yet")
    if ds.staged is not None and ds.pointer is not None:
        staged_diff = diff_entries(
            ws.tree_entries(ws.pointed(ds.pointer, ds.path + SUFFIX).root),
            ws.tree_entries(ds.staged.root),
        )
        return Status(ds.name, ds.path, "staged", staged_diff, "added, not committed yet")
    return Status(
        ds.name, ds.path, "clean", diff, f"matches v{ds.pointer.version if ds.pointer else '?'}"
    )


def _mode(f: LocalFile) -> int:
    return file_mode(f.mode)
