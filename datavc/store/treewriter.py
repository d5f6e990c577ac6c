"""Writing a snapshot's tree: its entries cut into pages as they come, in path order, and
the pages written once the chunks they name are stored, each with the location hints of its
chunks (FORMAT.md, "Snapshot trees"). Reading them back is :mod:`.trees`.
"""

from __future__ import annotations

import functools
import itertools
import struct
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..format.hashing import DIGEST_SIZE, ChunkId, ObjectId, object_id
from ..format.packfile import Location
from ..format.tree import (
    CUT_RULE,
    HINT_ROW,
    FileEntry,
    Hints,
    PageRef,
    TreeRoot,
    encode_content,
    encode_page_hinted,
)
from ..format.treecut import Cutter
from .chunkstore import ChunkStore


def write_tree(store: ChunkStore, entries: Iterable[FileEntry]) -> TreeRoot:
    """Write the pages and return the root (its id is the snapshot id; the root itself is
    stored in the version record). Every chunk named must be in the store already."""
    with TreeWriter(store) as tw:
        for e in entries:
            if tw.add(e):
                tw.attach(b"")
        if tw.end():
            tw.attach(b"")
        return tw.finish()


_U32 = struct.Struct("<I")


@dataclass(frozen=True, slots=True)
class _Spilled:
    first: str
    last: str
    files: int
    bytes: int
    content: ObjectId


