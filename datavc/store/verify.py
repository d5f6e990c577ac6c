"""A folder compared with a snapshot, file by file, without writing anything.

Every regular file of the folder is hashed (no stat cache: the answer must not depend on
one) and compared with the snapshot's entry: content (BLAKE3), then mode. Symbolic links
and special files are reported as extra: a snapshot holds regular files only.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

from ..format.tree import FileEntry
from .files import LocalFile, file_mode, hash_path, scan


@dataclass(frozen=True, slots=True)
class FolderDiff:
    """What differs: paths only in the folder, only in the snapshot, and in both with
    other content or mode; ``files`` is the number of snapshot files compared."""

    extra: tuple[str, ...]
    missing: tuple[str, ...]
    different: tuple[str, ...]
    files: int

    @property
    def equal(self) -> bool:
        return not (self.extra or self.missing or self.different)


def compare_folder(path: str, kind: str, entries: Iterable[FileEntry]) -> FolderDiff:
    """``path`` (a folder for ``kind`` "dir", a file for "file") against the snapshot's
    ``entries`` (in path order)."""
    odd: list[str] = []
    local = {f.path: f for f in scan(path, kind, odd)} if os.path.lexists(path) else {}
    missing, different = [], []
    count = 0
    for e in entries:
        count += 1
        f = local.pop(e.path, None)
        if f is None:
            missing.append(e.path)
        elif not _same(f, e):
            different.append(e.path)
    extra = sorted([*local, *odd])
    return FolderDiff(tuple(extra), tuple(missing), tuple(different), count)


def _same(f: LocalFile, e: FileEntry) -> bool:
    """Same size and mode, then (only then read) same content."""
    if f.size != e.size or file_mode(f.mode) != e.mode:
        return False
    return hash_path(f.abspath, f.size) == e.hash
