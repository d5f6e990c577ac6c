"""``datavc verify PATH SPEC``: prove that a folder (or file) equals a snapshot.

Read-only, everywhere: the folder's files are hashed (the stat cache is neither read nor
written), and the store is opened without the local cache, so that not even a tree page
is copied into ``.datavc/cache``. PATH may be any folder, inside the workspace or not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..format.spec import parse_spec
from ..store.trees import iter_entries
from ..store.verify import FolderDiff, compare_folder
from .core import Workspace, open_store

if TYPE_CHECKING:
    from ..format.record import VersionRecord


@dataclass(frozen=True, slots=True)
class Verified:
    path: str  # as the user gave it
    record: VersionRecord
    diff: FolderDiff

    @property
    def label(self) -> str:
        return f"{self.record.name}@v{self.record.version}"


def verify(ws: Workspace, path: str, spec: str) -> Verified:
    """``path`` compared with the version ``spec`` names (resolved as every command
    resolves a spec), file by file."""
    cfg = ws.config
    store = open_store(cfg.store, cfg.storage_options, None, cfg.retry)  # no cache: no writes
    view = Workspace(ws.root, ws.progress, store)
    rec = view.resolve(parse_spec(spec))
    entries = iter_entries(store, rec.root, hints=False)
    return Verified(path, rec, compare_folder(path, rec.kind, entries))