class TreeWriter:
    r"""Writes a snapshot's tree from its entries as they come, in path order, in memory
    that does not grow with the number of files.

    Pages are cut as entries arrive (:class:`Cutter`), but a page's location hints can be
    written only once its new chunks' packs are stored: so each page's content and chunk
    ids go to a temporary file, and :meth:`finish` (after the pack writer finished) writes
    the pages, each chunk's hint from the places given with its entry, else the index. A
    page of an older snapshot whose entries are all kept, at a cut, is kept as it is
    (:meth:`splice`): it is not read, encoded or written again.

    After :meth:`add` or :meth:`end` says a page was cut, the caller :meth:`attach`\ es
    its own bytes for that page (b"" for none); :meth:`finish` hands them back with the
    page written (the stat cache's rows, say)."""

    def __init__(self, store: ChunkStore, spill_dir: str | None = None) -> None:
        import tempfile

        self.store = store
        self.cutter = Cutter()
        self._spill = tempfile.TemporaryFile(dir=spill_dir)  # noqa: SIM115 (closed on exit)
        self._order: list[_Spilled | tuple[PageRef, Any]] = []
        self._known: dict[ChunkId, Location] = {}  # places given with the page being cut
        self._sources: list[Hints] = []  # and old pages' hints (kept entries' places)
        self._attach_due = False
        self.files = 0
        self.bytes = 0

    def __enter__(self) -> TreeWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self._spill.close()

    @property
    def at_cut(self) -> bool:
        return self.cutter.empty

    def add(self, e: FileEntry, places: Mapping[ChunkId, Location] | None = None) -> bool:
        """The next entry, with the places of its chunks if the caller knows them (a kept
        entry's, from its old page's hints, checked live): those are not looked up in the
        index. True if it ends a page."""
        assert not self._attach_due, "attach() the last page's bytes first"
        if places:
            known = self._known
            for cid, _ in e.chunks:
                loc = places.get(cid)
                if loc is not None:
                    known[cid] = loc
        page = self.cutter.push(e)
        if page is not None:
            self._cut(page)
            return True
        return False

    def add_kept(self, entries: Sequence[FileEntry], start: int, hints: Hints | None) -> int:
        """:meth:`add` of ``entries[start:]`` (entries kept from an older page, whose
        ``hints`` each name a live pack), until one ends a page: the index after the
        last entry taken; a page ended there if it is below ``len(entries)``, or
        :attr:`at_cut` says so. A chunk of the page being cut that ``hints`` places is
        given that place (a hint is a place of the chunk's bytes, whichever file names
        it); no place is copied entry by entry."""
        assert not self._attach_due, "attach() the last page's bytes first"
        if hints and (not self._sources or self._sources[-1] is not hints):
            self._sources.append(hints)
        end, page = self.cutter.push_many(entries, start)
        if page is not None:
            self._cut(page)
        return end

    def end(self) -> bool:
        """No more entries: True if that ends a page."""
        page = self.cutter.flush()
        if page is not None:
            self._cut(page)
            return True
        return False

    def splice(self, ref: PageRef, token: Any = None) -> None:
        """Keep a page of the snapshot being changed as it is: only at a cut, where the
        writer would cut it the same way (its entries all kept, its snapshot cut by the
        same rule). ``token`` comes back with it in :meth:`finish`."""
        assert self.cutter.empty and not self._attach_due
        self._order.append((ref, token))
        self.files += ref.files
        self.bytes += ref.bytes

    def attach(self, data: bytes) -> None:
        assert self._attach_due
        self._spill.write(_U32.pack(len(data)))
        self._spill.write(data)
        self._attach_due = False

    def _cut(self, page: list[FileEntry]) -> None:
        content = encode_content(page)
        spill = self._spill
        spill.write(_U32.pack(len(content)))
        spill.write(content)
        ids = [cid for e in page for cid, _ in e.chunks]
        spill.write(_U32.pack(len(ids)))
        spill.write(b"".join(ids))
        packs, hints, missing = _page_hints(ids, self._known, self._sources)
        self._known, self._sources = {}, []
        spill.write(_U32.pack(len(packs)))
        spill.write(b"".join(packs))
        spill.write(hints)
        spill.write(_U32.pack(len(missing)))
        spill.write(missing.tobytes())
        size = sum(e.size for e in page)
        self._order.append(
            _Spilled(page[0].path, page[-1].path, len(page), size, object_id(content))
        )
        self.files += len(page)
        self.bytes += size
        self._attach_due = True

    def finish(
        self,
        on_page: Callable[[PageRef, tuple[ObjectId, ...] | None, Any], None] | None = None,
        placed: Iterable[tuple[ChunkId, Location]] = (),
    ) -> TreeRoot:
        """Write the cut pages (every chunk they name must be stored by now) and return the
        root. ``on_page(ref, packs, attached)`` for each page in order: a written page with
        the packs its hints name and its attached bytes; a spliced one with None and its
        token. ``placed``: where the upload put the chunks it stored, in the order of the
        pages' chunks (:meth:`.PackWriter.places`); a chunk placed neither there nor with
        its entry is looked up in the index."""
        assert not self._attach_due and self.cutter.empty
        from collections import deque

        from .overlap import WORKERS, Overlap

        spill = self._spill
        spill.seek(0)
        pages: list[PageRef] = []
        ahead = _Ahead(iter(placed))
        # pages are written several at once to a remote store (each PUT waits a round
        # trip), at most 2 x WORKERS held at a time; handed to on_page in order
        pending: deque[tuple[Any, Any, tuple[ObjectId, ...] | None, Any]] = deque()

        def settle_one() -> None:
            written, item, packs, extra = pending.popleft()
            ref = item
            if written is not None:
                pid = written.result()
                ref = PageRef(pid, item.first, item.last, item.files, item.bytes, item.content)
            pages.append(ref)
            if on_page is not None:
                on_page(ref, packs, extra)

        with Overlap(not self.store.backend.is_local) as overlap:
            for item in self._order:
                if isinstance(item, tuple):
                    pending.append((None, item[0], None, item[1]))
                else:
                    content = _read_exact(spill, _U32.unpack(_read_exact(spill, 4))[0])
                    (count,) = _U32.unpack(_read_exact(spill, 4))
                    ids = _read_exact(spill, count * DIGEST_SIZE)
                    (npacks,) = _U32.unpack(_read_exact(spill, 4))
                    table = _read_exact(spill, npacks * DIGEST_SIZE)
                    packs = [table[i : i + DIGEST_SIZE] for i in range(0, len(table), DIGEST_SIZE)]
                    hints = bytearray(_read_exact(spill, count * HINT_ROW.size))
                    (nmissing,) = _U32.unpack(_read_exact(spill, 4))
                    missing = array(_POSITION)
                    missing.frombytes(_read_exact(spill, nmissing * missing.itemsize))
                    if missing:
                        _place_missing(ids, missing, packs, hints, ahead, self.store.locate_stored)
                    data = encode_page_hinted(content, packs, hints)
                    packs_named = tuple(ObjectId(pack.hex()) for pack in packs)
                    del content, ids, hints, missing
                    attached = _read_exact(spill, _U32.unpack(_read_exact(spill, 4))[0])
                    written = overlap.start(
                        functools.partial(self.store.write_object, "trees", data)
                    )
                    pending.append((written, item, packs_named, attached))
                    del data
                while len(pending) > 2 * WORKERS or (pending and pending[0][0] is None):
                    settle_one()
            while pending:
                settle_one()
        return TreeRoot(self.files, self.bytes, tuple(pages), CUT_RULE)


AHEAD_MOST = 1 << 16  # places read ahead of the pages' chunks that no page took yet


