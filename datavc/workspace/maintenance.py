"""Store upkeep from a workspace: ``fsck``, ``repair``, ``forget`` and ``gc``.

The work is done in the store layer (:mod:`datavc.store.check`, :mod:`datavc.store.repair`,
:mod:`datavc.store.gc`); here specs are resolved and workspace files are used as a source
of data to restore.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..format.spec import parse_spec

if TYPE_CHECKING:
    from ..store.check import Report
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
