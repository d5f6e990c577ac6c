"""Store upkeep from a workspace: ``fsck``, ``repair``, ``forget`` and ``gc``.

The work is done in the store layer (:mod:`datavc.store.check`, :mod:`datavc.store.repair`,
:mod:`datavc.store.gc`); here specs are resolved and workspace files are used as a source
of data to restore.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..format.spec import parse_spec

if TYPE_CHECKING:
    from collections.abc import Iterator

    from ..store.fsckreport import Report
    from ..store.gc import GcReport
    from ..store.repair import RepairReport
    from .core import Workspace


def fsck(ws: Workspace, specs: list[str], read_data: bool = False) -> Report:
    """Check the store; with ``specs``, only those versions (and every index and pack)."""
    from ..store.check import fsck as check_store

    wanted: dict[str, list[int]] | None = None
    if specs:
        wanted = {}
        for text in specs:
            rec = ws.resolve(parse_spec(text))
            numbers = wanted.setdefault(rec.name, [])
            if rec.version not in numbers:
                numbers.append(rec.version)
    return check_store(ws.store, wanted, read_data)


@dataclass
class ForgetResult:
    """What ``forget`` did: versions forgotten, versions kept because a run read them
    (``--keep-last``), and warnings."""

    done: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def forget(
    ws: Workspace, specs: list[str], keep_last: int | None = None, force: bool = False
) -> ForgetResult:
    """Forget versions: each ``NAME@vN`` (or spec) given, or, with ``keep_last``, every
    version of each NAME but its ``keep_last`` newest. A version a recorded run read is
    refused (``keep_last``: kept) unless ``force``: the run could not be reproduced."""
    from ..store import versions
    from .commit import _utc_now
    from .git import git_author

    targets = _newest_kept(ws, specs, keep_last) if keep_last is not None else _named(ws, specs)
    result = ForgetResult()
    if not force:
        targets = _unread(ws, targets, keep_last is not None, result)
    who, when = git_author(ws.root), _utc_now()
    for name, number in targets:
        if versions.forget_version(ws.store, name, number, who, when):
            result.done.append(f"{name}@v{number}")
    gone = set(targets)
    for ds in ws.datasets().values():
        if ds.pointer is not None and (ds.pointer.name, ds.pointer.version) in gone:
            result.warnings.append(
                f"{ds.path}.datavc names {ds.pointer.name}@v{ds.pointer.version}, now forgotten: "
                f"check out another version (datavc checkout {ds.pointer.name}@latest)"
            )
    return result


def _newest_kept(ws: Workspace, names: list[str], keep_last: int) -> list[tuple[str, int]]:
    """Every live version of each dataset but its ``keep_last`` newest."""
    from ..errors import UsageError
    from ..format.paths import check_name
    from ..store.versions import live_versions

    if keep_last < 1:
        raise UsageError("--keep-last must be at least 1 (forget NAME@vN to forget one)")
    targets: list[tuple[str, int]] = []
    for name in names:
        check_name(name)
        live = live_versions(ws.store, name)
        if not live:
            raise UsageError(f"{name!r} has no versions to forget")
        targets += [(name, rec.version) for rec in live[:-keep_last]]
    return list(dict.fromkeys(targets))


def _named(ws: Workspace, specs: list[str]) -> list[tuple[str, int]]:
    """The versions the specs name (``NAME@vN`` is taken as it is: one forgotten already
    is no error, nothing to do)."""
    from ..errors import UsageError

    targets = []
    for text in specs:
        spec = parse_spec(text)
        if spec.kind not in ("number", "ref", "latest"):
            raise UsageError(f"{text}: name the version to forget (NAME@vN)")
        if spec.kind == "number":
            targets.append((spec.name, spec.number))
            continue
        rec = ws.resolve(spec)
        targets.append((rec.name, rec.version))
    return list(dict.fromkeys(targets))


def _unread(
    ws: Workspace, targets: list[tuple[str, int]], keep: bool, result: ForgetResult
) -> list[tuple[str, int]]:
    """The targets no recorded run read. The others are kept (``keep``) or refused: a
    UsageError naming them and the runs, before anything is forgotten."""
    from ..errors import UsageError

    readers, unreadable = run_readers(ws)
    result.warnings += unreadable
    read = [t for t in targets if t in readers and _live(ws, *t)]
    if read and not keep:
        name, number = read[0]
        also = f" (and {len(read) - 1} more versions)" if len(read) > 1 else ""
        raise UsageError(
            f"{name}@v{number} was read by {_runs_text(readers[read[0]])}{also}: forgetting "
            "it would leave the run impossible to reproduce; use --force to forget it anyway"
        )
    for name, number in read:
        result.kept.append(f"{name}@v{number} (read by {_runs_text(readers[(name, number)])})")
    return [t for t in targets if t not in read]


def run_readers(ws: Workspace) -> tuple[dict[tuple[str, int], list[str]], list[str]]:
    """Which recorded runs read each version of the store (``run NAME (ID)``), and a
    warning for each run record that cannot be read (so was not checked)."""
    from ..errors import IntegrityError, ObjectNotFound
    from ..store.runsync import read_run_bytes, run_listing

    readers: dict[tuple[str, int], list[str]] = {}
    unreadable = []
    for info in run_listing(ws.store):
        try:
            _, rec = read_run_bytes(ws.store, info)
        except IntegrityError as err:
            unreadable.append(f"{err}: its inputs were not checked (run datavc fsck)")
            continue
        except ObjectNotFound:
            continue
        for i in rec.inputs:
            if i.store is None:
                readers.setdefault((i.name, i.version), []).append(f"{rec.name} ({rec.id[:12]})")
    return readers, unreadable


def _runs_text(runs: list[str]) -> str:
    shown = ", ".join(runs[:3]) + (f" and {len(runs) - 3} more" if len(runs) > 3 else "")
    return ("run " if len(runs) == 1 else "runs ") + shown


def _live(ws: Workspace, name: str, number: int) -> bool:
    """Whether the store holds ``name@v{number}`` and it is not forgotten."""
    from ..errors import NotFoundError
    from ..format.record import VersionRecord
    from ..store.versions import read_entry

    try:
        return isinstance(read_entry(ws.store, name, number), VersionRecord)
    except NotFoundError:
        return False


def collect(ws: Workspace, grace: float, dry_run: bool) -> GcReport:
    from ..store.gc import gc

    return gc(ws.store, grace, dry_run)


def repair(ws: Workspace, paths: list[str]) -> RepairReport:
    """Repair the store from what it holds and from local files: the given paths (files or
    folders), then every tracked dataset's folder in the workspace."""
    from ..store.repair import repair as repair_store

    return repair_store(ws.store, _local_files(ws, paths))


def _local_files(ws: Workspace, paths: list[str]) -> Iterator[str]:
    import os

    roots = [os.path.abspath(p) for p in paths]
    roots += [ws.abs(ds.path) for ds in ws.datasets().values()]
    for root in roots:
        if os.path.isfile(root):
            yield root
            continue
        for folder, dirs, names in os.walk(root):
            dirs[:] = [d for d in dirs if d.casefold() not in (".git", ".datavc")]
            for name in sorted(names):
                path = os.path.join(folder, name)
                if os.path.isfile(path) and not os.path.islink(path):
                    yield path
