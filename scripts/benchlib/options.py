"""The benchmark's command line."""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .common import PEER_DVC, ROOT
from .datasets import MAKERS
from .tools import TOOLS

PARTS = {
    "cli": "every tool's commands on every dataset, and the floors",
    "readers": "datavc.open's filesystem against local disk (issue 15)",
    "scale": "scripts/scale.py (--scale-files)",
    "remote": "datavc and DVC on S3 behind a delay proxy, at several round trip times "
    "(issue 16; not in the default: `make bench-remote`)",
}
DEFAULT_PARTS = ("cli", "readers", "scale")
S3_SERVERS = ("seaweedfs", "moto")

# -- main ------------------------------------------------------------------------------------


@dataclass(slots=True)
class Options:
    quick: bool
    reps: int
    peer_reps: int
    workdir: Path
    keep: bool
    python: str
    datasets: list[str]
    tools: list[str]
    timeout: float
    out_dir: Path
    profile: bool
    dvc: str | None
    restic: str | None
    command: str
    scale_files: int
    parts: list[str]
    rtts: list[int]
    s3_server: str | None
    weed: str | None


def parse_args(argv: list[str]) -> Options:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="scaled-down datasets (1-2 minutes)")
    p.add_argument("--reps", type=int, help="repetitions (default: 3 with --quick, else 1)")
    p.add_argument(
        "--peer-reps", type=int, help="repetitions of DVC and restic (default: 1 with --quick)"
    )
    p.add_argument("--workdir", type=Path, help="temporary folder (default: a new one in /tmp)")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder")
    p.add_argument("--python", default=sys.executable, help="interpreter that has datavc")
    p.add_argument("--datasets", default="images,table,tensor", help="comma-separated subset")
    p.add_argument("--tools", default="datavc,dvc,restic", help="comma-separated subset")
    p.add_argument("--timeout", type=float, help="seconds per command (default 300/3600)")
    p.add_argument("--out-dir", type=Path, default=ROOT / "docs", help="where reports go")
    p.add_argument(
        "--profile",
        action="store_true",
        help="also profile datavc add of images v1 with pyinstrument",
    )
    p.add_argument("--dvc", help=f"dvc executable (default: {PEER_DVC}, then PATH)")
    p.add_argument("--restic", help="restic executable (default: PATH)")
    p.add_argument(
        "--scale-files",
        type=int,
        help="tiny files for the scale check, 0 to skip (default: 1,000,000; quick 20,000)",
    )
    p.add_argument(
        "--rtts", default="0,20,80", help="remote: round trip times in ms (default 0,20,80)"
    )
    p.add_argument(
        "--s3-server",
        choices=S3_SERVERS,
        help="remote: the S3 server (default: seaweedfs if installed, else moto)",
    )
    p.add_argument("--weed", help="remote: SeaweedFS's weed executable (default: the peers')")
    p.add_argument(
        "--only",
        default=",".join(DEFAULT_PARTS),
        help=f"comma-separated parts to run (default: {','.join(DEFAULT_PARTS)}): "
        + "; ".join(f"{name}: {what}" for name, what in PARTS.items()),
    )
    a = p.parse_args(argv)
    workdir = a.workdir or Path(tempfile.mkdtemp(prefix="datavc-bench-"))
    python = a.python if os.path.isabs(a.python) else shutil.which(a.python) or a.python
    return Options(
        quick=a.quick,
        reps=a.reps or (3 if a.quick else 1),
        peer_reps=a.peer_reps or (1 if a.quick else a.reps or 1),
        workdir=workdir.resolve(),
        keep=a.keep,
        python=python,
        datasets=_split(a.datasets, MAKERS),
        tools=_split(a.tools, TOOLS),
        timeout=a.timeout or (300 if a.quick else 3600),
        out_dir=a.out_dir,
        profile=a.profile,
        dvc=a.dvc,
        restic=a.restic,
        command=shlex.join(["python", os.path.relpath(ROOT / "scripts" / "bench.py"), *argv]),
        scale_files=a.scale_files if a.scale_files is not None else (20_000 if a.quick else 10**6),
        parts=_split(a.only, PARTS),
        rtts=_rtts(a.rtts),
        s3_server=a.s3_server,
        weed=a.weed,
    )


def _split(text: str, known: dict[str, Any]) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"unknown: {', '.join(unknown)} (known: {', '.join(known)})")
    return names


def _rtts(text: str) -> list[int]:
    try:
        rtts = [int(n) for n in text.split(",") if n.strip()]
    except ValueError:
        raise SystemExit(f"--rtts: not a list of whole milliseconds: {text}") from None
    if not rtts or rtts[0] != 0 or any(n < 0 for n in rtts):
        raise SystemExit("--rtts: the first must be 0 (the baseline the others are compared to)")
    return rtts
