"""The layer contract (DESIGN.md's layers; ``[tool.importlinter]`` in pyproject.toml).

import-linter checks the package as it is, and a copy of it with one import that points the
wrong way shows that each of the three contracts catches what it is there for: so the suite,
and CI with it, fails on a violation.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT = Path(sys.executable).with_name("lint-imports")
LAYERS = "Layers: imports point down (interfaces, lineage, workspace, store, format)"
INDEPENDENT = "The interfaces never import each other"
PURE = "The format layer imports nothing that does I/O"


def lint(cwd: Path, pythonpath: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run(
        [str(LINT), "--no-cache", str(ROOT / "pyproject.toml")],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_the_package_keeps_the_layer_contract() -> None:
    done = lint(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    for name in (LAYERS, INDEPENDENT, PURE):
        assert f"{name} KEPT" in done.stdout
    assert "Contracts: 3 kept, 0 broken." in done.stdout


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        ("format/paths.py", "import os", {PURE}),
        ("format/tree.py", "from ..store import backend", {LAYERS, PURE}),
        ("store/versions.py", "from ..workspace import core", {LAYERS}),
        # fs imports the workspace: through it, fs would import cli too
        ("workspace/status.py", "from ..cli import console", {LAYERS, INDEPENDENT}),
        ("cli/console.py", "from ..fs import file", {INDEPENDENT}),
        ("workspace/add.py", "from ..lineage import tracking", {LAYERS}),
        # fs imports lineage.tracking: through it, fs would import cli too
        ("lineage/tracking.py", "from ..cli import common", {LAYERS, INDEPENDENT}),
        ("fs/file.py", "from ..cli import entry", {INDEPENDENT}),
    ],
)
def test_an_import_that_points_the_wrong_way_breaks_it(
    tmp_path: Path, module: str, line: str, broken: set[str]
) -> None:
    copy = tmp_path / "src" / "datavc"
    shutil.copytree(ROOT / "datavc", copy, ignore=shutil.ignore_patterns("__pycache__"))
    with open(copy / module, "a", encoding="utf-8") as f:
        f.write(f"\n{line}\n")
    done = lint(tmp_path, tmp_path / "src")
    assert done.returncode == 1, done.stdout + done.stderr
    for name in (LAYERS, INDEPENDENT, PURE):
        assert (f"{name} BROKEN" in done.stdout) == (name in broken), (name, done.stdout)
    importer = "datavc." + module.removesuffix(".py").replace("/", ".")
    assert f"{importer} -> " in done.stdout  # the report names the import that was added
