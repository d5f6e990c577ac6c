"""The chunk index searched in place (pure): each index object's rows, sorted by chunk id
as the format requires, kept as the object's bytes and binary-searched."""

from __future__ import annotations

import threading
from collections.abc import Iterator

from ..errors import CorruptObject
from .hashing import ChunkId, ObjectId
from .packfile import (
    INDEX_MAGIC,
    INDEX_ROW,
    PLACE_ROW,
    U32,
    Location,
    LocationTable,
    footer_entries_of,
    plausible,
)


class _SortedRows:
    """An index object's entry table as it is stored: rows of 53 bytes sorted by chunk id,
    searched in place (no object per chunk). An entry found is checked then; a table that
    is not sorted (damaged or crafted) only hides entries, which a writer stores again and
    a reader finds another way or misses."""

    __slots__ = ("count", "data", "numbers", "obj", "start")

    def __init__(self, data: bytes, start: int, count: int, numbers: list[int], obj: str) -> None:
        self.data = data  # the whole object, not copied: its rows start at ``start``
        self.start = start
        self.count = count
        self.numbers = numbers
        self.obj = obj

    def find(self, cid: bytes) -> bytes | None:
        """The chunk's row (as :class:`LocationTable` packs it), or None."""
        data, size, start = self.data, INDEX_ROW.size, self.start
        lo, hi = 0, self.count
        while lo < hi:
            mid = (lo + hi) >> 1
            at = start + mid * size
            key = data[at : at + 32]
            if key < cid:
                lo = mid + 1
            elif key > cid:
                hi = mid
            else:
                return self._row(mid)
        return None

    def _row(self, i: int) -> bytes:
        at = self.start + i * INDEX_ROW.size
        _, p, off, sl, pl, codec = INDEX_ROW.unpack_from(self.data, at)
        if p >= len(self.numbers) or not plausible(sl, pl, codec):
            raise CorruptObject(self.obj, f"index entry {i} is impossible")
        return PLACE_ROW.pack(self.numbers[p], off, sl, pl, codec)

    def __iter__(self) -> Iterator[tuple[ChunkId, bytes]]:
        size, start = INDEX_ROW.size, self.start
        for i in range(self.count):
            yield ChunkId(self.data[start + i * size : start + i * size + 32]), self._row(i)


class IndexTable(LocationTable):
    """A :class:`LocationTable` that keeps each index object as its sorted rows, searched in
    place: 53 bytes per chunk and no work per chunk to load (a dict row costs about 190
    bytes), so a writer's view of a store of millions of chunks stays small. Places put
    one at a time (a writer's new chunks, preferred places) are kept as the base class
    keeps them, and come first."""

    def __init__(self) -> None:
        super().__init__()
        self._tables: list[_SortedRows] = []
        self._new: list[NewRows] = []  # what uploads of this process stored
        # chunks dropped: the tables loaded before the drop no longer give their places
        self._dropped: dict[ChunkId, int] = {}

    def attach(self, rows: NewRows) -> None:
        """Search ``rows`` too (an upload's, filled as its packs are stored), before the
        loaded tables: where this process put a chunk is checked already."""
        self._new.append(rows)

    def detach(self, rows: NewRows) -> None:
        """Forget an upload's rows (it failed: no index object will name them)."""
        self._new = [r for r in self._new if r is not rows]

    def _new_row(self, cid: ChunkId) -> bytes | None:
        for rows in self._new:
            loc = rows.find(cid)
            if loc is not None:
                row = (self._number(loc.pack), loc.offset, loc.stored_length, loc.plain_length)
                return PLACE_ROW.pack(*row, loc.codec)
        return None

    def add_index(self, data: bytes, obj: str) -> None:
        numbers, pos, count = self._index_header(data, obj)
        self._tables.append(_SortedRows(data, pos, count, numbers, obj))

    def _rows_of(self, cid: ChunkId) -> list[bytes]:
        """Every row of ``cid``: the one put first (or preferred), then the tables', then
        the other places put."""
        found: list[bytes] = []
        first = self._rows.get(cid)
        if first is not None:
            found.append(first)
        new = self._new_row(cid) if self._new else None
        if new is not None and new not in found:
            found.append(new)
        for table in self._tables[self._dropped.get(cid, 0) :]:
            row = table.find(cid)
            if row is not None and row not in found:
                found.append(row)
        found += (r for r in self._more.get(cid, ()) if r not in found)
        return found

    def _first_row(self, cid: ChunkId) -> bytes | None:
        row = self._rows.get(cid)
        if row is not None:
            return row
        if self._new:
            row = self._new_row(cid)
            if row is not None:
                return row
        for table in self._tables[self._dropped.get(cid, 0) :]:
            row = table.find(cid)
            if row is not None:
                return row
        return None

    def locations(self, cid: ChunkId) -> list[Location]:
        return [self._location(row) for row in self._rows_of(cid)]

    def drop(self, cid: ChunkId) -> None:
        self._rows.pop(cid, None)
        self._more.pop(cid, None)
        for rows in self._new:
            rows.drop(cid)
        if any(t.find(cid) is not None for t in self._tables):
            self._dropped[cid] = len(self._tables)

    def __contains__(self, cid: object) -> bool:
        return isinstance(cid, bytes) and self._first_row(ChunkId(cid)) is not None

    def __len__(self) -> int:
        return sum(1 for _ in self._ids())

    def _ids(self) -> Iterator[ChunkId]:
        seen: set[ChunkId] = set()
        for cid in self._rows:
            seen.add(cid)
            yield cid
        for rows in self._new:
            for cid in rows:
                if cid not in seen:
                    seen.add(cid)
                    yield cid
        for n, table in enumerate(self._tables):
            for cid, _ in table:
                if cid not in seen and self._dropped.get(cid, 0) <= n:
                    seen.add(cid)
                    yield cid

    def items(self) -> Iterator[tuple[ChunkId, Location]]:
        for cid in self._ids():
            loc = self.get(cid)
            if loc is not None:
                yield cid, loc

    def row(self, cid: ChunkId) -> bytes:
        found = self._first_row(cid)
        if found is None:
            raise KeyError(cid)
        return found


