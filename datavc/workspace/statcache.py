"""The stat cache: (size, mtime_ns, ctime_ns, inode) -> file hash, per dataset.

Lets ``status`` and a repeated ``add`` skip reading unchanged files. An entry is trusted only
if every stat field matches; entries for files modified in the last two seconds before saving
are dropped, so a write within the file system's timestamp granularity is never missed.

It also remembers the snapshot id its rows were last found to match exactly (``matches``):
when every file still hits its row, and there are no more and no fewer files, the folder
still equals that snapshot, and ``status`` need not read the snapshot at all.

File format (UTF-8 text, written in one streaming pass; a million files must not mean a
million-row JSON document in memory): a header line ``datavc-statcache 3 <matches or ->
<scan digest or ->`` (the scan digest: BLAKE3 over every row's path, NUL and packed stat
values, in path order, written when ``matches`` is),
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

from ..format.hashing import FileHash, file_hasher
from ..store.atomic import write_atomic
from ..store.files import LocalFile

RACY_NS = 2_000_000_000
HEADER = "datavc-statcache"
FORMAT = 3

# In memory a row is packed: size, mtime_ns, ctime_ns, inode, then the 32-byte file hash
# (97 bytes a file, against ~230 for a tuple of Python ints).
_KEY = struct.Struct("<QqqQ")
_UNUSABLE = b""


class StatCache:
    def __init__(self, path: str, files: Sequence[LocalFile] = ()) -> None:
        """Open the cache at ``path``; its rows are read on first use. ``files``: the scan
        it will be used with (rows for those paths share the scan's path strings)."""
        self.path = path
        self._files = files
        self._loaded: dict[str, bytes] | None = None
        self.matches: str | None = None
        self._scan_digest: str | None = None  # digest of (path, stat) of every row
        self._dirty = False
        try:
            with open(path, "rb") as f:
                name, version, matches, digest = f.readline().decode().rstrip("\n").split(" ")
            if name == HEADER and version == str(FORMAT):
                self.matches = None if matches == "-" else matches
                self._scan_digest = None if digest == "-" else digest
        except (OSError, ValueError, UnicodeDecodeError):
            pass

    def load(self) -> None:
        """Read the rows now (while the scan given to the constructor is whole)."""
        _ = self._rows

    @property
    def _rows(self) -> dict[str, bytes]:
        if self._loaded is None:
            self._loaded = self._read()
        return self._loaded

    def _read(self) -> dict[str, bytes]:
        try:
            shared = {f.path: f.path for f in self._files}
            with open(self.path, "rb") as f:
                return _parse(f, shared)
        except (OSError, ValueError, UnicodeDecodeError):
            self.matches = self._scan_digest = None
            return {}
        finally:
            self._files = ()

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
            self.matches = None  # the rows changed: they match a snapshot only if marked again

    def retain(self, paths: Iterable[str], count: int | None = None) -> None:
        """Keep only the rows of ``paths``. ``count``: how many paths there are, when the
        caller has just put a row for each: equal row count means nothing to drop."""
        if count is not None and len(self._rows) == count:
            return
        for gone in set(self._rows) - set(paths):
            del self._rows[gone]
            self._dirty = True

    def covers(self, files: Sequence[LocalFile]) -> bool:
        """True if the rows are exactly these files, every one unchanged. When the saved
        digest of every row's path and stat values equals the scan's, the rows need not
        be read at all (``status`` of an unchanged folder)."""
        if (
            self._loaded is None
            and self._scan_digest is not None
            and (
                scan_digest((f.path, _key(f.size, f.mtime_ns, f.ctime_ns, f.inode)) for f in files)
                == self._scan_digest
            )
        ):
            return True
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
        digest = "-"
        if matches is not None:
            digest = scan_digest((p, self._rows[p][: _KEY.size]) for p in sorted(self._rows))
        header = f"{HEADER} {FORMAT} {matches or '-'} {digest}\n"
        write_atomic(self.path, self._lines(header, cutoff))
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


def scan_digest(rows: Iterable[tuple[str, bytes]]) -> str:
    """BLAKE3 of (path, packed stat values) pairs, in path order."""
    hasher = file_hasher()
    parts: list[bytes] = []
    for path, key in rows:
        parts += (path.encode(), b"\0", key)
        if len(parts) >= 3 * 4096:  # one update per 4,096 rows: a call per row is slower
            hasher.update(b"".join(parts))
            parts.clear()
    hasher.update(b"".join(parts))
    return str(hasher.hexdigest())


def _parse(f: BinaryIO, shared: dict[str, str]) -> dict[str, bytes]:
    name, version, _, _ = f.readline().decode("utf-8").rstrip("\n").split(" ")
    if name != HEADER or version != str(FORMAT):
        raise ValueError("another format")
    rows: dict[str, bytes] = {}
    for record in _records(f):
        size, mtime, ctime, inode, digest, path = record.split(" ", 5)
        if len(digest) != 64:
            raise ValueError("bad hash")
        key = _key(int(size), int(mtime), int(ctime), int(inode))
        rows[shared.get(path, path)] = key + bytes.fromhex(digest)
    return rows


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
