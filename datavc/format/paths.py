"""Validation of paths that come from trees, pointer files and version records (pure).

A snapshot path is relative, uses "/" only, and has no empty, "." or ".." component, no ".git"
or ".datavc" component, no NUL or backslash; no component over 255 bytes, no more than 128
components, 3,072 bytes in all. Within one snapshot no path repeats, no two differ
only by case, and no path is both a file and a folder.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..errors import BadInput, UnsafePath

_FORBIDDEN_PARTS = {"", ".", "..", ".git", ".datavc"}
MAX_NAME_BYTES = 255  # a component, in UTF-8: what common file systems take (NAME_MAX)
MAX_PATH_BYTES = 3072  # a whole path: under PATH_MAX (4096) with room for the target folder
MAX_DEPTH = 128  # components of a path: walkers (os.walk, fsspec's walk) recurse by folder
PRIVATE_FOLDERS = (".git", ".datavc")  # git's and datavc's own: never written into


def private_part(path: str) -> str | None:
    """The first component of a "/" path that is ``.git`` or ``.datavc`` in any case form
    (a case-insensitive file system takes ``.GIT`` for ``.git``); None if there is none."""
    for part in path.split("/"):
        if part.lower() in PRIVATE_FOLDERS:
            return part
    return None


def check_path(path: str) -> None:
    if not path:
        raise UnsafePath(path, "empty path")
    if path.startswith("/") or (len(path) > 1 and path[1] == ":"):
        raise UnsafePath(path, "absolute path")
    if "\\" in path or "\x00" in path:
        raise UnsafePath(path, "backslash or NUL in path")
    try:
        raw = path.encode("utf-8")
    except UnicodeEncodeError:
        raise UnsafePath(path, "not valid UTF-8") from None
    if len(raw) > MAX_PATH_BYTES:
        raise UnsafePath(cut_short(path), f"path longer than {MAX_PATH_BYTES} bytes")
    check_depth(path)
    for part in path.split("/"):
        if part.lower() in _FORBIDDEN_PARTS:
            raise UnsafePath(path, f"forbidden component {part!r}")
        if len(part) > MAX_NAME_BYTES // 4 and len(part.encode()) > MAX_NAME_BYTES:
            raise UnsafePath(path, f"a name longer than {MAX_NAME_BYTES} bytes")


def check_depth(path: str) -> None:
    """Refuse ``path`` (a file's, or a folder's ending in "/": then its files') if it has
    more than ``MAX_DEPTH`` components; what walkers that recurse by folder check."""
    if path.count("/") >= MAX_DEPTH:
        raise UnsafePath(cut_short(path), f"path deeper than {MAX_DEPTH} components")


def cut_short(path: str) -> str:
    """A long path as an error message names it."""
    return path if len(path) <= 64 else path[:64] + "..."


def check_last_part(path: str, name: str) -> None:
    """:func:`check_path` of ``path`` whose folders are known good: its name alone."""
    if "\\" in name or "\x00" in name:
        raise UnsafePath(path, "backslash or NUL in path")
    if not name.isascii():
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            raise UnsafePath(path, "not valid UTF-8") from None
    if len(path) > MAX_PATH_BYTES // 4 or len(name) > MAX_NAME_BYTES // 4:  # (most: neither)
        check_path(path)
    if name.lower() in _FORBIDDEN_PARTS:
        raise UnsafePath(path, f"forbidden component {name!r}")


def check_paths(paths: Iterable[str]) -> None:
    """Check every path, and that together they can be written to one folder."""
    seen: dict[str, str] = {}
    files: set[str] = set()
    folders: dict[str, str] = {}
    for path in paths:
        check_path(path)
        folded = path.casefold()
        if folded in seen:
            other = seen[folded]
            reason = "duplicate path" if other == path else f"differs only by case from {other!r}"
            raise UnsafePath(path, reason)
        seen[folded] = path
        files.add(folded)
        parts = path.split("/")
        for i in range(1, len(parts)):
            folder = "/".join(parts[:i])
            spelled = folders.setdefault(folder.casefold(), folder)
            if spelled != folder:
                raise UnsafePath(path, f"folder {folder!r} differs only by case from {spelled!r}")
    clash = files & set(folders)
    if clash:
        raise UnsafePath(sorted(clash)[0], "is both a file and a folder")


class SortedPathCheck:
    """:func:`check_paths` for paths that arrive sorted (code-point order), one at a time,
    in memory that grows with the largest folder and the depth, not with the number of
    paths: two paths that clash by case, or as file and folder, differ first in names that
    are siblings in one folder, and a folder's paths arrive together. So only the names
    seen in each folder on the way to the current path are kept."""

    __slots__ = ("_children", "_last", "_open")

    def __init__(self) -> None:
        self._open: list[str] = []  # the folders the last path is in, outermost first
        # the names seen in each of them (and in the root): casefold -> (name, is a folder)
        self._children: list[dict[str, tuple[str, bool]]] = [{}]
        self._last: str | None = None

    def add(self, path: str) -> None:
        last = self._last
        cut = path.rfind("/") + 1
        same_folder = last is not None and last.rfind("/") + 1 == cut and last[:cut] == path[:cut]
        if same_folder and cut:  # (a name at the top is the whole path: "c:" is absolute)
            check_last_part(path, path[cut:])  # its folders were checked with the last path
        else:
            check_path(path)
        if last is not None and path <= last:
            reason = "duplicate path" if path == last else "paths are not in order"
            raise UnsafePath(path, reason)
        self._last = path
        if same_folder:
            # the same folder as the last path (most paths): only the name is new
            name = path[cut:]
            children = self._children[-1]
            seen = children.get(name.casefold())
            if seen is not None:
                raise UnsafePath(path, f"path {path!r} differs only by case from {seen[0]!r}")
            children[name.casefold()] = (name, False)
            return
        parts = path.split("/")
        folders = len(parts) - 1
        same = 0
        while same < min(folders, len(self._open)) and self._open[same] == parts[same]:
            same += 1
        del self._open[same:]
        del self._children[same + 1 :]
        for depth in range(same, len(parts)):
            name = parts[depth]
            folder = depth < folders
            seen = self._children[depth].get(name.casefold())
            if seen is not None:
                where = "/".join(parts[: depth + 1])
                if seen[0] != name:
                    kind = "folder" if folder else "path"
                    raise UnsafePath(
                        path, f"{kind} {where!r} differs only by case from {seen[0]!r}"
                    )
                raise UnsafePath(path, "is both a file and a folder")
            self._children[depth][name.casefold()] = (name, folder)
            if folder:
                self._open.append(name)
                self._children.append({})


def valid_name(name: str) -> bool:
    """Whether ``name`` is a dataset name (see :func:`check_name`)."""
    ok = bool(name) and len(name) <= 128 and name[0].isalnum()
    return ok and all(c.isalnum() or c in "-_." for c in name) and ".." not in name


def check_name(name: str) -> None:
    """Dataset names go into object keys: keep them to a safe alphabet."""
    if not valid_name(name):
        raise BadInput(
            f"invalid dataset name {name!r}: use letters, digits, '-', '_' and '.', "
            "starting with a letter or digit"
        )
