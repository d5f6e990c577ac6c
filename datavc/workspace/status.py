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
from typing import TYPE_CHECKING, BinaryIO, TypeVar

from ..errors import StoreUnreachable
from ..format.pointer import SUFFIX
from ..format.tree import FileEntry
from ..format.treeroot import snapshot_id
from ..store import files as local_files
from ..store.files import LocalFile, file_mode, iter_scan
from ..store.trees import TreeDiff, diff_entries, diff_trees
from .groupscan import seen_groups, unchanged
from .statcache import (
    UNUSABLE,
    CacheWriter,
    PathRows,
    StatCache,
    now_ns,
    stat_key,
    write_for_tree,
)

if TYPE_CHECKING:
    from ..format.pointer import Pointer
    from ..format.tree import PageRef, TreeRoot
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
    cache = ws.stat_cache(ds.name)
    held = cache.matches  # the snapshot the folder equalled when last checked
    pointer = ds.pointer if ds.staged is None else None
    try:
        compared = _by_groups(ws, ds, cache, ref, failed) if cache.groups else None
        if compared is not None and compared[1] and cache.tree != ref:
            # the folder still equals the snapshot the cache follows, not this one
            if pointer is not None and held is not None:
                moved = _from_store(failed, lambda: _version_with(ws, ds.name, held))
                if moved is not None:
                    return _moved(ds, pointer, moved)
            compared = None
        if compared is None:  # the cache does not follow the snapshot: every file compared
            compared = _by_files(ws, ds, cache, failed)
    except StoreUnreachable as err:
        detail = f"cannot compare with {_reference(ds)}: the store is unreachable"
        return Status(ds.name, ds.path, "unknown", EMPTY, detail, err)
    diff = compared[0]
    if not diff.empty and ds.staged is None and ds.pointer is not None:
        try:  # is it another committed version? (the folder differs from its pointer's)
            moved = _from_store(failed, lambda: _version_like(ws, ds, absolute))
        except StoreUnreachable as err:
            detail = f"cannot compare with {_reference(ds)}: the store is unreachable"
            return Status(ds.name, ds.path, "unknown", EMPTY, detail, err)
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
        changes: dict[str, list[str]] = {"added": [], "removed": [], "modified": []}
        for kind, e in diff_trees(ws.store, pointed.root, staged):  # pages in both: unread
            changes[kind].append(e.path)
        diff = TreeDiff(*(tuple(changes[k]) for k in ("added", "removed", "modified")))
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


def _version_like(ws: Workspace, ds: Dataset, absolute: str) -> int | None:
    """The newest live version of the dataset (of the last ``MOVED_SEARCH``) whose files
    are exactly those of the folder (paths, hashes, modes). Only versions with the same
    file count and bytes have their pages read, and only then the folder's files hashed
    (by the stat cache where it can)."""
    from ..format.record import VersionRecord
    from ..store import versions

    files = total = 0
    for f in iter_scan(absolute, ds.kind):
        files, total = files + 1, total + f.size
    want: dict[str, tuple[bytes, int]] | None = None
    for n in reversed(versions.version_numbers(ws.store, ds.name)[-MOVED_SEARCH:]):
        rec = versions.read_entry(ws.store, ds.name, n)
        if not isinstance(rec, VersionRecord) or (rec.root.files, rec.root.bytes) != (files, total):
            continue
        if want is None:
            rows = PathRows(ws.stat_cache(ds.name))
            want = {f.path: (ws.hash_of(rows, f), _mode(f)) for f in iter_scan(absolute, ds.kind)}
        if {e.path: (e.hash, e.mode) for e in ws.tree_entries(rec.root)} == want:
            return n
    return None


