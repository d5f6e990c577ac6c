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


def iter_scan(
    root: str,
    kind: str,
    odd: list[str] | None = None,
    after: str | None = None,
    upto: str | None = None,
) -> Iterator[LocalFile]:
    """:func:`scan`, one file at a time: each folder is listed and sorted as the walk
    reaches it, so memory grows with the largest folder, not with the number of files.
    A folder's name sorts as if it ended in "/", which puts its files where the whole
    paths sort (``a.txt`` before ``a/b``: "." is below "/").

    ``after``/``upto``: only the paths above ``after`` and up to ``upto`` (a range of a
    snapshot's pages); folders wholly outside it are not listed."""
    try:
        st = os.lstat(root)
    except FileNotFoundError:
        raise PathNotFound(root) from None
    if kind == "file":
        if not S_ISREG(st.st_mode):
            raise BadInput(f"{root} is not a regular file")
        f = local_from_stat(os.path.basename(root), os.path.dirname(root), st)
        if (after is None or f.path > after) and (upto is None or f.path <= upto):
            yield f
        return
    if not S_ISDIR(st.st_mode):
        raise BadInput(f"{root} is not a folder")
    if after is None and upto is None:
        yield from _walk(root, root, "", odd)
    else:
        yield from _walk_range(root, root, "", odd, _Range(after, upto))


def _walk(base: str, abspath: str, rel: str, odd: list[str] | None) -> Iterator[LocalFile]:
    for key, e in _listing(abspath):
        if key[-1] == "/":
            yield from _walk(base, e.path, rel + key, odd)
            continue
        st = e.stat(follow_symlinks=False)  # (_file's work, inline: it is most of a scan)
        if S_ISREG(st.st_mode):
            yield local_from_stat(rel + key, base, st)
            continue
        f = _file(base, rel, e, odd)
        if f is not None:
            yield f


def _listing(abspath: str) -> list[tuple[str, os.DirEntry[str]]]:
    """A folder's entries in code-point order (the byte order of valid UTF-8), each with
    its sort key (a folder's name + "/"); names that are not UTF-8 are refused."""
    with os.scandir(abspath) as it:
        found = [(e.name + "/" if e.is_dir(follow_symlinks=False) else e.name, e) for e in it]
    found.sort(key=_first)
    for _, e in found:
        if not e.name.isascii():
            _check_utf8(e.path)
    return found


@dataclass(slots=True)
class _Range:
    after: str | None
    upto: str | None
    done: bool = False  # a path past ``upto`` was reached: the walk stops


def below(folder: str) -> str:
    """The least string above every path in ``folder`` (a prefix ending in "/"): such
    paths start with it, and "0" follows "/" in code-point order."""
    return folder[:-1] + "0"


def _walk_range(
    base: str, abspath: str, rel: str, odd: list[str] | None, r: _Range
) -> Iterator[LocalFile]:
    for key, e in _listing(abspath):
        path = rel + key
        if r.upto is not None and path > r.upto:  # (a folder's paths are all above it)
            r.done = True
            return
        if key[-1] == "/":
            if r.after is None or below(path) > r.after:
                yield from _walk_range(base, e.path, path, odd, r)
                if r.done:
                    return
            continue
        if r.after is None or path > r.after:
            f = _file(base, rel, e, odd)
            if f is not None:
                yield f


def _file(base: str, rel: str, e: os.DirEntry[str], odd: list[str] | None) -> LocalFile | None:
    """The file a listed entry is, if regular (else collected in ``odd``, or refused)."""
    name = e.name
    st = e.stat(follow_symlinks=False)
    mode = st.st_mode
    if S_ISREG(mode):
        return local_from_stat(rel + name, base, st)
    if S_ISDIR(mode):  # made a folder since it was listed
        raise BadInput(f"{e.path} changed while it was being read")
    if odd is not None:
        odd.append(rel + name)
        return None
    if S_ISLNK(mode):
        raise BadInput(f"{e.path} is a symbolic link: datavc tracks regular files only")
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
    return local_from_stat(rel, base, st) if S_ISREG(st.st_mode) else None


def local_from_stat(rel: str, base: str, st: os.stat_result) -> LocalFile:
    """The file at ``rel`` under ``base`` whose ``lstat`` gave ``st``."""
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
