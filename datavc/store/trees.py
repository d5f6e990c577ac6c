"""Snapshot trees in a store: read a tree's pages, find one file's entry, and diff two
trees (reading only the pages that differ). Writing them is :mod:`.treewriter`.

Pages are read one at a time, so memory does not grow with the number of files; a page's
location hints go to the chunk store, so reading its files' chunks needs no index. From a
remote store, a reader that walks a snapshot's pages in order has the next few read
meanwhile (:func:`in_order`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

from ..format.tree import (
    FileEntry,
    Hints,
    PageRef,
    TreeRoot,
    check_page,
    decode_page,
    find_in_page,
)
from .chunkstore import ChunkStore
from .lru import BytesCache, Cache

PAGE_CACHE_BYTES = 64 << 20
PARSED_PAGES = 16  # a page has up to some thousands of entries: tens of MiB at most
PAGES_AHEAD = 4
"""Pages read at once from a remote store by a reader that walks a snapshot in order. Each
page read is a round trip: at 80 ms, the 490 pages of a million tiny files cost 39 s one
after another. A page body is at most 4 MiB and some bytes (FORMAT.md, "Cutting pages"),
so the pages read ahead stay within tens of MiB."""

_T = TypeVar("_T")


class PageCache(BytesCache):
    """Tree pages by id, kept for the process, for readers that open many files of one
    snapshot: a filesystem and every copy of it unpickled in the same worker process read
    each page once (see :mod:`.lru`)."""


PAGES = PageCache(PAGE_CACHE_BYTES)


def read_page(store: ChunkStore, oid: str, cache: PageCache | None) -> bytes:
    """A page's bytes (checked against ``oid``), from ``cache`` when it has them."""
    data = cache.get(oid) if cache is not None else None
    if data is None:
        data = store.read_object("trees", oid)
        if cache is not None:
            cache.put(oid, data)
    return data


def load_page(
    store: ChunkStore, page: PageRef, hints: bool = True, cache: PageCache | None = None
) -> list[FileEntry]:
    """A page's entries; its chunks' location hints go to the store (unless ``hints`` is
    False: the caller reads no chunks), so reading a file needs no index."""
    entries, found = _decoded(store, page, hints, cache)
    if found:
        store.add_hints(found)
    return entries


def decoded_page(store: ChunkStore, page: PageRef) -> tuple[list[FileEntry], Hints]:
    """A page's entries, checked against the root's record of it, and its chunks' hints
    (kept by the caller, not given to the store)."""
    return _decoded(store, page, True, None)


def _decoded(
    store: ChunkStore, page: PageRef, hints: bool, cache: PageCache | None
) -> tuple[list[FileEntry], Hints]:
    """A page's entries, checked against the root's record of it, and its hints."""
    obj = f"trees/{page.id}"
    data = read_page(store, page.id, cache)
    entries, found = decode_page(data, obj, page.content, hints, files=page.files)
    check_page(entries, page, obj)
    return entries, found


def in_order(
    store: ChunkStore, pages: Sequence[PageRef], load: Callable[[PageRef], _T]
) -> Iterator[_T]:
    """``load(page)`` for each page, in order. From a remote store the next
    :data:`PAGES_AHEAD` are loaded meanwhile, on threads; from a local one each when it is
    needed. ``load`` must be safe to call on several threads at once."""
    if store.backend.is_local or len(pages) < 2:
        return map(load, pages)
    from .reader import read_ahead

    return read_ahead(pages, load, PAGES_AHEAD)


def decoded_pages(
    store: ChunkStore, pages: Sequence[PageRef]
) -> Iterator[tuple[list[FileEntry], Hints]]:
    """Each page's entries and hints (:func:`decoded_page`), in order (:func:`in_order`)."""
    return in_order(store, pages, functools.partial(decoded_page, store))


def iter_entries(
    store: ChunkStore, root: TreeRoot, hints: bool = True, cache: PageCache | None = None
) -> Iterator[FileEntry]:
    """The snapshot's entries in path order, a page at a time (see :func:`load_page`)."""
    load = functools.partial(_decoded, store, hints=hints, cache=cache)
    for entries, found in in_order(store, root.pages, load):
        if found:
            store.add_hints(found)
        yield from entries


