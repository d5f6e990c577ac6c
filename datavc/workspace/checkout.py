"""``datavc checkout``: materialize exact snapshots into their datasets' paths.

Without specs, what every pointer file says (the step after ``git checkout``). Unless
forced, it refuses to drop content found in no committed version of the dataset. Files
already in place (by the stat cache, or by their hash) are kept; the rest are fetched and
checked before any is renamed into place (:mod:`datavc.store.materialize`). Then the
pointer file names the version checked out.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import BadInput, DatasetNotFound, UsageError, VersionForgotten
from ..format.hashing import FileHash
from ..format.pointer import SUFFIX
from ..format.record import VersionRecord
from ..format.spec import parse_spec
from ..format.tree import FileEntry, TreeRoot
from ..store import versions
from ..store.files import LocalFile, iter_scan, scan
from ..store.materialize import materialize
from .git import ignore_path
from .lock import workspace_lock
from .statcache import PathRows, now_ns, write_for_tree

if TYPE_CHECKING:
    from .core import Dataset, Workspace


@dataclass(frozen=True, slots=True)
class CheckoutResult:
    name: str
    version: int
    path: str
    written: int
    files: int


def checkout(ws: Workspace, specs: list[str], force: bool = False) -> list[CheckoutResult]:
    with workspace_lock(ws.state):
        known = ws.datasets()
        plan: list[tuple[Dataset, VersionRecord]] = []
        if not specs:
            for ds in known.values():
                if ds.conflict is not None:
                    raise BadInput(ds.conflict)
                if ds.pointer is not None:
                    plan.append((ds, ws.pointed(ds.pointer, ds.path + SUFFIX)))
        for text in specs:
            spec = parse_spec(text)
            if spec.name not in known:
                raise DatasetNotFound(spec.name)
            if any(ds.name == spec.name for ds, _ in plan):
                raise BadInput(f"dataset {spec.name!r} is named twice")
            plan.append((known[spec.name], ws.resolve(spec)))
        loaded = [(ds, rec, ws.tree_entries(rec.root, hints=True)) for ds, rec in plan]
        if not force:
            for ds, _, entries in loaded:
                _refuse_unsaved(ws, ds, entries)
        return [_checkout_one(ws, ds, rec, entries) for ds, rec, entries in loaded]


def _refuse_unsaved(ws: Workspace, ds: Dataset, target: list[FileEntry]) -> None:
    """Refuse to lose content found in no committed version of the dataset: files in
    the workspace, and files of a snapshot that was added but not committed."""
    needed = _local_hashes(ws, ds)
    if ds.staged is not None:
        for e in ws.tree_entries(ds.staged.root):
            needed.setdefault(f"{e.path} (added, not committed)", e.hash)
    saved = {e.hash for e in target}
    if all(h in saved for h in needed.values()):
        return  # nothing to lose (a fresh clone has nothing there): no version is read
    for root in _trees_to_compare(ws, ds):
        if all(h in saved for h in needed.values()):
            return
        saved |= {e.hash for e in ws.tree_entries(root)}
    for path, digest in needed.items():
        if digest not in saved:
            raise UsageError(
                f"{ds.path}/{path} has changes that are not stored in any committed "
                f"version: run 'datavc add {ds.path}' and commit, or checkout with "
                "--force to discard them"
            )


def _local_hashes(ws: Workspace, ds: Dataset) -> dict[str, FileHash]:
    absolute = ws.abs(ds.path)
    if not os.path.lexists(absolute) or os.path.islink(absolute):
        return {}  # nothing there, or a symlink that materialize refuses
    kind = "dir" if os.path.isdir(absolute) else "file"
    rows = PathRows(ws.stat_cache(ds.name))
    return {f.path: ws.hash_of(rows, f) for f in scan(absolute, kind, odd=[])}


def _trees_to_compare(ws: Workspace, ds: Dataset) -> Iterator[TreeRoot]:
    """The pointer's snapshot, then every version of the dataset, newest first.

    A staged (added, not committed) snapshot does not count: checkout would drop it."""
    if ds.pointer is not None:
        pointed = None
        with contextlib.suppress(VersionForgotten):  # forgotten: its content is saved no more
            pointed = ws.pointed(ds.pointer, ds.path + SUFFIX)
        if pointed is not None:
            yield pointed.root
    for n in reversed(versions.version_numbers(ws.store, ds.name)):
        rec = versions.read_entry(ws.store, ds.name, n)
        if isinstance(rec, VersionRecord):
            yield rec.root


def _checkout_one(
    ws: Workspace, ds: Dataset, rec: VersionRecord, entries: list[FileEntry]
) -> CheckoutResult:
    ws.check_parents(ds.path)
    if rec.kind != ds.kind and os.path.lexists(ws.abs(ds.path)):
        raise BadInput(f"{rec.name}@v{rec.version} is a {rec.kind}, but {ds.path} is a {ds.kind}")
    cache = ws.stat_cache(ds.name)
    rows = PathRows(cache)
    absolute = ws.abs(ds.path)
    started = now_ns()

    def unchanged(local: LocalFile, e: FileEntry) -> bool:
        return local.size == e.size and ws.hash_of(rows, local) == e.hash

    def placed() -> None:  # with the files: an interrupt waits for both
        known = {e.path: (e.mode, e.hash) for e in entries}  # what every file now holds
        pages = [(bytes.fromhex(p.content), p.last, p.files) for p in rec.root.pages]
        scanned = iter_scan(absolute, rec.kind)

        def actual(f: LocalFile) -> tuple[int, bytes]:
            return known[f.path]

        write_for_tree(cache.path, rec.tree, pages, scanned, actual, known.get, started)
        pointer = ds.pointer
        if pointer is None or pointer.version != rec.version or pointer.snapshot != rec.tree:
            ws.write_pointer(ds.path, rec)
        ws.unstage(ds.name)
        ignore_path(ws.root, ds.path)

    bar = ws.progress(f"checkout {rec.name}@v{rec.version}", sum(e.size for e in entries))
    try:
        written = materialize(ws.store, entries, absolute, rec.kind, unchanged, bar, placed)
    finally:
        ws.progress.close()
    return CheckoutResult(ds.name, rec.version, ds.path, written, len(entries))
