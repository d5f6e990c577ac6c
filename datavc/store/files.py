"""The files of a snapshot on local disk: found by a scan, with the stat fields that the stat
cache keys on, their snapshot modes, and their content hashes; and the progress sinks that
building and materializing a snapshot report their work to (bytes done: the CLI shows bars,
everyone else passes :class:`NoProgress`).

A scan takes regular files only: a symbolic link or special file is an error, unless the
caller collects them (a checkout removes them). Paths are "/" separated, relative to the
dataset's folder, sorted by code point (the byte order of valid UTF-8, as trees are).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from stat import S_ISDIR, S_ISLNK, S_ISREG
from typing import Protocol

from blake3 import blake3

from ..errors import BadInput, PathNotFound
from ..format.hashing import FileHash
from ..format.tree import MODE_EXEC, MODE_FILE

TMP_PREFIX = ".datavc-tmp-"
"""Names that datavc gives its staging folders beside a dataset (checkout's first phase)."""


@dataclass(slots=True)
class LocalFile:
    """A file found in the workspace, with the stat fields the stat cache keys on. Not
    changed once made (not frozen: a frozen dataclass takes 4x as long to build, which is
    most of a scan of many files).

    ``base`` is the folder ``path`` is relative to: one string shared by every file of a
    scan (a million files should not mean a million absolute paths in memory)."""

    path: str
    base: str
    size: int
    mode: int
    mtime_ns: int
    ctime_ns: int
    inode: int

    @property
    def abspath(self) -> str:
        return os.path.join(self.base, self.path)


def scan(root: str, kind: str, odd: list[str] | None = None) -> list[LocalFile]:
    """The regular files of a dataset path, sorted by snapshot path.

    Symlinks and special files are an error, unless ``odd`` is given to collect them.
    """
    return list(iter_scan(root, kind, odd))


def iter_scan(root: str, kind: str, odd: list[str] | None = None) -> Iterator[LocalFile]:
    """:func:`scan`, one file at a time: each folder is listed and sorted as the walk
    reaches it, so memory grows with the largest folder, not with the number of files.
    A folder's name sorts as if it ended in "/", which puts its files where the whole
    paths sort (``a.txt`` before ``a/b``: "." is below "/")."""
    try:
        st = os.lstat(root)
    except FileNotFoundError:
        raise PathNotFound(root) from None
    if kind == "file":
        if not S_ISREG(st.st_mode):
            raise BadInput(f"{root} is not a regular file")
        yield _local(os.path.basename(root), os.path.dirname(root), st)
        return
    if not S_ISDIR(st.st_mode):
        raise BadInput(f"{root} is not a folder")
    yield from _walk(root, root, "", odd)


def _walk(base: str, abspath: str, rel: str, odd: list[str] | None) -> Iterator[LocalFile]:
    with os.scandir(abspath) as it:
        found = [(e.name + "/" if e.is_dir(follow_symlinks=False) else e.name, e) for e in it]
    found.sort(key=_first)  # code-point order: the byte order of valid UTF-8
    for key, e in found:
        name = e.name
        if not name.isascii():
            _check_utf8(e.path)
        if key[-1] == "/":
            yield from _walk(base, e.path, rel + key, odd)
            continue
        st = e.stat(follow_symlinks=False)
        mode = st.st_mode
        if S_ISREG(mode):
            yield _local(rel + name, base, st)
        elif S_ISDIR(mode):  # made a folder since it was listed
            raise BadInput(f"{e.path} changed while it was being read")
        elif odd is not None:
            odd.append(rel + name)
        elif S_ISLNK(mode):
            raise BadInput(f"{e.path} is a symbolic link: datavc tracks regular files only")
        else:
            raise BadInput(f"{e.path} is not a regular file")


def _first(item: tuple[str, os.DirEntry[str]]) -> str:
    return item[0]


def _check_utf8(path: str) -> None:
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        shown = path.encode("utf-8", "backslashreplace").decode()
        raise BadInput(f"{shown}: file name is not valid UTF-8") from None


def local_file(base: str, rel: str) -> LocalFile | None:
    """The regular file at ``rel`` under ``base`` (not followed if a link), None if there
    is none."""
    try:
        st = os.lstat(os.path.join(base, *rel.split("/")))
    except (FileNotFoundError, NotADirectoryError):
        return None
    return _local(rel, base, st) if S_ISREG(st.st_mode) else None


def _local(rel: str, base: str, st: os.stat_result) -> LocalFile:
    return LocalFile(rel, base, st.st_size, st.st_mode, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def file_mode(st_mode: int) -> int:
    return MODE_EXEC if st_mode & 0o111 else MODE_FILE


def hash_path(path: str, size: int) -> FileHash:
    """BLAKE3 of a file's content, read in 8 MiB blocks (large files hashed on several
    threads; no memory map, so resident memory stays small)."""
    hasher = blake3(max_threads=blake3.AUTO if size >= 16 << 20 else 1)
    with open(path, "rb") as f:
        while block := f.read(8 << 20):
            hasher.update(block)
    return FileHash(hasher.digest())


class Progress(Protocol):
    def advance(self, n: int) -> None: ...


class NoProgress:
    def advance(self, n: int) -> None:
        pass
