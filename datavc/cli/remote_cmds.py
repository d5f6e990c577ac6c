"""The ``datavc remote``, ``push``, ``fetch`` and ``pull`` command lines (registered on the
typer app by :mod:`.app`): arguments parsed, :mod:`datavc.workspace.remotes` called,
results printed."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from .console import RichProgress, checkout_lines, printable

if TYPE_CHECKING:
    from ..workspace.core import Workspace
    from ..workspace.remotes import Transfer

remote_app = typer.Typer(
    help="Name other stores to push versions to and pull them from (in .datavc/config.toml).",
    no_args_is_help=True,
)

_ARGS_HELP = (
    "[REMOTE] [SPEC...]: the remote (default: the only one, or the one added with "
    "--default), then versions (NAME@vN, NAME@latest, NAME@<tag>, ...)."
)


def _workspace() -> Workspace:
    from ..workspace.core import Workspace

    return Workspace.find(".", RichProgress())


def _echo(line: str) -> None:
    typer.echo(printable(line))


@remote_app.command("add")
def remote_add(
    name: Annotated[str, typer.Argument(help="A name for the remote (letters, digits, -_.).")],
    url: Annotated[str, typer.Argument(help="Store URL (s3://bucket/prefix, /path, ...).")],
    default: Annotated[
        bool, typer.Option("--default", help="Push and pull here when no remote is named.")
    ] = False,
) -> None:
    """Name another store in .datavc/config.toml (commit it to share it): a URL without
    credentials, which go in the environment or .datavc/config.local.toml."""
    from ..workspace.remotes import add_remote

    remote = add_remote(_workspace(), name, url, default)
    _echo(f"remote {remote.name}: {remote.url}" + (" (default)" if remote.default else ""))


@remote_app.command("list")
def remote_list() -> None:
    """List the remotes: name, URL, and which is the default."""
    from ..workspace.remotes import list_remotes

    remotes = list_remotes(_workspace())
    if not remotes:
        typer.echo("no remotes (datavc remote add NAME URL)")
    only = len(remotes) == 1
    width = max((len(r.name) for r in remotes), default=0)
    for r in remotes:
        _echo(f"{r.name:<{width}}  {r.url}" + ("  (default)" if r.default or only else ""))


@remote_app.command("remove")
def remote_remove(name: Annotated[str, typer.Argument(help="The remote to forget.")]) -> None:
    """Remove a remote from .datavc/config.toml (its store is left as it is)."""
    from ..workspace.remotes import remove_remote

    remote = remove_remote(_workspace(), name)
    _echo(f"removed remote {remote.name} ({remote.url})")


def push(
    args: Annotated[
        Optional[list[str]],  # noqa: UP045 - typer needs Optional on Python 3.10
        typer.Argument(metavar="[REMOTE] [SPEC]...", help=_ARGS_HELP + " Default: every version."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Copy versions, with their trees and data, to a remote store; only what it lacks
    moves, and a version number it holds for another version stops the push."""
    from ..workspace.remotes import push as push_versions

    _report("push", push_versions(_workspace(), list(args or [])), as_json)


def fetch(
    args: Annotated[
        Optional[list[str]],  # noqa: UP045
        typer.Argument(
            metavar="[REMOTE] [SPEC]...", help=_ARGS_HELP + " Default: what the pointer files name."
        ),
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every version the remote holds.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Copy versions from a remote into this workspace's store, without checking out."""
    from ..workspace.remotes import fetch as fetch_versions

    _report("fetch", fetch_versions(_workspace(), list(args or []), all_), as_json)


def pull(
    args: Annotated[
        Optional[list[str]],  # noqa: UP045
        typer.Argument(
            metavar="[REMOTE] [SPEC]...", help=_ARGS_HELP + " Default: what the pointer files name."
        ),
    ] = None,
    all_: Annotated[
        bool, typer.Option("--all", help="Fetch every version the remote holds.")
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", "-f", help="Discard changes that are not stored.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Fetch versions from a remote, then materialize them as checkout does: what every
    pointer file says, or the SPECs (their pointer files then name them)."""
    from ..workspace.remotes import pull as pull_versions

    _report("pull", pull_versions(_workspace(), list(args or []), all_, force), as_json)


def _report(verb: str, done: Transfer, as_json: bool) -> None:
    r = done.report
    if as_json:
        doc = {"remote": done.remote.name, "url": done.remote.url, **r.as_json()}
        if verb == "pull":
            doc["checked_out"] = [f"{c.name}@v{c.version}" for c in done.checked_out]
            doc["not_tracked"] = list(done.not_tracked)
        typer.echo(json.dumps(doc, indent=1, ensure_ascii=True))
        return
    where = f"{'to' if verb == 'push' else 'from'} {done.remote.name} ({done.remote.url})"
    copied = ", ".join(r.copied) if r.copied else "no new versions"
    _echo(f"{verb} {where}: {copied}" + (" (new store created)" if r.created_store else ""))
    _echo(
        f"    {r.packs_copied} packs ({_size(r.pack_bytes_copied)}), {r.pages_copied} tree "
        f"pages, {r.indexes_written} indexes, {r.runs_copied} run records copied; "
        f"{_size(r.bytes_written)} written; "
        f"{len(r.present)} versions there already"
        + (f", {r.packs_present} packs stored by an earlier run" if r.packs_present else "")
    )
    for line in _notes(done):
        _echo(f"note: {line}")
    if verb == "pull":
        for line in checkout_lines(list(done.checked_out)) if done.checked_out else []:
            _echo(line)


def _notes(done: Transfer) -> list[str]:
    r = done.report
    notes = list(r.notes)
    if r.forgotten_here:
        notes.append(f"{len(r.forgotten_here)} forgotten versions not copied")
    if r.forgotten_there:
        notes.append(f"forgotten at the destination, not copied: {', '.join(r.forgotten_there)}")
    if r.runs_not_copied:
        notes.append(
            f"{r.runs_not_copied} run records not copied: an output of each is not in the "
            "destination (copy those versions too)"
        )
    if r.tags_copied:
        notes.append(f"tags copied: {', '.join(r.tags_copied)}")
    if done.not_tracked:
        notes.append(
            f"fetched, not checked out (no dataset of that name here): "
            f"{', '.join(done.not_tracked)}"
        )
    return notes


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"
