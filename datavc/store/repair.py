"""repair: put back what fsck finds missing, from what the store and local files still hold.

1. Every pack footer, index, version record and tree page is checked, and every chunk of
   every pack is read and checked (as ``fsck --read-data``).
2. Chunks that some version needs and no sound pack holds are *missing*. Local files (the
   workspace's datasets, and any paths given) are cut as ``add`` cuts them, and each chunk
   that is missing is stored again; so is each sound chunk of a damaged pack that a
   version needs and no sound pack holds elsewhere (salvage).
3. Indexes are rebuilt from footers: one new index lists every chunk of a sound pack that
   no sound index lists; then every index that is damaged, or names a missing pack or a
   place its footer does not confirm, is deleted.
4. Damaged packs (footer, or any chunk) are deleted once what they held that a version
   needs is stored elsewhere; a damaged pack that still holds something needed is kept.

The report says what was restored, and which versions and files still lack data.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import DatavcError, IntegrityError, ObjectNotFound
from ..format.chunker import Chunker
from ..format.hashing import ChunkId, ObjectId, chunk_id, is_object_id
from ..format.packfile import Location, LocationTable, decode_index
from .build import file_chunks
from .check import _Check
from .chunkstore import ChunkStore
from .fsckreport import Report
from .reader import decode_run

if TYPE_CHECKING:
    from .packwriter import PackWriter


@dataclass
class RepairReport:
    restored_chunks: int = 0
    restored_bytes: int = 0
    salvaged_chunks: int = 0
    files_read: int = 0
    index_entries: int = 0  # in the index written from footers
    deleted_indexes: int = 0
    deleted_packs: int = 0
    kept_damaged: list[str] = field(default_factory=list)
    missing: Report = field(default_factory=Report)  # what is still missing, as fsck says

    @property
    def ok(self) -> bool:
        return self.missing.ok


class _Repair(_Check):
    """fsck's checks, keeping what repair needs: which chunks are missing, which indexes
    are unsound."""

    def __init__(self, store: ChunkStore, tick: Callable[[str], None]) -> None:
        super().__init__(store, Report(), tick)
        self.bad_indexes: set[str] = set()
        self.good_indexed: set[ChunkId] = set()  # listed by an index with no bad entry
        self.index_packs: dict[str, set[ObjectId]] = {}  # packs each index names
        self._damaged: set[ObjectId] | None = None

    def check_indexes(self) -> None:
        self.tables.index_held()
        damaged = self.damaged_packs()
        for info in self.listing("index", is_object_id):
            key = f"index/{info.name}"
            try:
                places = decode_index(self.store.read_object("index", info.name), key)
            except (IntegrityError, ObjectNotFound):
                self.bad_indexes.add(info.name)
                continue
            for loc in places.values():
                if loc.pack not in self.footers:
                    self.late_pack(loc.pack)  # stored since the listing, by a concurrent add
            sound = [
                cid
                for cid, loc in places.items()
                if loc.pack in self.footers
                and loc.pack not in damaged
                and self.tables.holds(cid, loc)
            ]
            if len(sound) == len(places):
                self.good_indexed.update(sound)
            else:
                self.bad_indexes.add(info.name)
            self.index_packs[info.name] = {loc.pack for loc in places.values()}

    def sound_places(self, cid: ChunkId) -> list[Location]:
        damaged = self.damaged_packs()
        bad = self.tables.bad_pack_of(cid)
        return [p for p in self.tables.places(cid) if p.pack not in damaged and bad != p.pack]

    def damaged_packs(self) -> set[ObjectId]:
        if self._damaged is None:  # read_data has run (it is the first step)
            self._damaged = {pack for _, pack in self.tables.bad_chunks()}
        return self._damaged

    def missing(self) -> dict[ChunkId, int]:
        """Needed chunks that no sound pack holds."""
        return {c: n for c, n in self.tables.needed() if not self.sound_places(c)}


def repair(
    store: ChunkStore,
    files: Iterable[str],
    tick: Callable[[str], None] = lambda key: None,
) -> RepairReport:
    """Repair the store (see the module docstring); ``files``: local files to cut for
    missing chunks (read lazily, only while chunks are missing)."""
    check = _Repair(store, tick)
    try:
        return _repair(store, check, files, tick)
    finally:
        check.tables.close()


def _repair(
    store: ChunkStore, check: _Repair, files: Iterable[str], tick: Callable[[str], None]
) -> RepairReport:
    out = RepairReport()
    check.check_packs()
    check.read_data()
    check.check_indexes()
    check.check_versions(None)
    damaged = check.damaged_packs()
    missing = check.missing()

    with store.new_writer() as writer:
        footers = store.footers()  # chunks in damaged packs count as stored nowhere
        footers.condemned = footers.condemned | frozenset(damaged) | frozenset(check.bad_packs)
        store.write_anew(damaged | check.bad_packs)
        _salvage(store, check, damaged | check.bad_packs, missing, writer, out)
        if missing:
            chunker = Chunker(store.config.chunker)
            for path in files:
                if not missing:
                    break
                tick(path)
                out.files_read += 1
                try:
                    for view in file_chunks(path, chunker):
                        cid = chunk_id(view)
                        if cid in missing and missing[cid] == len(view):
                            writer.add(cid, bytes(view))
                            del missing[cid]
                            out.restored_chunks += 1
                            out.restored_bytes += len(view)
                except OSError:
                    continue  # unreadable: other files may hold the same chunks
        writer.finish()

    kept: set[ObjectId] = set()
    doomed = []
    for pack in sorted(damaged | check.bad_packs):
        if pack in store.footers().stored:
            continue  # stored again whole by this repair (the same chunks, the same id)
        if pack in check.packs and _holds_needed(check, pack, missing):
            out.kept_damaged.append(f"packs/{pack}")
            kept.add(pack)
        elif pack in check.packs:
            doomed.append(pack)
    _reindex(store, check, out, kept)  # before a pack goes, indexes stop naming it
    for pack in doomed:
        if pack in check.packs:
            with contextlib.suppress(DatavcError):
                store.backend.delete(f"packs/{pack}")
                out.deleted_packs += 1
            if store.cache is not None:
                with contextlib.suppress(DatavcError):
                    store.cache.delete(f"packs/{pack}")
    from .check import fsck

    out.missing = fsck(store, None, read_data=False)
    return out


def _holds_needed(check: _Repair, pack: ObjectId, missing: dict[ChunkId, int]) -> bool:
    """Whether a damaged pack may still hold the only copy of something needed (a chunk
    still missing that an index entry or a page's hint places in it)."""
    return any(loc.pack == pack for cid in missing for loc in _places(check, cid)) or any(
        e_pack == pack and cid in missing for cid, e_pack in check.tables.bad_chunks()
    )


def _places(check: _Repair, cid: ChunkId) -> list[Location]:
    """Where the footers, the indexes and the pages put a chunk."""
    places = [*check.tables.places(cid), *check.store.locations(cid)]
    hint = check.tables.first_hint(cid)
    return [*places, hint] if hint is not None else places


def _salvage(
    store: ChunkStore,
    check: _Repair,
    damaged: set[ObjectId],
    missing: dict[ChunkId, int],
    writer: PackWriter,
    out: RepairReport,
) -> None:
    """Copy the sound chunks of damaged packs that are needed and held nowhere else: each
    read where a footer, an index or a page's hint puts it in such a pack, and kept only if
    it hashes to its id (a pack whose footer is damaged may hold every chunk intact)."""
    store.load_index()
    for cid in list(missing):
        for loc in _places(check, cid):
            if loc.pack not in damaged or check.tables.bad_pack_of(cid) == loc.pack:
                continue
            try:
                blob = store.backend.read_range(
                    f"packs/{loc.pack}", loc.offset, loc.offset + loc.stored_length
                )
                (plain,) = decode_run([(cid, loc)], blob)
            except (IntegrityError, ObjectNotFound):
                continue
            writer.add(cid, plain)
            del missing[cid]
            out.salvaged_chunks += 1
            break


def _reindex(store: ChunkStore, check: _Repair, out: RepairReport, kept: set[ObjectId]) -> None:
    """One index of every chunk of a sound pack that no sound index lists; then the
    unsound indexes go, but not one that names a damaged pack kept for what it may still
    hold."""
    store.load_index()  # the indexes written by this repair's writer, if any
    table = LocationTable()
    damaged = check.damaged_packs()
    for pack in sorted(check.footers):
        if pack in damaged:
            continue
        for cid, loc in _pack_places(check, pack):
            if cid not in check.good_indexed:
                table.put(cid, loc)
    if len(table):
        store.write_object("index", b"".join(table.encode_index()))
        out.index_entries = len(table)
    for name in sorted(check.bad_indexes):
        if check.index_packs.get(name, set()) & kept:
            continue
        if f"index/{name}" in store.written:
            continue  # written again by this repair (the same entries, the same id)
        with contextlib.suppress(DatavcError):
            store.backend.delete(f"index/{name}")
            out.deleted_indexes += 1
        if store.cache is not None:
            with contextlib.suppress(DatavcError):
                store.cache.delete(f"index/{name}")


def _pack_places(check: _Repair, pack: ObjectId) -> list[tuple[ChunkId, Location]]:
    from .packs import footer_entries

    return [
        (e.chunk, Location(pack, e.offset, e.stored_length, e.plain_length, e.codec))
        for e in footer_entries(check.backend, pack, check.packs[pack])
    ]
