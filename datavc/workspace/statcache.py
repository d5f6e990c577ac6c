"""The stat cache: what each file of a dataset's folder held when it was last read, by its
stat fields (size, mtime_ns, ctime_ns, inode), kept page by page along a snapshot's tree.

Lets ``status`` and a repeated ``add`` skip reading unchanged files, and skip whole tree
pages: the cache follows the pages of one snapshot (``tree``), one *group* of rows per page.
A group holds the files whose paths fall after the previous page's last path, up to its own
last path (the first group from the start, the last one to the end), and a digest of their
paths and stat fields. When a scan of the folder gives the same digest for a group, and the
group is *exact* (its rows were the page's entries, path for path, hash for hash, with no
file changed within two seconds of being read), that page of the snapshot still describes
the folder, unread: ``status`` of an unchanged million files reads no page, and ``add``
keeps the unchanged pages as they are (:mod:`.add`).

A row is trusted only if every stat field matches; a row of a file modified in the two
seconds before the cache was started is written with no stat (it never matches), so a write
within the file system's timestamp granularity is never missed.

File (binary, written in one streaming pass to a temporary file, then renamed)::

    header line, 152 bytes: "datavc-statcache 4 <tree> <matches>\\n" (64 hex digits each,
        or 64 "-": unknown); matches: the snapshot the folder equalled when last checked
    then per group: magic b"G" | content id (32; zeros: no page) | flags u8 (1: exact,
        2: open-ended) | digest (32) | last path length u16 | last path (UTF-8) |
        pack count u16 | pack ids (32 each) | row count u32 | rows length u32 | rows
    row: path length u16 | path | size u64 | mtime_ns i64 | ctime_ns i64 | inode u64 |
        mode u32 | file hash (32)

Little-endian. A file in another format, or damaged, is ignored (the cache is rebuilt).
Groups are read one at a time: memory grows with a page's files, not the folder's.
"""

from __future__ import annotations

import contextlib
import os
import struct
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO

from ..format.hashing import FileHash, file_hasher
from ..store.files import LocalFile

if TYPE_CHECKING:
    from ..format.tree import FileEntry

RACY_NS = 2_000_000_000
HEADER = b"datavc-statcache"
FORMAT = 4
_HEADER_LEN = len(HEADER) + 3 + 2 * 65 + 1
_UNKNOWN = "-" * 64
NO_PAGE = bytes(32)
EXACT, OPEN_ENDED = 1, 2

KEY = struct.Struct("<QqqQ")  # size, mtime_ns, ctime_ns, inode
UNUSABLE = bytes(KEY.size)  # never equal to a real file's (a size-0 file has an inode)
_ROW_TAIL = struct.Struct("<32sI32s")  # key, mode, hash
_GROUP = struct.Struct("<c32sB32sH")  # magic, content id, flags, digest, last path length
_U16 = struct.Struct("<H")
_U32x2 = struct.Struct("<II")
_PACKED = struct.Struct("<B32sI")  # racy, digest, row count (then the rows)
_LIMIT_ROWS = 1 << 26  # what a reader takes in one group (a damaged count is not believed)


@dataclass(frozen=True, slots=True)
class Row:
    key: bytes  # packed stat fields (:data:`KEY`), or :data:`UNUSABLE`
    mode: int
    hash: FileHash


@dataclass(frozen=True, slots=True)
class Group:
    """One page's group of rows, as the file holds it (the rows are read on demand)."""

    content: bytes  # the page's content id (raw), or NO_PAGE
    last: str | None  # the last path the group takes; None: to the end
    exact: bool
    digest: bytes
    packs: tuple[str, ...]  # the packs the page's hints name
    count: int
    start: int  # where the group's bytes begin in the file
    rows_at: int
    end: int


def stat_key(f: LocalFile) -> bytes:
    try:
        return KEY.pack(f.size, f.mtime_ns, f.ctime_ns, f.inode)
    except struct.error:  # out of range (a clock far off): never cached
        return UNUSABLE