class EntryCursor:
    """A snapshot's entries, looked up in path order (beside a scan of its folder)."""

    __slots__ = ("_entries", "head")

    def __init__(self, entries: Iterable[FileEntry]) -> None:
        self._entries = iter(entries)
        self.head = next(self._entries, None)

    def at(self, path: str) -> FileEntry | None:
        """The entry at ``path``, None if the snapshot has none (paths before it are
        passed; the same path may be asked again)."""
        while self.head is not None and self.head.path < path:
            self.head = next(self._entries, None)
        return self.head if self.head is not None and self.head.path == path else None


Parsed = tuple[dict[str, FileEntry], Hints]
PARSED: Cache[Parsed] = Cache(PARSED_PAGES, lambda _: 1)
"""Pages decoded and checked (each path's entry, and the page's location hints) by their
reference in a root (page id, content id, paths and counts: what the page was checked
against, not its id alone, which a crafted root can name beside another page's content
id), the last used kept for the process: a reader opening many files of one page (a
DataLoader worker) decodes it once, not once per file."""


def lookup(store: ChunkStore, root: TreeRoot, path: str, hinted: set[str]) -> FileEntry | None:
    """One file's entry through :data:`PARSED`; the hints of each page go to ``store`` the
    first time (``hinted``: the pages whose hints it has)."""
    for page in root.pages_for(path):
        parsed = PARSED.get(page)
        if parsed is None:
            entries, page_hints = _decoded(store, page, True, PAGES)
            parsed = ({e.path: e for e in entries}, page_hints)
            PARSED.put(page, parsed)
        table, hints = parsed
        if page.id not in hinted:
            store.add_hints(hints)
            hinted.add(page.id)
        entry = table.get(path)
        if entry is not None:
            return entry
    return None


def find_entry(
    store: ChunkStore, root: TreeRoot, path: str, cache: PageCache | None = None
) -> FileEntry | None:
    """One file's entry: the one page that can hold it is read (or found in ``cache``),
    only that entry decoded."""
    for page in root.pages_for(path):
        data = read_page(store, page.id, cache)
        entry, hints = find_in_page(data, f"trees/{page.id}", page.content, path, page.files)
        if entry is not None:
            store.add_hints(hints)
            return entry
    return None


@dataclass(frozen=True, slots=True)
class TreeDiff:
    added: tuple[str, ...]
    removed: tuple[str, ...]
    modified: tuple[str, ...]

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.modified)


def diff_entries(old: Iterable[FileEntry], new: Iterable[FileEntry]) -> TreeDiff:
    before = {e.path: (e.hash, e.mode) for e in old}
    after = {e.path: (e.hash, e.mode) for e in new}
    return TreeDiff(
        tuple(sorted(p for p in after if p not in before)),
        tuple(sorted(p for p in before if p not in after)),
        tuple(sorted(p for p in after if p in before and after[p] != before[p])),
    )


def diff_trees(
    store: ChunkStore, old: TreeRoot | None, new: TreeRoot
) -> Iterator[tuple[str, FileEntry]]:
    """What changed from ``old`` (None: empty) to ``new``, in path order: ("added", entry),
    ("removed", entry) or ("modified", new entry); a new mode counts as a change.

    Pages with the same content id in both trees hold the same entries, so they are skipped
    unread; the rest are merged one page at a time, so memory does not grow with the
    number of files."""
    common = {p.content for p in new.pages} & {p.content for p in old.pages} if old else set()
    before = _entries_of(store, [p for p in old.pages if p.content not in common] if old else [])
    after = _entries_of(store, [p for p in new.pages if p.content not in common])
    return merge_entries(before, after)


def merge_entries(
    before: Iterator[FileEntry], after: Iterator[FileEntry]
) -> Iterator[tuple[str, FileEntry]]:
    """The changes between two entry streams sorted by path (see :func:`diff_trees`)."""
    a, b = next(before, None), next(after, None)
    while a is not None or b is not None:
        if a is not None and (b is None or a.path < b.path):
            yield "removed", a
            a = next(before, None)
        elif b is not None and (a is None or b.path < a.path):
            yield "added", b
            b = next(after, None)
        elif a is not None and b is not None:
            if (a.hash, a.mode) != (b.hash, b.mode):
                yield "modified", b
            a, b = next(before, None), next(after, None)


def _entries_of(store: ChunkStore, pages: list[PageRef]) -> Iterator[FileEntry]:
    load = functools.partial(_decoded, store, hints=False, cache=None)
    for entries, _ in in_order(store, pages, load):
        yield from entries
