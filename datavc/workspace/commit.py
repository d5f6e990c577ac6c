"""``datavc commit``: publish a version of each dataset with staged changes.

The version record is the last write, created exclusively under the next free number
(:func:`datavc.store.versions.publish_version`); then the pointer file is written and the
staged state dropped. ``-a`` re-adds every tracked dataset first, under the same lock.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, NoReturn

from ..errors import BadInput, DatasetNotFound, UsageError
from ..format.record import CommitStats, DerivedFrom, VersionRecord
from ..store import versions
from ..store.overlap import Overlap
from .add import add_locked, new_nonce
from .git import git, git_author
from .lock import workspace_lock

if TYPE_CHECKING:
    from .core import Dataset, Staged, Workspace


def commit(
    ws: Workspace,
    names: list[str],
    message: str,
    all_tracked: bool = False,
    derived_from: tuple[DerivedFrom, ...] = (),
) -> tuple[list[VersionRecord], list[str]]:
    """Publish a version of each named (or every) dataset with staged changes; each record
    names ``derived_from``, the versions it was made from.

    Returns the new records and the names that had nothing to commit.
    """
    with workspace_lock(ws.state):
        return commit_locked(ws, names, message, all_tracked, derived_from)


def commit_locked(
    ws: Workspace,
    names: list[str],
    message: str,
    all_tracked: bool = False,
    derived_from: tuple[DerivedFrom, ...] = (),
    run: str | None = None,
) -> tuple[list[VersionRecord], list[str]]:
    """:func:`commit`, for a caller that holds the workspace lock; ``run``: the run whose
    outputs these versions are."""
    try:
        message.encode("utf-8")
    except UnicodeEncodeError:
        raise BadInput("the commit message is not valid UTF-8") from None
    if all_tracked:
        for ds in list(ws.datasets().values()):
            wanted = not names or ds.name in names
            if wanted and os.path.lexists(ws.abs(ds.path)):
                add_locked(ws, ds.path, ds.name)
    known = ws.datasets()
    for n in names:
        if n not in known:
            raise DatasetNotFound(n)
    chosen = [known[n] for n in names] if names else list(known.values())
    published, unchanged = [], []
    for ds in chosen:
        if ds.staged is None:
            unchanged.append(ds.name)
            continue
        published.append(_publish(ws, ds, ds.staged, message, derived_from, run))
    return published, unchanged


def _publish(
    ws: Workspace,
    ds: Dataset,
    staged: Staged,
    message: str,
    derived_from: tuple[DerivedFrom, ...],
    run: str | None,
) -> VersionRecord:
    """The checks before the record and the listing of the dataset's versions are sent
    at once (on a remote store each is a round trip); then the record is created."""
    store = ws.store
    nonce = staged.nonce or new_nonce()
    with Overlap(not store.backend.is_local) as overlap:
        config = overlap.start(lambda: store.config)  # a store this datavc can write
        start = overlap.start(lambda: versions.publish_start(store, ds.name, nonce))
        stored = overlap.start(lambda: _check_still_stored(ws, ds.name, staged))
        author = git_author(ws.root)
        head = git(ws.root, "rev-parse", "HEAD")
        config.result()  # its error first: no store at all is what to say
        stored.result()
        first = start.result()
    record = VersionRecord(
        name=ds.name,
        version=0,
        kind=staged.kind,
        tree=staged.tree,
        parent=ds.pointer.version if ds.pointer else None,
        message=message,
        author=author,
        time=_utc_now(),
        git_head=head,
        nonce=nonce,
        root=staged.root,
        stats=CommitStats(
            staged.files, staged.bytes, staged.new_bytes, staged.new_chunks, staged.new_objects
        ),
        run=run,
        derived_from=derived_from,
    )
    record = versions.publish_version(store, record, first)
    ws.write_pointer(staged.path, record)
    ws.unstage(ds.name)
    return record


def _check_still_stored(ws: Workspace, name: str, staged: Staged) -> None:
    """A staged snapshot is published only if gc has neither deleted nor condemned what it
    needs: its pages, and the packs their hints name (which add checked when it staged
    them), unless written anew since they were condemned. Staged long ago, before a gc
    run, it must be added again (which stores anew what is gone). The gc records, the
    listing of the packs and an existence check of each page are sent at once."""
    from ..format.tree import page_packs
    from ..store.gc import read_condemned

    store = ws.store
    pages = staged.root.pages
    with Overlap(not store.backend.is_local) as overlap:
        condemned_at = overlap.start(lambda: read_condemned(store))
        packs_at = overlap.start(lambda: store.backend.list_detail("packs"))
        found = overlap.map(lambda p: store.backend.exists(f"trees/{p.id}"), pages)
        condemned = condemned_at.result()
        packs = {i.name: i for i in packs_at.result()}
    listed = None  # trees listed only if a gc record names one of the staged pages (rare)
    kept = []
    for page, exists in zip(pages, found, strict=True):
        if page.id in condemned.since:
            if listed is None:
                listed = {i.name: i for i in store.backend.list_detail("trees")}
            exists = not condemned.at_risk(page.id, listed.get(page.id))
        if not exists:
            _staged_gone(name, staged)
        kept.append(page)
    with Overlap(not store.backend.is_local) as overlap:  # the cache has them, usually
        for start in range(0, len(kept), WINDOW):  # a window at a time: memory stays small
            window = kept[start : start + WINDOW]
            data = overlap.map(lambda p: store.read_object("trees", p.id), window)
            for page, page_bytes in zip(window, data, strict=True):
                named = page_packs(page_bytes, f"trees/{page.id}", page.content)
                if any(condemned.at_risk(p, packs.get(p)) for p in named):
                    _staged_gone(name, staged)


WINDOW = 32  # staged pages read at once by the check before a commit


def _staged_gone(name: str, staged: Staged) -> NoReturn:
    raise UsageError(
        f"{name}: data staged by add has since been removed or condemned by gc: "
        f"run 'datavc add {staged.path}' again, then commit"
    )


def _utc_now() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