def _by_groups(
    ws: Workspace,
    ds: Dataset,
    cache: StatCache,
    ref: str | None,
    failed: StoreUnreachable | None,
) -> tuple[TreeDiff, bool] | None:
    """Compare the folder with its snapshot group by group of the stat cache: a group whose
    files have the paths and stat fields it recorded, exactly its page's entries, is
    unchanged, unread. Changed groups are compared file by file (a file's hash read only
    if its stat fields changed), against the rows (exact groups) or the snapshot's page.
    The diff, and whether every group was unchanged (the folder still equals the
    snapshot the cache follows). None if a group changed and the cache follows another
    snapshot than ``ref``: the caller compares every file."""
    changes: dict[str, list[str]] = {"added": [], "removed": [], "modified": []}
    out: CacheWriter | None = None
    source: BinaryIO | None = None
    root: TreeRoot | None = None
    bounds = [g.last for g in cache.groups]
    if bounds[-1] is not None:  # (not a cache this version writes)
        return None
    absolute = ws.abs(ds.path)
    seen = seen_groups(absolute, ds.kind, bounds, [g.count for g in cache.groups], check=False)
    try:
        for i, g in enumerate(cache.groups):
            if unchanged(seen[i], g):
                if out is not None:
                    assert source is not None
                    out.copy(cache, source, g, g.last)
                continue
            if cache.tree is None or cache.tree != ref:
                if out is not None:
                    out.abort()
                return None
            if out is None:  # the first changed group: the groups before it are copied
                out = CacheWriter(cache.path)
                source = open(cache.path, "rb")  # noqa: SIM115 (closed below)
                for earlier in cache.groups[:i]:
                    out.copy(cache, source, earlier, earlier.last)
            rows = cache.rows(g)
            if g.exact:
                old = {p: (r.hash, r.mode) for p, r in rows.items()}
            else:
                if root is None:
                    root = _from_store(failed, lambda: ws.reference_root(ds))
                assert root is not None
                pages = root.pages[i : i + 1]  # none for an empty snapshot
                old = {e.path: (e.hash, e.mode) for p in pages for e in _page_entries(ws, p)}
            group = out.rows()
            before_group = sum(map(len, changes.values()))  # changes found before it
            after = bounds[i - 1] if i else None
            for f in iter_scan(absolute, ds.kind, after=after, upto=g.last):
                row = rows.get(f.path)
                mode = _mode(f)
                if row is not None and row.key == stat_key(f) and row.key != UNUSABLE:
                    digest: bytes = row.hash
                else:
                    digest = local_files.hash_path(f.abspath, f.size)  # (looked up now)
                group.add(f, mode, digest)
                before = old.pop(f.path, None)
                if before is None:
                    changes["added"].append(f.path)
                elif before != (digest, mode):
                    changes["modified"].append(f.path)
            changes["removed"] += old
            same = group.count == g.count and sum(map(len, changes.values())) == before_group
            out.group(g.content, g.last, group, g.exact and same, g.packs)
        if out is not None:
            out.finish(cache.tree, cache.tree if out.all_exact else None)
            out = None
    finally:
        if out is not None:
            out.abort()
        if source is not None:
            source.close()
    diff = TreeDiff(*(tuple(sorted(changes[k])) for k in ("added", "removed", "modified")))
    return diff, source is None


def _page_entries(ws: Workspace, page: PageRef) -> list[FileEntry]:
    from ..store.trees import load_page

    return load_page(ws.store, page, hints=False)


def _by_files(
    ws: Workspace, ds: Dataset, cache: StatCache, failed: StoreUnreachable | None
) -> tuple[TreeDiff, bool]:
    """Compare every file with the snapshot (read whole), and write a stat cache that
    follows the snapshot's pages. Memory grows with the number of files."""
    root = _from_store(failed, lambda: ws.reference_root(ds))
    entries = _from_store(failed, lambda: ws.reference_entries(ds))
    rows = PathRows(cache)
    started = now_ns()
    local = list(iter_scan(ws.abs(ds.path), ds.kind))
    current = [FileEntry(f.path, _mode(f), f.size, ws.hash_of(rows, f), ()) for f in local]
    diff = diff_entries(entries, current)
    if root is not None:
        tree = snapshot_id(root)
        known = {e.path: (e.mode, e.hash) for e in entries}
        found = {e.path: (e.mode, e.hash) for e in current}
        pages = [(bytes.fromhex(p.content), p.last, p.files) for p in root.pages]

        def actual(f: LocalFile) -> tuple[int, bytes]:
            return found[f.path]

        write_for_tree(cache.path, tree, pages, iter(local), actual, known.get, started)
    return diff, False


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
