"""fsck: check that a store holds every version it lists, and name what is damaged.

Every index, pack footer (ranged reads), version record and tree page is read and parsed,
then cross-checked: each index entry must point where its pack's footer lists the chunk;
each chunk a tree needs must be in a pack whose footer lists it, with the plain length the
recipe says, and some index must list it there; each location hint must be right or stale
(its pack gone), never wrong. With ``read_data`` every chunk of every pack is read and
hashed too. Run records are checked against the versions they name (:mod:`.runcheck`).
Each problem names the object at fault and the versions and files it damages.

The places footers give, the places indexes give and the chunks trees need are kept in
on-disk tables and joined there (:mod:`.fscktables`): memory does not grow with the number
of chunks or files. A tree page named by several versions is read and checked once per
distinct page reference; its problems name every version that names it.

What an interrupted upload leaves (temporary files, packs and indexes no version needs) is
not a problem: the write order makes it harmless. It is reported as a note (gc removes it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from ..errors import (
    CorruptObject,
    DatavcError,
    IntegrityError,
    NotARepository,
    ObjectNotFound,
    UnsafePath,
)
from ..format.hashing import ChunkId, ObjectId, is_object_id
from ..format.packfile import PACK_MAGIC, Location
from ..format.paths import SortedPathCheck, valid_name
from ..format.record import Forgotten, VersionRecord
from ..format.run import is_run_id
from ..format.tree import PageRef, check_page, decode_page
from .backend import ObjectInfo
from .chunkstore import INDEX_IN_MEMORY, ChunkStore
from .fsckreport import MAX_FILES_NAMED, Report, version_key
from .fscktables import Tables, open_index, remove_copy
from .packs import footer_entries
from .reader import decode_run, group
from .runcheck import Known, check_runs
from .versions import read_entry, version_numbers

TOP_LEVEL = {"datavc.json", "packs", "index", "trees", "versions", "tags", "gc", "runs"}


class _Check:
    def __init__(self, store: ChunkStore, report: Report, tick: Callable[[str], None]) -> None:
        self.store = store
        self.backend = store.backend
        self.report = report
        self.tick = tick
        self.packs: dict[ObjectId, int] = {}  # pack -> size, as listed
        self.footers: set[ObjectId] = set()  # packs whose footer checks out
        self.bad_packs: set[ObjectId] = set()  # missing or damaged footer
        self.tables = Tables()  # what footers hold, indexes list, trees need (on disk)
        self.late_missing: set[ObjectId] = set()
        self.pages_seen: set[str] = set()
        self.pages: dict[PageRef, int | None] = {}  # distinct page -> its number (None: bad)
        self.indexes: list[str] = []  # index objects read, by their number in the tables
        self.known: Known = {}  # version records read: (tree, forgotten), or why not

    # -- listings -------------------------------------------------------------------

    def listing(self, folder: str, valid: Callable[[str], bool]) -> list[ObjectInfo]:
        """``folder``'s objects with valid names; others are reported (temporary files as
        leftovers, anything else as a stray object)."""
        good, leftovers = [], []
        details = self.backend.list_detail(folder)
        files = {i.name for i in details}
        for name in self.backend.list(folder):
            if name not in files:  # a folder where the store has only objects
                self.report.problem(
                    f"{folder}/{name}", "stray folder: the store format has none here"
                )
        for info in details:
            if valid(info.name):
                good.append(info)
            elif info.name.startswith(".tmp-"):
                leftovers.append(info)
            else:
                self.report.problem(
                    f"{folder}/{info.name}", "stray object: not a name the store format defines"
                )
        if leftovers:
            size = sum(i.size for i in leftovers)
            self.report.notes.append(
                f"{folder}/: {len(leftovers)} temporary files ({size} bytes) left by "
                "interrupted writes (gc removes them)"
            )
        return good

    def top_level(self) -> None:
        files = {i.name for i in self.backend.list_detail("")}
        for name in self.backend.list(""):
            if name not in TOP_LEVEL and not name.startswith(".tmp-"):
                self.report.problem(name, "stray object: not a name the store format defines")
            elif name in files and name != "datavc.json":
                self.report.problem(name, "a file where the store has a folder")

    # -- packs and indexes ----------------------------------------------------------

    def check_packs(self) -> None:
        for info in self.listing("packs", is_object_id):
            pack = ObjectId(info.name)
            self.packs[pack] = info.size
            key = f"packs/{pack}"
            self.tick(key)
            try:
                entries = footer_entries(self.backend, pack, info.size)
                if self.backend.read_range(key, 0, len(PACK_MAGIC)) != PACK_MAGIC:
                    raise CorruptObject(key, "not a datavc pack (no magic)")
            except (IntegrityError, ObjectNotFound) as err:
                self.bad_packs.add(pack)
                self.report.problem(key, _reason(err, key))
                continue
            self.tables.add_footer(pack, entries)
            self.footers.add(pack)
            self.report.counts["packs"] += 1
            self.report.counts["chunks"] += len(entries)

    def late_pack(self, pack: ObjectId) -> None:
        """A pack not in the listing (stored since by a concurrent add, whose index this
        check then read): its footer, read now, unless it is missing or damaged."""
        if pack in self.bad_packs or pack in self.packs or pack in self.late_missing:
            return
        try:
            size = self.backend.size(f"packs/{pack}")
            entries = footer_entries(self.backend, pack, size)
        except (IntegrityError, ObjectNotFound):
            self.late_missing.add(pack)
            return
        self.packs[pack] = size
        self.tables.add_footer(pack, entries)
        self.footers.add(pack)

    def read_data(self) -> None:
        """Read every chunk of every good pack, a run at a time, and check it."""
        for pack in sorted(self.footers):
            key = f"packs/{pack}"
            self.tick(key)
            entries = footer_entries(self.backend, pack, self.packs[pack])
            located = [
                (e.chunk, Location(pack, e.offset, e.stored_length, e.plain_length, e.codec))
                for e in entries
            ]
            for run in group(located):
                first, last = run[0][1], run[-1][1]
                try:
                    blob = self.backend.read_range(
                        key, first.offset, last.offset + last.stored_length
                    )
                    self.report.counts["bytes_read"] += len(blob)
                    decode_run(run, blob)
                except (IntegrityError, ObjectNotFound):
                    for cid, _ in run:  # find which of the run's chunks are bad
                        if not self._chunk_ok(key, cid, run):
                            self.tables.add_bad(cid, pack)
            bad = self.tables.bad_count(pack)
            if bad:
                self.report.problem(key, f"{bad} chunks do not match their ids (damaged bytes)")

    def _chunk_ok(self, key: str, cid: ChunkId, run: list[tuple[ChunkId, Location]]) -> bool:
        one = [(c, loc) for c, loc in run if c == cid][:1]
        loc = one[0][1]
        try:
            decode_run(
                one, self.backend.read_range(key, loc.offset, loc.offset + loc.stored_length)
            )
        except (IntegrityError, ObjectNotFound):
            return False
        return True

    def check_indexes(self) -> None:
        self.tables.index_held()
        for info in self.listing("index", is_object_id):
            key = f"index/{info.name}"
            self.tick(key)
            copy = None
            try:
                if info.size > INDEX_IN_MEMORY:  # read from a local file, a block at a time
                    source, temporary = self.store.local_index_copy(info.name, info.size)
                    copy = source if temporary else None
                    source_or_data: str | bytes = source
                else:
                    source_or_data = self.store.read_object("index", info.name)
                with open_index(source_or_data) as f:
                    packs = self.tables.add_index(len(self.indexes), f, info.size, key)
            except (IntegrityError, ObjectNotFound) as err:
                self.report.problem(key, _reason(err, key))
                continue
            finally:
                if copy is not None:
                    remove_copy(copy)
            self.indexes.append(key)
            self.report.counts["indexes"] += 1
            for pack in packs:
                self.late_pack(pack)
        missing: dict[ObjectId, int] = {}
        wrong: dict[ObjectId, int] = {}
        last = -1
        for obj, pack, n, matched in self.tables.index_counts():
            if obj != last:
                self._index_problems(last, missing, wrong)
                missing, wrong, last = {}, {}, obj
            if pack in self.footers:
                if matched < n:
                    wrong[pack] = n - matched
            elif pack not in self.bad_packs:
                missing[pack] = n
        self._index_problems(last, missing, wrong)

    def _index_problems(
        self, obj: int, missing: dict[ObjectId, int], wrong: dict[ObjectId, int]
    ) -> None:
        """What one index object gets wrong: packs it names that are missing, and places
        their footers do not give."""
        if obj < 0:
            return
        key = self.indexes[obj]
        if len(missing) > MAX_FILES_NAMED:  # a crafted index: one line, not one per pack
            first = sorted(missing)[0]
            self.report.problem(
                key,
                f"names {len(missing)} packs that are missing ({sum(missing.values())} "
                f"chunks; packs/{first[:16]}… first)",
            )
        else:
            for pack, n in missing.items():
                self.report.problem(f"packs/{pack}", "missing (an index names it)")
                self.report.problem(key, f"names packs/{pack[:16]}…, which is missing ({n} chunks)")
        for pack, n in wrong.items():
            self.report.problem(
                key, f"places {n} chunks in packs/{pack[:16]}… where its footer does not"
            )

    def check_other_pages(self) -> None:
        """Pages no checked version needs are read and hashed too (gc reads young ones)."""
        for info in self.listing("trees", is_object_id):
            if info.name in self.pages_seen:
                continue
            key = f"trees/{info.name}"
            try:
                self.store.read_object("trees", info.name)
            except (IntegrityError, ObjectNotFound) as err:
                self.report.problem(key, _reason(err, key) + " (no version checked needs it)")

    def check_gc_records(self) -> None:
        from ..format.gcrecord import decode_gc_record

        waiting = 0
        for info in self.listing("gc", is_object_id):
            key = f"gc/{info.name}"
            try:
                waiting += len(decode_gc_record(self.store.read_object("gc", info.name), key).packs)
            except (IntegrityError, ObjectNotFound) as err:
                self.report.problem(key, _reason(err, key))
        if waiting:
            self.report.notes.append(f"gc/: {waiting} packs condemned, to be deleted by a later gc")

    # -- versions and trees ---------------------------------------------------------

    def check_versions(self, wanted: dict[str, list[int]] | None) -> None:
        names = self.backend.list("versions")
        files = {i.name for i in self.backend.list_detail("versions")}
        for name in names:
            if not valid_name(name):
                self.report.problem(f"versions/{name}", "stray object: not a dataset name")
            elif name in files:
                self.report.problem(f"versions/{name}", "a file where a dataset's folder belongs")
        if wanted is None:
            wanted = {n: version_numbers(self.store, n) for n in names if valid_name(n)}
            for n in names:
                if valid_name(n):
                    self.listing(f"versions/{n}", lambda s: s.endswith(".json"))
        for name, numbers in sorted(wanted.items()):
            for number in numbers:
                self.check_version(name, number)
        self.check_refs()

    def check_version(self, name: str, number: int) -> None:
        key = f"versions/{name}/{number}.json"
        label = f"{name}@v{number}"
        self.tick(key)
        try:
            rec = read_entry(self.store, name, number)
        except (IntegrityError, ObjectNotFound) as err:
            self.report.problem(key, _reason(err, key)).affects(label)
            return
        except DatavcError as err:  # a record that does not parse is damaged
            self.report.problem(key, str(err)).affects(label)
            return
        self.known[(name, number)] = (rec.tree, isinstance(rec, Forgotten))
        if isinstance(rec, Forgotten):
            self.report.counts["forgotten"] += 1
            return  # its data is gc's to delete
        self.report.counts["versions"] += 1
        self.check_tree(rec, label)

    def check_tree(self, rec: VersionRecord, label: str) -> None:
        """Read and check each page the version names (once per distinct page); note the
        chunks its files need, checked against footers and indexes in :meth:`check_refs`."""
        for page in rec.root.pages:
            key = f"trees/{page.id}"
            if page in self.pages:  # named by a version checked before
                number = self.pages[page]
                if number is None:
                    problem = self.report.problems[key]
                    problem.affects(label)
                    problem.file_count += page.files
                else:
                    self.tables.page_labels[number].append(label)
                    self.report.counts["pages"] += 1
                    unsafe = self.report.problems.get(key)  # (its paths: see below)
                    if unsafe is not None:
                        unsafe.affects(label)
                        unsafe.file_count += page.files
                continue
            try:
                data = self.store.read_object("trees", page.id)
                entries, hints = decode_page(data, key, page.content, files=page.files)
                check_page(entries, page, key)
            except (IntegrityError, ObjectNotFound) as err:
                problem = self.report.problem(key, _reason(err, key))
                problem.affects(label)
                problem.file_count += page.files
                self.pages[page] = None
                continue
            self.report.counts["pages"] += 1
            self.pages_seen.add(page.id)
            self.pages[page] = self.tables.add_page(key, label, entries, hints)
            try:  # what checkout would refuse is damage (within a page: not across pages)
                paths = SortedPathCheck()
                for e in entries:
                    paths.add(e.path)
            except UnsafePath as err:
                problem = self.report.problem(key, f"damaged: {err}")
                problem.affects(label)
                problem.file_count += page.files

    def check_refs(self) -> None:
        """Each chunk a checked tree needs must be in a pack whose footer lists it at the
        recipe's length (and not found damaged there), and some index must list it where a
        footer does; its location hint must be right or name a pack that is gone."""
        done: set[tuple[str, int]] = set()  # (problem, file): a file's chunks come together
        last_file = -1
        for cid, hint, file, good, hint_wrong, indexed in self.tables.problem_refs():
            if file != last_file:
                done.clear()
                last_file = file
                page, path = self.tables.file_of(file)
                labels = self.tables.page_labels[page]
            found: list[tuple[str, str]] = []
            if hint_wrong and hint is not None:
                found.append(
                    (
                        self.tables.page_keys[page],
                        f"a location hint names a place in packs/{hint.pack[:16]}… that does "
                        "not hold its chunk",
                    )
                )
            if good is None:
                culprit = self._culprit(cid, hint)
                found.append((culprit, self._why(culprit, cid)))
            elif not indexed:
                found.append(
                    (f"packs/{good}", "holds chunks that no index lists (run datavc repair)")
                )
            for key, message in found:
                if (key, file) in done:
                    continue
                done.add((key, file))
                problem = self.report.problem(key, message)
                for label in labels:
                    problem.affects(label, path)

    def _culprit(self, cid: ChunkId, hint: Location | None) -> str:
        """The object to blame for a chunk that no good pack holds: the pack where it was
        found damaged, else the missing or damaged pack its hint names, else the chunk.
        (The places footers give are all in good packs.)"""
        damaged = self.tables.bad_pack_of(cid)
        if damaged is not None:
            return f"packs/{damaged}"
        if hint is not None and (hint.pack in self.bad_packs or hint.pack not in self.packs):
            return f"packs/{hint.pack}"
        return f"chunk {cid.hex()}"

    def _why(self, culprit: str, cid: ChunkId) -> str:
        if culprit.startswith("chunk "):
            return "in no pack of the store"
        pack = ObjectId(culprit.split("/", 1)[1])
        if pack not in self.packs:
            return "missing"
        return "damaged"

    def check_runs(self, wanted: dict[str, list[int]] | None) -> None:
        """Run records (:mod:`.runcheck`): damaged ones always, the others' versions of
        every run, or of the runs that touch ``wanted``."""
        listing = self.listing("runs", lambda n: n.endswith(".json") and is_run_id(n[:-5]))
        findings, checked = check_runs(self.store, listing, wanted, self.known)
        self.report.counts["runs"] += checked
        for f in findings:
            self.report.problem(f.key, f.message)

    def unreferenced(self, full: bool) -> None:
        if not full or any(k.startswith("versions/") for k in self.report.problems):
            return  # what a damaged record needs is unknown: no pack is called unneeded
        used = self.tables.used_packs()
        spare = [p for p in self.footers if p not in used]
        if spare:
            size = sum(self.packs[p] for p in spare)
            self.report.notes.append(
                f"packs/: {len(spare)} packs ({size} bytes) hold no chunk a version needs "
                "(left by interrupted adds, or by forgotten versions: gc removes them)"
            )


def _reason(err: DatavcError, key: str) -> str:
    text = str(err)
    if isinstance(err, ObjectNotFound):
        return "missing"
    for prefix in (f"corrupt object {key}: ", f"integrity check failed in {key}: "):
        if text.startswith(prefix):
            return "damaged: " + text[len(prefix) :]
    return "damaged: " + text


def fsck(
    store: ChunkStore,
    versions: dict[str, list[int]] | None = None,
    read_data: bool = False,
    tick: Callable[[str], None] = lambda key: None,
) -> Report:
    """Check the store (only ``versions``, {name: [numbers]}, if given; every index and
    pack always). Raises NotARepository if there is no store at all."""
    report = Report()
    try:
        _ = store.config
    except NotARepository:
        raise
    except DatavcError as err:
        report.problem("datavc.json", _reason(err, "datavc.json"))
    check = _Check(store, report, tick)
    try:
        check.top_level()
        check.check_packs()
        if read_data:
            check.read_data()
        check.check_indexes()
        check.check_gc_records()
        check.check_versions(versions)
        check.check_other_pages()  # after the versions: the pages they read are not read again
        check.check_runs(versions)
        check.unreferenced(versions is None)
    finally:
        check.tables.close()
    return report


def affected_versions(report: Report) -> Iterable[str]:
    seen: set[str] = set()
    for p in report.problems.values():
        seen |= p.versions
    return sorted(seen, key=version_key)


def version_holes(store: ChunkStore, rec: VersionRecord, limit: int = 20) -> list[str]:
    """What the store lacks of a version, from listings, indexes and footers (no chunk is
    read): tree pages missing or damaged, files with a chunk in no pack whose footer lists
    it. At most ``limit`` lines."""
    from ..format.tree import check_page, decode_page

    label = f"{rec.name}@v{rec.version}"
    store.load_index()
    footers = store.footers()
    packs = set(store.backend.list("packs"))
    holes: list[str] = []
    for page in rec.root.pages:
        key = f"trees/{page.id}"
        try:
            data = store.read_object("trees", page.id)
            entries, hints = decode_page(data, key, page.content, files=page.files)
            check_page(entries, page, key)
        except DatavcError as err:
            holes.append(f"{label}: tree page {key} is {_reason(err, key)}")
            continue
        for e in entries:
            for cid, _ in e.chunks:
                places = store.locations(cid)
                hint = hints.get(cid)
                if hint is not None:
                    places.append(hint)
                if not any(p.pack in packs and footers.holds(cid, p) for p in places):
                    holes.append(f"{label}: {e.path} has data in no pack of the store")
                    break
            if len(holes) >= limit:
                return holes
    return holes
