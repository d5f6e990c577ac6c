"""The chunk index searched in place (pure): each index object's rows, sorted by chunk id
as the format requires, kept as the object's bytes and binary-searched."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Protocol

from ..errors import CorruptObject
from .hashing import ChunkId
from .packfile import (
    INDEX_ROW,
    PLACE_ROW,
    Location,
    LocationTable,
    plausible,
)

if TYPE_CHECKING:
    from .newrows import NewRows


class RowSource(Protocol):
    """Index rows (53 bytes each, :data:`INDEX_ROW`) sorted by chunk id, wherever they are:
    in memory (:class:`MemoryRows`) or in a local file (the store's ``FileRows``)."""

    count: int

    def find_raw(self, cid: bytes) -> bytes | None:
        """The row of ``cid``, or None."""

    def raw_rows(self) -> Iterator[bytes]:
        """Every row, in order."""


class MemoryRows:
    """Sorted rows in a buffer (an index object's bytes, not copied), binary-searched."""

    __slots__ = ("count", "data", "start")

    def __init__(self, data: bytes, start: int, count: int) -> None:
        self.data = data
        self.start = start
        self.count = count

    def find_raw(self, cid: bytes) -> bytes | None:
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
                return data[at : at + size]
        return None

    def raw_rows(self) -> Iterator[bytes]:
        size, start = INDEX_ROW.size, self.start
        for i in range(self.count):
            yield self.data[start + i * size : start + (i + 1) * size]


class _SortedRows:
    """An index object's entry table as it is stored: rows of 53 bytes sorted by chunk id,
    searched in place (no object per chunk). An entry found is checked then; a table that
    is not sorted (damaged or crafted) only hides entries, which a writer stores again and
    a reader finds another way or misses."""

    __slots__ = ("numbers", "obj", "rows")

    def __init__(self, rows: RowSource, numbers: list[int], obj: str) -> None:
        self.rows = rows
        self.numbers = numbers  # the object's pack numbers, as the table's
        self.obj = obj

    def find(self, cid: bytes) -> bytes | None:
        """The chunk's row (as :class:`LocationTable` packs it), or None."""
        raw = self.rows.find_raw(cid)
        return None if raw is None else self._place(raw)

    def _place(self, raw: bytes) -> bytes:
        _, p, off, sl, pl, codec = INDEX_ROW.unpack(raw)
        if p >= len(self.numbers) or not plausible(off, sl, pl, codec):
            raise CorruptObject(self.obj, f"index entry of chunk {raw[:8].hex()} is impossible")
        return PLACE_ROW.pack(self.numbers[p], off, sl, pl, codec)

    def __iter__(self) -> Iterator[tuple[ChunkId, bytes]]:
        for raw in self.rows.raw_rows():
            yield ChunkId(raw[:32]), self._place(raw)


class IndexTable(LocationTable):
    """A :class:`LocationTable` that keeps each index object as its sorted rows, searched in
    place: 53 bytes per chunk and no work per chunk to load (a dict row costs about 190
    bytes), so a writer's view of a store of millions of chunks stays small. Places put
    one at a time (a writer's new chunks, preferred places) are kept as the base class
    keeps them, and come first."""

    def __init__(self) -> None:
        super().__init__()
        self._tables: list[_SortedRows] = []
        # what uploads of this process stored (a tuple, replaced: read without the lock)
        self._new: tuple[NewRows, ...] = ()
        # chunks dropped: the tables loaded before the drop no longer give their places
        self._dropped: dict[ChunkId, int] = {}
        # chunks given a preferred place: ``_rows`` and ``_more`` hold their places in order
        self._ordered: set[ChunkId] = set()

    def attach(self, rows: NewRows) -> None:
        """Search ``rows`` too (an upload's, filled as its packs are stored), before the
        loaded tables: where this process put a chunk is checked already."""
        self._new = (*self._new, rows)

    def detach(self, rows: NewRows) -> None:
        """Forget an upload's rows (it failed: no index object will name them)."""
        self._new = tuple(r for r in self._new if r is not rows)

    def new_place(self, cid: ChunkId) -> Location | None:
        """Where an upload of this process stored ``cid``, or None: safe to ask without
        the lock that guards the rest (uploads' rows are thread-safe), so that their
        searches, file reads some of them, do not hold it. For :meth:`locations_given`."""
        for rows in self._new:
            loc = rows.find(cid)
            if loc is not None:
                return loc
        return None

    def _new_row(self, cid: ChunkId) -> bytes | None:
        loc = self.new_place(cid) if self._new else None
        return None if loc is None else self._packed(loc)

    def _packed(self, loc: Location) -> bytes:
        row = (self._number(loc.pack), loc.offset, loc.stored_length, loc.plain_length)
        return PLACE_ROW.pack(*row, loc.codec)

    def add_index(self, data: bytes, obj: str) -> None:
        numbers, pos, count = self._index_header(data, obj)
        self._tables.append(_SortedRows(MemoryRows(data, pos, count), numbers, obj))

    def add_rows(self, head: bytes, size: int, rows: RowSource, obj: str) -> None:
        """Take in an index object of ``size`` bytes kept elsewhere: ``head``, its bytes up
        to its rows (see :meth:`index_head`); ``rows``, its rows."""
        numbers, pos, count = self._index_header(head, obj, size)
        if pos != len(head) or count != rows.count:
            raise CorruptObject(obj, "index head does not match its rows")
        self._tables.append(_SortedRows(rows, numbers, obj))

    def _rows_of(self, cid: ChunkId, new: bytes | None) -> list[bytes]:
        """Every row of ``cid``: the one put first (or preferred), then the tables', then
        the other places put; for a chunk given a preferred place, its places in the order
        :meth:`prefer` left them, then any found since. ``new``: the uploads' place
        (:meth:`_new_row`)."""
        found: list[bytes] = []
        first = self._rows.get(cid)
        if first is not None:
            found.append(first)
            if cid in self._ordered:
                found += self._more.get(cid, ())
        if new is not None and new not in found:
            found.append(new)
        seen = set(found)  # (a crafted store can list a chunk in thousands of indexes)
        for table in self._tables[self._dropped.get(cid, 0) :]:
            try:
                row = table.find(cid)
            except CorruptObject:
                continue  # an impossible row of a crafted index: not a place (fsck names it)
            if row is not None and row not in seen:
                found.append(row)
                seen.add(row)
        found += (r for r in self._more.get(cid, ()) if r not in seen)
        return found

    def prefer(self, cid: ChunkId, loc: Location) -> None:
        """As the base class, keeping the order of every place: the old first place comes
        second, even where it is a loaded table's row."""
        wanted = self._packed(loc)
        rows = self._rows_of(cid, self._new_row(cid))
        if not rows or rows[0] == wanted:
            return
        self._rows[cid] = wanted
        self._more[cid] = [r for r in rows if r != wanted]
        self._ordered.add(cid)

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
        return [self._location(row) for row in self._rows_of(cid, self._new_row(cid))]

    def locations_given(self, cid: ChunkId, new: Location | None) -> list[Location]:
        """:meth:`locations`, with the uploads' place found already (:meth:`new_place`)."""
        row = None if new is None else self._packed(new)
        return [self._location(row) for row in self._rows_of(cid, row)]

    def drop(self, cid: ChunkId) -> None:
        self._rows.pop(cid, None)
        self._more.pop(cid, None)
        self._ordered.discard(cid)
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
