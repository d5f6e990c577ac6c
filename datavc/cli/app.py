"""The ``datavc`` command line: parses arguments, calls the workspace, prints results.

Errors print one line to stderr (``datavc: error: ...``) and exit with the error's code:
1 other failure, 2 usage, 3 not found, 4 no workspace or store, 5 store unreachable,
6 integrity check failed, 7 workspace locked or write conflict, 8 unsafe path or bad input.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Annotated, Any, Optional

import typer

from ..errors import UsageError
from ..format.record import VersionRecord
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
    context_settings={"help_option_names": ["-h", "--help"]},
    rich_markup_mode=None,
)


class _Command(typer.core.TyperCommand):
    """A command whose usage line shows required arguments as plain names (``SPEC``), as
    click and man pages do, not in braces."""

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces: list[str] = super().collect_usage_pieces(ctx)
        return [p[1:-1] if p.startswith("{") and p.endswith("}") else p for p in pieces]


def _command(name: str | None = None) -> Callable[[Callable[..., None]], Callable[..., None]]:
    return app.command(name, cls=_Command)


def _show_version(value: bool) -> None:
    if value:
        from importlib.metadata import version  # not datavc.__version__: cli never imports fs

        typer.echo(f"datavc {version('datavc')}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            help="Print datavc's version and exit.",
            callback=_show_version,
            is_eager=True,
        ),
    ] = False,
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose",
            "-v",
            help="Show on stderr each store request that failed in passing and is tried again.",
        ),
    ] = False,
) -> None:
    """Version datasets next to your Git code: chunked, deduplicated snapshots in any
    object store, tracked by small pointer files that you commit to Git."""
    if verbose:
        show_retries()


JSON_OPTION = typer.Option("--json", help="Print JSON (schema: README, 'JSON output').")


def _workspace() -> Workspace:
    return Workspace.find(".", RichProgress())


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{n} B"


@_command()
def init(
    store: Annotated[
        Optional[str],  # noqa: UP045 - typer needs Optional on Python 3.10
        typer.Option(
            metavar="URL",
            help="Store URL (s3://bucket/prefix, /path, memory://...). "
            "Default: the embedded local store .datavc/store.",
        ),
    ] = None,
    pack_size: Annotated[
        int,
        typer.Option(
            min=1,
            max=1024,
            metavar="MiB",
            help="Target pack size of a new store, 1 to 1024 MiB (fixed at creation).",
        ),
    ] = DEFAULT_PACK_TARGET >> 20,
    force: Annotated[
        bool, typer.Option("--force", help="Re-point an existing workspace at another store.")
    ] = False,
) -> None:
    """Make this folder a datavc workspace and create (or join) its store."""
    url, _ = init_workspace(".", store, force, pack_size << 20)
    typer.echo(f"initialised datavc workspace in {os.path.abspath('.')}; store: {url}")


@_command()
def add(
    path: Annotated[str, typer.Argument(metavar="PATH", help="Folder or file to track.")],
    name: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(
            metavar="NAME",
            help="Dataset name (default: the path's last part without extension).",
        ),
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


@_command()
def commit(
    names: Annotated[
        Optional[list[str]],  # noqa: UP045
        typer.Argument(
            metavar="[NAME]...", help="Datasets (default: every one with staged changes)."
        ),
    ] = None,
    message: Annotated[
        str, typer.Option("-m", "--message", metavar="MESSAGE", help="What changed and why.")
    ] = "",
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


@_command()
def checkout(
    specs: Annotated[
        Optional[list[str]],  # noqa: UP045
        typer.Argument(
            metavar="[SPEC]...",
            help="NAME@vN, NAME@latest, NAME@TAG, NAME@SNAPSHOT-PREFIX or NAME@git:REV. "
            "Default: what every pointer file says.",
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", "-f", help="Discard changes that are not stored.")
    ] = False,
) -> None:
    """Materialize exact snapshots into their dataset paths.

    Every file is fetched and checked first; only then are files put in place."""
    _write_lines(checkout_lines(_workspace().checkout(list(specs or []), force)))


@_command()
def status(as_json: Annotated[bool, JSON_OPTION] = False) -> None:
    """Show which datasets differ from their pointer files, and how."""
    rows = _workspace().status()
    if as_json:
        _print_json(
            [
                {
                    "name": st.name,
                    "path": st.path,
                    "state": st.state,
                    "detail": st.detail,
                    "added": list(st.diff.added),
                    "modified": list(st.diff.modified),
                    "removed": list(st.diff.removed),
                }
                for st in rows
            ]
        )
        for st in rows:
            if st.error is not None:
                raise st.error  # after the document: one error line, exit 5
        return
    show_status(rows, _write_lines)


@_command()
def log(
    name: Annotated[str, typer.Argument(metavar="NAME", help="Dataset name.")],
    as_json: Annotated[bool, JSON_OPTION] = False,
) -> None:
    """List a dataset's versions, newest first, with their tags."""
    ws = _workspace()
    records = ws.log(name)
    tags: dict[int, list[str]] = {}
    for tag_name, number in sorted(ws.tags(name).get(name, {}).items()):
        tags.setdefault(number, []).append(tag_name)
    if as_json:
        _print_json([_record_doc(rec, tags.get(rec.version, [])) for rec in records])
        return
    for rec in records:
        s = rec.stats
        tagged = f"  (tags: {', '.join(tags[rec.version])})" if rec.version in tags else ""
        _write_lines(
            [
                f"v{rec.version}  {rec.time}  {rec.author}{tagged}",
                f"    snapshot {rec.tree[:12]}  {s.files} files, {_size(s.bytes)}, "
                f"new data stored {_size(s.new_bytes)}",
                f"    {rec.message}",
            ]
        )


