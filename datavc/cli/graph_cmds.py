"""The lineage graph on the command line: ``lineage`` (registered on the app in :mod:`.app`).
The walk is :mod:`datavc.lineage.graph`, the formats :mod:`datavc.lineage.render`."""

from __future__ import annotations

from typing import Annotated

import typer

from ..errors import UsageError
from .common import JSON_OPTION, workspace, write_lines

_FORMAT_HELP = (
    "text, mermaid (flowchart), dot (graphviz), json, or openlineage "
    "(one OpenLineage RunEvent a line, for each run)."
)


def lineage(
    spec: Annotated[
        str,
        typer.Argument(metavar="SPEC", help="NAME@VERSION, or NAME: what its pointer file says."),
    ],
    up: Annotated[
        bool, typer.Option("--up", help="Only what it was made from (runs, inputs, back to raw).")
    ] = False,
    down: Annotated[bool, typer.Option("--down", help="Only what was made from it.")] = False,
    fmt: Annotated[str, typer.Option("--format", metavar="FORMAT", help=_FORMAT_HELP)] = "text",
    as_json: Annotated[bool, JSON_OPTION] = False,
) -> None:
    """Show how a version was made and what was made from it.

    Up: the runs that wrote it, their inputs, and so on back to raw data, with versions
    made with commit --from. Down: every run that read it and what they wrote, and so on.
    Default: both. A run killed before its record was written shows as unfinished, a
    record that cannot be read as damaged; the walk stops at both."""
    from ..format.spec import parse_spec
    from ..lineage.graph import lineage as walk
    from ..lineage.render import FORMATS, render

    if as_json and fmt not in ("text", "json"):
        raise UsageError(f"--json and --format {fmt} ask for two formats: give one")
    fmt = "json" if as_json else fmt
    if fmt not in FORMATS:
        raise UsageError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
    ws = workspace()
    rec = ws.resolve(parse_spec(spec))
    both = up == down
    graph = walk(ws.store, rec, up=both or up, down=both or down)
    write_lines(render(graph, fmt, ws.store.backend.url, both or up, both or down))
