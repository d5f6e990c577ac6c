"""fsck's tables on disk: what footers hold, what indexes list, what trees need.

fsck joins three relations on chunk id: the places pack footers give (``held``), the places
index objects give (``listed``), and the chunks tree pages name (``refs``, one row per chunk
of each file of each distinct page). At ten million chunks none of them fits in memory as
Python objects, so they live in a private temporary SQLite database (the standard library's
``sqlite3``: its sorts and indexes spill to disk, its page cache is capped at
``CACHE_KIB``), and the checks are queries that return only what is wrong.

Packs are numbered in memory (one entry per pack, not per chunk); so are the distinct tree
pages, with the versions that name each. Index objects are read a block of rows at a time,
a big one from a local file (:meth:`.ChunkStore.local_index_copy`), never whole.
"""

from __future__ import annotations

import os
import sqlite3
import struct
from collections.abc import Iterable, Iterator
from typing import BinaryIO

from ..errors import CorruptObject
from ..format.hashing import ChunkId, ObjectId
from ..format.packfile import INDEX_MAGIC, INDEX_ROW, Location, PackEntry, plausible
from ..format.tree import FileEntry, Hints

CACHE_KIB = 8 << 10  # SQLite's page cache; its sorts take about as much again (32 MiB: +60 MiB RSS)
ROWS_PER_READ = 8192  # index rows read (and inserted) at a time
_U32 = struct.Struct("<I")

_SCHEMA = """
CREATE TABLE held(cid BLOB, pack INT, off INT, stored INT, plain INT, codec INT);
CREATE TABLE listed(cid BLOB, pack INT, off INT, stored INT, plain INT, codec INT, obj INT);
CREATE TABLE refs(cid BLOB, length INT, hpack INT, hoff INT, hstored INT, hplain INT,
                  hcodec INT, file INT);
CREATE TABLE files(page INT, path TEXT);
CREATE TABLE bad(cid BLOB, pack INT);
CREATE TABLE good(pack INTEGER PRIMARY KEY);
CREATE TABLE indexed(cid BLOB PRIMARY KEY) WITHOUT ROWID;
"""

_SAME_PLACE = "h.cid = {t}.cid AND h.pack = {t}.pack AND h.off = {t}.off AND h.stored = {t}.stored"
_SAME_PLACE += " AND h.plain = {t}.plain AND h.codec = {t}.codec"

# For each chunk a tree names: its first good place (a good footer lists it with the
# recipe's length, and read_data did not find it damaged there), whether its hint names a
# good pack that does not hold it there, and whether some index lists it where a footer does.
_CHECK_REFS = """
SELECT cid, hpack, hoff, hstored, hplain, hcodec, file, first_good, hint_wrong, is_indexed FROM (
  SELECT r.rowid AS id, r.cid AS cid, r.hpack AS hpack, r.hoff AS hoff, r.hstored AS hstored,
    r.hplain AS hplain, r.hcodec AS hcodec, r.file AS file,
    (SELECT h.pack FROM held h WHERE h.cid = r.cid AND h.plain = r.length
       AND NOT EXISTS (SELECT 1 FROM bad b WHERE b.cid = h.cid AND b.pack = h.pack)
       ORDER BY h.rowid LIMIT 1) AS first_good,
    (r.hpack IN (SELECT pack FROM good) AND NOT EXISTS (SELECT 1 FROM held h WHERE
       h.cid = r.cid AND h.pack = r.hpack AND h.off = r.hoff AND h.stored = r.hstored
       AND h.plain = r.hplain AND h.codec = r.hcodec)) AS hint_wrong,
    EXISTS (SELECT 1 FROM indexed i WHERE i.cid = r.cid) AS is_indexed
  FROM refs r)
WHERE first_good IS NULL OR hint_wrong OR NOT is_indexed
ORDER BY id
"""

_USED_PACKS = """
SELECT DISTINCT h.pack FROM held h
WHERE EXISTS (SELECT 1 FROM refs r WHERE r.cid = h.cid AND r.length = h.plain)
  AND NOT EXISTS (SELECT 1 FROM bad b WHERE b.cid = h.cid AND b.pack = h.pack)
"""


