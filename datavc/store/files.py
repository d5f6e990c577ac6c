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
    try:
        st = os.lstat(root)
    except FileNotFoundError:
        raise PathNotFound(root) from None
    if kind == "file":
        if not S_ISREG(st.st_mode):
            raise BadInput(f"{root} is not a regular file")
        return [_local(os.path.basename(root), os.path.dirname(root), st)]
    if not S_ISDIR(st.st_mode):
        raise BadInput(f"{root} is not a folder")
    found: list[LocalFile] = []
    _walk(root, root, "", found, odd)
    found.sort(key=lambda f: f.path)  # code-point order: the byte order of valid UTF-8
    return found


def _walk(base: str, abspath: str, rel: str, out: list[LocalFile], odd: list[str] | None) -> None:
    with os.scandir(abspath) as it:
        for e in it:
            name = e.name
            if not name.isascii():
                _check_utf8(e.path)
            st = e.stat(follow_symlinks=False)
            mode = st.st_mode
            if S_ISREG(mode):
                out.append(_local(rel + name, base, st))
            elif S_ISDIR(mode):
                _walk(base, e.path, f"{rel}{name}/", out, odd)
            elif odd is not None:
                odd.append(rel + name)
            elif S_ISLNK(mode):
                raise BadInput(f"{e.path} is a symbolic link: datavc tracks regular files only")
            else:
                raise BadInput(f"{e.path} is not a regular file")


def _check_utf8(path: str) -> None:
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        shown = path.encode("utf-8", "backslashreplace").decode()
        raise BadInput(f"{shown}: file name is not valid UTF-8") from None


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