@_command()
def ls(
    spec: Annotated[
        str,
        typer.Argument(metavar="SPEC", help="NAME@VERSION, or NAME: what its pointer file says."),
    ],
    as_json: Annotated[bool, JSON_OPTION] = False,
) -> None:
    """List the files of a snapshot: mode, size, BLAKE3 hash, path."""
    rec, entries = _workspace().ls(spec)
    if as_json:
        import json

        head = {"name": rec.name, "version": rec.version, "snapshot": rec.tree}
        typer.echo(json.dumps(head, ensure_ascii=True)[:-1] + ', "files": [')
        rows = (
            json.dumps(
                {"path": e.path, "mode": f"{e.mode:o}", "size": e.size, "hash": e.hash.hex()},
                ensure_ascii=True,
            )
            for e in entries
        )
        _write_json_rows(rows)
        typer.echo("]}")
        return
    _write_lines([f"{rec.name}@v{rec.version} snapshot {rec.tree}"])
    _write_lines(_ls_line(e) for e in entries)


@_command()
def diff(
    spec: Annotated[
        str,
        typer.Argument(metavar="SPEC", help="NAME@VERSION, or NAME: what its pointer file says."),
    ],
    other: Annotated[
        Optional[str],  # noqa: UP045
        typer.Argument(metavar="[SPEC2]", help="Show the changes from SPEC to this version."),
    ] = None,
    as_json: Annotated[bool, JSON_OPTION] = False,
) -> None:
    """Show the files added (A), modified (M) and removed (D) between two versions.

    With one version: between its parent and it."""
    old, new, changes = _workspace().diff(spec, other)
    before = f"{old.name}@v{old.version}" if old else "(nothing)"
    if as_json:
        import json

        head = {"from": before if old else None, "to": f"{new.name}@v{new.version}"}
        typer.echo(json.dumps(head, ensure_ascii=True)[:-1] + ', "changes": [')
        rows = (
            json.dumps({"change": kind, "path": e.path}, ensure_ascii=True) for kind, e in changes
        )
        _write_json_rows(rows)
        typer.echo("]}")
        return
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


@_command()
def fsck(
    specs: Annotated[
        Optional[list[str]],  # noqa: UP045
        typer.Argument(
            metavar="[SPEC]...", help="Versions to check (NAME@vN, ...). Default: every version."
        ),
    ] = None,
    read_data: Annotated[
        bool, typer.Option("--read-data", help="Also read every chunk and check its hash.")
    ] = False,
    as_json: Annotated[bool, JSON_OPTION] = False,
) -> None:
    """Check the store for damage; exit 6 if anything is wrong.

    Reads every index, pack footer, version record and tree page, and checks that every
    chunk a version needs is stored. Names each damaged object and the versions and files
    it damages."""
    report = _workspace().fsck(list(specs or []), read_data)
    if as_json:
        _print_json(report.as_json())
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


@_command()
def repair(
    paths: Annotated[
        Optional[list[str]],  # noqa: UP045
        typer.Argument(
            metavar="[PATH]...",
            help="Files or folders that may hold lost data (besides the datasets).",
        ),
    ] = None,
) -> None:
    """Put back lost data from local files; exit 6 if some is still missing.

    Rebuilds indexes from pack footers, salvages the sound chunks of damaged packs, and
    stores again every missing chunk that local files still hold (the tracked datasets'
    folders and PATHs). Reads every pack."""
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


