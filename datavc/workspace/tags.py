"""``datavc tag``: name a version of a dataset (``NAME@<tag>``), list and delete tags.

Tags live in the store (``tags/<name>/<tag>``, the version number as text), so every
workspace that shares the store sees them. A tag is created exclusively; moving one to
another version takes ``force``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..format.paths import check_name
from ..format.spec import check_tag, parse_spec
from ..store import versions

if TYPE_CHECKING:
    from .core import Workspace


def tag(ws: Workspace, spec: str, name: str, force: bool = False) -> tuple[str, int, int | None]:
    """Tag the version ``spec`` resolves to; return (dataset, version, the version the tag
    named before or None)."""
    check_tag(name)
    rec = ws.resolve(parse_spec(spec))
    before = versions.write_tag(ws.store, rec.name, name, rec.version, force)
    return rec.name, rec.version, before


def list_tags(ws: Workspace, dataset: str | None = None) -> dict[str, dict[str, int]]:
    """Every tag of ``dataset`` (or of every dataset in the store): {name: {tag: N}}."""
    if dataset is not None:
        check_name(dataset)
        names = [dataset]
    else:
        names = versions.dataset_names(ws.store)
    out = {}
    for name in names:
        found = versions.list_tags(ws.store, name)
        if found:
            out[name] = found
    return out


def delete_tag(ws: Workspace, dataset: str, name: str) -> int:
    check_name(dataset)
    check_tag(name)
    return versions.delete_tag(ws.store, dataset, name)