class GroupDigest:
    """BLAKE3 of (path, packed stat) pairs in path order: what a group's files were."""

    __slots__ = ("_hasher", "_parts")

    def __init__(self) -> None:
        self._hasher = file_hasher()
        self._parts: list[bytes] = []

    def add(self, path: str, key: bytes) -> None:
        parts = self._parts
        parts += (path.encode(), b"\0", key)
        if len(parts) >= 3 * 4096:  # one update per 4,096 rows: a call per row is slower
            self.flush_parts()

    @property
    def parts(self) -> list[bytes]:
        """The pieces not hashed yet (path UTF-8, NUL, key, for each row): a caller may
        append to them, then :meth:`flush_parts`."""
        return self._parts

    def flush_parts(self) -> None:
        self._hasher.update(b"".join(self._parts))
        self._parts.clear()

    def feed(self, rows: bytes) -> None:
        """Rows already joined, each its path (UTF-8), a NUL and its key: as :meth:`add`."""
        self._hasher.update(rows)

    def digest(self) -> bytes:
        self._hasher.update(b"".join(self._parts))
        self._parts.clear()
        return bytes(self._hasher.digest())


class StatCache:
    """A saved stat cache, read a group at a time (empty if missing, damaged or of another
    format)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.tree: str | None = None
        self.matches: str | None = None
        self.groups: list[Group] = []
        try:
            with open(path, "rb") as f:
                self.tree, self.matches, self.groups = _read_groups(f)
        except (OSError, ValueError, UnicodeDecodeError, struct.error):
            self.tree = self.matches = None
            self.groups = []

    def rows(self, g: Group) -> dict[str, Row]:
        """A group's rows by path (an empty dict if the file changed under us)."""
        try:
            with open(self.path, "rb") as f:
                f.seek(g.rows_at)
                data = f.read(g.end - g.rows_at)
            return dict(_iter_rows(data, g.count))
        except (OSError, ValueError, UnicodeDecodeError, struct.error):
            return {}

    def row_list(self, g: Group) -> list[tuple[str, bytes, bytes]]:
        """A group's rows in path order as (path, key, hash), nothing else built (an empty
        list if the file changed under us)."""
        try:
            with open(self.path, "rb") as f:
                f.seek(g.rows_at)
                data = f.read(g.end - g.rows_at)
            return list(_iter_row_tuples(data, g.count))
        except (OSError, ValueError, UnicodeDecodeError, struct.error):
            return []

    def raw(self, f: BinaryIO, g: Group) -> bytes:
        """A group's bytes as they are, to carry it into a new cache unchanged."""
        f.seek(g.start)
        data = f.read(g.end - g.start)
        if len(data) != g.end - g.start:
            raise ValueError("the stat cache changed")
        return data

    def all_rows(self) -> dict[str, Row]:
        """Every row by path: for callers that look files up in no order (checkout's
        first look at a folder). Memory grows with the number of files."""
        out: dict[str, Row] = {}
        for g in self.groups:
            out.update(self.rows(g))
        return out


def _read_groups(f: BinaryIO) -> tuple[str | None, str | None, list[Group]]:
    head = f.read(_HEADER_LEN)
    parts = head.rstrip(b"\n").split(b" ")
    if len(head) != _HEADER_LEN or parts[:2] != [HEADER, str(FORMAT).encode()]:
        raise ValueError("another format")
    tree, matches = (None if p.decode() == _UNKNOWN else p.decode() for p in parts[2:4])
    groups: list[Group] = []
    size = os.fstat(f.fileno()).st_size
    pos = _HEADER_LEN
    while pos < size:
        f.seek(pos)
        fixed = f.read(_GROUP.size)
        magic, content, flags, digest, nlast = _GROUP.unpack(fixed)
        if magic != b"G":
            raise ValueError("not a group")
        rest = f.read(nlast + _U16.size)
        last = rest[:nlast].decode("utf-8")
        (npacks,) = _U16.unpack_from(rest, nlast)
        packs = f.read(32 * npacks)
        count, length = _U32x2.unpack(f.read(_U32x2.size))
        if len(packs) != 32 * npacks or count > _LIMIT_ROWS:
            raise ValueError("damaged group")
        rows_at = pos + _GROUP.size + nlast + _U16.size + 32 * npacks + _U32x2.size
        end = rows_at + length
        if end > size:
            raise ValueError("cut short")
        groups.append(
            Group(
                content,
                None if flags & OPEN_ENDED else last,
                bool(flags & EXACT),
                digest,
                tuple(packs[i : i + 32].hex() for i in range(0, len(packs), 32)),
                count,
                pos,
                rows_at,
                end,
            )
        )
        pos = end
    return tree, matches, groups


