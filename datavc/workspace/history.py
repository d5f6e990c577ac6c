"""``datavc log``, ``ls`` and ``diff``: reading a dataset's versions and snapshots.

Nothing here writes: versions are listed from the store, snapshots read one tree page at a
time, and a diff reads only the pages that differ between two trees.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from ..errors import DatasetNotFound
from ..format.record import VersionRecord
from ..format.spec import parse_spec
from ..format.tree import FileEntry
from ..store import versions
from ..store.trees import diff_trees, iter_entries

if TYPE_CHECKING:
    from .core import Workspace


def log(ws: Workspace, name: str) -> list[VersionRecord]:
    """A dataset's versions, newest first."""
    numbers = versions.version_numbers(ws.store, name)
    if not numbers:
        _ = ws.store.config  # no store at all: say that, not "no such dataset"
        raise DatasetNotFound(name)
    return list(reversed(versions.live_versions(ws.store, name)))


def ls(ws: Workspace, text: str) -> tuple[VersionRecord, Iterator[FileEntry]]:
    """A snapshot's entries in path order, read one page at a time."""
    rec = ws.resolve(parse_spec(text))
    return rec, iter_entries(ws.store, rec.root, hints=False)


def diff(
    ws: Workspace, text: str, against: str | None = None
) -> tuple[VersionRecord | None, VersionRecord, Iterator[tuple[str, FileEntry]]]:
    """Changes from ``text``'s parent version to ``text``, or from ``text`` to
    ``against``; returns (old record or None for "nothing", new record, changes)."""
    first = ws.resolve(parse_spec(text))
    if against is None:
        old, new = None, first
        if first.parent is not None:
            parent = versions.read_entry(ws.store, first.name, first.parent)
            old = parent if isinstance(parent, VersionRecord) else None  # forgotten: nothing
    else:
        old, new = first, ws.resolve(parse_spec(against))
    return old, new, diff_trees(ws.store, old.root if old else None, new.root)
