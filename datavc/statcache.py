"""The stat cache: (size, mtime_ns, ctime_ns, inode) -> file hash, per dataset.

Lets ``status`` and a repeated ``add`` skip reading unchanged files. An entry is trusted only
if every stat field matches; entries for files modified in the last two seconds before saving
are dropped, so a write within the file system's timestamp granularity is never missed.

It also remembers the snapshot id its rows were last found to match exactly (``matches``):
when every file still hits its row, and there are no more and no fewer files, the folder
still equals that snapshot, and ``status`` need not read the snapshot at all.

File format (JSON): ``{"format": 2, "matches": ID or null, "rows": {path: [size, mtime_ns,
ctime_ns, inode, hash hex]}}``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence

from .atomic import write_text_atomic
from .hashing import FileHash
from .snapshot import LocalFile

RACY_NS = 2_000_000_000
FORMAT = 2


class StatCache:
    def __init__(self, path: str) -> None:
        self.path = path
        self._rows: dict[str, list[int | str]] = {}
        self.matches: str | None = None
        self._dirty = False
        try:
            with open(path, encoding="utf-8") as f:
                doc = json.load(f)
            if isinstance(doc, dict) and doc.get("format") == FORMAT:
                self._rows = dict(doc["rows"])
                self.matches = doc.get("matches")
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            self._rows, self.matches = {}, None

    def get(self, f: LocalFile) -> FileHash | None:
        row = self._rows.get(f.path)
        if row is None or row[:4] != [f.size, f.mtime_ns, f.ctime_ns, f.inode]:
            return None
        return FileHash(bytes.fromhex(str(row[4])))

    def put(self, f: LocalFile, digest: bytes) -> None:
        row: list[int | str] = [f.size, f.mtime_ns, f.ctime_ns, f.inode, digest.hex()]
        if self._rows.get(f.path) != row:
            self._rows[f.path] = row
            self._dirty = True

    def retain(self, paths: set[str]) -> None:
        for gone in set(self._rows) - paths:
            del self._rows[gone]
            self._dirty = True

    def covers(self, files: Sequence[LocalFile]) -> bool:
        """True if the rows are exactly these files, every one unchanged."""
        return len(files) == len(self._rows) and all(self.get(f) is not None for f in files)

    def mark(self, snapshot: str | None) -> None:
        """Record that the rows match ``snapshot`` exactly (None: unknown)."""
        if snapshot != self.matches:
            self.matches = snapshot
            self._dirty = True

    def save(self) -> None:
        if not self._dirty:
            return
        cutoff = time.time_ns() - RACY_NS
        rows = {p: r for p, r in self._rows.items() if int(r[1]) < cutoff and int(r[2]) < cutoff}
        matches = self.matches if len(rows) == len(self._rows) else None
        doc = {"format": FORMAT, "matches": matches, "rows": rows}
        write_text_atomic(self.path, json.dumps(doc, separators=(",", ":")))
        self._dirty = False
