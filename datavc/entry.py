"""The ``datavc`` command's entry point.

``datavc status`` with no options is the command run most often (shell prompts, editors,
scripts that poll) and its own work is small: one ``lstat`` per file. Importing typer and
building the command line from the app costs ~60 ms of a ~0.2 s run, so that one form runs
here without typer, printing exactly what the typer command prints; every other command line,
``datavc status --help`` included, goes to the typer app in ``cli.py``.
"""

from __future__ import annotations

import sys
from typing import NoReturn

from .errors import DatavcError
from .repository import ProgressFactory, Status, Workspace


def main() -> None:
    if sys.argv[1:] == ["status"]:
        try:
            print("\n".join(status_lines(Workspace.find(".", ProgressFactory()).status())))
        except DatavcError as err:
            fail(str(err), err.exit_code)
        except KeyboardInterrupt:
            fail("interrupted", 130)
        except OSError as err:
            fail(str(err), 1)
        return
    from .cli import main as typer_main

    typer_main()


def status_lines(rows: list[Status]) -> list[str]:
    """What ``datavc status`` prints for the workspace's datasets."""
    if not rows:
        return ["no tracked datasets"]
    return [_status_line(st) for st in rows]


def _status_line(st: Status) -> str:
    d = st.diff
    counts = f" ({len(d.added)} added, {len(d.modified)} modified, {len(d.removed)} removed)"
    shown = counts if not d.empty else ""
    return f"{st.name} ({st.path}): {st.state}{shown}: {st.detail}"


def fail(message: str, code: int) -> NoReturn:
    """Print the one error line on stderr and exit with ``code``."""
    print(f"datavc: error: {message}", file=sys.stderr)
    sys.exit(code)