def _iter_rows(data: bytes, count: int) -> Iterator[tuple[str, Row]]:
    pos = 0
    for _ in range(count):
        (n,) = _U16.unpack_from(data, pos)
        pos += _U16.size
        path = data[pos : pos + n].decode("utf-8")
        pos += n
        key, mode, digest = _ROW_TAIL.unpack_from(data, pos)
        pos += _ROW_TAIL.size
        yield path, Row(key, mode, FileHash(digest))
    if pos != len(data):
        raise ValueError("group length")


def _iter_row_tuples(data: bytes, count: int) -> Iterator[tuple[str, bytes, bytes]]:
    pos, u16, tail = 0, _U16.unpack_from, _ROW_TAIL.unpack_from
    for _ in range(count):
        (n,) = u16(data, pos)
        pos += 2
        path = data[pos : pos + n].decode("utf-8")
        pos += n
        key, _, digest = tail(data, pos)
        pos += _ROW_TAIL.size
        yield path, key, digest
    if pos != len(data):
        raise ValueError("group length")


class GroupRows:
    """The rows of one group being written: in path order, each with its digest part."""

    __slots__ = ("_cutoff", "_digest", "_parts", "count", "racy")

    def __init__(self, cutoff: int) -> None:
        self._parts: list[bytes] = []
        self._digest = GroupDigest()
        self.count = 0
        self.racy = False
        self._cutoff = cutoff

    def add(self, f: LocalFile, mode: int, digest: bytes) -> None:
        key = stat_key(f)
        if f.mtime_ns >= self._cutoff or f.ctime_ns >= self._cutoff:
            key = UNUSABLE  # changed too recently to be sure a later change shows
        if key == UNUSABLE:
            self.racy = True
        self.add_row(f.path, key, mode, digest)

    def add_row(self, path: str, key: bytes, mode: int, digest: bytes) -> None:
        raw = path.encode()
        self._parts += (_U16.pack(len(raw)), raw, _ROW_TAIL.pack(key, mode, digest))
        self._digest.add(path, key)
        self.count += 1

    def add_kept(
        self, entries: Sequence[FileEntry], rows: Sequence[tuple[str, bytes, bytes]]
    ) -> None:
        """Rows carried over as they were (path, key, hash), for entries kept as they
        were, one for one (:meth:`add_row` each, in one loop)."""
        parts, digest_parts = self._parts, self._digest.parts
        u16, tail = _U16.pack, _ROW_TAIL.pack
        for e, (_, key, digest) in zip(entries, rows, strict=True):
            raw = e.path.encode()
            parts += (u16(len(raw)), raw, tail(key, e.mode, digest))
            digest_parts += (raw, b"\0", key)
        self._digest.flush_parts()
        self.count += len(entries)

    def finish(self) -> tuple[bytes, bytes]:
        """The rows' bytes and the group digest."""
        return b"".join(self._parts), self._digest.digest()

    def pack(self) -> bytes:
        """The rows, their digest and whether one is racy, as one blob to put aside
        (:meth:`CacheWriter.packed_group` writes it)."""
        data, digest = self.finish()
        return _PACKED.pack(int(self.racy), digest, self.count) + data