BUCKETS = 1 << 16  # NewRows buckets, by a chunk id's first two bytes


class NewRows:
    """The chunks one upload stored, as index rows (53 bytes each, pack numbers local to
    these rows) in 65,536 buckets by the first two bytes of their ids, which are uniform:
    a chunk is found by a byte search of one bucket, about 15 rows for a million chunks.
    About 60 bytes a chunk, where a dict row, a footer row and a list entry took some 400,
    so a first add of a million files does not hold hundreds of MiB. The upload's index
    object is written from them (:meth:`encode`). Thread-safe."""

    def __init__(self) -> None:
        self.packs: list[ObjectId] = []
        self._per_pack: list[int] = []  # rows naming each pack
        self._buckets: list[bytearray | None] = [None] * BUCKETS
        self._lock = threading.Lock()
        self.count = 0

    def add_pack(self, pack: ObjectId, footer: bytes) -> None:
        """Take in the chunks of a pack just stored, as its footer (built by this process)
        lists them; a chunk known already keeps its place."""
        with self._lock:
            number = len(self.packs)
            self.packs.append(pack)
            self._per_pack.append(0)
            buckets, pack_row = self._buckets, INDEX_ROW.pack
            for cid, offset, stored, plain, codec in footer_entries_of(footer):
                if self._at(cid) is not None:
                    continue
                key = (cid[0] << 8) | cid[1]
                bucket = buckets[key]
                if bucket is None:
                    bucket = buckets[key] = bytearray()
                bucket += pack_row(cid, number, offset, stored, plain, codec)
                self._per_pack[number] += 1
                self.count += 1

    def _at(self, cid: bytes) -> tuple[bytearray, int] | None:
        """The bucket holding ``cid``'s row and where the row starts (a match must start
        at a row's boundary: an id could in principle span two rows' bytes)."""
        bucket = self._buckets[(cid[0] << 8) | cid[1]]
        if bucket is None:
            return None
        at = bucket.find(cid)
        while at >= 0 and at % INDEX_ROW.size:
            at = bucket.find(cid, at + 1)
        return None if at < 0 else (bucket, at)

    def find(self, cid: bytes) -> Location | None:
        """Where this upload stored ``cid``, or None."""
        with self._lock:
            found = self._at(cid)
            if found is None:
                return None
            bucket, at = found
            _, n, offset, stored, plain, codec = INDEX_ROW.unpack_from(bucket, at)
        return Location(self.packs[n], offset, stored, plain, codec)

    def drop(self, cid: bytes) -> None:
        with self._lock:
            found = self._at(cid)
            if found is not None:
                bucket, at = found
                self._per_pack[U32.unpack_from(bucket, at + 32)[0]] -= 1
                del bucket[at : at + INDEX_ROW.size]
                self.count -= 1

    def __iter__(self) -> Iterator[ChunkId]:
        """The ids, a bucket at a time (a snapshot of each bucket as it is reached)."""
        size = INDEX_ROW.size
        for i in range(BUCKETS):
            with self._lock:
                bucket = self._buckets[i]
                data = bytes(bucket) if bucket else b""
            for at in range(0, len(data), size):
                yield ChunkId(data[at : at + 32])

    def encode(self) -> Iterator[bytes]:
        """The index object of these rows, in parts of about 1 MiB: the pack table sorted
        (a pack no row names, all its chunks stored before or dropped, is left out),
        then the rows sorted by chunk id, each bucket sorted on its own (the buckets are in
        id order already). Not to be changed meanwhile (the upload is over)."""
        named = [n for n, rows in enumerate(self._per_pack) if rows]  # none: all dropped
        order = sorted(named, key=self.packs.__getitem__)
        numbers = [0] * len(self.packs)
        for new, old in enumerate(order):
            numbers[old] = new
        head = bytearray(INDEX_MAGIC)
        head += U32.pack(len(order))
        for old in order:
            head += bytes.fromhex(self.packs[old])
        head += U32.pack(self.count)
        yield bytes(head)
        size = INDEX_ROW.size
        renumber = numbers != list(range(len(numbers)))
        out = bytearray()
        for bucket in self._buckets:
            if not bucket:
                continue
            rows = sorted(bucket[at : at + size] for at in range(0, len(bucket), size))
            for row in rows:
                if renumber:
                    n = U32.unpack_from(row, 32)[0]
                    row[32:36] = U32.pack(numbers[n])
                out += row
            if len(out) >= 1 << 20:
                yield bytes(out)
                out.clear()
        if out:
            yield bytes(out)
