"""Copying run records between stores (push, fetch, pull), after the versions.

A run record of the source is copied when it touches a version of the copy (one of its
outputs, or one of its inputs from the source store itself, is a version now in both
stores) and every output it names exists in the destination with the recorded snapshot
id: so the destination, too, never holds a run record that names a version it lacks. The
record moves as the source's bytes, unchanged (a lock file's record hash stays right),
after it parses (:func:`datavc.format.run.decode_run`), and is created exclusively. A
destination record under the same run id with the same bytes is the same run; with other
bytes it is a diverged run: it is left as it is, the other runs are still copied, and the
copy then fails (:class:`Diverged`). A source record that cannot be read is not copied
(a note says so: fsck names it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import CorruptObject, Diverged, IntegrityError, NotFoundError, ObjectNotFound
from ..format.hashing import ObjectId
from ..format.jsondoc import MAX_DOCUMENT
from ..format.run import RunRecord, decode_run, is_run_id, run_key
from .backend import ObjectInfo
from .chunkstore import ChunkStore
from .versions import read_entry

MAX_NAMED = 5  # diverged runs named in the error


@dataclass
class RunCopyReport:
    copied: list[str] = field(default_factory=list)  # run ids
    present: int = 0  # touched the copy, in the destination already
    not_copied: int = 0  # touched the copy, but an output is not in the destination
    diverged: list[str] = field(default_factory=list)  # run ids: other bytes there
    notes: list[str] = field(default_factory=list)


def run_listing(store: ChunkStore) -> list[ObjectInfo]:
    """The store's ``runs/<id>.json`` objects, oldest run first (other names skipped)."""
    infos = [
        i
        for i in store.backend.list_detail("runs")
        if i.name.endswith(".json") and is_run_id(i.name[:-5])
    ]
    return sorted(infos, key=lambda i: i.name)


def read_run_bytes(store: ChunkStore, info: ObjectInfo) -> tuple[bytes, RunRecord]:
    """A listed run record's bytes, parsed and checked (its size before it is read, its id
    against its key); CorruptObject if it is damaged."""
    key = f"runs/{info.name}"
    if info.size > MAX_DOCUMENT:
        raise CorruptObject(key, f"{info.size} bytes, more than a run record may hold")
    data = store.backend.read(key)
    rec = decode_run(data, key)
    if run_key(rec.id) != key:
        raise CorruptObject(key, f"it holds run {rec.id}")
    return data, rec


def copy_runs(
    src: ChunkStore,
    dst: ChunkStore,
    done: dict[tuple[str, int], ObjectId],
    labels: tuple[str, str],
) -> RunCopyReport:
    """Copy the run records of ``src`` that touch the versions ``done`` (now in both
    stores, with their snapshot ids) and whose outputs ``dst`` holds (see the module
    docstring). Runs ``dst`` holds other records of are left as they are and listed in
    the report's ``diverged`` (:func:`diverged_error` makes the error)."""
    job = _RunCopy(src, dst, done)
    if done:
        job.there = {i.name for i in run_listing(dst)}
        for info in run_listing(src):
            job.consider(info)
    return job.report


class _RunCopy:
    def __init__(
        self, src: ChunkStore, dst: ChunkStore, done: dict[tuple[str, int], ObjectId]
    ) -> None:
        self.src = src
        self.dst = dst
        self.done = done
        self.there: set[str] = set()  # names listed in the destination's runs/
        self.trees: dict[tuple[str, int], ObjectId | None] = {}  # destination versions
        self.report = RunCopyReport()

    def consider(self, info: ObjectInfo) -> None:
        try:
            data, rec = read_run_bytes(self.src, info)
        except IntegrityError as err:
            self.report.notes.append(f"runs/{info.name} not copied: {err} (run datavc fsck)")
            return
        except ObjectNotFound:
            return  # listed, then gone
        if not self.touches(rec):
            return
        if info.name in self.there and self.found_there(rec.id, data):
            return
        if not all(self.held(o.name, o.version, o.tree) for o in rec.outputs):
            self.report.not_copied += 1
            return
        self.create(rec.id, data)

    def touches(self, rec: RunRecord) -> bool:
        refs = [(o.name, o.version) for o in rec.outputs]
        refs += [(i.name, i.version) for i in rec.inputs if i.store is None]
        return any(ref in self.done for ref in refs)

    def found_there(self, run_id: str, data: bytes) -> bool:
        """Whether the destination has a record of ``run_id``: these bytes (counted as
        present) or others (noted as diverged)."""
        try:
            theirs = self.dst.backend.read(run_key(run_id))
        except ObjectNotFound:
            return False
        if theirs == data:
            self.report.present += 1
        else:
            self.report.diverged.append(run_id)
        return True

    def held(self, name: str, version: int, tree: ObjectId) -> bool:
        """Whether the destination holds ``name@v{version}`` as snapshot ``tree`` (a
        version forgotten there keeps its number and snapshot id: it exists)."""
        if (name, version) in self.done:
            return self.done[(name, version)] == tree
        if (name, version) not in self.trees:
            try:
                self.trees[(name, version)] = read_entry(self.dst, name, version).tree
            except (NotFoundError, IntegrityError):
                self.trees[(name, version)] = None
        return self.trees[(name, version)] == tree

    def create(self, run_id: str, data: bytes) -> None:
        key = run_key(run_id)
        if self.dst.backend.create_exclusive(key, data):
            if self.dst.backend.read(key) != data:
                raise CorruptObject(key, "the store did not keep the run record written")
            self.report.copied.append(run_id)
        else:  # there after all: a concurrent copy, or a lost answer
            self.found_there(run_id, data)


def diverged_error(report: RunCopyReport, labels: tuple[str, str]) -> Diverged | None:
    """The error for the diverged runs of a copy (None if there is none)."""
    run_ids = report.diverged
    if not run_ids:
        return None
    shown = ", ".join(run_ids[:MAX_NAMED])
    more = len(run_ids) - MAX_NAMED
    if more > 0:
        shown += f" and {more} more"
    here, there = labels
    return Diverged(
        f"run {shown}: {here} and {there} hold different run records under the same run "
        "id; it was not copied or overwritten (the other runs were copied)",
        (),
    )
