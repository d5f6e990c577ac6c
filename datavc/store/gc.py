"""gc: delete what no live version needs, in two phases, so that no writer loses data.

A run marks what is live: every chunk and page of every version that is not forgotten, and
of every tree page younger than the grace period (an add in flight, or staged and not
committed yet). Then:

1. **Condemn.** Packs and pages that are garbage now, and older than the grace period, are
   listed in a new gc record (``gc/<id>``), written before anything is deleted. A pack whose
   live chunks fill less than half of it is *repacked* first: its live chunks are copied
   into new packs (with their index), after which the old pack is garbage too.
2. **Delete.** Objects listed by gc records older than the grace period that are still
   garbage (and still old: a writer that stores the same object again refreshes it) are
   deleted: first every index that names a pack to delete is replaced by one that lists
   only its chunks in packs that stay, then the packs and pages, then the records.

Writers read the gc records before an upload and never count a chunk in a condemned pack as
stored (they store it again, refreshing a pack of the same id), and a commit refuses a
staged snapshot whose pages are condemned or gone. docs/FORMAT.md ("Garbage collection")
has the argument for why a concurrent add cannot lose data.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import DatavcError, IntegrityError, ObjectNotFound, UsageError
from ..format.gcrecord import MAX_LISTED, GcRecord, decode_gc_record, encode_gc_record
from ..format.hashing import ChunkId, ObjectId, is_object_id, object_id
from ..format.packfile import Location, LocationTable, PackEntry, decode_index
from ..format.paths import valid_name
from ..format.record import VersionRecord
from ..format.tree import decode_page
from .backend import ObjectInfo
from .chunkstore import ChunkStore
from .packs import footer_entries
from .reader import decode_run, group
from .versions import read_entry, version_numbers

DEFAULT_GRACE = 24 * 3600.0
CLOCK_STEP = 2.0  # stores date objects to the second (S3): an object written during a run
# must not look older than the run's start, so "old" means older than the cutoff by this much
REPACK_BELOW = 0.5  # a pack whose live chunks fill less than this fraction is repacked


@dataclass(frozen=True, slots=True)
class Condemned:
    """What the gc records in a store list, with the records themselves."""

    packs: frozenset[ObjectId]
    trees: frozenset[ObjectId]
    records: tuple[tuple[ObjectInfo, GcRecord], ...]
    since: dict[ObjectId, float]  # when the newest record listing an object was written
    damaged: tuple[ObjectInfo, ...] = ()  # records that cannot be read

    def at_risk(self, oid: ObjectId, info: ObjectInfo | None) -> bool:
        """Whether gc may delete ``oid`` (present as ``info``, or missing): it is gone, or
        condemned and not written anew since (writing it again makes it young)."""
        if info is None:
            return True
        if oid not in self.since:
            return False
        return info.mtime is None or info.mtime <= self.since[oid]


def read_condemned(store: ChunkStore) -> Condemned:
    """Every gc record of the store (writers read them before an upload)."""
    records = []
    damaged = []
    for info in store.backend.list_detail("gc"):
        if not is_object_id(info.name):
            continue  # a temporary file, or a stray: fsck's business
        try:
            data = store.backend.read(f"gc/{info.name}")
            if object_id(data) != info.name:
                raise IntegrityError(f"gc/{info.name}", info.name, object_id(data))
            records.append((info, decode_gc_record(data, f"gc/{info.name}")))
        except (IntegrityError, ObjectNotFound):
            # Skipped, safely: what it lists is never deleted (no gc can read the list), so
            # a writer may reuse it. fsck names it; gc deletes it once old.
            damaged.append(info)
    packs = frozenset(p for _, r in records for p in r.packs)
    trees = frozenset(t for _, r in records for t in r.trees)
    since: dict[ObjectId, float] = {}
    for info, r in records:
        when = info.mtime if info.mtime is not None else float("inf")
        for oid in (*r.packs, *r.trees):
            since[oid] = max(since.get(oid, when), when)
    return Condemned(packs, trees, tuple(records), since, tuple(damaged))


@dataclass
class GcReport:
    live_versions: int = 0
    forgotten_versions: int = 0
    live_bytes: int = 0  # of the packs kept
    condemned_packs: int = 0
    condemned_bytes: int = 0
    condemned_pages: int = 0
    repacked_packs: int = 0
    repacked_bytes: int = 0  # live bytes copied out of them
    deleted_packs: int = 0
    deleted_bytes: int = 0
    deleted_pages: int = 0
    replaced_indexes: int = 0
    deleted_leftovers: int = 0
    young_pages: int = 0  # no live version names them, but they are younger than the grace
    waiting: int = 0  # condemned, to be deleted once their record is older than the grace
    notes: list[str] = field(default_factory=list)


class _Gc:
    def __init__(
        self, store: ChunkStore, grace: float, dry_run: bool, tick: Callable[[str], None]
    ) -> None:
        self.store = store
        self.backend = store.backend
        self.grace = grace
        self.dry_run = dry_run
        self.tick = tick
        self.report = GcReport()
        self.start = time.time()
        self.cutoff = self.start - grace - CLOCK_STEP
        self.needed: set[ChunkId] = set()
        self.live_pages: set[ObjectId] = set()
        self.pages: dict[ObjectId, ObjectInfo] = {}
        self.packs: dict[ObjectId, ObjectInfo] = {}
        self.entries: dict[ObjectId, list[PackEntry]] = {}
        self.garbage_packs: set[ObjectId] = set()
        self.garbage_pages: set[ObjectId] = set()
        self.records_written: set[str] = set()

    def old(self, info: ObjectInfo) -> bool:
        return info.mtime is not None and info.mtime <= self.cutoff

    # -- mark -----------------------------------------------------------------------

    def mark(self) -> None:
        top = {i.name for i in self.backend.list_detail("")}
        clash = sorted(top & {"packs", "index", "trees", "versions", "tags", "gc"})
        if clash:
            raise UsageError(
                f"gc stopped before deleting anything: {clash[0]} is a file where the store "
                "has a folder; run datavc fsck"
            )
        records = 0
        for name in self.backend.list("versions"):
            if not valid_name(name):
                continue
            for n in version_numbers(self.store, name):
                records += 1
                rec = read_entry(self.store, name, n)  # a damaged record stops gc
                if not isinstance(rec, VersionRecord):
                    self.report.forgotten_versions += 1
                    continue
                self.report.live_versions += 1
                for page in rec.root.pages:
                    self.mark_page(page.id, page.content, files=page.files)
        if records == 0 and any(is_object_id(n) for n in self.backend.list("packs")):
            raise UsageError(
                "gc stopped before deleting anything: the store has packs but no version "
                "record at all (is versions/ missing?); run datavc fsck"
            )
        self.pages = {ObjectId(i.name): i for i in self.backend.list_detail("trees")}
        for pid, info in self.pages.items():
            # An add in flight, or staged: live (one that cannot be read is no page a
            # published version needs: a commit reads its pages before it publishes).
            young = is_object_id(pid) and not self.old(info) and pid not in self.live_pages
            if young and self.mark_page(pid, None, must=False):
                self.report.young_pages += 1
        self.garbage_pages = {
            p
            for p, info in self.pages.items()
            if is_object_id(p) and p not in self.live_pages and self.old(info)
        }

    def mark_page(
        self, pid: ObjectId, content: ObjectId | None, must: bool = True, files: int | None = None
    ) -> bool:
        if pid in self.live_pages:
            return True
        self.tick(f"trees/{pid}")
        try:
            data = self.store.read_object("trees", pid)
            entries, _ = decode_page(data, f"trees/{pid}", content, hints=False, files=files)
        except DatavcError as err:
            if not must:
                self.report.notes.append(f"trees/{pid}: young, and cannot be read ({err})")
                return False
            raise UsageError(
                f"gc stopped before deleting anything: a live tree page cannot be read ({err}); "
                "run datavc fsck"
            ) from None
        self.live_pages.add(pid)
        for e in entries:
            self.needed.update(c for c, _ in e.chunks)
        return True

    # -- sweep ----------------------------------------------------------------------

    def classify_packs(self) -> list[ObjectId]:
        """Sort packs into kept, garbage and to repack (returned)."""
        repack = []
        for info in self.backend.list_detail("packs"):
            if info.name.startswith(".tmp-"):
                self.leftover("packs", info)
                continue
            if not is_object_id(info.name):
                continue
            pack = ObjectId(info.name)
            self.packs[pack] = info
            if not self.old(info):
                continue  # written by an add in flight: not ours to judge
            self.tick(f"packs/{pack}")
            try:
                entries = footer_entries(self.backend, pack, info.size)
            except (IntegrityError, ObjectNotFound) as err:
                self.report.notes.append(f"packs/{pack}: kept, its footer is damaged ({err})")
                continue
            self.entries[pack] = entries
            blobs = sum(e.stored_length for e in entries)
            live = sum(e.stored_length for e in entries if e.chunk in self.needed)
            if live == 0:
                self.garbage_packs.add(pack)
            elif live < REPACK_BELOW * blobs:  # some chunks are garbage, most of its bytes
                repack.append(pack)
            else:
                self.report.live_bytes += info.size
        return repack

    def repack(self, packs: list[ObjectId], condemned: Condemned) -> None:
        """Copy the live chunks of ``packs`` into new packs, then count them as garbage."""
        if not packs:
            return
        self.store.load_index()
        footers = self.store.footers()
        leaving = set(packs) | self.garbage_packs

        def kept_elsewhere(cid: ChunkId) -> bool:
            """Whether an index lists the chunk in a pack that stays, where its footer
            agrees (a pack no index names does not count: readers could not find it)."""
            return any(
                loc.pack not in leaving and loc.pack in self.packs and footers.holds(cid, loc)
                for loc in self.store.locations(cid)
            )

        keep = {
            e.chunk
            for pack in packs
            for e in self.entries[pack]
            if e.chunk in self.needed and kept_elsewhere(e.chunk)
        }
        if self.dry_run:
            for pack in packs:
                self.report.repacked_packs += 1
                self.report.repacked_bytes += sum(
                    e.stored_length for e in self.entries[pack] if e.chunk in self.needed
                )
            self.garbage_packs.update(packs)
            return
        with self.store.new_writer() as writer:
            # the chunks to move count as stored nowhere but in packs that stay
            footers.condemned = footers.condemned | frozenset(leaving)
            for pack in packs:
                self.tick(f"packs/{pack}")
                wanted = [
                    (e.chunk, Location(pack, e.offset, e.stored_length, e.plain_length, e.codec))
                    for e in self.entries[pack]
                    if e.chunk in self.needed and e.chunk not in keep
                ]
                for run in group(wanted):
                    first, last = run[0][1], run[-1][1]
                    blob = self.backend.read_range(
                        f"packs/{pack}", first.offset, last.offset + last.stored_length
                    )
                    for (cid, _), plain in zip(run, decode_run(run, blob), strict=True):
                        writer.add(cid, plain)
                        keep.add(cid)
                self.report.repacked_packs += 1
                self.report.repacked_bytes += sum(loc.stored_length for _, loc in wanted)
            writer.finish()
        # A pack written again whole (every chunk of it live after all: the same bytes give
        # the same id) stays.
        self.garbage_packs.update(p for p in packs if p not in footers.stored)

    def condemn(self, condemned: Condemned) -> None:
        packs = sorted(self.garbage_packs - condemned.packs)
        trees = sorted(self.garbage_pages - condemned.trees)
        self.report.condemned_packs = len(self.garbage_packs)
        self.report.condemned_bytes = sum(self.packs[p].size for p in self.garbage_packs)
        self.report.condemned_pages = len(self.garbage_pages)
        if self.dry_run:
            return
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        while packs or trees:
            record = GcRecord(stamp, tuple(packs[:MAX_LISTED]), tuple(trees[:MAX_LISTED]))
            packs, trees = packs[MAX_LISTED:], trees[MAX_LISTED:]
            data = encode_gc_record(record)
            name = object_id(data)
            self.backend.write(f"gc/{name}", data)
            self.records_written.add(name)

    def delete(self) -> None:
        """Delete what gc records older than the grace period list and is still garbage."""
        condemned = read_condemned(self.store)
        cutoff = time.time() - self.grace - CLOCK_STEP

        def is_ripe(info: ObjectInfo) -> bool:  # with no grace, this run's own records too
            if self.grace == 0 and info.name in self.records_written:
                return True
            return info.mtime is not None and info.mtime <= cutoff

        ripe = [(i, r) for i, r in condemned.records if is_ripe(i)]
        self.report.waiting = sum(
            len(r.packs) + len(r.trees) for i, r in condemned.records if not is_ripe(i)
        )
        # Listed again just before deleting: a writer that stored an object anew since
        # the marking (the same bytes give the same id) has made it young.
        fresh = {i.name: i for i in self.backend.list_detail("packs")}
        packs = {
            p
            for _, r in ripe
            for p in r.packs
            if p in self.garbage_packs and p in fresh and self.old(fresh[p])
        }
        fresh = {i.name: i for i in self.backend.list_detail("trees")}
        trees = {
            t
            for _, r in ripe
            for t in r.trees
            if t in self.garbage_pages and t in fresh and self.old(fresh[t])
        }
        self.replace_indexes(packs)
        for pack in sorted(packs):
            with contextlib.suppress(ObjectNotFound):
                self.backend.delete(f"packs/{pack}")
                self.report.deleted_packs += 1
                self.report.deleted_bytes += self.packs[pack].size
            if self.store.cache is not None:
                with contextlib.suppress(DatavcError):
                    self.store.cache.delete(f"packs/{pack}")
        for pid in sorted(trees):
            with contextlib.suppress(ObjectNotFound):
                self.backend.delete(f"trees/{pid}")
                self.report.deleted_pages += 1
        for info, _ in ripe:
            with contextlib.suppress(ObjectNotFound):
                self.backend.delete(f"gc/{info.name}")

    def replace_indexes(self, packs: set[ObjectId]) -> None:
        """Before ``packs`` are deleted: every index naming one is replaced by an index of
        its other entries (one new index for all of them), written first."""
        if not packs:
            return
        stale: list[str] = []
        kept = LocationTable()
        for name in self.backend.list("index"):
            if not is_object_id(name):
                continue
            places = decode_index(self.store.read_object("index", name), f"index/{name}")
            if not any(loc.pack in packs for loc in places.values()):
                continue
            stale.append(name)
            for cid, loc in places.items():
                if loc.pack not in packs:
                    kept.put(cid, loc)
        if len(kept):
            self.store.write_object("index", b"".join(kept.encode_index()))
        for name in stale:
            if f"index/{name}" in self.store.written:
                continue  # the new index has the same entries, so the same id
            with contextlib.suppress(ObjectNotFound):
                self.backend.delete(f"index/{name}")
            if self.store.cache is not None:
                with contextlib.suppress(DatavcError):
                    self.store.cache.delete(f"index/{name}")
            self.report.replaced_indexes += 1

    def leftover(self, folder: str, info: ObjectInfo) -> None:
        """A temporary file of an interrupted write, older than the grace period: deleted."""
        if self.old(info) and not self.dry_run:
            with contextlib.suppress(ObjectNotFound):
                self.backend.delete(f"{folder}/{info.name}")
                self.report.deleted_leftovers += 1


def gc(
    store: ChunkStore,
    grace: float = DEFAULT_GRACE,
    dry_run: bool = False,
    tick: Callable[[str], None] = lambda key: None,
) -> GcReport:
    """Collect garbage (see the module docstring). Raises if a live version cannot be read
    whole: nothing is deleted then."""
    _ = store.config  # a store this datavc can write
    run = _Gc(store, grace, dry_run, tick)
    condemned = read_condemned(store)
    run.mark()
    repack = run.classify_packs()
    run.repack(repack, condemned)
    run.condemn(condemned)
    for folder in ("index", "trees"):
        for info in store.backend.list_detail(folder):
            if info.name.startswith(".tmp-"):
                run.leftover(folder, info)
    if not dry_run:
        run.delete()
    return run.report
