"""``datavc hook ...``: the checks git hooks run (see :mod:`datavc.workspace.hooks`)."""

from __future__ import annotations

import sys

import typer

from ..workspace.core import Workspace
from .console import printable

hook_app = typer.Typer(
    help="What git hooks run (the pre-commit framework's datavc-check runs 'hook pre-commit').",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@hook_app.command("pre-commit")
def pre_commit() -> None:
    """Refuse a git commit whose pointer files or data are not in order.

    Checks staged pointer files (they parse; the store holds their versions whole), that no
    file inside a dataset is staged, that every dataset matches its pointer file, and that
    a staged datavc config holds no credentials. One line per problem; exit 1 if any."""
    from ..workspace.hooks import pre_commit as check

    problems = check(Workspace.find("."))
    for line in problems:
        print(f"datavc: {printable(line)}", file=sys.stderr)
    if problems:
        print(f"datavc: {len(problems)} problems: commit refused", file=sys.stderr)
        raise typer.Exit(1)
