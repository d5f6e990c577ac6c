"""The ``datavc`` command's entry point.

Importing typer and building the command line from the app costs ~30 ms of every command
(measured: ~0.12 s from start to the first byte a checkout writes, 30 ms of it typer). Two
command lines run here without it, printing what the typer commands print
(:mod:`.console`):

- ``datavc status`` with no options, the command run most often (shell prompts, editors,
  scripts that poll), whose own work is small: one ``lstat`` per file;
- ``datavc checkout [SPEC...]`` with no options, the command that puts training data in
  place and that a job runs before it starts.

Every other command line (an option, ``--help``, ``--``, any other command) goes to the
typer app in :mod:`.app`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from ..workspace.core import Workspace
from .console import (
    RichProgress,
    checkout_lines,
    errors_reported,
    print_lines,
    show_status,
    utf8_if_ascii,
)


def main() -> None:
    args = sys.argv[1:]
    if args == ["status"]:
        _plain(lambda: show_status(Workspace.find(".").status(), print_lines))
    elif args[:1] == ["checkout"] and not any(a.startswith("-") for a in args[1:]):
        _plain(lambda: _checkout(args[1:]))
    else:
        from .app import main as typer_main

        typer_main()


def _checkout(specs: list[str]) -> None:
    print_lines(checkout_lines(Workspace.find(".", RichProgress()).checkout(specs)))


def _plain(run: Callable[[], None]) -> None:
    """Run a plain form, which prints its lines; errors reported as the typer app does."""
    with errors_reported():
        utf8_if_ascii()
        run()
