"""Store upkeep and naming: ``fsck``, ``repair``, ``forget``, ``gc`` and ``tag`` (registered
on the app in :mod:`.app`)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from ..errors import UsageError
from .common import JSON_OPTION, print_json, size, workspace, write_lines


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

    Reads every index, pack footer, version record, tree page and run record, and checks
    that every chunk a version needs is stored and that every run's outputs and inputs are
    there. Names each damaged object and the versions and files it damages."""
    report = workspace().fsck(list(specs or []), read_data)
    if as_json:
        print_json(report.as_json())
    else:
        write_lines(f"{p.line()}" for p in report.problems.values())
        write_lines(f"note: {n}" for n in report.notes)
        c = report.counts
        verdict = "no problems" if report.ok else f"{len(report.problems)} damaged objects"
        typer.echo(
            f"fsck: {verdict}; checked {c['versions']} versions, {c['pages']} tree pages, "
            f"{c['indexes']} indexes, {c['packs']} packs ({c['chunks']} chunks), "
            f"{c['runs']} run records" + (f", read {size(c['bytes_read'])}" if read_data else "")
        )
    if not report.ok:
        raise typer.Exit(6)


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
    r = workspace().repair(list(paths or []))
    typer.echo(
        f"restored {r.restored_chunks} chunks ({size(r.restored_bytes)}) from "
        f"{r.files_read} files read; salvaged {r.salvaged_chunks} chunks from damaged packs; "
        f"new index of {r.index_entries} chunks, {r.deleted_indexes} unsound indexes and "
        f"{r.deleted_packs} damaged packs deleted"
    )
    write_lines(f"kept (still holds lost data): {k}" for k in r.kept_damaged)
    if r.ok:
        typer.echo("the store holds every version whole")
        return
    write_lines(f"still damaged: {p.line()}" for p in r.missing.problems.values())
    raise typer.Exit(6)


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
    force: Annotated[
        bool,
        typer.Option(
            "--force", "-f", help="Forget versions a recorded run read too (it cannot be rerun)."
        ),
    ] = False,
) -> None:
    """Remove versions from log, ls and spec resolution.

    gc then deletes the data that only they needed. Version numbers are never reused. A
    version a recorded run read is refused (exit 2; --keep-last keeps it) unless --force."""
    r = workspace().forget(specs, keep_last, force)
    write_lines(f"forgot {v}" for v in r.done)
    write_lines(f"kept {v}" for v in r.kept)
    if not r.done:
        typer.echo("nothing to forget")
    write_lines((f"warning: {w}" for w in r.warnings), err=True)


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
    r = workspace().gc(_duration(grace), dry_run)
    verb = "would condemn" if dry_run else "garbage"
    typer.echo(
        f"{r.live_versions} live versions, {r.forgotten_versions} forgotten; {verb}: "
        f"{r.condemned_packs} packs ({size(r.condemned_bytes)}), {r.condemned_pages} tree pages"
        + (
            f"; repacked {r.repacked_packs} packs ({size(r.repacked_bytes)} kept)"
            if r.repacked_packs
            else ""
        )
    )
    if not dry_run:
        typer.echo(
            f"deleted {r.deleted_packs} packs ({size(r.deleted_bytes)}), {r.deleted_pages} tree "
            f"pages, {r.deleted_leftovers} temporary files; replaced {r.replaced_indexes} "
            f"indexes; {r.waiting} objects wait for the grace period"
        )
    if r.young_pages:
        typer.echo(
            f"note: {r.young_pages} tree pages no live version names are younger than the grace "
            "period (adds in flight or not committed): what they need is kept"
        )
    write_lines(f"note: {n}" for n in r.notes)


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
    ws = workspace()
    if list_ and not delete and len(words) <= 1:
        found = ws.tags(words[0] if words else None)
        if as_json:
            print_json(found)
            return
        write_lines(
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