class _Ahead:
    """The places an upload gave its stored chunks, in storing order, matched to the pages'
    chunks in page order: the chunks a page does not place otherwise are looked for among
    as many places as there are such chunks, read from the stream, after the places read
    before and not taken. The two orders agree for the chunks the upload stored (files go
    to the pack writer in path order, and their chunks in recipe order); the others (kept
    files, chunks stored before) find no place here and are looked up. Places read and not
    taken are held up to :data:`AHEAD_MOST`, then dropped oldest first."""

    def __init__(self, stream: Iterator[tuple[ChunkId, Location]]) -> None:
        self._stream = stream
        self._held: dict[ChunkId, Location] = {}

    def place(self, recipe: list[ChunkId], given: dict[ChunkId, _Hint]) -> None:
        """Add to ``given`` the places of the chunks of ``recipe`` it does not have."""
        need = [cid for cid in recipe if cid not in given]
        if not need:
            return
        held = self._held
        for cid, loc in itertools.islice(self._stream, len(need)):
            held[cid] = loc
        for cid in need:
            found = held.get(cid)
            if found is not None:
                del held[cid]
                given[cid] = _hint(found)
        while len(held) > AHEAD_MOST:
            del held[next(iter(held))]


# a chunk's place as a page's hint has it: pack (its raw id), offset, stored length, codec
_Hint = tuple[bytes, int, int, int]
_NOT_YET = HINT_ROW.pack(0xFFFFFFFF, 0, 0, 0)  # a hint filled in by finish()
_POSITION = "I"  # the positions of those in a page's chunks: an array of C unsigned ints


def _hint(loc: Location) -> _Hint:
    return bytes.fromhex(loc.pack), loc.offset, loc.stored_length, loc.codec


def _page_hints(
    ids: list[ChunkId], known: dict[ChunkId, Location], sources: list[Hints]
) -> tuple[list[bytes], bytes, array[int]]:
    """A page's hints as far as they are known when it is cut: each chunk's place given
    with its entry (``known``), else in an old page's hints (``sources``). The pack
    table (raw ids), a hint row for each chunk (:data:`_NOT_YET` where neither places it),
    and the positions of those. No object per chunk: a page has thousands."""
    hints, missing, row, not_yet = bytearray(), array(_POSITION), HINT_ROW.pack, _NOT_YET
    if not known and len(sources) == 1:  # kept entries of one old page, and new files
        index, old_packs = sources[0].index(), sources[0].packs
        table: list[bytes] = []
        renumbered = [-1] * len(old_packs)  # the old page's pack numbers in the new one's
        for i, cid in enumerate(ids):
            found = index.get(cid)
            if found is None:
                hints += not_yet
                missing.append(i)
                continue
            new_number = renumbered[found[1]]
            if new_number < 0:
                new_number = renumbered[found[1]] = len(table)
                table.append(bytes.fromhex(old_packs[found[1]]))
            hints += row(new_number, found[2], found[3], found[5])
        return table, bytes(hints), missing
    tables = [(h.index(), [bytes.fromhex(p) for p in h.packs]) for h in sources]
    numbers: dict[bytes, int] = {}
    for i, cid in enumerate(ids):
        loc = known.get(cid) if known else None
        if loc is not None:
            pack, offset, stored, codec = _hint(loc)
        else:
            for rows, packs in tables:
                found = rows.get(cid)
                if found is not None:
                    pack, offset, stored, codec = packs[found[1]], found[2], found[3], found[5]
                    break
            else:
                hints += not_yet
                missing.append(i)
                continue
        number = numbers.get(pack)
        if number is None:
            number = numbers[pack] = len(numbers)
        hints += row(number, offset, stored, codec)
    return list(numbers), bytes(hints), missing


def _place_missing(
    ids: bytes,
    positions: Sequence[int],
    packs: list[bytes],
    hints: bytearray,
    ahead: _Ahead,
    locate: Callable[[ChunkId], Location],
) -> None:
    """Fill in the hints of the chunks at ``positions`` of a page (``ids``: its chunk ids
    back to back), which its cut did not place: from the upload's places (``ahead``), else
    the index. Packs not in ``packs`` yet are added to it."""
    need = [ChunkId(ids[i * DIGEST_SIZE : (i + 1) * DIGEST_SIZE]) for i in positions]
    given: dict[ChunkId, _Hint] = {}
    ahead.place(need, given)
    numbers = {pack: n for n, pack in enumerate(packs)}
    into = HINT_ROW.pack_into
    for i, cid in zip(positions, need, strict=True):
        place = given.get(cid)
        if place is None:
            place = _hint(locate(cid))
        pack, offset, stored, codec = place
        number = numbers.get(pack)
        if number is None:
            number = numbers[pack] = len(packs)
            packs.append(pack)
        into(hints, i * HINT_ROW.size, number, offset, stored, codec)


def _read_exact(f: Any, n: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise OSError("a temporary file was cut short")
    return bytes(data)
