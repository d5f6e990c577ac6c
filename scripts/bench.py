"""Benchmark datavc against the machine's floors and its peers, side by side, in one run.

Generates seeded datasets in a temporary folder (images: many small files; table: a Parquet file
appended to and edited in the middle; tensor: a large .npy edited in place), then measures on the
same bytes:

- datavc through its CLI in subprocesses, in a real git repo with the embedded store;
- ``cp -r`` (the floor for checkout) and a single-threaded read-and-BLAKE3 (the floor for add);
- DVC 3.x (add + push to a local remote, checkout, pull in a fresh clone, status) and restic
  (backup, restore) when they are installed (``make bench-peers``); without them it says so;
- the readers (issue 15): ``datavc.open``'s filesystem against local disk, in the same run
  (random reads, ``cat_ranges``, a DataLoader-like epoch, pandas and pyarrow Parquet reads, and
  the bytes one row group fetches from S3 on a moto server);
- with ``--only remote`` (not in the default run; ``make bench-remote``), datavc and DVC on S3
  (SeaweedFS, else moto) behind a proxy that delays every byte, at round trips of 0, 20 and
  80 ms (issue 16): docs/BENCHMARKS-remote.md.

Writes docs/BENCHMARKS.md and docs/BENCHMARKS.json (``--quick``: docs/BENCHMARKS-quick.*).
Every external command runs with a timeout; a failing peer is reported, never fatal. Nothing
touches the network. Runs are warm-cache: the page cache cannot be dropped here.

    python scripts/bench.py             # full size, 1 repetition (20-40 minutes)
    python scripts/bench.py --quick     # scaled down, 3 repetitions (1-2 minutes)
    python scripts/bench.py --only readers --tools datavc   # the readers alone
    python scripts/bench.py --only remote --quick           # S3 at a distance (a few minutes)

This file runs the benchmark; its parts are in ``scripts/benchlib/``: ``runner`` (commands
timed, peak RSS), ``datasets`` (seeded data and its edits), ``tools`` (datavc, DVC, restic),
``session`` (one dataset's steps and floors), ``readers`` (and ``reader_probe``, what it runs),
``targets``, ``report``, ``options``; the remote part: ``remote`` and ``remote_report``,
``s3server``, ``delayproxy`` (with ``httpframe``) and ``traffic``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

from benchlib.common import GIT_ENV, PEER_DVC, log, remove
from benchlib.datasets import FULL, QUICK, Dataset, generate
from benchlib.options import Options, parse_args
from benchlib.readers import bench_readers
from benchlib.remote_report import bench_remote
from benchlib.report import first_line, machine_facts, run_scale, write_report
from benchlib.runner import Runner, StepFailed
from benchlib.session import Figures, Session, bench_floors
from benchlib.tools import TOOLS, Datavc


def find_peers(opts: Options) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Executables of the peers that were asked for, and why the others are missing."""
    found: dict[str, list[str]] = {}
    missing: dict[str, str] = {}
    candidates = {
        "dvc": [opts.dvc] if opts.dvc else [str(PEER_DVC), shutil.which("dvc")],
        "restic": [opts.restic] if opts.restic else [shutil.which("restic")],
    }
    for name, paths in candidates.items():
        if name not in opts.tools:
            missing[name] = "not selected with --tools"
            continue
        usable = [p for p in paths if p and os.access(p, os.X_OK)]
        if usable:
            found[name] = [usable[0]]
        else:
            missing[name] = "not installed (run `make bench-peers`)"
    return found, missing


def profile_add(ds: Dataset, opts: Options, runner: Runner) -> str | None:
    """pyinstrument's text profile of ``datavc add`` on v1 of ``ds``, or None."""
    check = runner.run([opts.python, "-c", "import pyinstrument"], opts.workdir)
    if not check.ok:
        log("profile skipped: pyinstrument is not installed for the datavc interpreter")
        return None
    tool = Datavc(runner, [opts.python, "-m", "datavc"], opts.workdir / "profile")
    out = opts.workdir / "profile.txt"
    try:
        tool.setup()
        ds.install(0, tool.data(ds))
        os.sync()
        tool.timed(
            [
                [
                    opts.python,
                    "-m",
                    "pyinstrument",
                    "--no-color",
                    "-r",
                    "text",
                    "-o",
                    str(out),
                    "-m",
                    "datavc",
                    "add",
                    f"data/{ds.payload}",
                ]
            ]
        )
    except StepFailed as e:
        log(f"profile failed: {e}")
        return None
    finally:
        remove(tool.base)
    return "\n".join(out.read_text().splitlines()[:80])


def run_all(opts: Options) -> None:
    start = time.perf_counter()
    env = {**os.environ, **GIT_ENV, "LC_ALL": "C.UTF-8"}
    opts.workdir.mkdir(parents=True, exist_ok=True)
    runner = Runner(opts.timeout, env, opts.workdir)
    peers, missing = find_peers(opts)
    exes = {"datavc": [opts.python, "-m", "datavc"], **peers}
    scale = QUICK if opts.quick else FULL
    log(
        f"workdir {opts.workdir}; {opts.reps} rep(s); tools {', '.join(exes)}; "
        f"missing {missing or 'none'}"
    )
    compile_bytecode(opts.python)
    datasets = {n: generate(n, opts.workdir / "src", scale) for n in opts.datasets}
    figs = Figures()
    reps = opts.reps if "cli" in opts.parts else 0
    for rep in range(1, reps + 1):
        log(f"repetition {rep}/{opts.reps}")
        for ds in datasets.values():
            bench_floors(ds, runner, opts.workdir, figs)
            for name in (t for t in opts.tools if t in exes):
                if name != "datavc" and rep > opts.peer_reps:
                    continue
                base = opts.workdir / f"rep{rep}" / ds.name / name
                Session(TOOLS[name](runner, exes[name], base), ds, figs, rep).run()
                if not opts.keep:
                    remove(base)
    if "readers" in opts.parts:
        bench_readers(opts.python, datasets, runner, opts.workdir, figs, opts.quick, opts.profile)
    if "remote" in opts.parts:  # its own report: docs/BENCHMARKS-remote*.md
        bench_remote(opts, datasets, runner, peers, missing)
        if opts.parts == ["remote"]:
            return
    profile = None
    if opts.profile and "images" in datasets and "cli" in opts.parts:
        profile = profile_add(datasets["images"], opts, runner)
    scale_doc = run_scale(opts) if "scale" in opts.parts else None
    facts = machine_facts(opts.python, peers)
    elapsed = time.perf_counter() - start
    write_report(opts, datasets, figs, facts, missing, elapsed, profile, scale_doc)


def compile_bytecode(python: str) -> None:
    """Compile datavc's modules to bytecode, as pip does when it installs a package: with an
    editable install and PYTHONDONTWRITEBYTECODE set (as on this machine), every command
    would otherwise compile them again (about 30 ms a command)."""
    where = "import datavc, os; print(os.path.dirname(datavc.__file__))"
    folder = first_line([python, "-c", where])
    subprocess.run([python, "-m", "compileall", "-q", folder], check=True)


def main(argv: list[str] | None = None) -> None:
    opts = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        run_all(opts)
    finally:
        if opts.keep:
            log(f"kept {opts.workdir}")
        else:
            shutil.rmtree(opts.workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
