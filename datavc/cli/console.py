"""What the ``datavc`` command shows, shared by the typer app (:mod:`.app`) and the entry
point's own plain forms of ``status`` and ``checkout`` (:mod:`.entry`), so that neither
imports the other to load: the one error line with its exit code, the progress bars, and
the status and checkout lines."""

from __future__ import annotations

import codecs
import contextlib
import os
import re
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, NoReturn

from ..errors import DatavcError
from ..store.files import NoProgress
from ..store.files import Progress as ProgressSink
from ..workspace.core import ProgressFactory

if TYPE_CHECKING:
    from ..workspace.checkout import CheckoutResult
    from ..workspace.status import Status


@contextlib.contextmanager
def errors_reported() -> Iterator[None]:
    """Turn a datavc error, an interrupt or an OS error into one line and its exit code."""
    try:
        yield
    except DatavcError as err:
        fail(str(err), err.exit_code)
    except KeyboardInterrupt:
        fail("interrupted", 130)
    except OSError as err:
        fail(str(err), 1)


# What a terminal acts on instead of showing: C0 and C1 controls (escape sequences, newlines,
# carriage returns, bells), DEL, line and paragraph separators, and bidirectional overrides.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """``text`` with every character a terminal would act on written as an escape (``\x1b``,
    ``\n``, ``\u202e``): paths, authors and messages come from trees and records that anyone
    with write access to the store may have written."""
    if text.isprintable():  # the common case, checked in C
        return text
    return _CONTROL.sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def fail(message: str, code: int) -> NoReturn:
    """Print the one error line on stderr and exit with ``code``."""
    print(f"datavc: error: {printable(message)}", file=sys.stderr)
    sys.exit(code)


def print_lines(lines: list[str]) -> None:
    """Print the command's result lines. If the reader has gone (``datavc status | head``,
    a closed pipe), end quietly with exit code 1, as click does for typer's commands."""
    try:
        print("\n".join(printable(line) for line in lines))
        sys.stdout.flush()  # here, not at exit, where the error would print a traceback
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the flush at exit finds a place to write
        sys.exit(1)


def utf8_if_ascii() -> None:
    """Write UTF-8 to a stdout that says ASCII (a C locale), as click does for typer's
    commands: a non-ASCII path must not fail the command."""
    encoding = getattr(sys.stdout, "encoding", None)
    if encoding and codecs.lookup(encoding).name == "ascii":
        with contextlib.suppress(AttributeError, ValueError):
            sys.stdout.reconfigure(encoding="utf-8", errors="replace")  # type: ignore[union-attr]


class _Bar:
    def __init__(self, progress: Any, task: Any) -> None:
        self._progress = progress
        self._task = task

    def advance(self, n: int) -> None:
        self._progress.advance(self._task, n)


class RichProgress(ProgressFactory):
    """Progress bars on stderr, only when it is a terminal (rich is imported only then)."""

    def __init__(self) -> None:
        self._progress: Any = None

    def __call__(self, label: str, total: int | None) -> ProgressSink:
        """``total`` None: not known ahead (a streamed add): bytes done and speed only."""
        if not sys.stderr.isatty() or (total is not None and total < 32 << 20):
            return NoProgress()
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            transient=True,
        )
        self._progress.start()
        return _Bar(self._progress, self._progress.add_task(label, total=total))

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def checkout_lines(results: list[CheckoutResult]) -> list[str]:
    """What ``datavc checkout`` prints for what it materialized."""
    if not results:
        return ["no tracked datasets"]
    return [
        f"{r.name}@v{r.version} -> {r.path} ({r.files} files, {r.written} written)" for r in results
    ]


def status_lines(rows: list[Status]) -> list[str]:
    """What ``datavc status`` prints for the workspace's datasets."""
    if not rows:
        return ["no tracked datasets"]
    return [_status_line(st) for st in rows]


def show_status(rows: list[Status], write: Callable[[list[str]], None]) -> None:
    """Write the status lines; then, if a dataset's state needed the store and the store
    was unreachable, raise that error (one line, exit code 5) after them."""
    write(status_lines(rows))
    for row in rows:
        if row.error is not None:
            raise row.error


def show_retries() -> None:
    """Show the store's retries (logger ``datavc.store``, level INFO) on stderr, each line
    made printable: it quotes what the store answered."""
    import logging

    class Printable(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            return printable(super().format(record))

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(Printable("datavc: %(message)s"))
    logger = logging.getLogger("datavc.store")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def _status_line(st: Status) -> str:
    d = st.diff
    counts = f" ({len(d.added)} added, {len(d.modified)} modified, {len(d.removed)} removed)"
    shown = counts if not d.empty else ""
    return f"{st.name} ({st.path}): {st.state}{shown}: {st.detail}"
