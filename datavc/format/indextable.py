"""The chunk index searched in place (pure): each index object's rows, sorted by chunk id
as the format requires, kept as the object's bytes and binary-searched."""

from __future__ import annotations

from collections.abc import Iterator

from ..errors import CorruptObject
from .hashing import ChunkId
from .packfile import INDEX_ROW, PLACE_ROW, Location, LocationTable, plausible


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
        # chunks dropped: the tables loaded before the drop no longer give their places
        self._dropped: dict[ChunkId, int] = {}

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
