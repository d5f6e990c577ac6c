"""Pack footers read from a store: ranged, checked, and remembered once per process.

A footer names every chunk of its pack and where it is, and the pack id is its BLAKE3, so a
footer read back and checked is proof of what the pack holds without reading the pack.
Writers check the index against footers before they count a chunk as stored (an index can
name a pack that is gone, or a place where the chunk is not); fsck and gc read them too.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from ..errors import CorruptObject, IntegrityError, ObjectNotFound
from ..format.hashing import ChunkId, ObjectId, object_id
from ..format.packfile import (
    PACK_MAGIC,
    TRAILER_SIZE,
    Location,
    PackEntry,
    footer_count,
    footer_row,
    footer_rows,
    footer_size,
    parse_footer,
)
from .backend import Backend

if TYPE_CHECKING:
    from ..format.newrows import NewRows

TAIL = 64 << 10  # read from a pack's end at once: the whole footer of ~1,300 chunks


def read_footer(backend: Backend, pack: ObjectId, size: int | None = None) -> bytes:
    """A pack's footer (entries and trailer), with two ranged reads at most: the last
    ``TAIL`` bytes, then the rest of the footer if it is longer. Checked: it hashes to the
    pack id and tiles the pack's ``size`` bytes (listed, or asked for)."""
    key = f"packs/{pack}"
    if size is None:
        size = backend.size(key)
    if size < len(PACK_MAGIC) + TRAILER_SIZE:
        raise CorruptObject(key, f"pack of {size} bytes is shorter than its trailer")
    tail = backend.read_range(key, max(0, size - TAIL), size)
    need = footer_size(footer_count(tail[-TRAILER_SIZE:], size, key))
    if need > len(tail):
        tail = backend.read_range(key, size - need, size - len(tail)) + tail
    footer = tail[len(tail) - need :]
    got = object_id(footer)
    if got != pack:
        raise IntegrityError(key, pack, got, what="pack footer")
    parse_footer(footer, size, key)
    return footer


def footer_entries(backend: Backend, pack: ObjectId, size: int | None = None) -> list[PackEntry]:
    """A pack's footer entries (see :func:`read_footer`)."""
    key = f"packs/{pack}"
    if size is None:
        size = backend.size(key)
    return parse_footer(read_footer(backend, pack, size), size, key)


class Footers:
    """Which packs hold which chunks where, as their footers say: each footer read once
    (ranged) on first need, kept as raw rows. A pack that is missing, or whose footer does
    not check out, holds nothing. Thread-safe."""

    def __init__(self, backend: Backend, condemned: frozenset[ObjectId] = frozenset()) -> None:
        self._backend = backend
        self._rows: dict[ObjectId, frozenset[bytes]] = {}
        self._trusted: dict[ObjectId, NewRows] = {}  # packs this process stored
        self._lock = threading.Lock()
        self.condemned = condemned  # packs a gc will delete: holding nothing for writers
        self.stored: set[ObjectId] = set()  # packs this process stored
        self.reads = 0

    def trust(self, pack: ObjectId, rows: NewRows) -> None:
        """Trust the footer of a pack this process has just stored: ``rows`` records its
        chunks (no read needed; a row dropped since counts as not held)."""
        with self._lock:
            self._trusted[pack] = rows
            self.stored.add(pack)

    def holds(self, cid: ChunkId, loc: Location) -> bool:
        """Whether the pack ``loc`` names exists and its footer lists ``cid`` at ``loc``."""
        if loc.pack in self.condemned:
            return False
        trusted = self._trusted.get(loc.pack)
        if trusted is not None:
            return trusted.find(cid) == loc
        return footer_row(cid, loc) in self._footer(loc.pack)

    def _footer(self, pack: ObjectId) -> frozenset[bytes]:
        with self._lock:
            rows = self._rows.get(pack)
            if rows is not None:
                return rows
            try:
                self.reads += 1
                rows = footer_rows(read_footer(self._backend, pack))
            except (ObjectNotFound, IntegrityError):
                rows = frozenset()  # gone or damaged: it holds nothing a writer may reuse
            self._rows[pack] = rows
            return rows
