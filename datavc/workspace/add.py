"""``datavc add``: track a folder or file, store its new data, stage its snapshot.

Files the stat cache knows unchanged since the last snapshot are not read again; the rest
are chunked and their new chunks stored (:mod:`datavc.store.build`). The snapshot's tree is
written, and the dataset is staged for the next commit (``.datavc/state/staged``); its
path goes into the root ``.gitignore``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO, Literal

from ..errors import BadInput, PathNotFound, VersionForgotten
from ..format.hashing import ObjectId
from ..format.paths import SortedPathCheck, check_name
from ..format.pointer import SUFFIX
from ..format.tree import CUT_RULE, FileEntry, Hints, PageRef, TreeRoot
from ..format.treeroot import snapshot_id
from ..store.build import Builder
from ..store.files import LocalFile, iter_scan, local_file
from ..store.trees import TreeDiff, decoded_page
from ..store.treewriter import TreeWriter
from .core import Dataset, Staged, write_staged
from .git import ignore_path
from .groupscan import Seen, seen_groups, unchanged
from .lock import workspace_lock
from .statcache import (
    NO_PAGE,
    CacheWriter,
    Group,
    Row,
    groups_by_page,
    split_scan,
    stat_key,
)

if TYPE_CHECKING:
    from ..store.packwriter import PackWriter, UploadStats
    from .core import Workspace


@dataclass(frozen=True, slots=True)
class AddResult:
    dataset: Dataset
    staged: Staged
    diff: TreeDiff  # the first SHOWN paths of each kind of change
    counts: tuple[int, int, int]  # added, modified, removed


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
    tracked = ws.datasets()  # (one walk of the workspace for its pointer files)
    existing = {d.path: d for d in tracked.values()}
    if name is None:
        name = existing[rel].name if rel in existing else _default_name(rel, kind)
    check_name(name)
    known = tracked.get(name)
    if known is not None and known.path != rel:
        raise BadInput(f"dataset {name!r} already tracks {known.path}; pick another --name")
    if rel in existing and existing[rel].name != name:
        raise BadInput(f"{rel} is already tracked as {existing[rel].name!r}")
    _check_nesting(rel, existing)
    if known is not None and known.conflict is not None:
        raise BadInput(known.conflict)  # resolve it first: which version is this data after?
    ds = known or Dataset(name, rel, kind, None, None)
    if client is not None:
        from .cluster import add_on_cluster

        return add_on_cluster(ws, ds, absolute, client)
    reference = _reference(ws, ds)
    # the folder's groups are walked first, while no other thread runs (workers may fork)
    seen = _known_groups(ws, ds, reference, absolute, kind)
    store = ws.store
    bar = ws.progress(f"adding {rel}", None)
    try:
        with (
            store.new_writer(places=True) as writer,
            _Adder(ws, ds, reference, writer, bar) as adder,
        ):
            adder.run(absolute, kind, seen)
            stats = writer.finish()
            root, tree = adder.finish()
    finally:
        ws.progress.close()
    return _staged_result(ws, ds, root, tree, stats, adder.changes)


def _staged_result(
    ws: Workspace, ds: Dataset, root: TreeRoot, tree: ObjectId, stats: UploadStats, changes: Changes
) -> AddResult:
    """Stage ``root`` (unless it is what the pointer names already) and say so."""
    carried = ds.staged if ds.staged else None
    staged = Staged(
        ds.name,
        ds.path,
        ds.kind,
        tree,
        root.files,
        root.bytes,
        stats.new_bytes + (carried.new_bytes if carried else 0),
        stats.new_chunks + (carried.new_chunks if carried else 0),
        stats.new_objects + (carried.new_objects if carried else 0),
        carried.nonce if carried and carried.tree == tree else new_nonce(),
        root,
    )
    if ds.pointer is not None and ds.pointer.snapshot == tree:
        ws.unstage(ds.name)
    else:
        write_staged(ws.staged_path(ds.name), staged)
    ignore_path(ws.root, ds.path)
    return AddResult(ds, staged, changes.diff(), changes.counts)


KEPT_RUN = 256  # kept entries that wait for the files being read, rather than go behind them
SHOWN = 10_000  # paths of each kind of change an AddResult keeps (the counts are all)


class Changes:
    """What an add changed against the snapshot it started from: counts, and the first
    :data:`SHOWN` paths of each kind (a first add of a million files adds a million)."""

    def __init__(self) -> None:
        self.paths: dict[str, list[str]] = {"added": [], "removed": [], "modified": []}
        self.count = {"added": 0, "removed": 0, "modified": 0}

    def note(self, kind: str, path: str) -> None:
        self.count[kind] += 1
        if len(self.paths[kind]) < SHOWN:
            self.paths[kind].append(path)

    def diff(self) -> TreeDiff:
        return TreeDiff(*(tuple(self.paths[k]) for k in ("added", "removed", "modified")))

    @property
    def counts(self) -> tuple[int, int, int]:
        return self.count["added"], self.count["modified"], self.count["removed"]


@dataclass(frozen=True, slots=True)
class _Kept:
    """An entry kept with its old stat row, in the builder's queue in place of a file
    (it has what the builder reads of one: path, mode, size)."""

    path: str
    mode: int
    size: int
    key: bytes


class _Adder:
    """One add of a folder, streamed: the scan, in path order, is cut into the groups of
    the stat cache, one per page of the snapshot the add starts from (its reference).

    A group whose files have the paths and stat fields they had when that page was last
    known to describe them keeps the page as it is, unread, when the new tree is at a cut
    there (:meth:`TreeWriter.splice`). The others are compared file by file: a file whose
    stat fields are unchanged keeps its entry (read from the page), the rest are read and
    chunked. Memory grows with a page and a folder, not with the number of files."""

    def __init__(
        self,
        ws: Workspace,
        ds: Dataset,
        reference: TreeRoot | None,
        writer: PackWriter,
        bar: Any,
    ) -> None:
        self.ws, self.ds, self.reference = ws, ds, reference
        self.store = ws.store
        self.cache = ws.stat_cache(ds.name)
        self.out = CacheWriter(self.cache.path)
        self.tree = TreeWriter(self.store, ws.state)
        self.builder = Builder(self.store, writer, bar)
        self.checker = SortedPathCheck()
        self.changes = Changes()
        self.rows = self.out.rows()  # the stat rows of the page being cut
        self._base = ws.abs(ds.path) if ds.kind == "dir" else os.path.dirname(ws.abs(ds.path))
        self._cache_file: BinaryIO | None = None
        self._live: tuple[set[ObjectId], set[ObjectId]] | None = None

    def __enter__(self) -> _Adder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.tree.__exit__()
        if self._cache_file is not None:
            self._cache_file.close()
        if exc[0] is not None:
            self.out.abort()

    # -- the scan, group by group ----------------------------------------------------

    def run(self, absolute: str, kind: str, known: _Known | None) -> None:
        """Add the files under ``absolute``; ``known``: the stat cache's groups, and what
        the folder holds in each (:func:`_known_groups`)."""
        ref = self.reference
        if ref is None or not ref.pages:
            for f in self._checked(iter_scan(absolute, kind)):
                self.changes.note("added", f.path)
                self._feed(f, None, None)
        elif known is None:  # no usable groups: every page is compared file by file
            rows = self.cache.all_rows()
            bounds: list[str | None] = [p.last for p in ref.pages[:-1]] + [None]
            for i, files in split_scan(self._checked(iter_scan(absolute, kind)), bounds):
                self._compare(ref.pages[i], files, rows)
        else:
            groups, seen = known
            bounds = [p.last for p in ref.pages[:-1]] + [None]
            for i, page in enumerate(ref.pages):
                files = iter_scan(
                    absolute, kind, after=bounds[i - 1] if i else None, upto=bounds[i]
                )
                self._group(page, groups[i], seen[i], files, ref.cut == CUT_RULE)
        for item in self.builder.drain():
            self._settled(*item)

    def _checked(self, scan: Iterator[LocalFile]) -> Iterator[LocalFile]:
        for f in scan:
            self.checker.add(f.path)
            yield f

    def _group(
        self, page: PageRef, g: Group, seen: Seen, files: Iterator[LocalFile], same_rule: bool
    ) -> None:
        """One page's group: ``seen``, what the folder holds in its range; ``files``, a
        scan of that range (not started unless the page is not kept whole)."""
        if (
            unchanged(seen, g)
            and page.files == g.count
            and same_rule
            and self._still_stored(page, g)
        ):
            for item in self.builder.drain():
                self._settled(*item)
            if self.tree.at_cut:
                if self._cache_file is None:
                    self._cache_file = open(self.cache.path, "rb")  # noqa: SIM115
                self.tree.splice(page, g)
                return
        if g.exact and page.files == g.count and not seen.odd:
            if unchanged(seen, g) and self._patch(page, g, (), ()):
                return
            if seen.changed is not None and self._patch(page, g, seen.changed, seen.gone):
                return
        self._compare(page, self._checked(files), self.cache.rows(g))

    def _patch(
        self, page: PageRef, g: Group, changed: Iterable[LocalFile], gone: Iterable[str]
    ) -> bool:
        """An exact group whose files differ from its rows only as the walk found
        (:class:`~.groupscan.Seen`): ``changed``, the files to read (new, or stat fields
        changed), in path order; ``gone``, the rows with no file. The page's other entries
        are kept with their rows, in runs, and no file of theirs is looked at again: their
        names were checked by the walk. False, with nothing done, if the group's rows are
        not the page's paths one for one."""
        entries, hints = decoded_page(self.store, page)
        rows = self.cache.row_list(g)  # (an exact group's: the entries', one for one)
        if len(rows) != len(entries) or any(
            r[0] != e.path for r, e in zip(rows, entries, strict=True)
        ):  # not as the group says (a damaged cache): every file compared instead
            return False
        packs = self._live_sets()[1]
        all_live = all(p in packs for p in hints.packs)  # every hint usable as it is
        removed = set(gone)
        new = iter(changed)
        f = next(new, None)
        run = 0  # entries[run:i] are kept, not handed on yet
        for i, e in enumerate(entries):
            while f is not None and f.path < e.path:
                self._keep_run(entries, rows, run, i, hints, all_live)
                run = i
                self.changes.note("added", f.path)
                self._feed(f, None, None)
                f = next(new, None)
            digest = rows[i][2]
            if f is not None and f.path == e.path:
                fresh: LocalFile | None = f
                f = next(new, None)
            elif e.path in removed:
                fresh = None
            elif digest == e.hash:
                continue  # kept (its row is the entry's, one for one)
            else:  # not as an exact group says: the file is looked at, read if it must be
                fresh = local_file(self._base, e.path)
            self._keep_run(entries, rows, run, i, hints, all_live)
            run = i + 1
            if fresh is None:
                self.changes.note("removed", e.path)
            else:
                self._feed(fresh, None, e)
        self._keep_run(entries, rows, run, len(entries), hints, all_live)
        while f is not None:
            self.changes.note("added", f.path)
            self._feed(f, None, None)
            f = next(new, None)
        return True

    def _keep_run(
        self,
        entries: list[FileEntry],
        rows: list[tuple[str, bytes, bytes]],
        start: int,
        end: int,
        hints: Hints,
        all_live: bool,
    ) -> None:
        """Keep ``entries[start:end]`` as they are, with their rows as they were."""
        if start >= end:
            return
        if not all_live or (end - start < KEPT_RUN and not self.builder.idle):
            for i in range(start, end):  # one at a time, behind the files being read
                e = entries[i]
                places = hints if all_live else self._places(e, hints)
                if places is None:  # a chunk is not in a live pack: read the file again
                    local = local_file(self._base, e.path)
                    if local is None:
                        self.changes.note("removed", e.path)
                    else:
                        self._feed(local, None, e)
                    continue
                kept = _Kept(e.path, e.mode, e.size, rows[i][1])
                for item in self.builder.put(kept, e, (e, places or None)):  # type: ignore[arg-type]
                    self._settled(*item)
            return
        for item in self.builder.drain():  # the files before the run are in the tree first
            self._settled(*item)
        self.builder.progress.advance(sum(e.size for e in entries[start:end]))
        run = entries[start:end]
        taken = 0
        while taken < len(run):
            stop = self.tree.add_kept(run, taken, hints)
            self.rows.add_kept(run[taken:stop], rows[start + taken : start + stop])
            taken = stop
            if self.tree.at_cut:
                self.tree.attach(self.rows.pack())
                self.rows = self.out.rows()

    def _compare(self, page: PageRef, files: Iterable[LocalFile], rows: dict[str, Row]) -> None:
        """A page's files one by one: unchanged ones (by stat) keep their entries."""
        entries, hints = decoded_page(self.store, page)
        old = {e.path: e for e in entries}
        for f in files:
            e = old.pop(f.path, None)
            row = rows.get(f.path)
            places = None
            if e is not None and row is not None and (row.hash, row.key) == (e.hash, stat_key(f)):
                places = self._places(e, hints)
            if e is None:
                self.changes.note("added", f.path)
            if places is None:
                self._feed(f, None, e)
            else:
                self._feed(f, e, e, places or None)
        for gone in old:
            self.changes.note("removed", gone)

    def _feed(
        self,
        f: LocalFile,
        known: FileEntry | None,
        before: FileEntry | None,
        places: Hints | None = None,
    ) -> None:
        """A file for the new tree: ``known``, its entry if kept, and the places of its
        chunks if its old page's hints give them; ``before``, the entry of its path in the
        snapshot the add started from."""
        for item in self.builder.put(f, known, (before, places)):
            self._settled(*item)

    def _settled(
        self, f: LocalFile | _Kept, e: FileEntry, extra: tuple[FileEntry | None, Hints | None]
    ) -> None:
        before, places = extra
        if before is not None and (before.hash, before.mode) != (e.hash, e.mode):
            self.changes.note("modified", e.path)
        self.put(f, e, places)

    def put(self, f: LocalFile | _Kept, e: FileEntry, places: Hints | None = None) -> None:
        """The next entry of the new tree, with its file's stat row."""
        if isinstance(f, _Kept):
            self.rows.add_row(f.path, f.key, e.mode, e.hash)
        else:
            self.rows.add(f, e.mode, e.hash)
        if self.tree.add(e, places):
            self.tree.attach(self.rows.pack())
            self.rows = self.out.rows()

    def _places(self, e: FileEntry, hints: Hints) -> Hints | Literal[False] | None:
        """Whether a kept entry's chunks are stored, and where: its old page's ``hints``
        if each names a live pack (as a page kept whole is checked); else False if the
        index places each chunk in a live pack (the new page's hints are looked up there);
        else None: the file is read again. gc may have moved a chunk since the old page
        was written: then its old pack is condemned or gone, so not live."""
        packs = self._live_sets()[1]
        for cid, _ in e.chunks:
            hint = hints.get(cid)
            if hint is None or hint.pack not in packs:
                break
        else:
            return hints
        for cid, _ in e.chunks:
            loc = self.store.location(cid)
            if loc is None or loc.pack not in packs:
                return None
        return False

    def _live_sets(self) -> tuple[set[ObjectId], set[ObjectId]]:
        if self._live is None:
            self._live = (self.store.live("trees"), self.store.live("packs"))
        return self._live

    def _still_stored(self, page: PageRef, g: Group) -> bool:
        """Whether a page kept unread, and the packs it names, are stored and not condemned
        by gc (one listing of each, for the whole add)."""
        trees, packs = self._live_sets()
        if not g.packs:  # not known (a cache written by checkout or status): not checked
            return False
        return page.id in trees and all(ObjectId(p) in packs for p in g.packs)

    # -- the end ---------------------------------------------------------------------

    def finish(self) -> tuple[TreeRoot, ObjectId]:
        """Write the tree and the new stat cache (after the packs are stored)."""
        if self.tree.end():
            self.tree.attach(self.rows.pack())
        # each page's group of the new cache is written as the next page comes (the last
        # one's bound is None), so the pages' stat rows are never all held at once
        held: list[tuple[PageRef, tuple[str, ...] | None, Any]] = []

        def on_page(ref: PageRef, packs: tuple[str, ...] | None, extra: Any) -> None:
            if held:
                self._cache_group(*held.pop(), is_last=False)
            held.append((ref, packs, extra))

        root = self.tree.finish(on_page, self.builder.writer.places())
        tree = snapshot_id(root)
        if held:
            self._cache_group(*held.pop(), is_last=True)
        else:
            self.out.group(NO_PAGE, None, self.out.rows(), False)
        self.out.finish(tree, tree if self.out.all_exact else None)
        return root, tree

    def _cache_group(
        self, ref: PageRef, packs: tuple[str, ...] | None, extra: Any, is_last: bool
    ) -> None:
        last = None if is_last else ref.last
        if packs is None:  # kept as it was, with its group of the old cache
            assert self._cache_file is not None
            self.out.copy(self.cache, self._cache_file, extra, last)
        else:
            self.out.packed_group(bytes.fromhex(ref.content), last, extra, packs)


