"""The ``datavc`` command's entry point.

``datavc status`` with no options is the command run most often (shell prompts, editors,
scripts that poll) and its own work is small: one ``lstat`` per file. Importing typer and
building the command line from the app costs ~60 ms of a ~0.2 s run, so that one form runs
here without typer, printing what the typer command prints (``console.py``); every other
command line, ``datavc status --help`` included, goes to the typer app in ``cli.py``.
"""

from __future__ import annotations

import sys

from .console import errors_reported, status_lines, utf8_if_ascii
from .repository import Workspace


def main() -> None:
    if sys.argv[1:] == ["status"]:
        with errors_reported():
            utf8_if_ascii()
            print("\n".join(status_lines(Workspace.find(".").status())))
        return
    from .cli import main as typer_main

    typer_main()