class CacheWriter:
    """Writes a new stat cache group by group, then puts it in place of the old one."""

    def __init__(self, path: str, started_ns: int | None = None) -> None:
        self.path = path
        self.cutoff = (started_ns if started_ns is not None else now_ns()) - RACY_NS
        folder = os.path.dirname(path)
        os.makedirs(folder, exist_ok=True)
        fd, self._tmp = tempfile.mkstemp(prefix=".statcache-", dir=folder)
        self._f = os.fdopen(fd, "wb", buffering=1 << 20)
        self._f.write(b"\0" * _HEADER_LEN)  # the header goes in last
        self.all_exact = True

    def rows(self) -> GroupRows:
        return GroupRows(self.cutoff)

    def group(
        self,
        content: bytes,
        last: str | None,
        rows: GroupRows,
        exact: bool,
        packs: Iterable[str] = (),
    ) -> None:
        """A group's rows; ``exact``: they are the page's entries (no other file, no other
        content). A group with a row of a file changed too recently is never exact."""
        data, digest = rows.finish()
        self._write(content, last, data, digest, rows.count, exact and not rows.racy, packs)

    def packed_group(
        self, content: bytes, last: str | None, packed: bytes, packs: Iterable[str]
    ) -> None:
        """A group from :meth:`GroupRows.pack`'s blob: the rows of a page just written
        (its entries, so exact unless a row is racy)."""
        racy, digest, count = _PACKED.unpack_from(packed)
        data = packed[_PACKED.size :]
        self._write(content, last, data, digest, count, not racy, packs)

    def _write(
        self,
        content: bytes,
        last: str | None,
        data: bytes,
        digest: bytes,
        count: int,
        exact: bool,
        packs: Iterable[str],
    ) -> None:
        self.all_exact &= exact
        flags = (EXACT if exact else 0) | (OPEN_ENDED if last is None else 0)
        raw_last = (last or "").encode()
        pack_ids = [bytes.fromhex(p) for p in packs]
        self._f.write(_GROUP.pack(b"G", content, flags, digest, len(raw_last)))
        self._f.write(raw_last + _U16.pack(len(pack_ids)) + b"".join(pack_ids))
        self._f.write(_U32x2.pack(count, len(data)))
        self._f.write(data)

    def copy(self, cache: StatCache, source: BinaryIO, g: Group, last: str | None) -> None:
        """Carry a group of the old cache over unchanged (its page is kept as it is);
        ``last``: where it now ends (None: it is now the last group)."""
        if (last is None) != (g.last is None):  # the open end moved: rewrite the header
            rows = self.rows()
            for path, row in cache.rows(g).items():
                rows.add_row(path, row.key, row.mode, row.hash)
            self.group(g.content, last, rows, g.exact, g.packs)
            return
        self.all_exact &= g.exact
        self._f.write(cache.raw(source, g))

    def finish(self, tree: str | None, matches: str | None) -> None:
        self._f.seek(0)
        header = f"{HEADER.decode()} {FORMAT} {tree or _UNKNOWN} {matches or _UNKNOWN}\n"
        self._f.write(header.encode())
        self._f.close()
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        self._f.close()
        with contextlib.suppress(OSError):
            os.unlink(self._tmp)


def groups_by_page(cache: StatCache, pages: Iterable[tuple[bytes, str]]) -> list[Group] | None:
    """The cache's groups if they follow these pages (content id, last path), in order."""
    pages = list(pages)
    if len(pages) != len(cache.groups):
        return None
    for g, (content, last) in zip(cache.groups, pages, strict=True):
        if g.content != content:
            return None
        if g.last is not None and g.last != last:
            return None
    return cache.groups


def split_scan(
    files: Iterator[LocalFile], bounds: list[str | None]
) -> Iterator[tuple[int, Iterator[LocalFile]]]:
    """The files of a path-ordered scan, grouped: group i takes the paths after bound
    i-1, up to bound i (None: to the end). Every group is yielded, in order, as an
    iterator of its files (what the caller leaves of one is skipped before the next)."""
    scan = _Peek(files)
    for i, bound in enumerate(bounds):
        group = scan.until(bound)
        yield i, group
        for _ in group:
            pass
    if scan.head is not None:
        raise ValueError("files past the last group")  # the last bound is None


