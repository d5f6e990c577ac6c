"""Proof on the command line: ``verify`` (a folder equals a snapshot) and ``audit`` (how a
version was made, verified) (registered on the app in :mod:`.app`)."""

from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING, Annotated

import typer

from ..errors import Mismatch
from .common import JSON_OPTION, print_json, workspace, write_lines

if TYPE_CHECKING:
    from ..workspace.verify import Verified

SHOWN = 50  # paths shown of each kind (extra, missing, different); the count says the rest


def verify(
    path: Annotated[str, typer.Argument(metavar="PATH", help="A folder or file, anywhere.")],
    spec: Annotated[
        str, typer.Argument(metavar="SPEC", help="NAME@vN, NAME@TAG, ... or NAME (its pointer).")
    ],
    as_json: Annotated[bool, JSON_OPTION] = False,
) -> None:
    """Prove that a folder (or file) equals a snapshot, file by file; exit 9 if not.

    Hashes every file (no stat cache) and compares content and executable bit; symbolic
    links and special files are extra. Writes nothing."""
    from ..workspace.verify import verify as compare

    found = compare(workspace(), path, spec)
    if as_json:
        print_json(_verified_json(found))
    else:
        write_lines(_verified_lines(found))
    if not found.diff.equal:
        raise Mismatch(f"{path} differs from {found.label}: {_counts(found)}")


def _summary(v: Verified) -> str:
    return f"{v.label} (snapshot {v.record.tree[:12]}, {v.diff.files} files)"


def _counts(v: Verified) -> str:
    d = v.diff
    text = f"{len(d.extra)} extra, {len(d.missing)} missing, {len(d.different)} different"
    return f"{d.note}; {text}" if d.note else text


def _verified_lines(v: Verified) -> list[str]:
    d = v.diff
    if d.equal:
        return [f"{v.path} equals {_summary(v)}"]
    lines = [f"{v.path} differs from {_summary(v)}"] + ([d.note] if d.note else [])
    modes = set(d.modes)
    for kind, paths in (("extra", d.extra), ("missing", d.missing), ("different", d.different)):
        if paths:
            lines.append(f"{kind}: {len(paths)} files")
        for p in paths[:SHOWN]:
            why = (" (mode)" if p in modes else " (content)") if kind == "different" else ""
            lines.append(f"  {p}{why}")
        if len(paths) > SHOWN:
            lines.append(f"  ... and {len(paths) - SHOWN} more")
    return lines


def _verified_json(v: Verified) -> dict[str, object]:
    d = v.diff
    modes = set(d.modes)
    return {
        "path": v.path,
        "name": v.record.name,
        "version": v.record.version,
        "snapshot": v.record.tree,
        "files": d.files,
        "equal": d.equal,
        "note": d.note or None,
        "extra": list(d.extra),
        "missing": list(d.missing),
        "different": [{"path": p, "why": "mode" if p in modes else "content"} for p in d.different],
    }


class ReportFormat(str, Enum):
    md = "md"
    json = "json"


def audit(
    spec: Annotated[
        str, typer.Argument(metavar="SPEC", help="The version to audit (typically a model).")
    ],
    fmt: Annotated[
        ReportFormat, typer.Option("--format", help="md (Markdown) or json.")
    ] = ReportFormat.md,
) -> None:
    """Report how a version was made, and verify it: every run and version it was made
    from, up to raw data.

    Verifies the data of every version (every chunk re-read and hashed), every run record
    (against the workspace's runs/NAME.lock), every recorded link. Exit 6 damaged data, 9
    records that disagree, 3 something missing."""
    from ..lineage.audit import audit as run_audit
    from ..lineage.audit_report import render_markdown, report_json

    report = run_audit(workspace(), spec)
    if fmt is ReportFormat.json:
        print_json(report_json(report))
    else:
        write_lines(render_markdown(report))
    error = report.error()
    if error is not None:
        raise error
