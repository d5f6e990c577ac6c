"""The ``datavc`` command line: parses arguments, calls the workspace, prints results.

Errors print one line to stderr (``datavc: error: ...``) and exit with the error's code:
1 other failure, 2 usage, 3 not found, 4 no workspace or store, 5 store unreachable,
6 integrity check failed, 7 workspace locked or write conflict, 8 unsafe path or bad input.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import Annotated, Optional

import typer

from ..errors import UsageError
from ..format.storeconfig import DEFAULT_PACK_TARGET
from ..format.tree import FileEntry
from ..workspace.core import Workspace
from ..workspace.initialize import init_workspace
from .console import (
    RichProgress,
    checkout_lines,
    errors_reported,
    fail,
    printable,
    show_retries,
    show_status,
)

app = typer.Typer(
    name="datavc",
    help=(
        "Version datasets next to your Git code: chunked, deduplicated snapshots in any "
        "object store, tracked by small pointer files that you commit to Git."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def options(
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose",
            "-v",
            help="Show on stderr each store request that failed in passing and is tried again.",
        ),
    ] = False,
) -> None:
    """Options for every command."""
    if verbose:
        show_retries()


def _workspace() -> Workspace:
    return Workspace.find(".", RichProgress())


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{n} B"


@app.command()
def init(
    store: Annotated[
        Optional[str],  # noqa: UP045 - typer needs Optional on Python 3.10
        typer.Option(
            help="Store URL (s3://bucket/prefix, /path, memory://...). "
            "Default: the embedded local store .datavc/store."
        ),
    ] = None,
    pack_size: Annotated[
        int,
        typer.Option(
            min=1, max=1024, help="Target pack size in MiB for a new store (fixed at creation)."
        ),
    ] = DEFAULT_PACK_TARGET >> 20,
    force: Annotated[
        bool, typer.Option("--force", help="Re-point an existing workspace at another store.")
    ] = False,
) -> None:
    """Make this folder a datavc workspace and create (or join) its store."""
    url, _ = init_workspace(".", store, force, pack_size << 20)
    typer.echo(f"initialised datavc workspace in {os.path.abspath('.')}; store: {url}")


@app.command()
def add(
    path: Annotated[str, typer.Argument(help="Folder or file to track.")],
    name: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="Dataset name (default: the path's last part without extension)."),
    ] = None,
) -> None:
    """Track a folder or file: chunk it, store new data, stage it for the next commit."""
    result = _workspace().add(path, name)
    s, d = result.staged, result.diff
    typer.echo(
        f"{s.name}: staged {s.files} files, {_size(s.bytes)} "
        f"({len(d.added)} added, {len(d.modified)} modified, {len(d.removed)} removed); "
        f"new data stored: {_size(s.new_bytes)}"
    )


@app.command()
def commit(
    names: Annotated[Optional[list[str]], typer.Argument(help="Datasets (default: all).")] = None,  # noqa: UP045
    message: Annotated[str, typer.Option("-m", "--message", help="What changed and why.")] = "",
    all_: Annotated[
        bool, typer.Option("-a", "--all", help="Re-add every tracked dataset first.")
    ] = False,
) -> None:
    """Publish a new version of each dataset with staged changes and update its pointer file."""
    if not message:
        raise UsageError("a commit needs a message: datavc commit -m MESSAGE")
    records, unchanged = _workspace().commit(list(names or []), message, all_)
    for rec in records:
        typer.echo(
            f"{rec.name}@v{rec.version}  snapshot {rec.tree[:12]}  {rec.stats.files} files, "
            f"{_size(rec.stats.bytes)}, new data {_size(rec.stats.new_bytes)}"
        )
    for name in unchanged:
        typer.echo(f"{name}: nothing to commit (no staged changes)")


@app.command()
def checkout(
    specs: Annotated[
        Optional[list[str]],  # noqa: UP045
        typer.Argument(
            help="NAME@vN, NAME@latest, NAME@<tag>, NAME@<snapshot prefix>, "
            "NAME@git:<rev>. Default: what every pointer file says."
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", "-f", help="Discard changes that are not stored.")
    ] = False,
) -> None:
    """Materialize exact snapshots into their dataset paths."""
    _write_lines(checkout_lines(_workspace().checkout(list(specs or []), force)))


@app.command()
def status() -> None:
    """Show which datasets differ from their pointer files, and how."""
    show_status(_workspace().status(), _write_lines)


@app.command()
def log(name: Annotated[str, typer.Argument(help="Dataset name.")]) -> None:
    """List a dataset's versions, newest first."""
    for rec in _workspace().log(name):
        s = rec.stats
        _write_lines(
            [
                f"v{rec.version}  {rec.time}  {rec.author}",
                f"    snapshot {rec.tree[:12]}  {s.files} files, {_size(s.bytes)}, "
                f"new data stored {_size(s.new_bytes)}",
                f"    {rec.message}",
            ]
        )