class _Peek:
    __slots__ = ("_files", "head")

    def __init__(self, files: Iterator[LocalFile]) -> None:
        self._files = files
        self.head = next(files, None)

    def until(self, bound: str | None) -> Iterator[LocalFile]:
        while self.head is not None and (bound is None or self.head.path <= bound):
            f = self.head
            self.head = next(self._files, None)
            yield f


def scan_digest(files: Iterable[LocalFile]) -> bytes:
    d = GroupDigest()
    for f in files:
        d.add(f.path, stat_key(f))
    return d.digest()


class PathRows:
    """Every row of a saved cache by path, for lookups in no order (checkout's first look
    at a folder, and a folder compared with a snapshot its cache does not follow). Memory
    grows with the number of files; rows put here are kept for :func:`write_for_tree`."""

    def __init__(self, cache: StatCache) -> None:
        self.cache = cache
        self._rows: dict[str, Row] | None = None

    @property
    def rows(self) -> dict[str, Row]:
        if self._rows is None:
            self._rows = self.cache.all_rows()
        return self._rows

    def get(self, f: LocalFile) -> FileHash | None:
        row = self.rows.get(f.path)
        if row is None or row.key == UNUSABLE or row.key != stat_key(f):
            return None
        return row.hash

    def put(self, f: LocalFile, mode: int, digest: bytes) -> None:
        self.rows[f.path] = Row(stat_key(f), mode, FileHash(digest))


class SortedRows:
    """The rows of a saved cache for files looked up in path order (a scan's), one group
    in memory at a time: memory grows with a page's files, not the folder's. A file asked
    for out of order is not found (its caller reads it). ``put`` keeps nothing."""

    def __init__(self, cache: StatCache) -> None:
        self.cache = cache
        self._groups = iter(cache.groups)
        self._group: Group | None = None
        self._rows: dict[str, Row] = {}
        self._next()

    def _next(self) -> None:
        self._group = next(self._groups, None)
        self._rows = self.cache.rows(self._group) if self._group is not None else {}

    def get(self, f: LocalFile) -> FileHash | None:
        path = f.path
        while self._group is not None and self._group.last is not None and path > self._group.last:
            self._next()
        row = self._rows.get(path)
        if row is None or row.key == UNUSABLE or row.key != stat_key(f):
            return None
        return row.hash

    def put(self, f: LocalFile, mode: int, digest: bytes) -> None:
        pass


def now_ns() -> int:
    """The clock the racy window is measured on (one place, for the tests to move)."""
    return time.time_ns()


def write_for_tree(
    path: str,
    tree: str,
    pages: list[tuple[bytes, str, int]],
    files: Iterator[LocalFile],
    actual: Callable[[LocalFile], tuple[int, bytes]],
    expected: Callable[[str], tuple[int, bytes] | None],
    started_ns: int | None = None,
) -> None:
    """Write a cache that follows a snapshot's pages (content id, last path, file count)
    from a scan of the folder: ``actual(f)``, a file's (mode, hash) as it is;
    ``expected(path)``, the snapshot's, None if it has no such path. A group is exact if
    its files are its page's entries, each as the snapshot has it."""
    out = CacheWriter(path, started_ns)
    try:
        bounds: list[str | None] = [last for _, last, _ in pages[:-1]] + [None]
        contents = [content for content, _, _ in pages] or [NO_PAGE]
        counts = [n for _, _, n in pages] or [0]
        for i, group in split_scan(files, bounds):
            rows = out.rows()
            exact = bool(pages)
            for f in group:
                mode, digest = actual(f)
                exact = exact and expected(f.path) == (mode, digest)
                rows.add(f, mode, digest)
            out.group(contents[i], bounds[i], rows, exact and rows.count == counts[i])
        out.finish(tree, tree if out.all_exact else None)
    except BaseException:
        out.abort()
        raise