class Tables:
    """The database, with the pack and page numbering kept beside it."""

    def __init__(self) -> None:
        # "": a private database in a temporary file, deleted when closed
        self.db = sqlite3.connect("", isolation_level=None)
        for pragma in ("journal_mode=OFF", "synchronous=OFF", "temp_store=FILE"):
            self.db.execute(f"PRAGMA {pragma}")
        self.db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
        self.db.executescript(_SCHEMA)
        self.db.execute("BEGIN")
        self.pack_ids: list[ObjectId] = []
        self._numbers: dict[ObjectId, int] = {}
        self.page_labels: list[list[str]] = []  # versions naming each distinct page
        self.page_keys: list[str] = []
        self._files = 0  # files rows so far (their rowids)

    def close(self) -> None:
        self.db.close()

    def number(self, pack: ObjectId) -> int:
        n = self._numbers.get(pack)
        if n is None:
            n = self._numbers[pack] = len(self.pack_ids)
            self.pack_ids.append(pack)
        return n

    # -- filling ----------------------------------------------------------------------

    def add_footer(self, pack: ObjectId, entries: Iterable[PackEntry]) -> None:
        """A pack whose footer checks out, and the places it lists."""
        n = self.number(pack)
        self.db.execute("INSERT INTO good VALUES (?)", (n,))
        self.db.executemany(
            "INSERT INTO held VALUES (?, ?, ?, ?, ?, ?)",
            ((e.chunk, n, e.offset, e.stored_length, e.plain_length, e.codec) for e in entries),
        )

    def add_bad(self, cid: ChunkId, pack: ObjectId) -> None:
        self.db.execute("INSERT INTO bad VALUES (?, ?)", (cid, self.number(pack)))

    def bad_count(self, pack: ObjectId) -> int:
        found = self.db.execute("SELECT count(*) FROM bad WHERE pack = ?", (self.number(pack),))
        return int(found.fetchone()[0])

    def bad_pack_of(self, cid: ChunkId) -> ObjectId | None:
        found = self.db.execute("SELECT pack FROM bad WHERE cid = ? LIMIT 1", (cid,)).fetchone()
        return None if found is None else self.pack_ids[found[0]]

    def index_held(self) -> None:
        """Index the footers' places by chunk (once they are all in: faster than as they
        come), and the chunks found damaged."""
        self.db.execute("CREATE INDEX held_cid ON held(cid)")
        self.db.execute("CREATE INDEX bad_cid ON bad(cid)")

    def add_index(self, obj: int, f: BinaryIO, size: int, key: str) -> set[ObjectId]:
        """An index object's rows (read from ``f``, ``size`` bytes), as object ``obj``;
        return the packs they name. Raises CorruptObject (none of its rows is kept)."""
        try:
            return self._add_index(obj, f, size, key)
        except CorruptObject:
            self.db.execute("DELETE FROM listed WHERE obj = ?", (obj,))
            raise
        except (struct.error, IndexError):  # cut short, or a pack number past its table
            self.db.execute("DELETE FROM listed WHERE obj = ?", (obj,))
            raise CorruptObject(key, "index is truncated") from None

    def _add_index(self, obj: int, f: BinaryIO, size: int, key: str) -> set[ObjectId]:
        head = f.read(len(INDEX_MAGIC) + _U32.size)
        if not head.startswith(INDEX_MAGIC) or len(head) != len(INDEX_MAGIC) + _U32.size:
            raise CorruptObject(key, "not a datavc index")
        (npacks,) = _U32.unpack_from(head, len(INDEX_MAGIC))
        table_end = len(head) + 32 * npacks + _U32.size
        if table_end > size:
            raise CorruptObject(key, "index is truncated")
        table = f.read(32 * npacks)
        numbers = [self.number(ObjectId(table[i : i + 32].hex())) for i in range(0, len(table), 32)]
        (count,) = _U32.unpack(f.read(_U32.size))
        if table_end + count * INDEX_ROW.size != size:
            raise CorruptObject(key, "index is truncated")
        used: set[int] = set()
        insert = "INSERT INTO listed VALUES (?, ?, ?, ?, ?, ?, ?)"
        for start in range(0, count, ROWS_PER_READ):
            want = min(ROWS_PER_READ, count - start) * INDEX_ROW.size
            block = f.read(want)
            if len(block) != want:
                raise CorruptObject(key, "index is truncated")
            rows = []
            for c, p, off, stored, plain, codec in INDEX_ROW.iter_unpack(block):
                if not plausible(off, stored, plain, codec):
                    raise CorruptObject(key, f"index entry of chunk {c.hex()[:16]} is impossible")
                used.add(p)
                rows.append((c, numbers[p], off, stored, plain, codec, obj))
            self.db.executemany(insert, rows)
        return {self.pack_ids[numbers[p]] for p in used}

    def add_page(self, page_key: str, label: str, entries: list[FileEntry], hints: Hints) -> int:
        """A distinct tree page's files and the chunks they need; return its number."""
        page = len(self.page_keys)
        self.page_keys.append(page_key)
        self.page_labels.append([label])
        files: list[tuple[int, int, str]] = []
        refs: list[tuple[object, ...]] = []
        for e in entries:
            self._files += 1
            file = self._files
            files.append((file, page, e.path))
            for cid, length in e.chunks:
                hint = hints.get(cid) if hints else None
                if hint is None:
                    refs.append((cid, length, None, None, None, None, None, file))
                else:
                    pack = self.number(hint.pack)
                    refs.append(
                        (cid, length, pack, hint.offset, hint.stored_length, hint.plain_length,
                         hint.codec, file)
                    )  # fmt: skip
        self.db.executemany("INSERT INTO files(rowid, page, path) VALUES (?, ?, ?)", files)
        self.db.executemany("INSERT INTO refs VALUES (?, ?, ?, ?, ?, ?, ?, ?)", refs)
        return page

    # -- checking ---------------------------------------------------------------------

    def index_counts(self) -> Iterator[tuple[int, ObjectId, int, int]]:
        """Per index object and pack it names: (object, pack, rows, rows a footer agrees
        with), in object order; and the chunks some index places where a footer agrees
        are noted for :meth:`problem_refs`."""
        agrees = _SAME_PLACE.format(t="l")
        self.db.execute(
            f"INSERT OR IGNORE INTO indexed SELECT l.cid FROM listed l "
            f"WHERE EXISTS (SELECT 1 FROM held h WHERE {agrees})"
        )
        query = (
            f"SELECT obj, pack, count(*), sum(EXISTS (SELECT 1 FROM held h WHERE {agrees})) "
            "FROM listed l GROUP BY obj, pack ORDER BY obj, pack"
        )
        for obj, pack, n, matched in self.db.execute(query):
            yield obj, self.pack_ids[pack], n, matched

    def problem_refs(
        self,
    ) -> Iterator[tuple[ChunkId, Location | None, int, ObjectId | None, bool, bool]]:
        """Each chunk a tree names that something is wrong with, in tree order: (chunk,
        hint, file, first good pack or None, hint wrong, indexed)."""
        ids = self.pack_ids
        for row in self.db.execute(_CHECK_REFS):
            cid, hpack, hoff, hstored, hplain, hcodec, file, first, hint_wrong, indexed = row
            hint = None if hpack is None else Location(ids[hpack], hoff, hstored, hplain, hcodec)
            good = None if first is None else ids[first]
            yield ChunkId(cid), hint, file, good, bool(hint_wrong), bool(indexed)

    def file_of(self, file: int) -> tuple[int, str]:
        page, path = self.db.execute(
            "SELECT page, path FROM files WHERE rowid = ?", (file,)
        ).fetchone()
        return int(page), str(path)

    # -- for repair (which holds what it needs in memory: it does not scale as fsck does) --

    def places(self, cid: ChunkId) -> list[Location]:
        """Where good footers put a chunk, in the order they were read."""
        query = "SELECT pack, off, stored, plain, codec FROM held WHERE cid = ? ORDER BY rowid"
        return [
            Location(self.pack_ids[p], off, stored, plain, codec)
            for p, off, stored, plain, codec in self.db.execute(query, (cid,))
        ]

    def holds(self, cid: ChunkId, loc: Location) -> bool:
        """Whether a good footer lists the chunk at exactly this place."""
        n = self._numbers.get(loc.pack)
        if n is None:
            return False
        query = (
            "SELECT 1 FROM held WHERE cid = ? AND pack = ? AND off = ? AND stored = ? "
            "AND plain = ? AND codec = ? LIMIT 1"
        )
        place = (cid, n, loc.offset, loc.stored_length, loc.plain_length, loc.codec)
        return self.db.execute(query, place).fetchone() is not None

    def bad_chunks(self) -> list[tuple[ChunkId, ObjectId]]:
        return [
            (ChunkId(c), self.pack_ids[p]) for c, p in self.db.execute("SELECT cid, pack FROM bad")
        ]

    def needed(self) -> Iterator[tuple[ChunkId, int]]:
        """Each chunk some checked tree needs, with a length a recipe gives it."""
        for cid, length in self.db.execute("SELECT cid, max(length) FROM refs GROUP BY cid"):
            yield ChunkId(cid), int(length)

    def first_hint(self, cid: ChunkId) -> Location | None:
        self._index_refs()
        query = (
            "SELECT hpack, hoff, hstored, hplain, hcodec FROM refs "
            "WHERE cid = ? AND hpack IS NOT NULL ORDER BY rowid LIMIT 1"
        )
        row = self.db.execute(query, (cid,)).fetchone()
        return None if row is None else Location(self.pack_ids[row[0]], *row[1:])

    def used_packs(self) -> set[ObjectId]:
        """Packs holding (undamaged) a chunk some checked tree needs, at its length."""
        self._index_refs()
        return {self.pack_ids[p] for (p,) in self.db.execute(_USED_PACKS)}

    def _index_refs(self) -> None:
        """Index the trees' chunks (once they are all in), for lookups by chunk id."""
        self.db.execute("CREATE INDEX IF NOT EXISTS refs_cid ON refs(cid)")


def open_index(path_or_data: str | bytes) -> BinaryIO:
    """An index object to read: its local file, or its bytes."""
    import io

    if isinstance(path_or_data, bytes):
        return io.BytesIO(path_or_data)
    return open(path_or_data, "rb")


def remove_copy(path: str) -> None:
    import contextlib

    with contextlib.suppress(OSError):
        os.unlink(path)
