"""What one upload stored, as index rows (pure but for the spill it is given): kept in
buckets searched in place, spilled to sorted runs past a million, and written out as the
upload's index object (:class:`NewRows`)."""

from __future__ import annotations

import heapq
import itertools
import struct
import threading
from array import array
from collections.abc import Callable, Iterator

from .hashing import ChunkId, ObjectId
from .indextable import RowSource
from .packfile import INDEX_MAGIC, INDEX_ROW, U32, Location, footer_entries_of, index_row_at

BUCKETS = 1 << 16  # NewRows buckets, by a chunk id's first two bytes
SPILL_ROWS = 1 << 20  # rows NewRows holds before it spills them to a sorted run (if it can)
FILTER_SLOTS = 1 << 23  # 16 MiB of 16-bit run masks: see NewRows
FILTER_RUNS = 16  # runs with a bit of their own in the masks (later ones share the last)


TAKE_ROWS = 4096  # rows of a pack NewRows takes in at a time, holding its lock
# an id's four filter slots: the low bits of its bytes 4-19 as four 32-bit words (ids are
# uniform); _ROW_SLOTS reads them from an index row
_SLOTS = struct.Struct("<4I")
_ROW_SLOTS = struct.Struct(f"<4x4I{INDEX_ROW.size - 20}x")


def _bucket_rows(buckets: list[bytearray | None]) -> Iterator[bytes]:
    """The buckets' rows in id order (each bucket sorted on its own: they are in id order
    already)."""
    size = INDEX_ROW.size
    for bucket in buckets:
        if bucket:
            yield from sorted(bytes(bucket[at : at + size]) for at in range(0, len(bucket), size))


def _in_runs(cid: bytes, runs: list[RowSource], first: int, maybe: int) -> bytes | None:
    """``cid``'s row in ``runs[first:]``, in those the filter's mask ``maybe`` lets through
    (no lock needed: a run never changes once spilled)."""
    while maybe:
        low = maybe & -maybe
        n = low.bit_length() - 1
        last = n + 1 if n < FILTER_RUNS - 1 else len(runs)
        for run in runs[max(n, first) : last]:
            row = run.find_raw(cid)
            if row is not None:
                return row
        maybe ^= low
    return None


def _shown(rows: Iterator[bytes], dropped: dict[bytes, int], run: int) -> Iterator[bytes]:
    """The rows of run number ``run`` that no drop after it hides."""
    return (r for r in rows if dropped.get(r[:32], 0) <= run)


