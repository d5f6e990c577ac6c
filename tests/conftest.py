"""Shared fixtures: a clean environment per test, a moto S3 server over HTTP on 127.0.0.1,
and one fresh store root per test on each backend (memory, local folder, S3)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import types
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import clean_environment

BUCKET = "datavc-test"
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """A moto S3 server in its own process, on a random free port of 127.0.0.1."""
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            str(Path(__file__).with_name("moto_s3_server.py")),
            "-H",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1)
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("moto server did not start") from None
            time.sleep(0.1)
    import boto3

    boto3.client("s3", endpoint_url=endpoint, **_boto_args()).create_bucket(Bucket=BUCKET)
    yield endpoint
    proc.terminate()
    proc.wait(timeout=10)


def _boto_args() -> dict[str, str]:
    return {
        "aws_access_key_id": S3_ENV["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": S3_ENV["AWS_SECRET_ACCESS_KEY"],
        "region_name": S3_ENV["AWS_DEFAULT_REGION"],
    }


@pytest.fixture(autouse=True)
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test gets its own HOME and a git identity, and no datavc or AWS settings."""
    clean_environment(monkeypatch, tmp_path / "home")


@pytest.fixture
def s3_env(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point s3fs (in this process and in subprocesses) at the moto server."""
    for key, value in S3_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    return moto_endpoint


@pytest.fixture(params=["memory", "local", "s3"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty store root on each backend."""
    kind = request.param
    if kind == "memory":
        return f"memory://datavc-{uuid.uuid4().hex}"
    if kind == "local":
        return str(tmp_path / "store")
    request.getfixturevalue("s3_env")
    return f"s3://{BUCKET}/{uuid.uuid4().hex}"


@pytest.fixture(params=["local", "s3"])
def shared_store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store several processes can reach (not the per-process memory filesystem)."""
    if request.param == "local":
        return str(tmp_path / "shared-store")
    request.getfixturevalue("s3_env")
    return f"s3://{BUCKET}/{uuid.uuid4().hex}"


@pytest.fixture
def trusted(monkeypatch: pytest.MonkeyPatch) -> None:
    """A clock 10 s ahead for the stat cache: no file is within the racy window, so every
    row is trusted (tests of what add and status keep unread)."""
    from datavc.workspace import statcache

    ahead = types.SimpleNamespace(time_ns=lambda: time.time_ns() + 10 * 10**9)
    monkeypatch.setattr(statcache, "time", ahead)
