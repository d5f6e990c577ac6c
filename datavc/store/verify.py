"""A folder (or file) compared with a snapshot, file by file, without writing anything.

Every regular file of the folder is hashed (no stat cache: the answer must not depend on
one) and compared with the snapshot's entry: content (size, then BLAKE3), then mode.
Symbolic links and special files are reported as extra: a snapshot holds regular files
only. A file snapshot (kind "file") holds one entry, named after the file it was added
from; it is compared with the file at ``path`` whatever that file's name.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from stat import S_ISDIR, S_ISLNK, S_ISREG

from ..format.tree import FileEntry
from .files import LocalFile, file_mode, hash_path, scan


@dataclass(frozen=True, slots=True)
class FolderDiff:
    """What differs: paths only in the folder, only in the snapshot, and in both with
    other content or mode (``modes``: those of ``different`` whose content is equal);
    ``files`` is the number of snapshot files compared. ``note`` says why nothing of the
    folder could be compared (``path`` is not a folder, or not a regular file)."""

    extra: tuple[str, ...]
    missing: tuple[str, ...]
    different: tuple[str, ...]
    files: int
    modes: tuple[str, ...] = ()
    note: str = ""

    @property
    def equal(self) -> bool:
        return not (self.extra or self.missing or self.different or self.note)


def compare_folder(path: str, kind: str, entries: Iterable[FileEntry]) -> FolderDiff:
    """``path`` (a folder for ``kind`` "dir", a file for "file") against the snapshot's
    ``entries`` (in path order)."""
    odd: list[str] = []
    local, note = _local_files(path, kind, odd)
    missing, different, modes = [], [], []
    count = 0
    for e in entries:
        count += 1
        f = local.pop(e.path, None)
        if kind == "file" and f is None and count == 1 and local:
            f = local.pop(next(iter(local)))  # the one file, whatever its name
        why = None if f is None else _difference(f, e)
        if f is None:
            missing.append(e.path)
        elif why is not None:
            different.append(e.path)
            if why == "mode":
                modes.append(e.path)
    extra = sorted([*local, *odd])
    return FolderDiff(tuple(extra), tuple(missing), tuple(different), count, tuple(modes), note)


def _local_files(path: str, kind: str, odd: list[str]) -> tuple[dict[str, LocalFile], str]:
    """The regular files at ``path`` by snapshot path (symbolic links and special files
    go to ``odd``), and a note if ``path`` is not what ``kind`` says."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return {}, f"{path} does not exist"
    want = "a regular file" if kind == "file" else "a folder"
    ok = S_ISREG(st.st_mode) if kind == "file" else S_ISDIR(st.st_mode)
    if not ok:
        return {}, f"{path} is {_what(st.st_mode)}, not {want}"
    return {f.path: f for f in scan(path, kind, odd)}, ""


def _what(mode: int) -> str:
    if S_ISLNK(mode):
        return "a symbolic link"
    if S_ISDIR(mode):
        return "a folder"
    return "a regular file" if S_ISREG(mode) else "a special file"


def _difference(f: LocalFile, e: FileEntry) -> str | None:
    """Why they differ: "content" (size or hash), "mode" (the executable bit); None: same."""
    if f.size != e.size or hash_path(f.abspath, f.size) != e.hash:
        return "content"
    return "mode" if file_mode(f.mode) != e.mode else None
