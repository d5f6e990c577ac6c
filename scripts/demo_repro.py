"""Reproducibility demo: a seeded numpy training run recorded with ``datavc run``, the data
changed and the run made again, the lineage of both models drawn, the first model rebuilt
bit-identically from its run record, and an upgraded package shown as drift.

Everything runs in a temporary git repo on the embedded local store. Exits non-zero if
anything does not hold.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

TRAIN = '''\
"""Logistic regression by gradient descent on data/points (seeded: deterministic)."""
import json, os
import numpy as np

params = dict(line.split(": ") for line in open("params.yaml").read().splitlines())
rng = np.random.default_rng(int(params["seed"]))
rows = []
for name in sorted(os.listdir("data/points")):
    rows += [list(map(float, r.split(","))) for r in open(f"data/points/{name}").read().split()]
data = np.array(rows)
x, y = np.c_[data[:, :2], np.ones(len(data))], data[:, 2]
w = rng.normal(size=3)
for _ in range(int(params["epochs"])):
    p = 1 / (1 + np.exp(-x @ w))
    w -= float(params["lr"]) * x.T @ (p - y) / len(y)
accuracy = float(((x @ w > 0) == (y > 0.5)).mean())
os.makedirs("models/model", exist_ok=True)
np.save("models/model/weights.npy", w)
json.dump({"accuracy": round(accuracy, 6), "rows": len(y)}, open("models/model/metrics.json", "w"))
print(f"trained on {len(y)} rows: accuracy {accuracy:.3f}")
'''


def run(*args: str, cwd: Path, code: int = 0, env: dict[str, str] | None = None) -> str:
    shown = " ".join(a if a != sys.executable else "python" for a in args)
    print(f"$ {shown}")
    cmd = [sys.executable, "-m", "datavc", *args[1:]] if args[0] == "datavc" else list(args)
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False, env=env)
    text = (out.stdout + out.stderr).strip()
    if text:
        print("  " + text.replace("\n", "\n  "))
    if out.returncode != code:
        raise SystemExit(f"demo failed: {shown} exited {out.returncode}, expected {code}")
    return out.stdout


def points(path: Path, rnd: random.Random, n: int) -> None:
    """Two noisy classes of 2-D points: x, y, label."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for _ in range(n):
        label = rnd.random() < 0.5
        cx, cy = (1.5, 1.0) if label else (-1.0, -1.5)
        lines.append(f"{cx + rnd.gauss(0, 1):.4f},{cy + rnd.gauss(0, 1):.4f},{int(label)}")
    path.write_text("\n".join(lines) + "\n")


def fake_package(site: Path, version: str) -> dict[str, str]:
    """An environment in which the distribution ``demo-trainer-utils`` is installed at
    ``version`` (a dist-info folder on PYTHONPATH), to show package drift."""
    info = site / f"demo_trainer_utils-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: demo-trainer-utils\nVersion: {version}\n"
    )
    return {**os.environ, "PYTHONPATH": str(site)}


def run_id(out: str) -> str:
    for line in out.splitlines():
        if line.startswith("run "):
            return line.split()[2].rstrip(":")
    raise SystemExit("demo failed: datavc run printed no run id")


def main() -> None:
    base = Path(tempfile.mkdtemp(prefix="datavc-demo-repro-"))
    repo = base / "repo"
    repo.mkdir()
    v1_env = fake_package(base / "site-v1", "1.0")
    rnd = random.Random(2026)
    try:
        run("git", "init", "-q", cwd=repo)
        for key, value in (("user.name", "Demo"), ("user.email", "demo@example.invalid")):
            run("git", "config", key, value, cwd=repo)
        run("datavc", "init", cwd=repo)
        points(repo / "data" / "points" / "part-0.csv", rnd, 400)
        run("datavc", "add", "data/points", cwd=repo)
        run("datavc", "commit", "-m", "points v1", cwd=repo)
        (repo / "train.py").write_text(TRAIN)
        (repo / "params.yaml").write_text("seed: 7\nepochs: 200\nlr: 0.5\n")
        run("git", "add", "-A", cwd=repo)
        run("git", "commit", "-q", "-m", "training code, points v1", cwd=repo)

        print("\n# 1. a recorded training run: inputs, code, params, environment, output")
        train = (
            "datavc",
            "run",
            "--param",
            "params.yaml",
            "--in",
            "points",
            "--out",
            "models/model",
            "--",
            sys.executable,
            "train.py",
        )
        first = run_id(run(*train, cwd=repo, env=v1_env))
        weights_v1 = (repo / "models" / "model" / "weights.npy").read_bytes()
        run("git", "add", "-A", cwd=repo)
        run("git", "commit", "-q", "-m", "model v1", cwd=repo)

        print("\n# 2. the data changes; the same run again")
        points(repo / "data" / "points" / "part-1.csv", rnd, 200)
        run("datavc", "add", "data/points", cwd=repo)
        run("datavc", "commit", "points", "-m", "points v2: 200 more rows", cwd=repo)
        run(*train, cwd=repo, env=v1_env)
        run("git", "add", "-A", cwd=repo)
        run("git", "commit", "-q", "-m", "model v2", cwd=repo)

        print("\n# 3. lineage of both models")
        run("datavc", "lineage", "model@v1", "--up", cwd=repo)
        run("datavc", "lineage", "model@v2", "--up", "--format", "mermaid", cwd=repo)
        run("datavc", "lineage", "points@v1", "--down", cwd=repo)

        print("\n# 4. the first model rebuilt from its run record alone")
        # run 1's lock file was replaced by run 2's: the record comes from the store alone
        out = run("datavc", "reproduce", first, "--keep", "--yes", cwd=repo, env=v1_env)
        folder = next(
            ln.split("ran in ", 1)[1].split(":")[0] for ln in out.splitlines() if "ran in " in ln
        )
        rebuilt = Path(folder) / "models" / "model" / "weights.npy"
        if rebuilt.read_bytes() != weights_v1:
            raise SystemExit("demo failed: the rebuilt model differs from model v1")
        print(f"  model v1 rebuilt bit-identically: {len(weights_v1)} bytes of weights")
        shutil.rmtree(folder, ignore_errors=True)

        print("\n# 5. an upgraded package shows up as drift")
        v2_env = fake_package(base / "site-v2", "1.1")
        out = run("datavc", "reproduce", first, "--check", cwd=repo, code=9, env=v2_env)
        if "package demo-trainer-utils: 1.0 -> 1.1" not in out:
            raise SystemExit("demo failed: the package upgrade was not reported as drift")

        print("\n# 6. an audit of model v2: every run and input, every byte re-hashed")
        run("datavc", "audit", "model@v2", cwd=repo, env=v1_env)
        print("\ndemo-repro: OK")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
