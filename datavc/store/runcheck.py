"""fsck of run records (``runs/<id>.json``): each parses, names the versions it wrote as
they are, and can still be reproduced.

A run record is created after its outputs' versions (docs/FORMAT.md, "Runs"), so each
output must exist with the recorded snapshot id (a version forgotten since keeps its number
and snapshot id: it still exists). Each input read from this store must still be there
with its snapshot id and not forgotten, or the run cannot be reproduced (``forget``
refuses to forget a run's input without ``--force``). Inputs opened from another store
cannot be checked here. A damaged record is always reported; the other checks are made of
every run, or, when fsck checks some versions only, of the runs that touch them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ..errors import DatavcError, IntegrityError, NotFoundError
from ..format.hashing import ObjectId
from ..format.record import Forgotten
from ..format.run import RunRecord
from .backend import ObjectInfo
from .chunkstore import ChunkStore
from .runsync import read_run_bytes
from .versions import read_entry

MAX_NAMED = 5  # findings of one run spelled out in its problem

# (name, version) -> (snapshot id, forgotten), or why there is none: "missing", "damaged"
Found = tuple[ObjectId, bool] | str
Known = dict[tuple[str, int], Found]


@dataclass(frozen=True, slots=True)
class RunFinding:
    """A run record at fault (``key``) and why."""

    key: str
    message: str


def check_runs(
    store: ChunkStore,
    listing: Iterable[ObjectInfo],
    wanted: dict[str, list[int]] | None,
    known: Known,
) -> tuple[list[RunFinding], int]:
    """Check the listed run records (see the module docstring): the problems, and how
    many records were checked whole. ``known`` holds the version records fsck read already
    (more are read, and added, as runs name them)."""
    chosen = None if wanted is None else {(n, v) for n, vs in wanted.items() for v in vs}
    findings: list[RunFinding] = []
    checked = 0
    for info in listing:
        key = f"runs/{info.name}"
        try:
            _, rec = read_run_bytes(store, info)
        except IntegrityError as err:
            findings.append(RunFinding(key, _damaged(err, key)))
            continue
        except NotFoundError:
            continue  # listed, then gone
        if chosen is not None and not _touches(rec, chosen):
            continue
        checked += 1
        faults = _faults(store, rec, known)
        if faults:
            more = len(faults) - MAX_NAMED
            text = "; ".join(faults[:MAX_NAMED]) + (f"; and {more} more" if more > 0 else "")
            findings.append(RunFinding(key, text))
    return findings, checked


def _touches(rec: RunRecord, chosen: set[tuple[str, int]]) -> bool:
    refs = [(o.name, o.version) for o in rec.outputs]
    refs += [(i.name, i.version) for i in rec.inputs if i.store is None]
    return any(r in chosen for r in refs)


def _faults(store: ChunkStore, rec: RunRecord, known: Known) -> list[str]:
    label = f"run {rec.name} ({rec.id[:12]})"
    out = []
    for o in rec.outputs:
        found = _version(store, o.name, o.version, known)
        if isinstance(found, str):
            out.append(f"names output {o.label}, which is {found}")
        elif found[0] != o.tree:
            out.append(
                f"names output {o.label} as snapshot {o.tree[:12]}, but the store's "
                f"{o.label} is snapshot {found[0][:12]}"
            )
    for i in rec.inputs:
        if i.store is not None:
            continue  # read from another store: not this store's to check
        found = _version(store, i.name, i.version, known)
        if isinstance(found, str):
            out.append(f"{label} cannot be reproduced: input {i.label} is {found}")
        elif found[0] != i.tree:
            out.append(
                f"{label} cannot be reproduced: input {i.label} is snapshot "
                f"{found[0][:12]} in the store, not {i.tree[:12]}"
            )
        elif found[1]:
            out.append(f"{label} cannot be reproduced: input {i.label} is forgotten")
    return out


def _version(store: ChunkStore, name: str, number: int, known: Known) -> Found:
    if (name, number) not in known:
        try:
            rec = read_entry(store, name, number)
            known[(name, number)] = (rec.tree, isinstance(rec, Forgotten))
        except NotFoundError:
            known[(name, number)] = "missing"
        except IntegrityError:  # the version check names the record
            known[(name, number)] = "damaged"
    return known[(name, number)]


def _damaged(err: DatavcError, key: str) -> str:
    text = str(err)
    prefix = f"corrupt object {key}: "
    return "damaged: " + (text[len(prefix) :] if text.startswith(prefix) else text)
