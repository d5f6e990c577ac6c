"""Snapshot trees in a store: write a tree's pages, read them back, find one file's entry,
and diff two trees (reading only the pages that differ).

Pages are read one at a time, so memory does not grow with the number of files; a page's
location hints go to the chunk store, so reading its files' chunks needs no index.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from ..format.tree import (
    FileEntry,
    Hints,
    PageRef,
    TreeRoot,
    check_page,
    decode_page,
    encode_page,
    find_in_page,
    split_pages,
)
from .chunkstore import ChunkStore
from .lru import BytesCache, Cache

PAGE_CACHE_BYTES = 64 << 20
PARSED_PAGES = 16  # a page has up to some thousands of entries: tens of MiB at most


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


def write_tree(store: ChunkStore, entries: list[FileEntry]) -> TreeRoot:
    """Write the pages and return the root (its id is the snapshot id; the root itself is
    stored in the version record). Every chunk named must be in the store already."""
    pages: list[PageRef] = []
    for page in split_pages(entries):
        data, content = encode_page(page, store.locate_stored)
        pid = store.write_object("trees", data)
        size = sum(e.size for e in page)
        pages.append(PageRef(pid, page[0].path, page[-1].path, len(page), size, content))
    return TreeRoot(len(entries), sum(e.size for e in entries), tuple(pages))


def load_page(
    store: ChunkStore, page: PageRef, hints: bool = True, cache: PageCache | None = None
) -> list[FileEntry]:
    """A page's entries; its chunks' location hints go to the store (unless ``hints`` is
    False: the caller reads no chunks), so reading a file needs no index."""
    entries, found = _decoded(store, page, hints, cache)
    if found:
        store.add_hints(found)
    return entries


def _decoded(
    store: ChunkStore, page: PageRef, hints: bool, cache: PageCache | None
) -> tuple[list[FileEntry], Hints]:
    """A page's entries, checked against the root's record of it, and its hints."""
    obj = f"trees/{page.id}"
    entries, found = decode_page(read_page(store, page.id, cache), obj, page.content, hints)
    check_page(entries, page, obj)
    return entries, found


def iter_entries(
    store: ChunkStore, root: TreeRoot, hints: bool = True, cache: PageCache | None = None
) -> Iterator[FileEntry]:
    for page in root.pages:
        yield from load_page(store, page, hints, cache)


Parsed = tuple[dict[str, FileEntry], Hints]
PARSED: Cache[Parsed] = Cache(PARSED_PAGES, lambda _: 1)
"""Pages decoded and checked (each path's entry, and the page's location hints) by page
id, the last used kept for the process: a reader opening many files of one page (a
DataLoader worker) decodes it once, not once per file."""


def lookup(store: ChunkStore, root: TreeRoot, path: str, hinted: set[str]) -> FileEntry | None:
    """One file's entry through :data:`PARSED`; the hints of each page go to ``store`` the
    first time (``hinted``: the pages whose hints it has)."""
    for page in root.pages_for(path):
        parsed = PARSED.get(page.id)
        if parsed is None:
            entries, page_hints = _decoded(store, page, True, PAGES)
            parsed = ({e.path: e for e in entries}, page_hints)
            PARSED.put(page.id, parsed)
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
        entry, hints = find_in_page(data, f"trees/{page.id}", page.content, path)
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
    for page in pages:
        yield from load_page(store, page, hints=False)
