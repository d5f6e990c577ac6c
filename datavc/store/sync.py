"""Copying versions from one store to another (push, pull, fetch): only what the
destination lacks moves, everything that moves is checked, and it is written in the
store's write order, so an interrupted copy leaves only unreferenced objects and a rerun
moves only the rest.

For each version: its record, its tree pages, and the chunks its pages name. Chunks move in
whole packs (a pack is immutable and named by its footer, so the same pack id in both
stores is the same bytes and page hints stay right): every pack of the source that holds a
chunk the destination does not hold (as a writer counts it: an index names it where the
pack's footer confirms it, in a pack no gc record condemns) is streamed, each run of chunks
decoded and checked against its chunk ids, its footer against the pack id, then stored
whole. Then, on the destination:

1. ``datavc.json``, created exclusively from the source's if absent (the same chunker
   parameters, so data deduplicates across stores); present with other chunker parameters,
   the copy is refused before anything is written.
2. the packs (listed once: one already there with its size and not condemned is not copied
   again), then one index of every chunk of those packs, from their footers;
3. the tree pages it lacks (listed once), checked against their ids;
4. the version records last, with their numbers, each the source's bytes, created
   exclusively. A destination record with the same ``tree`` and ``nonce`` is the same
   version (copied before); any other is a diverged version, and the copy stops: this is
   checked for every version before anything is written, and again by each create.
5. tags that name a copied version, created exclusively; a destination tag that differs is
   left as it is and reported.
6. run records that touch a version now in both stores and whose outputs the destination
   holds (:mod:`.runsync`), the source's bytes, created exclusively; a record under the
   same run id with other bytes is a diverged run (reported after the others are copied).

Tombstones (forgotten versions) are not copied. A gc record of the destination is obeyed as
writers obey it ("Garbage collection" in docs/FORMAT.md): a condemned pack or page is
deleted and written anew, never reused.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from ..errors import (
    BadInput,
    CorruptObject,
    Diverged,
    ObjectNotFound,
    StoreUnreachable,
    UsageError,
)
from ..format.hashing import ChunkId, ObjectId
from ..format.packfile import PACK_MAGIC, Location, LocationTable, PackEntry, parse_footer
from ..format.record import Forgotten, VersionRecord, decode_version
from ..format.storeconfig import CONFIG_KEY
from ..format.tree import PageRef
from .backend import ObjectInfo
from .chunkstore import ChunkStore
from .files import NoProgress, Progress
from .gc import Condemned, read_condemned
from .packs import read_footer
from .reader import decode_run, group
from .runsync import copy_runs, diverged_error
from .trees import in_order, load_page
from .versions import read_tag, version_numbers

WORKERS = 4  # packs copied at once (each holds at most one 8 MiB run and its decoded chunks)
CREATE_RETRIES = 4
_TAG = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
MAX_DIVERGED_NAMED = 5


@dataclass
class SyncReport:
    """What a copy did. ``bytes_written`` counts every byte stored in the destination."""

    created_store: bool = False
    copied: list[str] = field(default_factory=list)  # NAME@vN
    present: list[str] = field(default_factory=list)  # in the destination already
    forgotten_there: list[str] = field(default_factory=list)  # a tombstone in the destination
    forgotten_here: list[str] = field(default_factory=list)  # tombstones: never copied
    packs_copied: int = 0
    pack_bytes_copied: int = 0
    packs_present: int = 0  # needed, and found stored by an earlier, interrupted copy
    pages_copied: int = 0
    indexes_written: int = 0
    tags_copied: list[str] = field(default_factory=list)
    runs_copied: int = 0  # run records created in the destination
    runs_present: int = 0  # run records of the copied versions there already
    runs_not_copied: int = 0  # an output of each is not in the destination
    bytes_written: int = 0
    notes: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, object]:
        return {
            "created_store": self.created_store,
            "versions_copied": self.copied,
            "versions_present": self.present,
            "versions_forgotten_there": self.forgotten_there,
            "versions_forgotten_here": self.forgotten_here,
            "packs_copied": self.packs_copied,
            "pack_bytes_copied": self.pack_bytes_copied,
            "packs_present": self.packs_present,
            "pages_copied": self.pages_copied,
            "indexes_written": self.indexes_written,
            "tags_copied": self.tags_copied,
            "runs_copied": self.runs_copied,
            "runs_present": self.runs_present,
            "runs_not_copied": self.runs_not_copied,
            "bytes_written": self.bytes_written,
            "notes": self.notes,
        }


@dataclass(frozen=True, slots=True)
class _Source:
    """A version to copy: its record as the source stores it (bytes), parsed."""

    data: bytes
    record: VersionRecord

    @property
    def label(self) -> str:
        return f"{self.record.name}@v{self.record.version}"


def copy_versions(
    src: ChunkStore,
    dst: ChunkStore,
    wanted: Iterable[tuple[str, int]],
    labels: tuple[str, str] = ("the source store", "the destination store"),
    progress: Callable[[int], Progress] | None = None,
) -> SyncReport:
    """Copy versions (name, number) of ``src`` that ``dst`` lacks (see the module
    docstring). ``labels`` name the two stores in messages; ``progress`` makes a sink for
    the pack bytes to copy. Raises :class:`Diverged`, before writing anything, if ``dst``
    holds another version under one of the numbers."""
    run = _Copy(src, dst, labels, progress or (lambda total: NoProgress()))
    written = dst.backend.stats.bytes_written
    try:
        run.copy(list(dict.fromkeys(wanted)))
    finally:
        run.report.bytes_written = dst.backend.stats.bytes_written - written
    return run.report


class _Copy:
    def __init__(
        self,
        src: ChunkStore,
        dst: ChunkStore,
        labels: tuple[str, str],
        progress: Callable[[int], Progress],
    ) -> None:
        self.src = src
        self.dst = dst
        self.here, self.there = labels
        self.progress = progress
        self.report = SyncReport()
        self.condemned = Condemned(frozenset(), frozenset(), (), {})
        self.dst_packs: dict[str, ObjectInfo] = {}
        self.their_trees: dict[str, ObjectId] = {}  # of diverged versions, by NAME@vN
        self.present: list[_Source] = []  # versions the destination holds already

    def copy(self, wanted: list[tuple[str, int]]) -> None:
        self.ensure_store()
        todo = self.plan(wanted)
        if todo or self.present:
            # The versions there already are checked too: a pack or page the destination
            # lost since is copied again (what a push is for: the remote holds them whole).
            pages = self.pages_of(todo + self.present)
            self.condemned = read_condemned(self.dst)
            missing = self.missing_chunks(pages)
            self.store_packs(self.choose_packs(missing))
            self.store_pages(pages)
            self.publish(todo)
        self.copy_tags(wanted)
        self.copy_runs(todo)

    # -- 1. the destination store ---------------------------------------------------

    def ensure_store(self) -> None:
        config = self.src.config
        if self.dst.backend.create_exclusive(CONFIG_KEY, config.encode()):
            self.report.created_store = True
            return
        theirs = self.dst.config
        if theirs.chunker != config.chunker:
            raise UsageError(
                f"{self.there} chunks data with other parameters than {self.here} "
                f"({theirs.chunker.to_json()} against {config.chunker.to_json()}): "
                "copied versions would not deduplicate against its data; nothing was copied"
            )

    # -- the versions: which to copy, which are there, which diverged ---------------

    def plan(self, wanted: list[tuple[str, int]]) -> list[_Source]:
        """The versions to copy; refuses (nothing written) if any has diverged."""
        todo, diverged = [], []
        there: dict[str, list[int]] = {}
        for name, number in wanted:
            source = self.read_source(name, number)
            if source is None:
                continue
            numbers = there.setdefault(name, version_numbers(self.dst, name))
            if number not in numbers:
                todo.append(source)
                continue
            state = self.compare(source)
            if state == "missing":  # listed, then gone: copy it
                todo.append(source)
            elif state == "diverged":
                diverged.append(source)
            elif state == "forgotten":
                self.report.forgotten_there.append(source.label)
            else:
                self.report.present.append(source.label)
                self.present.append(source)
        if diverged:
            raise self.diverged(diverged)
        return todo

    def read_source(self, name: str, number: int) -> _Source | None:
        """The source's record of ``name@v{number}``; None for a tombstone."""
        key = f"versions/{name}/{number}.json"
        data = self.src.backend.read(key)
        rec = decode_version(data, key)
        if rec.name != name or rec.version != number:
            raise CorruptObject(key, f"it holds {rec.name}@v{rec.version}")
        if isinstance(rec, Forgotten):
            self.report.forgotten_here.append(f"{name}@v{number}")
            return None
        return _Source(data, rec)

    def compare(self, source: _Source) -> str:
        """How the destination holds this version: "same", "forgotten" (the same version,
        forgotten there), "diverged" (another version under its number) or "missing"."""
        rec = source.record
        key = f"versions/{rec.name}/{rec.version}.json"
        try:
            theirs = decode_version(self.dst.backend.read(key), key)
        except ObjectNotFound:
            return "missing"
        if (theirs.name, theirs.version) != (rec.name, rec.version):
            raise CorruptObject(key, f"it holds {theirs.name}@v{theirs.version}")
        if (theirs.tree, theirs.nonce) != (rec.tree, rec.nonce):
            self.their_trees[source.label] = theirs.tree
            return "diverged"
        return "forgotten" if isinstance(theirs, Forgotten) else "same"

    def diverged(self, sources: list[_Source]) -> Diverged:
        labels = tuple(s.label for s in sources)
        shown = ", ".join(labels[:MAX_DIVERGED_NAMED])
        more = len(labels) - MAX_DIVERGED_NAMED
        if more > 0:
            shown += f" and {more} more"
        first = sources[0]
        theirs = self.their_trees.get(first.label, "")
        return Diverged(
            f"{shown}: {self.here} and {self.there} hold different versions under the same "
            f"number ({first.label} is snapshot {first.record.tree[:12]} in one, "
            f"{theirs[:12]} in the other); a version number names one version, so no "
            "version was copied or overwritten",
            labels,
        )

    # -- 2. chunks and packs --------------------------------------------------------

    def pages_of(self, todo: list[_Source]) -> dict[ObjectId, PageRef]:
        pages: dict[ObjectId, PageRef] = {}
        for source in todo:
            for page in source.record.root.pages:
                pages.setdefault(page.id, page)
        return pages

    def missing_chunks(self, pages: dict[ObjectId, PageRef]) -> list[ChunkId]:
        """The chunks the pages name that the destination does not hold (read and checked
        pages of the source; a writer's test of the destination's index and footers)."""
        needed: dict[ChunkId, None] = {}
        load = functools.partial(load_page, self.src, hints=False)  # read and checked
        for entries in in_order(self.src, list(pages.values()), load):
            for e in entries:
                needed.update(dict.fromkeys(c for c, _ in e.chunks))
        self.dst.footers().condemned = self.condemned.packs
        self.dst.load_index()
        return [c for c in needed if not self.dst.has_chunk(c)]

    def choose_packs(self, missing: list[ChunkId]) -> dict[ObjectId, ObjectInfo]:
        """Source packs that together hold every missing chunk, as their footers confirm:
        for a chunk in several, one the destination already has (an interrupted copy
        stored it), else one chosen already, else the first the index names."""
        if not missing:
            return {}
        self.src.load_index()
        listed = {ObjectId(i.name): i for i in self.src.backend.list_detail("packs")}
        self.dst_packs = {i.name: i for i in self.dst.backend.list_detail("packs")}
        footers = self.src.footers()
        chosen: dict[ObjectId, ObjectInfo] = {}
        for cid in missing:
            places = [p.pack for p in self.src.locations(cid) if footers.holds(cid, p)]
            places = [p for p in places if p in listed]
            if not places:
                raise ObjectNotFound(
                    f"chunk {cid.hex()} (a version to copy needs it; it is in no pack of "
                    f"{self.here}: run datavc fsck there)"
                )
            pick = next((p for p in places if self.stored_there(p, listed[p])), None)
            pick = pick or next((p for p in places if p in chosen), places[0])
            chosen[pick] = listed[pick]
        return dict(sorted(chosen.items()))

    def stored_there(self, pack: ObjectId, info: ObjectInfo) -> bool:
        """Whether the destination has this pack whole (its size) and no gc will take it."""
        theirs = self.dst_packs.get(pack)
        ok_size = theirs is not None and theirs.size == info.size
        return ok_size and pack not in self.condemned.packs

    def store_packs(self, chosen: dict[ObjectId, ObjectInfo]) -> None:
        """Copy the chosen packs the destination lacks (a few at once), then write one
        index of every chunk of every chosen pack: packs before index."""
        if not chosen:
            return
        to_copy = [p for p, i in chosen.items() if not self.stored_there(p, i)]
        self.report.packs_present = len(chosen) - len(to_copy)
        bar = self.progress(sum(chosen[p].size for p in to_copy))
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(WORKERS, thread_name_prefix="datavc-sync") as pool:
            work = {
                p: pool.submit(self.copy_pack, p, i.size, bar)
                if p in to_copy
                else pool.submit(self.entries, p, i.size)
                for p, i in chosen.items()
            }
            entries = {p: f.result() for p, f in work.items()}
        self.report.packs_copied = len(to_copy)
        self.report.pack_bytes_copied = sum(chosen[p].size for p in to_copy)
        table = LocationTable()
        for pack, rows in entries.items():
            for e in rows:
                loc = Location(pack, e.offset, e.stored_length, e.plain_length, e.codec)
                table.put(e.chunk, loc)
        self.dst.write_object("index", table.encode_index())
        self.report.indexes_written += 1

    def entries(self, pack: ObjectId, size: int) -> list[PackEntry]:
        """A source pack's footer entries (checked against the pack id)."""
        key = f"packs/{pack}"
        return parse_footer(read_footer(self.src.backend, pack, size), size, key)

    def copy_pack(self, pack: ObjectId, size: int, bar: Progress) -> list[PackEntry]:
        """Stream a source pack into a local temporary file, checking its magic, every
        chunk against its id and its footer against the pack id, then store it whole in
        the destination. Returns its footer entries."""
        key = f"packs/{pack}"
        footer = read_footer(self.src.backend, pack, size)
        entries = parse_footer(footer, size, key)
        import tempfile

        fd, path = tempfile.mkstemp(prefix=".tmp-pack-", dir=self.dst.backend.spool_dir())
        try:
            with os.fdopen(fd, "wb") as out:
                head = self.src.backend.read_range(key, 0, len(PACK_MAGIC))
                if head != PACK_MAGIC:
                    raise CorruptObject(key, "not a datavc pack (no magic)")
                out.write(head)
                located = [
                    (e.chunk, Location(pack, e.offset, e.stored_length, e.plain_length, e.codec))
                    for e in entries
                ]
                for run in group(located):
                    first, last = run[0][1], run[-1][1]
                    blob = self.src.backend.read_range(
                        key, first.offset, last.offset + last.stored_length
                    )
                    decode_run(run, blob)  # every chunk checked against its id
                    out.write(blob)
                    bar.advance(len(blob))
                out.write(footer)
            if os.path.getsize(path) != size:
                raise CorruptObject(key, f"copied {os.path.getsize(path)} bytes, not {size}")
            if pack in self.condemned.packs:  # gc will delete the old one: store it anew
                with contextlib.suppress(ObjectNotFound):
                    self.dst.backend.delete(key)
            self.dst.backend.put_path(key, path, move=True)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        return entries

    # -- 3. pages -------------------------------------------------------------------

    def store_pages(self, pages: dict[ObjectId, PageRef]) -> None:
        there = {i.name for i in self.dst.backend.list_detail("trees")}
        for pid in pages:
            condemned = pid in self.condemned.trees
            if pid in there and not condemned:
                continue
            data = self.src.read_object("trees", pid)  # checked against its id
            if condemned:
                with contextlib.suppress(ObjectNotFound):
                    self.dst.backend.delete(f"trees/{pid}")
            self.dst.backend.write(f"trees/{pid}", data)
            self.report.pages_copied += 1

    # -- 4. version records ---------------------------------------------------------

    def publish(self, todo: list[_Source]) -> None:
        """Create each record exclusively under its number; one found there already must
        be the same version (a concurrent copy, or a lost response)."""
        diverged = []
        for source in todo:
            rec = source.record
            key = f"versions/{rec.name}/{rec.version}.json"
            if self.create(key, source.data):
                self.report.copied.append(source.label)
                continue
            state = self.compare(source)
            if state == "diverged":
                diverged.append(source)
            elif state == "missing":
                raise StoreUnreachable(
                    self.dst.backend.shown_url, f"{key} exists and cannot be read"
                )
            else:
                self.report.present.append(source.label)
                self.present.append(source)
        if diverged:
            raise self.diverged(diverged)

    def create(self, key: str, data: bytes) -> bool:
        for attempt in range(CREATE_RETRIES):
            try:
                return self.dst.backend.create_exclusive(key, data)
            except StoreUnreachable:
                if attempt == CREATE_RETRIES - 1:
                    raise
                time.sleep(0.2 * 2**attempt)
        return False

    # -- 5. tags --------------------------------------------------------------------

    def copy_tags(self, wanted: Sequence[tuple[str, int]]) -> None:
        """Tags of the source that name a version now in both stores."""
        done = set(self.report.copied) | set(self.report.present)
        for name in sorted({n for n, _ in wanted}):
            for tag in self.src.backend.list(f"tags/{name}"):
                if not _TAG.fullmatch(tag) or ".." in tag:
                    continue
                self.copy_tag(name, tag, done)

    def copy_tag(self, name: str, tag: str, done: set[str]) -> None:
        try:
            number = read_tag(self.src, name, tag)
            if number is None or f"{name}@v{number}" not in done:
                return
            theirs = read_tag(self.dst, name, tag)
            if theirs is None and self.dst.backend.create_exclusive(
                f"tags/{name}/{tag}", f"{number}\n".encode()
            ):
                self.report.tags_copied.append(f"{name}@{tag}")
                return
            theirs = read_tag(self.dst, name, tag)
        except BadInput as err:
            self.report.notes.append(f"tag {name}@{tag} not copied: {err}")
            return
        if theirs != number:
            self.report.notes.append(
                f"tag {name}@{tag} names v{theirs} in {self.there} and v{number} in "
                f"{self.here}: left as it is"
            )

    # -- 6. run records ---------------------------------------------------------------

    def copy_runs(self, todo: list[_Source]) -> None:
        """The run records of the versions now in both stores (see :mod:`.runsync`)."""
        done = set(self.report.copied) | set(self.report.present)
        versions = {
            (s.record.name, s.record.version): s.record.tree
            for s in [*todo, *self.present]
            if s.label in done
        }
        runs = copy_runs(self.src, self.dst, versions, (self.here, self.there))
        self.report.runs_copied = len(runs.copied)
        self.report.runs_present = runs.present
        self.report.runs_not_copied = runs.not_copied
        self.report.notes += runs.notes
        error = diverged_error(runs, (self.here, self.there))
        if error is not None:
            raise error
