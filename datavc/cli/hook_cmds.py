"""``datavc hook ...``: the checks git hooks run (see :mod:`datavc.workspace.hooks`)."""

from __future__ import annotations

import sys
from typing import Annotated

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

    _report(check(Workspace.find(".")), "commit refused")


@hook_app.command("post-checkout")
def post_checkout(
    previous: Annotated[str, typer.Argument(metavar="PREV")] = "",
    new: Annotated[str, typer.Argument(metavar="NEW")] = "",
    branch: Annotated[str, typer.Argument(metavar="FLAG")] = "1",
) -> None:
    """After git switched branches: materialize what the pointer files now say.

    Not during a rebase, and never over changes that are not committed (reported, left)."""
    _follow(branch == "1")


@hook_app.command("post-merge")
def post_merge(squash: Annotated[str, typer.Argument(metavar="SQUASH")] = "0") -> None:
    """After a merge or a pull: materialize what the pointer files now say."""
    _follow(True)


@hook_app.command("pre-push")
def pre_push(
    remote: Annotated[str, typer.Argument(metavar="REMOTE")] = "",
    url: Annotated[str, typer.Argument(metavar="URL")] = "",
) -> None:
    """Refuse a git push whose pointer files name data the datavc remote lacks.

    Reads git's refs on stdin; checks each pushed commit's pointer files against the
    default datavc remote (or the store), from listings, indexes and footers."""
    from ..workspace.hooks import pre_push as check

    problems = check(Workspace.find("."), sys.stdin.read())
    _report(problems, "push refused")


def _follow(branch_switch: bool) -> None:
    from ..workspace.hooks import follow_pointers, rebasing

    ws = Workspace.find(".")
    if not branch_switch or rebasing(ws):
        return
    for line in follow_pointers(ws):
        print(f"datavc: {printable(line)}", file=sys.stderr)


def _report(problems: list[str], verdict: str) -> None:
    for line in problems:
        print(f"datavc: {printable(line)}", file=sys.stderr)
    if problems:
        print(f"datavc: {len(problems)} problems: {verdict}", file=sys.stderr)
        raise typer.Exit(1)
