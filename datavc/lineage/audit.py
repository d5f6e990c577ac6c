"""Audit: how a version was made, and proof that the store still holds it as recorded.

From a version (typically a model) the lineage graph is walked up to raw data: every run
and every version it was made from. The report lists them (who ran what, with which code,
parameters and environment; who committed what, when, made by which run or from which
versions), then verifies, item by item:

- data: fsck of exactly those versions, reading every chunk of the store and checking its
  hash, so that a damaged byte is named with the object that holds it;
- run records: each parses and, where the workspace has ``runs/NAME.lock`` for that run,
  hashes to the record hash the lock pins (a record rewritten in the store is caught);
- links: every input and output a run names, and every derived-from link, resolves to a
  version whose snapshot id is the one recorded; a version made by a run is an output of
  that run's record;
- states: a version forgotten, missing or damaged, and a run unfinished (no record) or
  damaged, fail.

A failure's exit code says what kind it is: 6 damaged bytes or objects, 9 records that
disagree, 3 something missing (1: the graph was too large to walk whole). When several
kinds fail, the first of 6, 9, 3, 1 is the exit code. The report is data (the dataclasses
below); :mod:`.audit_report` renders it.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from ..errors import DatavcError, NotARepository, NotFoundError, StoreUnreachable
from ..format.hashing import ObjectId
from ..format.record import Forgotten, VersionRecord
from ..format.run import (
    LOCK_FOLDER,
    LOCK_SUFFIX,
    MAX_LOCK,
    decode_lock,
)
from ..format.spec import parse_spec
from ..store import runs as store_runs
from ..store import versions
from ..store.check import fsck
from ..store.chunkstore import ChunkStore
from ..store.fsckreport import Problem
from ..workspace.core import Workspace
from .graph import Lineage, RunNode, VersionNode, lineage

OK, FAILED, SKIPPED = "ok", "FAILED", "skipped"
DAMAGED, DISAGREE, MISSING, OTHER = 6, 9, 3, 1
SEVERITY = (DAMAGED, DISAGREE, MISSING, OTHER)  # the exit code: the first that failed


class AuditFailed(DatavcError):
    """An audit found something that is not as recorded; ``exit_code`` says what."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True, slots=True)
class Check:
    """One verification: of ``item`` (``raw@v1``, ``run prep 01a2…``), what was checked,
    the result (ok, FAILED, skipped) and why; ``code`` is the exit code a failure means."""

    item: str
    what: str
    result: str
    detail: str
    code: int = 0


@dataclass
class AuditReport:
    target: str  # NAME@vN
    snapshot: ObjectId
    graph: Lineage
    checks: list[Check] = field(default_factory=list)
    checked: dict[str, int] = field(default_factory=dict)  # fsck's counts
    notes: list[str] = field(default_factory=list)

    def failures(self) -> list[Check]:
        return sorted(
            (c for c in self.checks if c.result == FAILED), key=lambda c: SEVERITY.index(c.code)
        )

    @property
    def ok(self) -> bool:
        return not self.failures()

    @property
    def exit_code(self) -> int:
        failed = self.failures()
        return failed[0].code if failed else 0

    def error(self) -> AuditFailed | None:
        """The one error line: the first failure of the worst kind, and how many more."""
        failed = self.failures()
        if not failed:
            return None
        first = failed[0]
        more = f" (and {len(failed) - 1} more failed checks)" if len(failed) > 1 else ""
        text = f"audit of {self.target} failed: {first.item}: {first.what}: {first.detail}"
        return AuditFailed(text + more, first.code)

    def runs(self) -> list[RunNode]:
        return sorted(self.graph.runs(), key=lambda r: r.id)  # ids sort by start time

    def versions(self) -> list[VersionNode]:
        return list(reversed(self.graph.versions()))  # upstream first

    def readers(self, node: VersionNode) -> list[RunNode]:
        """The runs of the graph that read ``node``."""
        keys = {e.target for e in self.graph.edges if e.source == node.key and e.kind == "input"}
        return [r for r in self.runs() if r.key in keys]


def run_label(node: RunNode) -> str:
    name = node.record.name if node.record else "?"
    return f"run {name} {node.id[:12]}"


# -- the audit ----------------------------------------------------------------------------


