"""Runs and lineage on the command line: ``run`` (and ``commit --from`` in :mod:`.app`)
(registered on the app in :mod:`.app`)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from .common import workspace, write_lines


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
