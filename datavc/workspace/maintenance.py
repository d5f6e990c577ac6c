"""Store upkeep from a workspace: ``fsck``, ``repair``, ``forget`` and ``gc``.

The work is done in the store layer (:mod:`datavc.store.check`, :mod:`datavc.store.repair`,
:mod:`datavc.store.gc`); here specs are resolved and workspace files are used as a source
of data to restore.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..format.spec import parse_spec

if TYPE_CHECKING:
    from collections.abc import Iterator

    from ..store.check import Report
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


def forget(
    ws: Workspace, specs: list[str], keep_last: int | None = None
) -> tuple[list[str], list[str]]:
    """Forget versions: each ``NAME@vN`` (or spec) given, or, with ``keep_last``, every
    version of each NAME but its ``keep_last`` newest. Returns the versions forgotten and
    warnings (pointer files here that name one of them)."""
    from ..errors import UsageError
    from ..format.paths import check_name
    from ..store import versions
    from .commit import _utc_now
    from .git import git_author

    targets: list[tuple[str, int]] = []
    if keep_last is not None:
        if keep_last < 1:
            raise UsageError("--keep-last must be at least 1 (forget NAME@vN to forget one)")
        for name in specs:
            check_name(name)
            live = versions.live_versions(ws.store, name)
            if not live:
                raise UsageError(f"{name!r} has no versions to forget")
            targets += [(name, rec.version) for rec in live[:-keep_last]]
    else:
        for text in specs:
            spec = parse_spec(text)
            if spec.kind not in ("number", "ref", "latest"):
                raise UsageError(f"{text}: name the version to forget (NAME@vN)")
            if spec.kind == "number":  # forgotten already is no error: nothing to do
                targets.append((spec.name, spec.number))
                continue
            rec = ws.resolve(spec)
            targets.append((rec.name, rec.version))
    who, when = git_author(ws.root), _utc_now()
    done = []
    for name, number in dict.fromkeys(targets):
        if versions.forget_version(ws.store, name, number, who, when):
            done.append(f"{name}@v{number}")
    warnings = []
    gone = set(targets)
    for ds in ws.datasets().values():
        if ds.pointer is not None and (ds.pointer.name, ds.pointer.version) in gone:
            warnings.append(
                f"{ds.path}.datavc names {ds.pointer.name}@v{ds.pointer.version}, now forgotten: "
                f"check out another version (datavc checkout {ds.pointer.name}@latest)"
            )
    return done, warnings


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
