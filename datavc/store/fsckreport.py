"""What fsck reports: each damaged or missing object, the versions and files it damages,
notes, and counts (:mod:`.check` fills it in)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

MAX_FILES_NAMED = 20  # per problem; the count says how many more


@dataclass
class Problem:
    """One damaged or missing object, and what it damages."""

    key: str  # the object at fault (a store key), or "chunk <id>"
    message: str
    versions: set[str] = field(default_factory=set)
    files: list[str] = field(default_factory=list)
    file_count: int = 0
    _last: str = ""

    def affects(self, version: str, path: str | None = None) -> None:
        self.versions.add(version)
        if path is None:
            return
        where = f"{version}:{path}"
        if where == self._last:
            return  # another chunk of the same file (a file's chunks come one after another)
        self._last = where
        self.file_count += 1
        if len(self.files) < MAX_FILES_NAMED:
            self.files.append(where)

    def line(self) -> str:
        text = f"{self.key}: {self.message}"
        if self.versions:
            text += f"; damages {', '.join(sorted(self.versions, key=version_key))}"
        if self.file_count and not self.files:
            text += f" ({self.file_count} files)"
        elif self.file_count:
            more = self.file_count - len(self.files)
            text += f" ({self.file_count} files: {', '.join(self.files)}"
            text += f", and {more} more)" if more else ")"
        return text

    def as_json(self) -> dict[str, object]:
        return {
            "object": self.key,
            "message": self.message,
            "versions": sorted(self.versions, key=version_key),
            "files": self.files,
            "file_count": self.file_count,
        }


@dataclass
class Report:
    problems: dict[str, Problem] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    @property
    def ok(self) -> bool:
        return not self.problems

    def problem(self, obj: str, message: str) -> Problem:
        """The problem of ``obj`` (the first message given for it is kept)."""
        found = self.problems.get(obj)
        if found is None:
            found = self.problems[obj] = Problem(obj, message)
        return found

    def as_json(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "problems": [p.as_json() for p in self.problems.values()],
            "notes": self.notes,
            "checked": dict(self.counts),
        }


def version_key(v: str) -> tuple[str, int]:
    name, _, number = v.rpartition("@v")
    return (name, int(number)) if number.isdigit() else (v, 0)