class NewRows:
    """The chunks one upload stored, as index rows (53 bytes each, pack numbers local to
    these rows) in 65,536 buckets by the first two bytes of their ids, which are uniform:
    a chunk is found by a byte search of one bucket, about 15 rows for a million chunks.
    About 60 bytes a chunk, where a dict row, a footer row and a list entry took some 400.

    With ``spill`` (rows in order -> a :class:`RowSource` kept elsewhere, a local file),
    every ``SPILL_ROWS`` rows go to a sorted run, so memory stays flat however many chunks
    an upload stores. A filter says which runs may hold an id, and only those are searched
    (searching every run made a 10-million-chunk add 1.8x as slow per chunk as a
    1-million one): one Bloom filter per run, kept as ``FILTER_SLOTS`` 16-bit masks
    (a run's bit set in an id's four slots), so one lookup of four slots answers for
    every run. A run of a million rows sets at most 4 of each 8 slots' bits: a run that
    lacks an id is searched for it about 2.4% of the time. Runs past ``FILTER_RUNS`` share
    the last bit. The upload's index object is written from the buckets and runs
    merged (:meth:`encode`). Thread-safe."""

    def __init__(self, spill: Callable[[Iterator[bytes]], RowSource] | None = None) -> None:
        self.packs: list[ObjectId] = []
        self._per_pack: list[int] = []  # rows naming each pack
        self._buckets: list[bytearray | None] = [None] * BUCKETS
        self._lock = threading.Lock()
        self._spill = spill
        self._spilling: list[bytearray | None] | None = None  # buckets being spilled
        self._runs: list[RowSource] = []
        self._filter: array[int] | None = None  # set at the first spill
        # ids dropped when their rows were in runs: hidden in the runs spilled before then
        # (a drop is followed by the chunk being stored again, in a later run or a bucket)
        self._dropped: dict[bytes, int] = {}
        self._held = 0  # rows in the buckets
        self.count = 0

    def add_pack(self, pack: ObjectId, footer: bytes, new: bool = False) -> None:
        """Take in the chunks of a pack just stored, as its footer (built by this process)
        lists them; a chunk known already keeps its place. ``new``: the caller knows no
        chunk of it is in the spilled runs (a writer's own pack: its chunks were not in
        these rows when appended, and stayed pending until now), so only the buckets are
        searched for them; each run search is a file read.

        The lock is let go every ``TAKE_ROWS`` rows, and while the buckets are spilled: the
        writer looks chunks up meanwhile (a pack's rows found in part are all valid: the
        pack is stored)."""
        with self._lock:
            number = len(self.packs)
            self.packs.append(pack)
            self._per_pack.append(0)
        entries = footer_entries_of(footer)
        while True:
            with self._lock:
                taken = self._take(number, itertools.islice(entries, TAKE_ROWS), new)
                spilling = None
                if self._spill is not None and self._held >= SPILL_ROWS and not self._spilling:
                    spilling = self._spilling = self._buckets  # (one spill at a time)
                    self._buckets, self._held = [None] * BUCKETS, 0
            if spilling is not None:
                assert self._spill is not None
                run = self._spill_buckets(self._spill, spilling)
                with self._lock:
                    self._runs.append(run)
                    self._spilling = None
            if taken < TAKE_ROWS:
                return

    def _take(
        self, number: int, entries: Iterator[tuple[bytes, int, int, int, int]], new: bool
    ) -> int:
        """Take in a pack's ``entries`` as rows naming pack ``number``; how many there were."""
        buckets, pack_row = self._buckets, INDEX_ROW.pack
        known = self._at if new else self._row
        taken = 0
        for cid, offset, stored, plain, codec in entries:
            taken += 1
            if known(cid) is not None:
                continue
            key = (cid[0] << 8) | cid[1]
            bucket = buckets[key]
            if bucket is None:
                bucket = buckets[key] = bytearray()
            bucket += pack_row(cid, number, offset, stored, plain, codec)
            self._per_pack[number] += 1
            self._held += 1
            self.count += 1
        return taken

    def _spill_buckets(
        self, spill: Callable[[Iterator[bytes]], RowSource], buckets: list[bytearray | None]
    ) -> RowSource:
        """The run of ``buckets``' rows, its bits set in the filter first (without the lock:
        a bit set early only has a run searched that is not there yet)."""
        masks = self._filter
        if masks is None:
            masks = self._filter = array("H", bytes(2 * FILTER_SLOTS))
        bit = 1 << min(len(self._runs), FILTER_RUNS - 1)
        mask, slots = FILTER_SLOTS - 1, _ROW_SLOTS.iter_unpack
        for bucket in buckets:
            if bucket:
                for a, b, c, d in slots(bucket):
                    masks[a & mask] |= bit
                    masks[b & mask] |= bit
                    masks[c & mask] |= bit
                    masks[d & mask] |= bit
        return spill(_bucket_rows(buckets))

    def _at(self, cid: bytes) -> tuple[bytearray, int] | None:
        """The bucket holding ``cid``'s row (of those held or being spilled) and where the
        row starts (a match must start at a row's boundary: an id could in principle span
        two rows' bytes)."""
        key = (cid[0] << 8) | cid[1]
        bucket = self._buckets[key]
        if bucket is not None:  # (index_row_at, inline: three lookups a chunk stored)
            at = bucket.find(cid)
            while at >= 0 and at % INDEX_ROW.size:
                at = bucket.find(cid, at + 1)
            if at >= 0:
                return bucket, at
        spilling = self._spilling
        if spilling is not None and not self._hidden(cid):
            bucket = spilling[key]
            if bucket is not None and (at := index_row_at(bucket, cid)) >= 0:
                return bucket, at
        return None

    def _hidden(self, cid: bytes) -> bool:
        """Whether ``cid`` was dropped from the buckets being spilled (see :meth:`drop`)."""
        return bool(self._dropped) and self._dropped.get(bytes(cid), 0) > len(self._runs)

    def _row(self, cid: bytes) -> bytes | None:
        """``cid``'s row (the lock held throughout)."""
        found = self._at(cid)
        if found is not None:
            bucket, at = found
            return bytes(bucket[at : at + INDEX_ROW.size])
        return _in_runs(cid, *self._runs_to_search(cid, 0))

    def _runs_to_search(self, cid: bytes, first: int) -> tuple[list[RowSource], int, int]:
        """The runs, the first of them to search for ``cid`` (from ``first``, past those a
        drop hides) and the filter's mask for it: taken with the lock held."""
        if not self._runs:
            return [], 0, 0
        return self._runs[:], max(first, self._dropped.get(bytes(cid), 0)), self._maybe_in(cid)

    @property
    def spills(self) -> int:
        """The runs spilled so far: a mark for :meth:`holds_since`."""
        return len(self._runs)

    def holds_since(self, cid: bytes, spills: int) -> bool:
        """Whether ``cid`` is in the buckets or in a run spilled after the first ``spills``.
        A caller that found ``cid`` in neither these rows nor anything else while there
        were ``spills`` runs (it read :attr:`spills` before it looked) asks only this,
        since nothing leaves the buckets but for a later run: no search of the older runs,
        each a file read for the 2.4% the filter lets through."""
        return self._look(cid, spills) is not None

    def _look(self, cid: bytes, first: int) -> bytes | None:
        """``cid``'s row in the buckets or in the runs from ``first`` on. The runs are
        searched without the lock: a writer's lookups and its packs being taken in do not
        wait on each other's file reads."""
        with self._lock:
            found = self._at(cid)
            if found is None:
                if first >= len(self._runs):  # (most looks: no run to search, no filter)
                    return None
                runs, start, maybe = self._runs_to_search(cid, first)
        if found is not None:
            bucket, at = found
            return bytes(bucket[at : at + INDEX_ROW.size])
        return _in_runs(cid, runs, start, maybe)

    def _maybe_in(self, cid: bytes) -> int:
        """The runs that may hold ``cid``, as a mask (bit n: run n; the last bit: every run
        from there on). Ids are uniform: slices of them are hash enough."""
        masks = self._filter
        assert masks is not None
        a, b, c, d = _SLOTS.unpack_from(cid, 4)
        mask = FILTER_SLOTS - 1
        found: int = masks[a & mask] & masks[b & mask] & masks[c & mask] & masks[d & mask]
        return found

    def find(self, cid: bytes) -> Location | None:
        """Where this upload stored ``cid``, or None."""
        row = self._look(cid, 0)
        if row is None:
            return None
        _, n, offset, stored, plain, codec = INDEX_ROW.unpack(row)
        return Location(self.packs[n], offset, stored, plain, codec)

    def drop(self, cid: bytes) -> None:
        with self._lock:
            row = self._row(cid)
            if row is None:
                return
            self._per_pack[U32.unpack_from(row, 32)[0]] -= 1
            self.count -= 1
            found = self._at(cid)
            spilling = self._spilling
            if found is None:  # in a run: hidden there from now on
                self._dropped[bytes(cid)] = len(self._runs)
            elif spilling is not None and found[0] is spilling[(cid[0] << 8) | cid[1]]:
                # in buckets being spilled (not to be changed): hidden in their run
                self._dropped[bytes(cid)] = len(self._runs) + 1
            else:
                bucket, at = found
                del bucket[at : at + INDEX_ROW.size]
                self._held -= 1

    def _rows(self) -> Iterator[bytes]:
        """Every row in id order: the buckets' and the runs', merged (dropped ones left
        out). Not to be changed meanwhile (the upload is over)."""
        dropped = self._dropped
        if not dropped:
            return heapq.merge(_bucket_rows(self._buckets), *(run.raw_rows() for run in self._runs))
        runs = [_shown(run.raw_rows(), dropped, i) for i, run in enumerate(self._runs)]
        return heapq.merge(_bucket_rows(self._buckets), *runs)

    def __iter__(self) -> Iterator[ChunkId]:
        for row in self._rows():
            yield ChunkId(row[:32])

    def encode(self) -> Iterator[bytes]:
        """The index object of these rows, in parts of about 1 MiB: the pack table sorted
        (a pack no row names, all its chunks stored before or dropped, is left out), then
        the rows sorted by chunk id. Not to be changed meanwhile (the upload is over)."""
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
        renumber = numbers != list(range(len(numbers)))
        out = bytearray()
        for row in self._rows():
            if renumber:
                n = U32.unpack_from(row, 32)[0]
                row = row[:32] + U32.pack(numbers[n]) + row[36:]
            out += row
            if len(out) >= 1 << 20:
                yield bytes(out)
                out.clear()
        if out:
            yield bytes(out)
