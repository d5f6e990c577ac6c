"""What every part of the benchmark shares: paths, units, the git identity, the log."""

from __future__ import annotations

import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent  # the repository: scripts/benchlib/..
PEER_DVC = ROOT / ".venv" / "peers" / "dvc" / "bin" / "dvc"
MiB = 1 << 20
MB = 1_000_000
SEED = 20261128
X = "\u00d7"  # multiplication sign, spelled out for ruff's ambiguous-character rule
GIT_ENV = {
    "GIT_AUTHOR_NAME": "datavc bench",
    "GIT_AUTHOR_EMAIL": "bench@datavc.invalid",
    "GIT_COMMITTER_NAME": "datavc bench",
    "GIT_COMMITTER_EMAIL": "bench@datavc.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
}


def log(message: str) -> None:
    print(message, flush=True)


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def fmt_seconds(s: float) -> str:
    return f"{s:.3f} s" if s < 0.1 else f"{s:.2f} s" if s < 10 else f"{s:.1f} s"


def fmt_bytes(n: float) -> str:
    if abs(n) >= MB:
        return f"{n / MB:,.1f} MB"
    return f"{n / 1000:,.1f} kB" if abs(n) >= 1000 else f"{n:.0f} B"


def fmt_value(value: float | None, unit: str, nbytes: int) -> str:
    if value is None:
        return "-"
    if unit == "rate":
        return f"{fmt_seconds(value)} ({nbytes / value / MB:,.0f} MB/s)" if value else "0 s"
    if unit == "s":
        return fmt_seconds(value)
    if unit == "bytes":
        return fmt_bytes(value)
    if unit == "rss":
        return f"{value / 1024:,.0f} MiB"
    return f"{value:,.0f}"


MOTO = ROOT / "tests" / "moto_s3_server.py"
BUCKET = "datavc-bench"
S3_ENV = {  # the benchmark's S3 servers (moto, SeaweedFS) take any credentials
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
}
