#!/usr/bin/env python3
"""Scale check: a snapshot of many tiny files (default 1,000,000) is committed, listed,
diffed against its parent and opened for one file, each step in its own process, with its
wall time and peak memory (RSS) measured.

    python scripts/scale.py [--files N] [--json OUT.json] [--workdir DIR]

Exits non-zero if a step fails or gives a wrong answer. ``scripts/bench.py`` runs it and
puts the figures in docs/BENCHMARKS.md; it also runs alone.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

PER_FOLDER = 1000
EDITS = 100  # files modified, added and removed for v2

OPEN_PROBE = r"""
import json, sys, time
t0 = time.perf_counter()
import datavc
fs = datavc.open(sys.argv[1])
with fs.open(sys.argv[2], "rb") as f:
    data = f.read()
stats = fs.chunks.backend.stats
print(json.dumps({"seconds": time.perf_counter() - t0, "reads": stats.reads,
                  "lists": stats.lists, "keys": list(stats.read_keys), "data": data.decode()}))
"""


@dataclass
class Step:
    name: str
    seconds: float
    peak_rss_mib: float
    detail: str = ""


def content(i: int, version: int = 1) -> bytes:
    return f"file {i} v{version}\n".encode()


def rel(i: int) -> str:
    return f"{i // PER_FOLDER:04d}/{i % PER_FOLDER:04d}.txt"


def generate(root: Path, n: int) -> None:
    for i in range(n):
        if i % PER_FOLDER == 0:
            (root / f"{i // PER_FOLDER:04d}").mkdir(parents=True)
        fd = os.open(root / rel(i), os.O_WRONLY | os.O_CREAT, 0o644)
        os.write(fd, content(i))
        os.close(fd)


def measured(
    cmd: list[str], cwd: Path, env: dict[str, str], devnull: bool = False
) -> tuple[float, float, str]:
    """Run ``cmd`` under a tiny wrapper that reports the child's peak RSS (wait4)."""
    wrapper = (
        "import os, sys, json, time\n"
        "t0 = time.perf_counter()\n"
        "out = open(os.devnull, 'wb') if sys.argv[1] == '1' else None\n"
        "import subprocess\n"
        "p = subprocess.Popen(sys.argv[2:], stdout=out)\n"
        "_, status, ru = os.wait4(p.pid, 0)\n"
        "p.returncode = os.waitstatus_to_exitcode(status)\n"
        "sys.stderr.write(json.dumps({'rc': p.returncode, 'maxrss_kib': ru.ru_maxrss,\n"
        "    'seconds': time.perf_counter() - t0}) + '\\n')\n"
        "sys.exit(p.returncode)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", wrapper, "1" if devnull else "0", *cmd],
        cwd=cwd,
        env=env,
        capture_output=True,
    )
    lines = proc.stderr.decode().strip().splitlines()
    report = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {}
    if proc.returncode != 0 or report.get("rc") != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {proc.stderr.decode()[-2000:]}")
    return float(report["seconds"]), report["maxrss_kib"] / 1024, proc.stdout.decode()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=1_000_000)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--workdir", type=Path, help="where to build (default: a temp folder)")
    args = ap.parse_args()
    n = args.files
    if n < 3 * EDITS + PER_FOLDER:
        raise SystemExit(f"--files must be at least {3 * EDITS + PER_FOLDER}")
    base = Path(tempfile.mkdtemp(prefix="datavc-scale-", dir=args.workdir))
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATAVC_")}
    env.update(GIT_AUTHOR_NAME="bench", GIT_AUTHOR_EMAIL="bench@example.invalid")
    dv = [sys.executable, "-m", "datavc"]
    steps: list[Step] = []
    try:
        ws = base / "ws"
        ds = ws / "ds"
        t0 = time.perf_counter()
        generate(ds, n)
        print(f"generated {n:,} files in {time.perf_counter() - t0:.1f} s", flush=True)
        subprocess.run(["git", "init", "-q"], cwd=ws, check=True)
        subprocess.run([*dv, "init"], cwd=ws, env=env, check=True, capture_output=True)

        def step(name: str, cmd: list[str], devnull: bool = False, detail: str = "") -> str:
            seconds, rss, out = measured(cmd, ws, env, devnull)
            steps.append(Step(name, seconds, rss, detail))
            print(f"{name:<34} {seconds:8.2f} s  {rss:8.1f} MiB  {detail}", flush=True)
            return out

        step("add v1", [*dv, "add", "ds"])
        step("commit v1", [*dv, "commit", "-m", "v1"])
        # v2: modify, add and remove EDITS files each, spread over the folders.
        stride = n // EDITS
        for k in range(EDITS):
            i = k * stride
            (ds / rel(i)).write_bytes(content(i, 2))
            (ds / rel(i + 1)).unlink()
            (ds / f"{i // PER_FOLDER:04d}" / f"new-{k}.txt").write_bytes(b"new %d\n" % k)
        time.sleep(2.1)  # let the stat cache trust the edits' timestamps
        step("add v2 (100 changed, 100 new, 100 gone)", [*dv, "add", "ds"])
        step("commit v2", [*dv, "commit", "-m", "v2"])
        step("status (nothing changed)", [*dv, "status"])
        listing = step("ls ds@v2", [*dv, "ls", "ds@v2"])
        listed = len(listing.splitlines()) - 1
        if listed != n:
            raise SystemExit(f"ls listed {listed} files, expected {n}")
        steps[-1].detail = f"{listed:,} files listed"
        out = step("diff ds@v2 (against v1)", [*dv, "diff", "ds@v2"])
        summary = out.strip().splitlines()[-1]
        want = f"{EDITS} added, {EDITS} modified, {EDITS} removed"
        if summary != want:
            raise SystemExit(f"diff says {summary!r}, expected {want!r}")
        steps[-1].detail = summary
        probe = rel(5 * stride + 7)
        out = step(
            "datavc.open + read one file", [sys.executable, "-c", OPEN_PROBE, "ds@v2", probe]
        )
        result = json.loads(out)
        if result["data"].encode() != content(5 * stride + 7):
            raise SystemExit(f"datavc.open read {result['data']!r} for {probe}")
        steps[-1].detail = (
            f"{result['reads']} store reads, {result['lists']} listings "
            f"({', '.join(k.split('/')[0] for k in result['keys'])})"
        )
        store = ws / ".datavc" / "store"
        objects = sum(len(files) for _, _, files in os.walk(store))
        doc = {
            "files": n,
            "steps": [asdict(s) for s in steps],
            "store_objects": objects,
            "open_reads": result["reads"],
            "peak_rss_mib": max(s.peak_rss_mib for s in steps),
        }
        print(f"store objects: {objects}; peak RSS of any step: {doc['peak_rss_mib']:.0f} MiB")
        if args.json:
            args.json.write_text(json.dumps(doc, indent=1))
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