def audit(ws: Workspace, spec: str) -> AuditReport:
    """Walk up from the version ``spec`` names, and verify everything found."""
    rec = ws.resolve(parse_spec(spec))
    graph = lineage(ws.store, rec, up=True, down=False)
    report = AuditReport(f"{rec.name}@v{rec.version}", rec.tree, graph)
    reads = _Reads(ws.store)
    if graph.truncated:
        report.checks.append(Check("lineage", "graph", FAILED, "too large: cut", OTHER))
    data = _check_data(ws.store, report)
    for node in report.versions():
        report.checks += _version_checks(report, node, reads)
        if node.key in data:
            report.checks.append(data[node.key])
    for run in report.runs():
        report.checks += _run_checks(ws, run, reads)
    return report


class _Reads:
    """Version records read once each: the record, what forget left, or the error."""

    def __init__(self, store: ChunkStore) -> None:
        self.store = store
        self.found: dict[tuple[str, int], VersionRecord | Forgotten | DatavcError] = {}

    def get(self, name: str, number: int) -> VersionRecord | Forgotten | DatavcError:
        key = (name, number)
        if key not in self.found:
            try:
                self.found[key] = versions.read_entry(self.store, name, number)
            except (StoreUnreachable, NotARepository):
                raise  # not about this record: the audit cannot go on
            except DatavcError as err:
                self.found[key] = err
        return self.found[key]


def _usable(got: VersionRecord | Forgotten | DatavcError) -> VersionRecord | tuple[int, str]:
    """The version record, or why it cannot be used (exit code and reason)."""
    if isinstance(got, NotFoundError):
        return MISSING, "missing: the store has no record of it"
    if isinstance(got, DatavcError):
        return DAMAGED, f"damaged record: {got}"
    if isinstance(got, Forgotten):
        return MISSING, f"forgotten by {got.author} at {got.time}: gc may delete its data"
    return got


# -- data: fsck of the versions of the graph ----------------------------------------------


def _check_data(store: ChunkStore, report: AuditReport) -> dict[str, Check]:
    """fsck of the graph's versions, reading every chunk: a data check per version (by
    key); fsck's problems that damage none of them, and its notes, become notes."""
    wanted: dict[str, list[int]] = {}
    for node in report.graph.versions():
        if node.store is None and node.record is not None:
            wanted.setdefault(node.name, []).append(node.version)
    found = fsck(store, wanted, read_data=True)
    report.checked = dict(found.counts)
    report.notes += [f"fsck: {n}" for n in found.notes]
    labels = {n.label for n in report.graph.versions() if n.store is None}
    for p in found.problems.values():
        if not p.versions & labels:
            report.notes.append(f"fsck: {p.line()} (no version of this lineage needs it)")
    return {
        node.key: _data_check(report, node, found.problems.values())
        for node in report.versions()
        if node.store is None and node.record is not None
    }


def _data_check(report: AuditReport, node: VersionNode, problems: Iterable[Problem]) -> Check:
    mine = [p for p in problems if node.label in p.versions]
    if not mine:
        files = node.record.stats.files if node.record else 0
        return Check(node.label, "data", OK, f"every chunk of its {files} files stored, re-hashed")
    read_by = ", ".join(run_label(r) for r in report.readers(node))
    detail = "; ".join(f"{p.key}: {p.message}{_files(p, node.label)}" for p in mine)
    detail += f"; read by {read_by}" if read_by else ""
    return Check(node.label, "data", FAILED, detail, DAMAGED)


def _files(p: Problem, label: str) -> str:
    """The files of version ``label`` that the problem damages, as far as fsck names them."""
    mine = [f[len(label) + 1 :] for f in p.files if f.startswith(label + ":")]
    if not mine:
        return ""
    more = ", and maybe more" if p.file_count > len(p.files) else ""
    return f" (damages {', '.join(mine)}{more})"


# -- versions -----------------------------------------------------------------------------


def _version_checks(report: AuditReport, node: VersionNode, reads: _Reads) -> Iterator[Check]:
    if node.store is not None:
        yield Check(node.label, "record", SKIPPED, f"in another store ({node.store}): not read")
        return
    got = _usable(reads.get(node.name, node.version))
    if isinstance(got, tuple):
        yield Check(node.label, "record", FAILED, got[1], got[0])
        return
    yield Check(node.label, "record", OK, "read and checked")
    rec = node.record
    if rec is None:
        return  # the graph reached it through a link naming another snapshot (see links)
    if rec.run is not None:
        yield _made_by(report, node, rec.run)
    for d in rec.derived_from:
        what = f"derived from {d.label}"
        yield _link(reads, node.label, what, d.name, d.version, d.tree, d.store)