_Known = tuple[list[Group], list[Seen]]


def _known_groups(
    ws: Workspace, ds: Dataset, reference: TreeRoot | None, absolute: str, kind: str
) -> _Known | None:
    """The stat cache's groups if they follow the pages of ``reference``, with what the
    folder holds in each now (its names checked as the add's scan checks them: a group
    kept whole is not scanned again). None if there are no such groups."""
    if reference is None or not reference.pages:
        return None
    cache = ws.stat_cache(ds.name)
    groups = groups_by_page(cache, [(bytes.fromhex(p.content), p.last) for p in reference.pages])
    if groups is None:
        return None
    bounds: list[str | None] = [p.last for p in reference.pages[:-1]] + [None]
    counts = [g.count for g in groups]
    return groups, seen_groups(absolute, kind, bounds, counts, check=True, against=(cache, groups))


def _check_nesting(rel: str, existing: dict[str, Dataset]) -> None:
    for other in existing:
        if other != rel and (rel.startswith(other + "/") or other.startswith(rel + "/")):
            raise BadInput(f"{rel} overlaps the tracked dataset at {other}")


def new_nonce() -> str:
    """A commit's nonce: fixed when the data is added, so a retried commit is recognised.
    An add that stages the snapshot already staged keeps its nonce: after a commit that
    died between creating its record and writing the pointer file, add+commit run again
    finds that record instead of publishing the same snapshot a second time."""
    import uuid  # uuid and datetime are imported when a version is made, not by status

    return uuid.uuid4().hex


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