@app.command()
def ls(spec: Annotated[str, typer.Argument(help="NAME or NAME@VERSION.")]) -> None:
    """List the files of a snapshot: mode, size, BLAKE3 hash, path."""
    rec, entries = _workspace().ls(spec)
    _write_lines([f"{rec.name}@v{rec.version} snapshot {rec.tree}"])
    _write_lines(_ls_line(e) for e in entries)


@app.command()
def diff(
    spec: Annotated[str, typer.Argument(help="NAME@VERSION (default: what the pointer says).")],
    other: Annotated[
        Optional[str],  # noqa: UP045
        typer.Argument(help="A second NAME@VERSION: show the changes from SPEC to it."),
    ] = None,
) -> None:
    """Show the files added (A), modified (M) and removed (D) between two versions; with one
    version, between its parent and it."""
    old, new, changes = _workspace().diff(spec, other)
    before = f"{old.name}@v{old.version}" if old else "(nothing)"
    _write_lines([f"{before} -> {new.name}@v{new.version}"])
    counts = {"added": 0, "modified": 0, "removed": 0}

    def lines() -> Iterator[str]:
        for kind, e in changes:
            counts[kind] += 1
            yield f"{_DIFF_MARK[kind]} {e.path}"

    _write_lines(lines())
    typer.echo(
        f"{counts['added']} added, {counts['modified']} modified, {counts['removed']} removed"
    )


_DIFF_MARK = {"added": "A", "modified": "M", "removed": "D"}


def _write_lines(lines: Iterable[str], batch: int = 4096) -> None:
    """Print lines that hold what a store or a tree says (paths, authors, messages), each
    made printable (:func:`~.console.printable`), and many of them fast (a million-file
    listing): flushed every ``batch`` lines."""
    out: list[str] = []
    for line in lines:
        out.append(printable(line))
        if len(out) >= batch:
            typer.echo("\n".join(out))
            out.clear()
    if out:
        typer.echo("\n".join(out))


def _ls_line(e: FileEntry) -> str:
    return f"{e.mode:o} {e.size:>12} {e.hash.hex()[:16]} {e.path}"


def main() -> None:
    """Run the CLI: every error is one line on stderr with a documented exit code.
    (The command's entry point is ``entry.main``, which runs plain ``status`` and plain
    ``checkout`` itself.)"""
    try:
        with errors_reported():
            code = app(standalone_mode=False)
    except typer.Abort:
        fail("interrupted", 130)
    except typer.Exit as err:
        sys.exit(err.exit_code)
    except Exception as err:
        code, message = getattr(err, "exit_code", None), getattr(err, "format_message", None)
        if not isinstance(code, int) or not callable(message):
            raise
        # A usage error from typer's bundled click: one line, exit 2. An empty message
        # means the help was printed (no arguments at all).
        text = message()
        if text:
            fail(f"{text} (see 'datavc --help')", code)
        sys.exit(code)
    # Outside standalone mode, typer returns the code of an exit instead of raising it: an
    # interrupt (Ctrl-C) comes back as 130, which must not end the process with 0.
    if code == 130:
        fail("interrupted", 130)
    if isinstance(code, int) and code:
        sys.exit(code)