def _made_by(report: AuditReport, node: VersionNode, run_id: str) -> Check:
    """A version made by a run is one of that run's recorded outputs."""
    run = report.graph.nodes.get(f"run:{run_id}")
    what = f"made by run {run_id[:12]}"
    if not isinstance(run, RunNode) or run.record is None:
        return Check(node.label, what, SKIPPED, "the run has no readable record (see the run)")
    for o in run.record.outputs:
        if (o.name, o.version) == (node.name, node.version):
            return Check(node.label, what, OK, f"an output of {run_label(run)}")
    return Check(
        node.label, what, FAILED, f"{run_label(run)} does not name it as an output", DISAGREE
    )


def _link(
    reads: _Reads, item: str, what: str, name: str, number: int, tree: str, store: str | None
) -> Check:
    """A recorded link (name, version, snapshot id) resolves to that snapshot."""
    label = f"{name}@v{number}"
    if store is not None:
        return Check(item, what, SKIPPED, f"in another store ({store}): not read")
    got = _usable(reads.get(name, number))
    if isinstance(got, tuple):
        return Check(item, what, FAILED, f"{label} cannot be resolved: {got[1]}", got[0])
    if got.tree != tree:
        detail = f"recorded as snapshot {tree[:12]}, but {label} is snapshot {got.tree[:12]}"
        return Check(item, what, FAILED, detail, DISAGREE)
    return Check(item, what, OK, f"{label} is snapshot {tree[:12]}")


# -- runs ---------------------------------------------------------------------------------


def _run_checks(ws: Workspace, run: RunNode, reads: _Reads) -> Iterator[Check]:
    item = run_label(run)
    if run.state == "unfinished":
        detail = f"no record runs/{run.id}.json: the run never finished, or it was deleted"
        yield Check(item, "record", FAILED, detail, MISSING)
        return
    if run.record is None or run.record_hash is None:
        yield Check(item, "record", FAILED, _damage(ws.store, run.id), DAMAGED)
        return
    rec = run.record
    if rec.exit != 0:
        detail = f"the run failed (exit {rec.exit}), yet a version names it as its maker"
        yield Check(item, "record", FAILED, detail, DISAGREE)
    else:
        yield Check(item, "record", OK, f"read and checked (hash {run.record_hash[:12]})")
    yield _lock_check(ws, item, rec.name, run.id, run.record_hash)
    for i in rec.inputs:
        yield _link(reads, item, f"input {i.label}", i.name, i.version, i.tree, i.store)
    for o in rec.outputs:
        yield _link(reads, item, f"output {o.label}", o.name, o.version, o.tree, None)


def _damage(store: ChunkStore, run_id: str) -> str:
    """Why a run record the graph found damaged cannot be used (read again for the why)."""
    try:
        store_runs.read_run(store, run_id)
    except DatavcError as err:
        return f"damaged record: {err}"
    return "damaged record"


def _lock_check(ws: Workspace, item: str, name: str, run_id: str, digest: ObjectId) -> Check:
    """The workspace's lock file of the run's name, if it pins this run, pins its record's
    hash: a record rewritten in the store after the run no longer matches."""
    rel = f"{LOCK_FOLDER}/{name}{LOCK_SUFFIX}"
    try:
        data = _read_regular(ws.abs(rel), MAX_LOCK + 1)
    except FileNotFoundError:
        return Check(item, "lock", SKIPPED, f"no {rel} in this workspace")
    except OSError as err:
        return Check(item, "lock", SKIPPED, f"{rel} cannot be read: {err.strerror or err}")
    if data is None:
        return Check(item, "lock", SKIPPED, f"{rel} is not a regular file: not used")
    try:
        lock = decode_lock(data.decode("utf-8"), rel)
    except (DatavcError, UnicodeDecodeError):
        return Check(item, "lock", SKIPPED, f"{rel} is not a datavc run lock: not used")
    if lock.id != run_id:
        return Check(item, "lock", SKIPPED, f"{rel} pins another run ({lock.id[:12]})")
    if lock.record != digest:
        detail = (
            f"{rel} pins record {lock.record[:12]}, but the store's record hashes to "
            f"{digest[:12]}: the record was changed after the run"
        )
        return Check(item, "lock", FAILED, detail, DISAGREE)
    return Check(item, "lock", OK, f"{rel} pins this record")


def _read_regular(path: str, limit: int) -> bytes | None:
    """At most ``limit`` bytes of the regular file at ``path``; None if it is something
    else (a symlink from git may name a named pipe or a device: opened without waiting,
    and not read)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return f.read(limit)
