"""The scale check's measuring (scripts/scale.py): time to first output, output counted but
not held, and the git status baseline on the same tree."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))

import scale

ENV = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}


def test_first_output_is_timed_and_output_counted_not_held(tmp_path: Path) -> None:
    child = (
        "import sys, time\n"
        "print('first', flush=True)\n"
        "time.sleep(0.5)\n"
        "sys.stdout.write(''.join(f'line {i}\\n' for i in range(100_000)) + 'last')\n"
    )
    run = scale.measured([sys.executable, "-c", child], tmp_path, ENV)
    assert run.first_output_s is not None and run.first_output_s < 0.5 <= run.seconds
    assert run.lines == 100_002
    assert run.tail.endswith("line 99999\nlast") and len(run.tail) <= scale.TAIL_BYTES
    assert run.peak_rss_mib > 0


def test_no_output_has_no_first_output_and_a_failure_exits(tmp_path: Path) -> None:
    run = scale.measured([sys.executable, "-c", "pass"], tmp_path, ENV)
    assert run.first_output_s is None and run.lines == 0 and run.tail == ""
    with pytest.raises(SystemExit, match="failed"):
        scale.measured([sys.executable, "-c", "raise SystemExit(3)"], tmp_path, ENV)


def test_git_baseline_is_clean_and_sees_a_change(tmp_path: Path) -> None:
    ds = tmp_path / "ds"
    scale.generate(ds, 2500)
    git = scale.git_baseline(ds, tmp_path / "gitbase", ENV)
    status = [*git, "status", "--porcelain"]
    assert subprocess.run(status, env=ENV, capture_output=True, check=True).stdout == b""
    (ds / scale.rel(7)).write_bytes(b"changed\n")
    (ds / scale.rel(8)).unlink()
    out = subprocess.run(status, env=ENV, capture_output=True, check=True).stdout.decode()
    assert out.splitlines() == [f" M {scale.rel(7)}", f" D {scale.rel(8)}"]
