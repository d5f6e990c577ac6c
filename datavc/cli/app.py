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
from .console import RichProgress, checkout_lines, errors_reported, fail, printable, status_lines
from .remote_cmds import fetch, pull, push, remote_app

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
    _write_lines(status_lines(_workspace().status()))


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


@app.command()
def fsck(
    specs: Annotated[
        Optional[list[str]],  # noqa: UP045
        typer.Argument(help="Versions to check (NAME@vN, ...). Default: every version."),
    ] = None,
    read_data: Annotated[
        bool, typer.Option("--read-data", help="Also read every chunk and check its hash.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Check the store: every index, pack footer, version record and tree page, and that
    every chunk a version needs is stored. Names each damaged object and the versions and
    files it damages; exits 6 if anything is wrong."""
    report = _workspace().fsck(list(specs or []), read_data)
    if as_json:
        import json

        typer.echo(json.dumps(report.as_json(), indent=1, ensure_ascii=True))
    else:
        _write_lines(f"{p.line()}" for p in report.problems.values())
        _write_lines(f"note: {n}" for n in report.notes)
        c = report.counts
        verdict = "no problems" if report.ok else f"{len(report.problems)} damaged objects"
        typer.echo(
            f"fsck: {verdict}; checked {c['versions']} versions, {c['pages']} tree pages, "
            f"{c['indexes']} indexes, {c['packs']} packs ({c['chunks']} chunks)"
            + (f", read {_size(c['bytes_read'])}" if read_data else "")
        )
    if not report.ok:
        raise typer.Exit(6)


@app.command()
def repair(
    paths: Annotated[
        Optional[list[str]],  # noqa: UP045
        typer.Argument(help="Files or folders that may hold lost data (besides the datasets)."),
    ] = None,
) -> None:
    """Rebuild indexes from pack footers, salvage the sound chunks of damaged packs, and
    store again every missing chunk that local files still hold (the tracked datasets'
    folders and PATHs). Reads every pack. Exits 6 if data is still missing."""
    r = _workspace().repair(list(paths or []))
    typer.echo(
        f"restored {r.restored_chunks} chunks ({_size(r.restored_bytes)}) from "
        f"{r.files_read} files read; salvaged {r.salvaged_chunks} chunks from damaged packs; "
        f"new index of {r.index_entries} chunks, {r.deleted_indexes} unsound indexes and "
        f"{r.deleted_packs} damaged packs deleted"
    )
    _write_lines(f"kept (still holds lost data): {k}" for k in r.kept_damaged)
    if r.ok:
        typer.echo("the store holds every version whole")
        return
    _write_lines(f"still damaged: {p.line()}" for p in r.missing.problems.values())
    raise typer.Exit(6)


@app.command()
def forget(
    specs: Annotated[
        list[str],
        typer.Argument(help="NAME@vN... to forget; with --keep-last, dataset NAMEs."),
    ],
    keep_last: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option("--keep-last", min=1, help="Forget all but the N newest versions of NAME."),
    ] = None,
) -> None:
    """Remove versions from log, ls and spec resolution; gc then deletes the data that only
    they needed. Version numbers are never reused."""
    done, warnings = _workspace().forget(specs, keep_last)
    _write_lines(f"forgot {v}" for v in done)
    if not done:
        typer.echo("nothing to forget")
    _write_lines((f"warning: {w}" for w in warnings), err=True)


@app.command()
def gc(
    grace: Annotated[
        str,
        typer.Option(
            help="Delete only what has been garbage for this long (e.g. 24h, 30m, 2d, 0): "
            "longer than any add and commit on any machine takes."
        ),
    ] = "24h",
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print what would be condemned; change nothing.")
    ] = False,
) -> None:
    """Delete packs and tree pages that no live version needs, in two phases: a run
    condemns them, a run after the grace period deletes what is still garbage; packs that
    are mostly garbage are repacked."""
    r = _workspace().gc(_duration(grace), dry_run)
    verb = "would condemn" if dry_run else "garbage"
    typer.echo(
        f"{r.live_versions} live versions, {r.forgotten_versions} forgotten; {verb}: "
        f"{r.condemned_packs} packs ({_size(r.condemned_bytes)}), {r.condemned_pages} tree pages"
        + (
            f"; repacked {r.repacked_packs} packs ({_size(r.repacked_bytes)} kept)"
            if r.repacked_packs
            else ""
        )
    )
    if not dry_run:
        typer.echo(
            f"deleted {r.deleted_packs} packs ({_size(r.deleted_bytes)}), {r.deleted_pages} tree "
            f"pages, {r.deleted_leftovers} temporary files; replaced {r.replaced_indexes} "
            f"indexes; {r.waiting} objects wait for the grace period"
        )
    if r.young_pages:
        typer.echo(
            f"note: {r.young_pages} tree pages no live version names are younger than the grace "
            "period (adds in flight or not committed): what they need is kept"
        )
    _write_lines(f"note: {n}" for n in r.notes)


app.add_typer(remote_app, name="remote")
app.command()(push)
app.command()(fetch)
app.command()(pull)

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def _duration(text: str) -> float:
    t = text.strip().lower()
    unit = _UNITS.get(t[-1:]) if t else None
    number = t[:-1] if unit is not None else t
    try:
        value = float(number)
    except ValueError:
        value = -1
    if not number or value < 0 or value != value or value > 10 * 365 * 86400:
        raise UsageError(f"invalid duration {text!r}: use a number and s, m, h, d or w (24h)")
    return value * (unit or 1)


def _write_lines(lines: Iterable[str], batch: int = 4096, err: bool = False) -> None:
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
