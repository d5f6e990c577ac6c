"""The stat cache: (size, mtime_ns, ctime_ns, inode) -> file hash, per dataset.

Lets ``status`` and a repeated ``add`` skip reading unchanged files. An entry is trusted only
if every stat field matches; entries for files modified in the last two seconds before saving
are dropped, so a write within the file system's timestamp granularity is never missed.

It also remembers the snapshot id its rows were last found to match exactly (``matches``):
when every file still hits its row, and there are no more and no fewer files, the folder
still equals that snapshot, and ``status`` need not read the snapshot at all.

File format (UTF-8 text, written in one streaming pass; a million files must not mean a
million-row JSON document in memory): a header line ``datavc-statcache 3 <matches or ->``,
then one record per file, each ended by a NUL byte::

    <size> <mtime_ns> <ctime_ns> <inode> <file hash, 64 hex> <path>

The path comes last and runs to the NUL, so it may hold spaces and newlines (a file name
cannot hold NUL). A file in another format, or damaged, is ignored (the cache is rebuilt).
"""

from __future__ import annotations

import struct
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import BinaryIO

from .atomic import write_atomic
from .hashing import FileHash
from .snapshot import LocalFile

RACY_NS = 2_000_000_000
HEADER = "datavc-statcache"
FORMAT = 3

# In memory a row is packed: size, mtime_ns, ctime_ns, inode, then the 32-byte file hash
# (97 bytes a file, against ~230 for a tuple of Python ints).
_KEY = struct.Struct("<QqqQ")
_UNUSABLE = b""


class StatCache:
    def __init__(self, path: str, files: Iterable[LocalFile] = ()) -> None:
        """Load the cache at ``path``. ``files``: the scan it will be used with; rows for
        those paths share the scan's path strings (a million copies less)."""
        self.path = path
        self._rows: dict[str, bytes] = {}
        self.matches: str | None = None
        self._dirty = False
        try:
            shared = {f.path: f.path for f in files}
            with open(path, "rb") as f:
                self._rows, self.matches = _parse(f, shared)
        except (FileNotFoundError, ValueError, UnicodeDecodeError):
            self._rows, self.matches = {}, None

    def get(self, f: LocalFile) -> FileHash | None:
        row = self._rows.get(f.path)
        key = _key(f.size, f.mtime_ns, f.ctime_ns, f.inode)
        if row is None or key == _UNUSABLE or row[: _KEY.size] != key:
            return None
        return FileHash(row[_KEY.size :])

    def put(self, f: LocalFile, digest: bytes) -> None:
        key = _key(f.size, f.mtime_ns, f.ctime_ns, f.inode)
        if key == _UNUSABLE:
            return
        row = key + digest
        if self._rows.get(f.path) != row:
            self._rows[f.path] = row
            self._dirty = True

    def retain(self, paths: Iterable[str], count: int | None = None) -> None:
        """Keep only the rows of ``paths``. ``count``: how many paths there are, when the
        caller has just put a row for each: equal row count means nothing to drop."""
        if count is not None and len(self._rows) == count:
            return
        for gone in set(self._rows) - set(paths):
            del self._rows[gone]
            self._dirty = True

    def covers(self, files: Sequence[LocalFile]) -> bool:
        """True if the rows are exactly these files, every one unchanged."""
        return len(files) == len(self._rows) and all(self.get(f) is not None for f in files)

    def mark(self, snapshot: str | None) -> None:
        """Record that the rows match ``snapshot`` exactly (None: unknown)."""
        if snapshot != self.matches:
            self.matches = snapshot
            self._dirty = True

    def save(self) -> None:
        """Write the rows, except those of files changed in the last ``RACY_NS`` (their
        timestamps could miss a change made within the same tick)."""
        if not self._dirty:
            return
        cutoff = time.time_ns() - RACY_NS
        racy = sum(1 for r in self._rows.values() if max(_KEY.unpack_from(r)[1:3]) >= cutoff)
        matches = self.matches if racy == 0 else None
        write_atomic(self.path, self._lines(f"{HEADER} {FORMAT} {matches or '-'}\n", cutoff))
        self._dirty = False

    def _lines(self, header: str, cutoff: int) -> Iterator[bytes]:
        yield header.encode()
        batch: list[str] = []
        for path, row in self._rows.items():
            size, mtime, ctime, inode = _KEY.unpack_from(row)
            if mtime < cutoff and ctime < cutoff:
                digest = row[_KEY.size :].hex()
                batch.append(f"{size} {mtime} {ctime} {inode} {digest} {path}\0")
                if len(batch) >= 4096:
                    yield "".join(batch).encode()
                    batch.clear()
        yield "".join(batch).encode()


def _key(size: int, mtime_ns: int, ctime_ns: int, inode: int) -> bytes:
    try:
        return _KEY.pack(size, mtime_ns, ctime_ns, inode)
    except struct.error:  # out of range (a clock far off): never cached
        return _UNUSABLE


def _parse(f: BinaryIO, shared: dict[str, str]) -> tuple[dict[str, bytes], str | None]:
    name, version, matches = f.readline().decode("utf-8").rstrip("\n").split(" ")
    if name != HEADER or version != str(FORMAT):
        raise ValueError("another format")
    rows: dict[str, bytes] = {}
    for record in _records(f):
        size, mtime, ctime, inode, digest, path = record.split(" ", 5)
        if len(digest) != 64:
            raise ValueError("bad hash")
        key = _key(int(size), int(mtime), int(ctime), int(inode))
        rows[shared.get(path, path)] = key + bytes.fromhex(digest)
    return rows, None if matches == "-" else matches


def _records(f: BinaryIO) -> Iterator[str]:
    """The NUL-ended records of the rest of ``f``, read 1 MiB at a time."""
    rest = b""
    while block := f.read(1 << 20):
        parts = (rest + block).split(b"\0")
        rest = parts.pop()
        for part in parts:
            yield part.decode("utf-8")
    if rest:
        raise ValueError("the last record is cut short")
