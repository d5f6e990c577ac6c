"""``datavc checkout``: materialize exact snapshots into their datasets' paths.

Without specs, what every pointer file says (the step after ``git checkout``). Unless
forced, it refuses to drop content found in no committed version of the dataset. Files
already in place (by the stat cache, or by their hash) are kept; the rest are fetched and
checked before any is renamed into place (:mod:`datavc.store.materialize`). Then the
pointer file names the version checked out.

Snapshots are read a tree page at a time beside a path-ordered scan of the folder, and the
stat cache a group at a time: memory grows with a page, not with the number of files. The
check for unsaved content holds only the local files that differ from the target.
"""

from __future__ import annotations

import contextlib
import itertools
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
from ..store.files import LocalFile, file_mode, hash_path, iter_scan
from ..store.materialize import materialize
from ..store.trees import EntryCursor, decoded_page, in_order, iter_entries
from .git import ignore_path
from .lock import workspace_lock
from .statcache import SortedRows, now_ns, write_for_tree

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
            plan = _pointed(ws, [ds for ds in known.values() if ds.pointer is not None])
        for text in specs:
            spec = parse_spec(text)
            if spec.name not in known:
                raise DatasetNotFound(spec.name)
            if any(ds.name == spec.name for ds, _ in plan):
                raise BadInput(f"dataset {spec.name!r} is named twice")
            plan.append((known[spec.name], ws.resolve(spec)))
        if not force:
            for ds, rec in plan:
                _refuse_unsaved(ws, ds, rec.root)
        return [_checkout_one(ws, ds, rec) for ds, rec in plan]


def _pointed(ws: Workspace, tracked: list[Dataset]) -> list[tuple[Dataset, VersionRecord]]:
    """Each dataset with the version its pointer file names. From a remote store the
    records are read at once, and beside them the first page each pointer hints at
    (``page``): a fresh clone's checkout then waits a round trip for the records and
    pages, one for the packs. A hinted page the record does not name first is dropped."""
    from functools import partial

    from ..store.overlap import Overlap

    store = ws.store
    hinted = set()
    with Overlap(not store.backend.is_local) as overlap:
        found = []
        for ds in tracked:
            assert ds.pointer is not None
            found.append((ds, overlap.start(partial(ws.pointed, ds.pointer, ds.path + SUFFIX))))
            page = ds.pointer.page
            if page is not None and page not in hinted and not store.backend.is_local:
                hinted.add(page)
                overlap.start(partial(store.read_early, "trees", page))
        plan = [(ds, record.result()) for ds, record in found]
    named = {rec.root.pages[0].id for _, rec in plan if rec.root.pages}
    for page in hinted - named:
        store.forget_early("trees", page)
    return plan


def _refuse_unsaved(ws: Workspace, ds: Dataset, target: TreeRoot) -> None:
    """Refuse to lose content found in no committed version of the dataset: files in
    the workspace, and files of a snapshot that was added but not committed."""
    needed = _unsaved(ws, ds, target)
    if not needed:
        return  # nothing to lose (a fresh clone has nothing there): no version is read
    missing = set(needed.values())
    for root in itertools.chain([target], _trees_to_compare(ws, ds)):
        for e in iter_entries(ws.store, root, hints=False):
            missing.discard(e.hash)
        if not missing:
            return
    for path, digest in needed.items():
        if digest in missing:
            raise UsageError(
                f"{ds.path}/{path} has changes that are not stored in any committed "
                f"version: run 'datavc add {ds.path}' and commit, or checkout with "
                "--force to discard them"
            )


def _unsaved(ws: Workspace, ds: Dataset, target: TreeRoot) -> dict[str, FileHash]:
    """The content checkout could drop: each local file (and each file of a staged
    snapshot) whose hash the target does not have at its path, with that hash."""
    needed: dict[str, FileHash] = {}
    absolute = ws.abs(ds.path)
    if os.path.lexists(absolute) and not os.path.islink(absolute):  # (a symlink is refused)
        kind = "dir" if os.path.isdir(absolute) else "file"
        rows = SortedRows(ws.stat_cache(ds.name))
        there = EntryCursor(iter_entries(ws.store, target, hints=False))
        for f in iter_scan(absolute, kind, odd=[]):
            e = there.at(f.path)
            if e is not None and e.size == f.size and rows.get(f) == e.hash:
                continue  # the target's content, by the stat cache: nothing read
            digest = ws.hash_of(rows, f)
            if e is None or e.hash != digest:
                needed[f.path] = digest
    if ds.staged is not None:
        there = EntryCursor(iter_entries(ws.store, target, hints=False))
        for e in iter_entries(ws.store, ds.staged.root, hints=False):
            same = there.at(e.path)
            if same is None or same.hash != e.hash:
                needed.setdefault(f"{e.path} (added, not committed)", e.hash)
    return needed


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


def _checkout_one(ws: Workspace, ds: Dataset, rec: VersionRecord) -> CheckoutResult:
    ws.check_parents(ds.path)
    if rec.kind != ds.kind and os.path.lexists(ws.abs(ds.path)):
        raise BadInput(f"{rec.name}@v{rec.version} is a {rec.kind}, but {ds.path} is a {ds.kind}")
    cache = ws.stat_cache(ds.name)
    rows = SortedRows(cache)  # asked in path order: materialize merges pages and scan
    absolute = ws.abs(ds.path)
    started = now_ns()

    def unchanged(local: LocalFile, e: FileEntry) -> bool:
        return local.size == e.size and ws.hash_of(rows, local) == e.hash

    def placed() -> None:  # with the files: an interrupt waits for both
        now = EntryCursor(iter_entries(ws.store, rec.root, hints=False))  # what files hold
        pages = [(bytes.fromhex(p.content), p.last, p.files) for p in rec.root.pages]
        scanned = iter_scan(absolute, rec.kind)

        def expected(path: str) -> tuple[int, bytes] | None:
            e = now.at(path)
            return None if e is None else (e.mode, e.hash)

        def actual(f: LocalFile) -> tuple[int, bytes]:
            # every file is the snapshot's now; one that is not (made meanwhile) is read
            return expected(f.path) or (file_mode(f.mode), hash_path(f.abspath, f.size))

        write_for_tree(cache.path, rec.tree, pages, scanned, actual, expected, started)
        pointer = ds.pointer
        if pointer is None or pointer.version != rec.version or pointer.snapshot != rec.tree:
            ws.write_pointer(ds.path, rec)
        ws.unstage(ds.name)
        ignore_path(ws.root, ds.path)

    pages = in_order(ws.store, rec.root.pages, lambda page: decoded_page(ws.store, page))
    bar = ws.progress(f"checkout {rec.name}@v{rec.version}", rec.root.bytes)
    try:
        written = materialize(ws.store, pages, absolute, rec.kind, unchanged, bar, placed)
    finally:
        ws.progress.close()
    return CheckoutResult(ds.name, rec.version, ds.path, written, rec.root.files)
