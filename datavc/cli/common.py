"""What the command modules share: the command class, the --json option, the workspace,
and printing (sizes, lines made printable, JSON)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import typer

from ..workspace.core import Workspace
from .console import RichProgress, printable


class Command(typer.core.TyperCommand):
    """A command whose usage line shows required arguments as plain names (``SPEC``), as
    click and man pages do, not in braces."""

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces: list[str] = super().collect_usage_pieces(ctx)
        return [p[1:-1] if p.startswith("{") and p.endswith("}") else p for p in pieces]


JSON_OPTION = typer.Option("--json", help="Print JSON (schema: README, 'JSON output').")


def workspace() -> Workspace:
    return Workspace.find(".", RichProgress())


def size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{n} B"


def print_json(doc: object) -> None:
    """One JSON document, ASCII only (every control character escaped by JSON)."""
    import json

    typer.echo(json.dumps(doc, indent=1, ensure_ascii=True))


def write_json_rows(rows: Iterable[str], batch: int = 4096) -> None:
    """The rows of a JSON array, comma-separated, written in batches (a million files)."""
    out: list[str] = []
    first = True
    for row in rows:
        out.append(row if first else "," + row)
        first = False
        if len(out) >= batch:
            typer.echo("\n".join(out))
            out.clear()
    if out:
        typer.echo("\n".join(out))


def write_lines(lines: Iterable[str], batch: int = 4096, err: bool = False) -> None:
    """Print lines that hold what a store or a tree says (paths, authors, messages), each
    made printable (:func:`~.console.printable`), and many of them fast (a million-file
    listing): flushed every ``batch`` lines."""
    out: list[str] = []
    for line in lines:
        out.append(printable(line))
        if len(out) >= batch:
            typer.echo("\n".join(out), err=err)
            out.clear()
    if out:
        typer.echo("\n".join(out), err=err)
