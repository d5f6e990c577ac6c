"""A distributed add against a local one (issue 16, item 4): the images and the tensor
datasets of the benchmark, each added by ``datavc add`` in one process, and by ``datavc add
--dask`` to a LocalCluster of 2 worker processes (1 thread each) started here, each in a
fresh workspace with an empty embedded store, the order alternating between repetitions.
The snapshot ids must be equal; the report gives both times and their ratio.

    python scripts/bench_cluster.py            # full size (20,000 images, a 1 GiB tensor)
    python scripts/bench_cluster.py --quick    # 2,000 images, a 128 MiB tensor

Writes docs/BENCHMARKS-cluster.md (``--out-dir`` elsewhere). The cluster is started before
the timed runs (a long-lived cluster is what ``--dask`` is for); a run's time is the
``datavc add`` command's, start to exit, with the workers' import of datavc included.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib.datasets import FULL, QUICK, make_images, make_tensor
from benchlib.report import machine_facts

ROOT = Path(__file__).resolve().parent.parent


def datavc(cwd: Path, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "datavc", *args], cwd=cwd, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise SystemExit(f"datavc {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


def fresh(base: Path, name: str, source: Path) -> Path:
    ws = base / name
    if ws.exists():
        shutil.rmtree(ws)
    ws.mkdir(parents=True)
    subprocess.run(["git", "init", "-q"], cwd=ws, check=True)
    datavc(ws, "init")
    target = ws / source.name
    if source.is_dir():
        shutil.copytree(source, target, copy_function=os.link)
    else:
        os.link(source, target)
    return ws


def snapshot(ws: Path) -> str:
    for path in (ws / ".datavc" / "state" / "staged").glob("*.json"):
        found = re.search(r'"tree":\s*"([0-9a-f]{64})"', path.read_text())
        if found:
            return found.group(1)
    raise SystemExit(f"nothing staged in {ws}")


def timed_add(base: Path, name: str, source: Path, extra: list[str]) -> tuple[float, str]:
    ws = fresh(base, name, source)
    subprocess.run(["sync"], check=True)
    start = time.perf_counter()
    datavc(ws, "add", source.name, *extra)
    seconds = time.perf_counter() - start
    return seconds, snapshot(ws)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--out-dir", default=str(ROOT / "docs"))
    opts = parser.parse_args()
    scale = QUICK if opts.quick else FULL
    from distributed import LocalCluster

    base = Path(tempfile.mkdtemp(prefix="datavc-bench-cluster-"))
    try:
        rng = np.random.default_rng(1604)
        sources = {
            "images": make_images(base / "images", scale, rng).versions[0],
            "tensor": make_tensor(base / "tensor", scale, rng).versions[0],
        }
        rows = []
        with LocalCluster(
            n_workers=2,
            processes=True,
            threads_per_worker=1,
            host="127.0.0.1",
            dashboard_address=None,
            local_directory=str(base / "scratch"),
        ) as cluster:
            address = cluster.scheduler_address
            for name, source in sources.items():
                size = sum(f.stat().st_size for f in source.rglob("*") if f.is_file())
                if source.is_file():
                    size = source.stat().st_size
                local, spread, ids = [], [], set()
                for rep in range(opts.reps):
                    order = ["local", "dask"] if rep % 2 == 0 else ["dask", "local"]
                    for who in order:
                        extra = ["--dask", address] if who == "dask" else []
                        seconds, tree = timed_add(base / "ws", f"{name}-{who}", source, extra)
                        (local if who == "local" else spread).append(seconds)
                        ids.add(tree)
                rows.append((name, size, statistics.median(local), statistics.median(spread), ids))
                print(f"{name}: local {local}, dask {spread}, ids {ids}", flush=True)
        write_report(Path(opts.out_dir), rows, opts, scale is QUICK)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def write_report(out: Path, rows: list, opts: argparse.Namespace, quick: bool) -> None:
    facts = machine_facts(sys.executable, {})
    git = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    lines = [
        "# datavc benchmarks: a distributed add (issue 16, item 4)",
        "",
        f"Generated by `python scripts/bench_cluster.py{' --quick' if quick else ''}` on "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} at git {git}: medians of "
        f"{opts.reps} runs each, local and Dask alternating. Machine: {facts['cpu']}, "
        f"{facts['nproc']} cores, {facts['memory']}.",
        "",
        "`datavc add` in one process against `datavc add --dask` to a LocalCluster of 2 "
        "worker processes (1 thread each, started before the runs), each run in a fresh "
        "workspace with an empty embedded store; load average before: "
        f"{os.getloadavg()[0]:.1f}.",
        "",
        "| dataset | bytes | local add | Dask add | Dask / local | target | same snapshot id |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, size, local, spread, ids in rows:
        ratio = spread / local
        holds = "yes" if ratio <= 1.5 and len(ids) == 1 else "**no**"
        same = "yes" if len(ids) == 1 else f"**no** ({len(ids)} ids)"
        lines.append(
            f"| {name} | {size / 1e6:,.1f} MB | {local:.2f} s | {spread:.2f} s | "
            f"{ratio:.2f} ({holds}) | ≤ 1.5x local | {same} |"
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / "BENCHMARKS-cluster.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
