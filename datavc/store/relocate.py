"""Reading chunks that were not where a run said: a stale or wrong location hint, an index
place a crafted index object added, a pack gone or damaged (see docs/FORMAT.md, "Location
hints"). Used by :class:`.reader.ChunkReader` only when a run fails."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..errors import IntegrityError, ObjectNotFound, RangeNotFound
from ..format.hashing import ChunkId, ObjectId
from ..format.packfile import Location
from .reader import Run, group

if TYPE_CHECKING:
    from .chunkstore import ChunkStore

MAX_PLACES = 16  # index places tried for a chunk not where it was read (honest stores: 1-2)


class Elsewhere:
    """Reading a run that was not where it said: each chunk is read at the places the index
    gives it (the first :data:`MAX_PLACES`), each place at most once, skipping packs found
    missing, until it checks out.

    A part of several chunks that fails again is moved chunk by chunk: a chunk whose place
    the index does not list (a hint) goes to the index's first; a chunk listed there stays,
    since the fault may be another's; if none moves, the part is read a chunk at a time. A
    single chunk that fails goes to its next place. A chunk with no place left has the index
    listed again once (another thread may have been loading it), then its error stands: the
    first integrity error at a place the index lists (its own pack's damage, not a place a
    crafted index added), else the last error (a missing pack: the chunk is missing). The
    index is listed otherwise only when the indexes loaded give a chunk no place at all: a
    page of wrong hints costs one listing. ``gone``: the packs found missing, the reader's
    (each is looked for once, not once a run)."""

    def __init__(
        self, store: ChunkStore, read_at: Callable[[Run, bool], list[bytes]], gone: set[ObjectId]
    ) -> None:
        self.store = store
        self.read_at = read_at  # a run's chunks, checked, from where it says
        self.gone = gone
        self.places: dict[ChunkId, list[Location]] = {}  # the index's
        self.tried: dict[ChunkId, set[Location]] = {}
        self.blame: dict[ChunkId, IntegrityError] = {}
        self.relisted = False

    def read(self, run: Run, joined: bool, error: Exception) -> list[bytes]:
        out: list[bytes] = []
        todo: deque[tuple[Run, Exception | None]] = deque([(run, error)])
        while todo:
            part, err = todo.popleft()
            if err is None:
                try:
                    out.extend(self.read_at(part, joined))
                    continue
                except (ObjectNotFound, IntegrityError) as failed:
                    err = failed
            todo.extendleft((p, None) for p in reversed(self._next(part, err)))
        return out

    def _indexed(self, cid: ChunkId) -> list[Location]:
        places = self.places.get(cid)
        if places is None:
            places = self.store.locations(cid)
            if not places:
                self.store.load_index()
                places = self.store.locations(cid)
            places = self.places[cid] = places[:MAX_PLACES]
        return places

    def _next(self, part: Run, err: Exception) -> list[Run]:
        """Where to read a failed part's chunks next; raises if a chunk has no place left."""
        if isinstance(err, ObjectNotFound) and not isinstance(err, RangeNotFound):
            self.gone.add(part[0][1].pack)
        moved: Run = []
        changed = False
        for cid, loc in part:
            places = self._indexed(cid)
            if len(part) > 1 and loc.pack not in self.gone and loc in places:
                moved.append((cid, loc))
                continue
            tried = self.tried.setdefault(cid, set())
            if len(part) == 1 and isinstance(err, IntegrityError) and loc in places:
                self.blame.setdefault(cid, err)
            tried.add(loc)
            place = self._untried(cid, tried)
            if place is None:
                raise self._error(cid, loc, err)
            moved.append((cid, place))
            changed = True
        if not changed:
            return [[item] for item in part]
        return list(group(moved))

    def _untried(self, cid: ChunkId, tried: set[Location]) -> Location | None:
        """The chunk's next place: not tried, not in a pack found missing."""
        place = self._first_untried(cid, tried)
        if place is None and not self.relisted:
            self.relisted = True
            self.store.load_index()  # waits for a load in progress, lists once more
            self.places = {}
            place = self._first_untried(cid, tried)
        return place

    def _first_untried(self, cid: ChunkId, tried: set[Location]) -> Location | None:
        places = self._indexed(cid)  # at most MAX_PLACES: a scan each time is cheap
        return next((p for p in places if p not in tried and p.pack not in self.gone), None)

    def _error(self, cid: ChunkId, loc: Location, err: Exception) -> Exception:
        blamed = self.blame.get(cid)
        if blamed is not None:
            return blamed
        if loc.pack in self.gone and not isinstance(err, IntegrityError):
            return ObjectNotFound(f"packs/{loc.pack}")
        return err
