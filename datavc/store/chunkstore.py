"""The chunk store: metadata objects, the index, location hints, reading chunks, and the
local cache.

Readers find a chunk through the location hints of the tree page that names it, or else
through the index (loaded whole, once), and fetch it through a :class:`~.reader.ChunkReader`;
writers store chunks through a :class:`~.packwriter.PackWriter`, which records here where
each stored chunk is. Every chunk and metadata object read back is checked against its
BLAKE3 id before use. The store
config is read only when needed (by writers): reading a version needs only the record, a
page and the packs.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence, Set
from typing import TYPE_CHECKING

from ..errors import CorruptObject, DatavcError, IntegrityError, NotARepository, ObjectNotFound
from ..format.hashing import ChunkId, ObjectId, file_hasher, is_object_id, object_id
from ..format.indextable import IndexTable
from ..format.newrows import NewRows
from ..format.packfile import INDEX_ROW, Location, LocationTable
from .backend import Backend
from .overlap import Overlap

if TYPE_CHECKING:
    from ..format.storeconfig import StoreConfig
    from ..format.tree import Hints
    from .lru import BytesCache
    from .packs import Footers
    from .packwriter import PackWriter
    from .reader import ChunkReader


INDEX_READS = 32  # index objects read (and held) at once by load_index
INDEX_IN_MEMORY = 16 << 20  # a bigger index object is searched in a local file


class ChunkStore:
    """Chunks and metadata objects of one store, with an optional local cache."""

    def __init__(
        self, backend: Backend, config: StoreConfig | None, cache: Backend | None = None
    ) -> None:
        self.backend = backend
        self._config = config
        self.cache = cache
        self._index = IndexTable()  # the loaded index objects, searched in place
        self._hints = LocationTable()
        self._indexes_loaded: set[str] = set()
        self.indexes_loaded: Set[str] = self._indexes_loaded
        """The index objects loaded (a view, filled as they load): once there is one, the
        index alone locates chunks and a caller's page hints are not used."""
        self._lock = threading.Lock()
        self._loading = threading.Lock()  # one thread lists and reads index objects at a time
        self._chunk_reader: ChunkReader | None = None
        self._footers: Footers | None = None
        self._condemned_trees: frozenset[ObjectId] = frozenset()
        self._condemned_packs: frozenset[ObjectId] = frozenset()
        self.written: set[str] = set()  # keys of the objects this process wrote
        self.damaged_indexes: set[str] = set()  # skipped by load_index
        self._early: dict[str, bytes] = {}  # objects read ahead of their reader (checked)
        # What to tell a user whose store is missing (the workspace knows: "datavc pull")
        self.missing_hint: Callable[[], str] | None = None

    @classmethod
    def create(
        cls, backend: Backend, config: StoreConfig, cache: Backend | None = None
    ) -> ChunkStore:
        """Initialise a store, or open it if one already exists there (keeping its config)."""
        from ..format.storeconfig import CONFIG_KEY

        if not backend.create_exclusive(CONFIG_KEY, config.encode()):
            store = cls.open(backend, cache)
            _ = store.config  # joining a store: it must be one this datavc can write
            return store
        return cls(backend, config, cache)

    @classmethod
    def open(cls, backend: Backend, cache: Backend | None = None) -> ChunkStore:
        """A store at ``backend``; its config is read on first use (see :attr:`config`)."""
        return cls(backend, None, cache)

    @property
    def config(self) -> StoreConfig:
        """The store config; raises NotARepository if there is no store here."""
        if self._config is None:
            from ..format.storeconfig import CONFIG_KEY, StoreConfig  # most readers never need it

            try:
                data = self.backend.read(CONFIG_KEY)
            except ObjectNotFound:
                hint = self.missing_hint() if self.missing_hint else ""
                raise NotARepository(
                    f"no datavc store at {self.backend.shown_url}"
                    + (hint or " (run 'datavc init' to create one)")
                ) from None
            self._config = StoreConfig.decode(data)
        return self._config

    # -- metadata objects -------------------------------------------------------------

    def read_object(self, kind: str, oid: str) -> bytes:
        """Read ``<kind>/<oid>`` (cache first) and check it hashes to ``oid``."""
        key = f"{kind}/{oid}"
        with self._lock:
            data = self._early.pop(key, None)
        if data is not None:
            return data
        if self.cache is not None:
            try:
                data = self.cache.read(key)
            except ObjectNotFound:
                data = None
            if data is not None and object_id(data) != oid:
                data = None  # a damaged cache entry: fall back to the store
        if data is None:
            data = self.backend.read(key)
            got = object_id(data)
            if got != oid:
                raise IntegrityError(key, oid, got)
            if self.cache is not None:
                self.cache.write(key, data)
        return data

    def read_early(self, kind: str, oid: str) -> bool:
        """Read ``<kind>/<oid>`` now, checked, for one :meth:`read_object` later (a page a
        pointer file hints at, read beside the version record that names it): True if it
        was read. A failure is not an error here: the later read meets it, if it is made."""
        try:
            data = self.read_object(kind, oid)
        except DatavcError:
            return False
        with self._lock:
            self._early[f"{kind}/{oid}"] = data
        return True

    def forget_early(self, kind: str, oid: str) -> None:
        """Drop what :meth:`read_early` read, if no reader took it."""
        with self._lock:
            self._early.pop(f"{kind}/{oid}", None)

    def write_object(self, kind: str, data: bytes | list[bytes]) -> ObjectId:
        """Write an object (whole, or as parts) under the hash of its bytes."""
        parts = [data] if isinstance(data, bytes) else data
        hasher = file_hasher()
        for part in parts:
            hasher.update(part)
        oid = ObjectId(hasher.hexdigest())
        key = f"{kind}/{oid}"
        if kind == "trees" and oid in self._condemned_trees:
            self._refresh(key)
        size = sum(len(p) for p in parts)
        # a store that kept part of it, or an old damaged copy (a local write skips a key
        # that exists): checked unless the store's answer confirms the bytes
        if not self.backend.write(key, parts) and not self._kept(key, size):
            self._refresh(key)
            if not self.backend.write(key, parts) and not self._kept(key, size):
                self._refresh(key)
                raise CorruptObject(key, f"the store did not keep the {size} bytes written")
        self.written.add(key)
        if self.cache is not None:
            self.cache.write(f"{kind}/{oid}", parts)
        return oid

    def put_pack(self, path: str, footer: bytes) -> ObjectId:
        """Store the finished pack file at ``path`` (consumed) under its id: the BLAKE3 of
        its footer, which names every chunk in it (each chunk is checked on read against
        its own id, so hashing the whole pack again would add nothing but a pass)."""
        oid = object_id(footer)
        if oid in self._condemned_packs:  # listed by a gc record: written anew
            self._refresh(f"packs/{oid}")
        size = os.path.getsize(path)
        if not self._put_file("packs", oid, path):
            raise CorruptObject(
                f"packs/{oid}", f"the store did not keep the {size} bytes of this pack"
            )
        return oid

    def _put_file(self, kind: str, oid: ObjectId, path: str) -> bool:
        """Store the file at ``path`` (consumed) as ``<kind>/<oid>``, and in the cache;
        False if the store did not keep it whole (it is deleted then)."""
        key = f"{kind}/{oid}"
        size = os.path.getsize(path)
        if self.cache is not None:
            confirmed = self.backend.put_path(key, path, move=False)
            self.cache.put_path(key, path, move=True)
        else:
            confirmed = self.backend.put_path(key, path, move=True)
        if not confirmed and not self._kept(key, size):
            self._refresh(key)
            return False
        return True

    def _kept(self, key: str, size: int) -> bool:
        """Whether the object just written has the size written: a store that says it
        stored an object but kept part of it must not have it referenced (one HEAD; not
        needed where the write's answer confirmed the bytes, see :meth:`.Backend.write`)."""
        try:
            return self.backend.size(key) == size
        except ObjectNotFound:
            return False

    def live(self, kind: str) -> set[ObjectId]:
        """The ids of the objects of ``kind`` ("packs", "trees") stored and not condemned by
        gc (as of :meth:`new_writer`): one listing."""
        condemned = self._condemned_packs if kind == "packs" else self._condemned_trees
        listed = (ObjectId(i.name) for i in self.backend.list_detail(kind))
        return {oid for oid in listed if oid not in condemned}

    def write_anew(self, packs: Iterable[ObjectId]) -> None:
        """Packs this process must write over if it stores one of the same id (repair: the
        old one is damaged), not take as stored already."""
        self._condemned_packs = self._condemned_packs | frozenset(packs)

    def _refresh(self, key: str) -> None:
        """An object gc has condemned is needed again: it is deleted so that writing it
        makes it new (gc deletes only objects older than its grace period)."""
        with contextlib.suppress(ObjectNotFound):
            self.backend.delete(key)

    def spool_dir(self) -> str | None:
        """Where a writer builds pack files: beside the packs of a local store or cache."""
        return (self.cache or self.backend).spool_dir()

    # -- index ------------------------------------------------------------------------

    def load_index(self) -> None:
        """Read the index objects not loaded yet (new ones appear as others upload), several
        at once from a remote store. A reader may ask from two threads at once (locating
        runs, and its read-ahead thread finding a moved pack): the second waits, then reads
        only what is still new."""
        with self._loading:
            sizes = {i.name: i.size for i in self.backend.list_detail("index")}
            names = [n for n in sizes if n not in self._indexes_loaded]
            # not an index object (a temporary file, a stray): fsck's job
            names = [n for n in names if is_object_id(n)]
            for name in [n for n in names if sizes[n] > INDEX_IN_MEMORY]:
                self._load_index_file(name, sizes[name])
            names = [n for n in names if sizes[n] <= INDEX_IN_MEMORY]
            with Overlap(not self.backend.is_local) as overlap:
                for start in range(0, len(names), INDEX_READS):  # bounded memory
                    group = names[start : start + INDEX_READS]
                    found = overlap.map(self._index_object, group)
                    for name, data in zip(group, found, strict=True):
                        if data is not None:
                            with self._lock:
                                self._index.add_index(data, f"index/{name}")
                        with self._lock:
                            self._indexes_loaded.add(name)
            if self._indexes_loaded:
                self._hints = LocationTable()  # the index is loaded: hints are not needed

    def _load_index_file(self, name: str, size: int) -> None:
        """Take in a big index object from a local file (the store's, the cache's, or a
        copy downloaded a block at a time), checked against its id, then searched there:
        its rows are never all in memory (:class:`.rowfiles.FileRows`)."""
        from .rowfiles import FileRows

        key = f"index/{name}"
        copy = None
        try:
            path, temporary = self.local_index_copy(name, size)
            copy = path if temporary else None
            with open(path, "rb") as f:  # the magic, the pack table, the row count
                head = f.read(12)
                need = 16 + 32 * int.from_bytes(head[8:12], "little") if len(head) == 12 else 0
                if not need or need > size:
                    raise CorruptObject(key, "index is truncated")
                head += f.read(need - 12)
            count = int.from_bytes(head[-4:], "little")
            if len(head) != need or need + count * INDEX_ROW.size > size:
                raise CorruptObject(key, "index is truncated")
            rows = FileRows.open(path, need, count)
            with self._lock:
                self._index.add_rows(head, size, rows, key)
        except ObjectNotFound:
            pass  # gone since listed (gc replaced it): its entries are elsewhere
        except (IntegrityError, CorruptObject):
            with self._lock:
                self.damaged_indexes.add(name)  # skipped, as _index_object says
        finally:
            if copy is not None:
                with contextlib.suppress(OSError):
                    os.unlink(copy)  # FileRows holds it open
        with self._lock:
            self._indexes_loaded.add(name)

    def local_index_copy(self, name: str, size: int) -> tuple[str, bool]:
        """A local file holding index object ``name``, checked against its id, and whether
        it is a temporary copy the caller deletes (see :func:`.rowfiles.local_copy`)."""
        from .rowfiles import local_copy

        return local_copy(self.backend, self.cache, f"index/{name}", name, size, self.spool_dir())

    def _index_object(self, name: str) -> bytes | None:
        """An index object's bytes, checked; None if it is gone or damaged."""
        try:
            return self.read_object("index", name)
        except ObjectNotFound:
            return None  # gone since listed (gc replaced it): its entries are elsewhere
        except IntegrityError:
            # A damaged index is skipped (fsck names it, repair replaces it): a writer
            # stores its chunks again (the entries it took in before the damage are checked
            # against footers, as every entry is), a reader finds them another way or fails
            # on the chunk. It must not stop every later add.
            with self._lock:
                self.damaged_indexes.add(name)
            return None

    def location(self, cid: ChunkId) -> Location | None:
        return self._index.get(cid)

    def locate_stored(self, cid: ChunkId) -> Location:
        """Where the index puts a chunk this process stored or found stored (writers)."""
        loc = self._index.get(cid)
        if loc is None:
            raise ObjectNotFound(f"chunk {cid.hex()} (not in the index)")
        return loc

    def add_hints(self, hints: Hints) -> None:
        """Chunk locations read from a tree page: used until the index is loaded, never
        for deduplication (a hint is where a chunk *was* put, not proof it is there)."""
        if self._indexes_loaded:
            return  # the index is loaded and is the authority
        with self._lock:
            self._hints.put_hints(hints.packs, hints.rows)

    def new_rows(self) -> NewRows:
        """Where an upload records the chunks it stores (:meth:`index_pack`), searched with
        the index from then on (by this process: others once :meth:`write_index` names them).
        Past a million chunks they spill to sorted files beside the packs being built."""
        from .rowfiles import spill_rows

        folder = self.spool_dir()
        rows = NewRows(lambda sorted_rows: spill_rows(sorted_rows, folder))
        with self._lock:
            self._index.attach(rows)
        return rows

    def index_pack(self, pack: ObjectId, footer: bytes, rows: NewRows, new: bool = False) -> None:
        """Record where the chunks of a pack just stored are (its ``footer``, as built), in
        its upload's ``rows`` (``new``: see :meth:`.NewRows.add_pack`)."""
        rows.add_pack(pack, footer, new)
        self.footers().trust(pack, rows)

    def unindex(self, rows: NewRows) -> None:
        """Forget the chunks an upload stored but that no index object will name (it
        failed): they must not be taken as stored by a later upload."""
        with self._lock:
            self._index.detach(rows)

    def write_index(self, rows: NewRows) -> tuple[ObjectId, int]:
        """Write the index object of an upload's ``rows`` (through a file, so a
        million-chunk index is never in memory twice); return its id and size in bytes.
        A store that did not keep it whole is written to once more, as :meth:`write_object`
        does."""
        import tempfile

        for again in (False, True):
            hasher = file_hasher()
            fd, path = tempfile.mkstemp(prefix=".tmp-index-", dir=self.spool_dir())
            try:
                with os.fdopen(fd, "wb") as f:
                    for part in rows.encode():
                        hasher.update(part)
                        f.write(part)
                name = ObjectId(hasher.hexdigest())
                size = os.path.getsize(path)
                kept = self._put_file("index", name, path)
            finally:
                with contextlib.suppress(OSError):
                    os.unlink(path)
            if kept:
                break
            if again:
                raise CorruptObject(f"index/{name}", f"the store did not keep the {size} bytes")
        self.written.add(f"index/{name}")
        with self._lock:
            self._indexes_loaded.add(name)
        return name, size

    def has_chunk(self, cid: ChunkId) -> bool:
        """Whether the store holds the chunk (writers): only if the index names a place
        for it where the pack's footer lists it. The index alone is not believed: its pack
        may be gone, or it may name a place where the chunk is not. A chunk with no such
        place is forgotten here, so the writer stores it again (which heals a store that
        lost a pack) and its new place is the one the tree's hints name."""
        new = self._index.new_place(cid)  # (without the lock: it may read a spilled run)
        with self._lock:
            places = self._index.locations_given(cid, new)
        if not places:
            return False
        footers = self.footers()
        for loc in places:
            if footers.holds(cid, loc):
                if loc != places[0]:
                    with self._lock:
                        self._index.prefer(cid, loc)
                return True
        with self._lock:
            if self._index.locations(cid) == places:  # not stored again meanwhile
                self._index.drop(cid)
        return False

    def footers(self) -> Footers:
        """The footers of this store's packs, read as they are needed."""
        if self._footers is None:
            from .packs import Footers

            with self._lock:
                if self._footers is None:
                    self._footers = Footers(self.backend)
        return self._footers

    def locations(self, cid: ChunkId) -> list[Location]:
        """Every place the loaded indexes name for a chunk."""
        with self._lock:
            return self._index.locations(cid)

    def new_writer(self, places: bool = False) -> PackWriter:
        """A writer for an upload, deduplicating against every index in the store. What it
        needs first (the store config, the gc records, the index) is read at once.
        ``places``: it notes where each chunk goes (:meth:`.PackWriter.places`)."""
        from .gc import read_condemned
        from .packwriter import PackWriter  # it records what it stores here

        with Overlap(not self.backend.is_local) as overlap:
            config = overlap.start(lambda: self.config)
            records = overlap.start(lambda: read_condemned(self))
            index = overlap.start(self.load_index)
            config.result()  # its error first: no store at all is what to say
            condemned = records.result()
            index.result()
        self.footers().condemned = condemned.packs  # never reuse what gc will delete
        self._condemned_trees = condemned.trees
        self._condemned_packs = condemned.packs
        return PackWriter(self, places=places)

    # -- reading chunks ---------------------------------------------------------------

    def locate(self, cid: ChunkId) -> Location:
        """Where a chunk is: the index, else a location hint, else the index loaded anew."""
        loc = self._index.get(cid) or self._hints.get(cid)
        if loc is None:
            self.load_index()
            loc = self._index.get(cid)
        if loc is None:
            raise ObjectNotFound(f"chunk {cid.hex()}")
        return loc

    def read_chunks(
        self,
        ids: Iterable[ChunkId],
        verify: bool = True,
        hints: Mapping[ChunkId, Location] | None = None,
    ) -> Generator[bytes | memoryview, None, None]:
        """Yield the plain bytes of each chunk in order (see :meth:`.ChunkReader.read_chunks`)."""
        return self._reader().read_chunks(ids, verify, hints)

    def read_one(self, cid: ChunkId, cache: BytesCache | None = None, keep: bool = True) -> bytes:
        """One chunk's plain bytes, checked (see :meth:`.ChunkReader.read_one`)."""
        return self._reader().read_one(cid, cache, keep)

    def read_whole(self, ids: Sequence[ChunkId]) -> bytes:
        """Chunks' plain bytes joined, each checked (see :meth:`.ChunkReader.read_whole`)."""
        return self._reader().read_whole(ids)

    def read_many(
        self,
        ids: Iterable[ChunkId],
        workers: int = 1,
        max_gap: int = 0,
        cache: BytesCache | None = None,
    ) -> dict[ChunkId, bytes]:
        """Each chunk's plain bytes, checked (see :meth:`.ChunkReader.read_many`)."""
        return self._reader().read_many(ids, workers, max_gap, cache)

    def stream_plain(
        self,
        ids: Iterable[ChunkId],
        use: Callable[[list[memoryview]], None],
        hints: Mapping[ChunkId, Location] | None = None,
    ) -> None:
        """Call ``use`` with the chunks' plain bytes, a run at a time (see
        :meth:`.ChunkReader.stream_plain`)."""
        self._reader().stream_plain(ids, use, hints)

    @property
    def reader(self) -> ChunkReader:
        """What reads this store's chunks (:class:`.ChunkReader`)."""
        return self._reader()

    def _reader(self) -> ChunkReader:
        if self._chunk_reader is None:
            from .reader import ChunkReader  # a command that reads no chunk never loads it

            self._chunk_reader = ChunkReader(self)
        return self._chunk_reader