@_command()
def forget(
    specs: Annotated[
        list[str],
        typer.Argument(
            metavar="SPEC...", help="NAME@vN... to forget; with --keep-last, dataset NAMEs."
        ),
    ],
    keep_last: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(
            "--keep-last", min=1, metavar="N", help="Forget all but the N newest versions of NAME."
        ),
    ] = None,
) -> None:
    """Remove versions from log, ls and spec resolution.

    gc then deletes the data that only they needed. Version numbers are never reused."""
    done, warnings = _workspace().forget(specs, keep_last)
    _write_lines(f"forgot {v}" for v in done)
    if not done:
        typer.echo("nothing to forget")
    _write_lines((f"warning: {w}" for w in warnings), err=True)


@_command()
def gc(
    grace: Annotated[
        str,
        typer.Option(
            metavar="DURATION",
            help="Delete only what has been garbage for this long (24h, 30m, 2d, 0): "
            "longer than any add and commit on any machine takes.",
        ),
    ] = "24h",
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print what would be condemned; change nothing.")
    ] = False,
) -> None:
    """Delete data that no live version needs.

    Two phases: a run condemns garbage, a run after the grace period deletes what is still
    garbage; packs that are mostly garbage are repacked."""
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


@_command()
def tag(
    args: Annotated[
        Optional[list[str]],  # noqa: UP045
        typer.Argument(
            metavar="[SPEC TAG | NAME [TAG]]",
            help="Tag: SPEC and TAG. --list: an optional NAME. --delete: NAME and TAG.",
        ),
    ] = None,
    list_: Annotated[bool, typer.Option("--list", "-l", help="List tags.")] = False,
    delete: Annotated[bool, typer.Option("--delete", "-d", help="Delete a tag.")] = False,
    force: Annotated[
        bool, typer.Option("--force", "-f", help="Move a tag that names another version.")
    ] = False,
    as_json: Annotated[bool, JSON_OPTION] = False,
) -> None:
    """Name a version (NAME@TAG), list tags, or delete one.

    datavc tag images@v3 prod; datavc tag --list [images]; datavc tag --delete images prod."""
    words = list(args or [])
    ws = _workspace()
    if list_ and not delete and len(words) <= 1:
        found = ws.tags(words[0] if words else None)
        if as_json:
            _print_json(found)
            return
        _write_lines(
            f"{name}@{t} -> v{n}"
            for name, tags in sorted(found.items())
            for t, n in sorted(tags.items())
        )
        return
    if delete and not list_ and len(words) == 2:
        number = ws.delete_tag(words[0], words[1])
        typer.echo(f"deleted tag {words[0]}@{words[1]} (was v{number})")
        return
    if not list_ and not delete and len(words) == 2:
        name, number, before = ws.tag(words[0], words[1], force)
        moved = f" (moved from v{before})" if before not in (None, number) else ""
        typer.echo(f"{name}@{words[1]} -> v{number}{moved}")
        return
    raise UsageError(
        "use: datavc tag NAME@SPEC TAG [--force] | tag --list [NAME] | tag --delete NAME TAG"
    )


def _register_hooks() -> None:
    from .hook_cmds import hook_app

    app.add_typer(hook_app, name="hook")


@_command("install-hooks")
def install_hooks(
    uninstall: Annotated[
        bool, typer.Option("--uninstall", help="Remove datavc's hooks (and only those).")
    ] = False,
) -> None:
    """Install git hooks: pre-commit, post-checkout, post-merge and pre-push.

    For teams without the pre-commit framework. A hook datavc did not write is kept and
    run first; --uninstall puts it back."""
    from ..workspace.hooks import install_hooks as install

    _write_lines(install(_workspace(), uninstall))


_register_hooks()


def _record_doc(rec: VersionRecord, tags: list[str]) -> dict[str, object]:
    s = rec.stats
    return {
        "name": rec.name,
        "version": rec.version,
        "snapshot": rec.tree,
        "parent": rec.parent,
        "time": rec.time,
        "author": rec.author,
        "message": rec.message,
        "git_head": rec.git_head,
        "tags": tags,
        "stats": {
            "files": s.files,
            "bytes": s.bytes,
            "new_bytes": s.new_bytes,
            "new_chunks": s.new_chunks,
            "new_objects": s.new_objects,
        },
    }


def _print_json(doc: object) -> None:
    """One JSON document, ASCII only (every control character escaped by JSON)."""
    import json

    typer.echo(json.dumps(doc, indent=1, ensure_ascii=True))


def _write_json_rows(rows: Iterable[str], batch: int = 4096) -> None:
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


app.add_typer(remote_app, name="remote")
_command()(push)
_command()(fetch)
_command()(pull)

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
            code = app(standalone_mode=False, prog_name="datavc")
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
