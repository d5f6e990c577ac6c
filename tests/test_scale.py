"""Scale: a snapshot of many tiny files is committed, listed, diffed against its parent and
opened for one file, each step in its own process under 1 GiB of peak memory (issue 3).

Runs ``scripts/scale.py`` (which checks each step's answer and measures its peak RSS).
Marked ``stress``: about 3 minutes and 4 GiB of disk for the default 1,000,000 files; set
``DATAVC_SCALE_FILES`` for another count.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FILES = int(os.environ.get("DATAVC_SCALE_FILES", "1000000"))
GIB_MIB = 1024


@pytest.mark.stress
def test_a_million_tiny_files(tmp_path: Path) -> None:
    out = tmp_path / "scale.json"
    script = str(ROOT / "scripts" / "scale.py")
    args = ["--files", str(FILES), "--json", str(out), "--workdir", str(tmp_path)]
    proc = subprocess.run(
        [sys.executable, script, *args],
        capture_output=True,
        text=True,
        timeout=3600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(out.read_text())
    assert doc["files"] == FILES
    names = [s["name"] for s in doc["steps"]]
    assert any(n.startswith("commit v2") for n in names) and "ls ds@v2" in names
    for step in doc["steps"]:
        assert step["peak_rss_mib"] < GIB_MIB, step
    assert doc["open_reads"] <= 3
