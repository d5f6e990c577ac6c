"""The ``datavc`` command line: parses arguments, calls the workspace, prints results.

Errors print one line to stderr (``datavc: error: ...``) and exit with the error's code:
1 other failure, 2 usage, 3 not found, 4 no workspace or store, 5 store unreachable,
6 integrity check failed, 7 workspace locked or write conflict, 8 unsafe path or bad input,
9 a mismatch (reproduce, verify). ``run`` exits with its command's status.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from typing import Annotated, Optional

import typer

from ..errors import UsageError
from ..format.record import VersionRecord
from ..format.storeconfig import DEFAULT_PACK_TARGET
from ..format.tree import FileEntry
from ..workspace.initialize import init_workspace
from .audit_cmds import audit, verify
from .common import (
    JSON_OPTION,
    Command,
    print_json,
    size,
    workspace,
    write_json_rows,
    write_lines,
)
from .console import (
    checkout_lines,
    errors_reported,
    fail,
    show_retries,
    show_status,
)
from .graph_cmds import lineage
from .lineage_cmds import reproduce, run
from .remote_cmds import fetch, pull, push, remote_app
from .store_cmds import forget, fsck, gc, repair, tag

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


def _command(name: str | None = None) -> Callable[[Callable[..., None]], Callable[..., None]]:
    return app.command(name, cls=Command)


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
    dask: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(
            metavar="ADDRESS",
            help="Chunk and store the changed files on the workers of the Dask scheduler "
            "at ADDRESS (tcp://host:8786); they must see the files at the same paths.",
        ),
    ] = None,
) -> None:
    """Track a folder or file: chunk it, store new data, stage it for the next commit."""
    client = None
    if dask is not None:
        from ..workspace.cluster import connect

        client = connect(dask)
    try:
        result = workspace().add(path, name, client)
    finally:
        if client is not None:
            client.close()
    s, (added, modified, removed) = result.staged, result.counts
    typer.echo(
        f"{s.name}: staged {s.files} files, {size(s.bytes)} "
        f"({added} added, {modified} modified, {removed} removed); "
        f"new data stored: {size(s.new_bytes)}"
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
    sources: Annotated[
        Optional[list[str]],  # noqa: UP045
        typer.Option(
            "--from",
            metavar="SPEC",
            help="A version the data was made from (recorded as a derived-from link).",
        ),
    ] = None,
) -> None:
    """Publish a new version of each dataset with staged changes and update its pointer file."""
    if not message:
        raise UsageError("a commit needs a message: datavc commit -m MESSAGE")
    ws = workspace()
    derived = tuple(ws.derived_from(s) for s in sources or ())
    records, unchanged = ws.commit(list(names or []), message, all_, derived)
    for rec in records:
        typer.echo(
            f"{rec.name}@v{rec.version}  snapshot {rec.tree[:12]}  {rec.stats.files} files, "
            f"{size(rec.stats.bytes)}, new data {size(rec.stats.new_bytes)}"
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
    write_lines(checkout_lines(workspace().checkout(list(specs or []), force)))


@_command()
def status(as_json: Annotated[bool, JSON_OPTION] = False) -> None:
    """Show which datasets differ from their pointer files, and how."""
    rows = workspace().status()
    if as_json:
        print_json(
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
    show_status(rows, write_lines)


@_command()
def log(
    name: Annotated[str, typer.Argument(metavar="NAME", help="Dataset name.")],
    as_json: Annotated[bool, JSON_OPTION] = False,
) -> None:
    """List a dataset's versions, newest first, with their tags."""
    ws = workspace()
    records = ws.log(name)
    tags: dict[int, list[str]] = {}
    for tag_name, number in sorted(ws.tags(name).get(name, {}).items()):
        tags.setdefault(number, []).append(tag_name)
    if as_json:
        print_json([_record_doc(rec, tags.get(rec.version, [])) for rec in records])
        return
    for rec in records:
        s = rec.stats
        tagged = f"  (tags: {', '.join(tags[rec.version])})" if rec.version in tags else ""
        write_lines(
            [
                f"v{rec.version}  {rec.time}  {rec.author}{tagged}",
                f"    snapshot {rec.tree[:12]}  {s.files} files, {size(s.bytes)}, "
                f"new data stored {size(s.new_bytes)}",
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
    rec, entries = workspace().ls(spec)
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
        write_json_rows(rows)
        typer.echo("]}")
        return
    write_lines([f"{rec.name}@v{rec.version} snapshot {rec.tree}"])
    write_lines(_ls_line(e) for e in entries)


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
    old, new, changes = workspace().diff(spec, other)
    before = f"{old.name}@v{old.version}" if old else "(nothing)"
    if as_json:
        import json

        head = {"from": before if old else None, "to": f"{new.name}@v{new.version}"}
        typer.echo(json.dumps(head, ensure_ascii=True)[:-1] + ', "changes": [')
        rows = (
            json.dumps({"change": kind, "path": e.path}, ensure_ascii=True) for kind, e in changes
        )
        write_json_rows(rows)
        typer.echo("]}")
        return
    write_lines([f"{before} -> {new.name}@v{new.version}"])
    counts = {"added": 0, "modified": 0, "removed": 0}

    def lines() -> Iterator[str]:
        for kind, e in changes:
            counts[kind] += 1
            yield f"{_DIFF_MARK[kind]} {e.path}"

    write_lines(lines())
    typer.echo(
        f"{counts['added']} added, {counts['modified']} modified, {counts['removed']} removed"
    )


_DIFF_MARK = {"added": "A", "modified": "M", "removed": "D"}


for _upkeep in (
    fsck,
    repair,
    forget,
    gc,
    tag,
    push,
    fetch,
    pull,
    reproduce,
    lineage,
    verify,
    audit,
):
    _command()(_upkeep)
app.command(
    "run",
    cls=Command,
    context_settings={"allow_interspersed_args": False},
)(run)
app.add_typer(remote_app, name="remote")


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

    write_lines(install(workspace(), uninstall))


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
