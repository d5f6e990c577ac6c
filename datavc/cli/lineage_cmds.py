"""Runs on the command line: ``run`` and ``reproduce`` (registered on the app in
:mod:`.app`, as is ``commit --from``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Optional

import typer

from ..errors import Mismatch, NotFoundError, UsageError
from .common import workspace, write_lines

if TYPE_CHECKING:
    from ..lineage.reproduce import OutputCheck


def run(
    command: Annotated[
        list[str],
        typer.Argument(metavar="-- CMD [ARG]...", help="The command to run, after --."),
    ],
    name: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option("--name", metavar="NAME", help="The run's name (default: the script's)."),
    ] = None,
    params: Annotated[
        Optional[list[str]],  # noqa: UP045
        typer.Option("--param", metavar="FILE", help="A parameter file (hashed and stored)."),
    ] = None,
    outs: Annotated[
        Optional[list[str]],  # noqa: UP045
        typer.Option(
            "--out", metavar="PATH", help="A folder or file the run writes: committed after it."
        ),
    ] = None,
    ins: Annotated[
        Optional[list[str]],  # noqa: UP045
        typer.Option(
            "--in",
            metavar="DATASET",
            help="A workspace dataset the run reads (default: every one but the outputs).",
        ),
    ] = None,
    env: Annotated[
        Optional[list[str]],  # noqa: UP045
        typer.Option("--env", metavar="NAME", help="An environment variable to record."),
    ] = None,
    allow_dirty: Annotated[
        bool,
        typer.Option(
            "--allow-dirty", help="Run even if an input folder differs from its pointer file."
        ),
    ] = False,
    message: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option("-m", "--message", metavar="MESSAGE", help="Message of the output versions."),
    ] = None,
) -> None:
    """Run a command and record it: inputs, code, parameters, environment, outputs.

    The workspace datasets it reads must match their pointer files; what it opens with
    datavc.open is recorded too. When it succeeds, each --out is committed as a version
    that names the run, the run record is written to the store, and runs/NAME.lock is
    written (commit it with git). The exit status is the command's."""
    from ..lineage.run import RunOptions, run_command

    options = RunOptions(
        name=name,
        params=tuple(params or ()),
        outputs=tuple(outs or ()),
        inputs=tuple(ins) if ins else None,
        env=tuple(env or ()),
        allow_dirty=allow_dirty,
        message=message,
    )
    code, result = run_command(workspace(), list(command), options)
    rec = result.record
    lines = [f"run {rec.name} {rec.id}: exit {rec.exit}"]
    for i in rec.inputs:
        where = i.path or (f"opened from {i.store}" if i.store else "opened")
        lines.append(f"  read  {i.label}  snapshot {i.tree[:12]}  {where}")
    for o in rec.outputs:
        lines.append(f"  wrote {o.label}  snapshot {o.tree[:12]}  {o.path}")
    if result.lock:
        lines.append(f"  lock  {result.lock} (commit it with git)")
    else:
        lines.append("  the command failed: no outputs committed, the lock file left as it was")
    write_lines(lines)
    if code:
        raise typer.Exit(code)


def reproduce(
    run_ref: Annotated[
        str,
        typer.Argument(metavar="RUN", help="A run name (runs/NAME.lock), a lock file or a run id."),
    ],
    check: Annotated[
        bool,
        typer.Option("--check", help="Compare inputs, code, parameters, environment; do not run."),
    ] = False,
    in_place: Annotated[
        bool,
        typer.Option(
            "--in-place", help="Run in this workspace (checks its inputs out at their versions)."
        ),
    ] = False,
    into: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option("--into", metavar="DIR", help="Run in this empty folder (kept)."),
    ] = None,
    keep: Annotated[bool, typer.Option("--keep", help="Keep the scratch folder.")] = False,
    yes: Annotated[
        bool,
        typer.Option(
            "--yes", help="Run the command of a record no lock file pins (a run id given)."
        ),
    ] = False,
) -> None:
    """Rebuild a recorded run and check that it gives the same outputs, bit for bit.

    Lists drift (code, parameter files, Python, platform, packages, variables) against the
    record, then runs the command in a scratch folder holding the recorded commit's code,
    parameter files and input snapshots, and compares each output with the recorded
    snapshot. Exit 0: bit-identical (with --check: no drift); 9: it is not. A run given by
    id, with no lock file in this repository that pins its record, is run only with --yes:
    its command comes from the store alone."""
    from ..lineage.reproduce import reproduce as rebuild

    if in_place and into:
        raise UsageError("--in-place and --into exclude each other")
    r = rebuild(workspace(), run_ref, check, in_place, into, keep, yes)
    rec = r.record
    lines = [f"run {rec.name} {rec.id}: {' '.join(rec.command)} (by {rec.author}, {rec.ended})"]
    lines += [f"  input {i.label}  snapshot {i.tree[:12]}" for i in rec.inputs]
    lines += [f"  unavailable: {u}" for u in r.unavailable]
    lines += [f"  drift: {d.line()}" for d in r.drift] or ["  drift: none"]
    lines += [f"  checked out {c} (its pointer file now names it)" for c in r.checked_out]
    if r.exit is not None:
        where = r.folder or "a scratch folder (removed; --keep keeps it)"
        lines.append(f"  ran in {where}: exit {r.exit} (recorded {rec.exit})")
    for o in r.outputs:
        lines.append(f"  output {o.label}: {_output_verdict(o)}")
    write_lines(lines)
    if r.unavailable:
        raise NotFoundError(f"cannot reproduce run {rec.name}: {r.unavailable[0]}")
    if check:
        if r.drift:
            raise Mismatch(f"run {rec.name}: {len(r.drift)} fields drifted since it was recorded")
        typer.echo("check: inputs available, no drift")
        return
    if not r.identical:
        raise Mismatch(f"run {rec.name} was not reproduced: outputs or exit status differ")
    typer.echo("reproduced: every output is bit-identical to the recorded snapshot")


def _output_verdict(o: OutputCheck) -> str:
    if o.diff is None:
        return f"not compared: {o.note}"
    if o.diff.equal:
        return f"bit-identical (snapshot {o.tree[:12]}, {o.diff.files} files)"
    parts = []
    for what, paths in (
        ("different", o.diff.different),
        ("missing", o.diff.missing),
        ("extra", o.diff.extra),
    ):
        if paths:
            shown = ", ".join(paths[:5]) + (" ..." if len(paths) > 5 else "")
            parts.append(f"{len(paths)} {what} ({shown})")
    return "differs: " + "; ".join(parts)
