"""Where a snapshot's pages end (pure): after a path that :func:`cut_here` picks, or at a
page's size limits (FORMAT.md, "Cutting pages")."""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator, Sequence

from .tree import ITEM_BYTES, FileEntry

PAGE_MAX_ENTRIES = 65536  # a writer cuts a page at this many entries
PAGE_MAX_BYTES = 4 << 20  # or at about this many bytes
CUT_MASK = (1 << 11) - 1  # a page ends after a path whose CRC-32 has these bits 0 (1 in 2048)


def cut_here(raw_path: bytes) -> bool:
    """Whether a page ends after the entry of this path (UTF-8): a property of the path
    alone, so a change to one file moves the cuts of its own page only, and a writer can
    keep the other pages of the snapshot it started from as they are."""
    return zlib.crc32(raw_path) & CUT_MASK == 0


class Cutter:
    """Cuts sorted entries into pages: after an entry whose path :func:`cut_here` picks,
    or once a page holds ``PAGE_MAX_ENTRIES`` entries or weighs ``PAGE_MAX_BYTES``. The
    cuts depend only on the entries, so equal trees get equal pages and ids."""

    __slots__ = ("_page", "_weight")

    def __init__(self) -> None:
        self._page: list[FileEntry] = []
        self._weight = 0

    @property
    def empty(self) -> bool:
        """True at a cut: a page ended here (or nothing was pushed)."""
        return not self._page

    def push(self, e: FileEntry) -> list[FileEntry] | None:
        """Add the next entry; the page it ends, if it ends one."""
        raw = e.path.encode()
        self._page.append(e)
        self._weight += len(raw) + 50 + ITEM_BYTES * len(e.chunks)
        if cut_here(raw) or len(self._page) >= PAGE_MAX_ENTRIES or self._weight >= PAGE_MAX_BYTES:
            return self.flush()
        return None

    def push_many(
        self, entries: Sequence[FileEntry], start: int
    ) -> tuple[int, list[FileEntry] | None]:
        """:meth:`push` of ``entries[start:]`` until one ends a page: where it stopped
        (the index after the last entry taken) and the page ended, if one did."""
        page, weight, per_chunk = self._page, self._weight, ITEM_BYTES
        crc, mask, most_entries, most_bytes = zlib.crc32, CUT_MASK, PAGE_MAX_ENTRIES, PAGE_MAX_BYTES
        for i in range(start, len(entries)):
            e = entries[i]
            raw = e.path.encode()
            page.append(e)
            weight += len(raw) + 50 + per_chunk * len(e.chunks)
            if crc(raw) & mask == 0 or len(page) >= most_entries or weight >= most_bytes:
                self._weight = weight
                return i + 1, self.flush()
        self._weight = weight
        return len(entries), None

    def flush(self) -> list[FileEntry] | None:
        """The last page (the entries pushed since the last cut), if any."""
        page, self._page, self._weight = self._page, [], 0
        return page or None


def split_pages(entries: Iterable[FileEntry]) -> Iterator[list[FileEntry]]:
    """Cut sorted entries into pages (see :class:`Cutter`)."""
    cutter = Cutter()
    for e in entries:
        page = cutter.push(e)
        if page is not None:
            yield page
    last = cutter.flush()
    if last is not None:
        yield last
