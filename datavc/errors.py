"""One error tree for datavc.

Every failure a user can cause or meet is a :class:`DatavcError`. Each class carries the data
that explains it (object ids, paths, expected and actual values) and an ``exit_code`` that the
CLI returns; the codes are documented in README.md. Not-found errors also subclass
:class:`FileNotFoundError` so fsspec callers and pandas see the exception they expect.
"""

from __future__ import annotations


class DatavcError(Exception):
    """Base of every datavc error. ``str(err)`` is the one line shown to the user."""

    exit_code = 1


class UsageError(DatavcError):
    """The command or its arguments make no sense in this workspace."""

    exit_code = 2


class NotFoundError(DatavcError, FileNotFoundError):
    """Something named by the user does not exist."""

    exit_code = 3

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "not found"


class DatasetNotFound(NotFoundError):
    def __init__(self, name: str) -> None:
        super().__init__(f"unknown dataset {name!r}")
        self.name = name


class VersionNotFound(NotFoundError):
    def __init__(self, name: str, spec: str) -> None:
        super().__init__(f"dataset {name!r} has no version {spec!r}")
        self.name = name
        self.spec = spec


class VersionForgotten(VersionNotFound):
    """The version existed and ``datavc forget`` removed it."""

    def __init__(self, name: str, number: int, when: str) -> None:
        NotFoundError.__init__(
            self, f"{name}@v{number} was forgotten ({when}): its data may be deleted by gc"
        )
        self.name = name
        self.spec = f"v{number}"


class ObjectNotFound(NotFoundError):
    """An object the metadata refers to is missing from the store."""

    def __init__(self, key: str) -> None:
        super().__init__(f"object {key} is missing from the store")
        self.key = key


class RangeNotFound(ObjectNotFound):
    """A ranged read past the end of an object that is there (a place that a wrong location
    hint names): the object is not missing, the place is."""


class PathNotFound(NotFoundError):
    def __init__(self, path: str) -> None:
        super().__init__(f"no such file or folder: {path}")
        self.path = path


class NotARepository(DatavcError):
    """No datavc workspace, or no store configured."""

    exit_code = 4


class StoreUnreachable(DatavcError):
    """The backend failed for a reason other than a missing object."""

    exit_code = 5

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"store {url} is unreachable: {reason}")
        self.url = url
        self.reason = reason


class IntegrityError(DatavcError):
    """Bytes read back do not match the hash that names them."""

    exit_code = 6

    def __init__(self, obj: str, expected: str, got: str, what: str = "object") -> None:
        super().__init__(
            f"integrity check failed in {obj}: {what} should hash to {expected[:16]}…, "
            f"got {got[:16]}…"
        )
        self.obj = obj
        self.expected = expected
        self.got = got


class CorruptObject(IntegrityError):
    """An object cannot be parsed (bad magic, truncated, inconsistent lengths)."""

    def __init__(self, obj: str, reason: str) -> None:
        DatavcError.__init__(self, f"corrupt object {obj}: {reason}")
        self.obj = obj
        self.expected = ""
        self.got = reason


class LockHeld(DatavcError):
    """Another datavc command holds the workspace lock."""

    exit_code = 7


class Conflict(DatavcError):
    """A concurrent writer won a race that cannot be retried."""

    exit_code = 7


class Diverged(Conflict):
    """A version number names different versions in two stores: copying between them
    (push, pull, fetch) stops instead of overwriting either. ``versions`` are the
    ``NAME@vN`` that differ."""

    def __init__(self, message: str, versions: tuple[str, ...]) -> None:
        super().__init__(message)
        self.versions = versions


class UnsafePath(DatavcError):
    """A path would escape its target folder or clash with another path."""

    exit_code = 8

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"unsafe path {path!r}: {reason}")
        self.path = path
        self.reason = reason


class Mismatch(DatavcError):
    """A folder, a rerun or an environment differs from the snapshot or run it was
    compared with (``verify``, ``reproduce``)."""

    exit_code = 9


class BadInput(DatavcError):
    """Input the user gave cannot be used (bad spec, unsupported file type...)."""

    exit_code = 8


class ReadOnly(BadInput, PermissionError):
    """A write to a snapshot (``datavc.open`` is read-only): a PermissionError, as the
    local filesystem raises for a file it may not write."""


class IsAFolder(BadInput, IsADirectoryError):
    """A folder of a snapshot opened as a file."""


class NotAFolder(BadInput, NotADirectoryError):
    """A path that goes through a file of a snapshot as if it were a folder."""
