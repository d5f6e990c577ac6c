"""The remote benchmark (issue 16): datavc and DVC on an S3 store behind a delay proxy.

For each dataset an S3 server starts on 127.0.0.1 (``s3server``: SeaweedFS, else moto) with
a delay proxy in front (``delayproxy``); every command reaches the store through the proxy
(``AWS_ENDPOINT_URL``, DVC's ``endpointurl``). For each round trip time (0, 20, 80 ms) and
repetition, on a fresh prefix of the bucket:

- datavc: ``datavc init --store s3://...``, then add + commit of v1 (timed), the pointer
  files committed to git; ``datavc.open(NAME@v1, store=...)`` + one file read in a new
  process (timed after its imports; images: a ~64 KB file, whole; table and tensor: the
  first 64 KiB of the file); a fresh ``git clone`` and ``datavc checkout`` (empty cache);
- DVC (with dvc-s3): ``dvc add`` + ``dvc push`` of v1 to an S3 remote; ``dvc pull`` in a
  fresh clone.

Each timed operation records its seconds and what crossed the proxy (``traffic``). Every
checkout is compared with v1 byte for byte, and every read with the file's bytes.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from blake3 import blake3

from .common import log, remove
from .datasets import Dataset, fingerprint
from .delayproxy import DelayProxy, Traffic
from .runner import Runner, StepFailed
from .s3server import BUCKET, S3_ENV, S3Server, log_tail, make_bucket, remove_prefix, stop
from .session import Figures, page_cache
from .tools import Tool
from .traffic import by_kind, summarize, timeline

PROBE_BYTES = 64 * 1024
TIMELINE_REQUESTS = 400  # datavc's requests kept in the JSON report, each operation
FLOOR_OBJECTS = 16  # of FLOOR_MIB each, PUT then GET with FLOOR_STREAMS threads
FLOOR_MIB = 16
FLOOR_STREAMS = 8

FLOOR_PROBE = """
import json, os, sys, time
from concurrent.futures import ThreadPoolExecutor
import boto3, botocore.config
endpoint, bucket, prefix = sys.argv[1:4]
n, mib, streams = (int(a) for a in sys.argv[4:])
s3 = boto3.client("s3", endpoint_url=endpoint,
                  config=botocore.config.Config(max_pool_connections=streams))
body = os.urandom(mib << 20)
keys = [f"{prefix}/{i}" for i in range(n)]
def put(k): s3.put_object(Bucket=bucket, Key=k, Body=body)
def get(k): return len(s3.get_object(Bucket=bucket, Key=k)["Body"].read())
with ThreadPoolExecutor(streams) as pool:
    t0 = time.perf_counter(); list(pool.map(put, keys)); t1 = time.perf_counter()
    got = sum(pool.map(get, keys)); t2 = time.perf_counter()
assert got == n * len(body)
print(json.dumps({"put_s": t1 - t0, "get_s": t2 - t1, "bytes": got}))
"""

OPEN_PROBE = """
import json, sys, time
import datavc, datavc.fs, s3fs  # start-up: imported before the clock starts
from blake3 import blake3
store, spec, path, length = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
start = time.monotonic()
fs = datavc.open(spec, store=store)
with fs.open(path, "rb") as f:
    data = f.read(length) if length >= 0 else f.read()
end = time.monotonic()
print(json.dumps({"start": start, "end": end, "bytes": len(data),
                  "blake3": blake3(data).hexdigest()}))
"""


class RemoteDatavc(Tool):
    """datavc in a git workspace whose store is a prefix of the bucket."""

    name = "datavc"

    def __init__(self, runner: Runner, exe: list[str], base: Path, url: str, env: dict[str, str]):
        super().__init__(runner, exe, base)
        self.url, self.env = url, env

    def setup(self) -> None:
        super().setup()
        self.timed([self.cmd("init", "--store", self.url)])

    def save_steps(self, ds: Dataset) -> list[list[str]]:
        return [
            self.cmd("add", f"data/{ds.payload}", "--name", ds.name),
            self.cmd("commit", ds.name, "-m", "v1"),
        ]

    def fresh_step(self) -> list[str]:
        return self.cmd("checkout")  # what the pointer files of the clone's HEAD say


class RemoteDvc(Tool):
    """DVC in a git workspace with an S3 remote (dvc-s3) at a prefix of the bucket."""

    name = "dvc"

    def __init__(
        self,
        runner: Runner,
        exe: list[str],
        base: Path,
        url: str,
        env: dict[str, str],
        endpoint: str,
    ) -> None:
        super().__init__(runner, exe, base)
        self.url, self.endpoint = url, endpoint
        self.env = {
            **env,
            "DVC_NO_ANALYTICS": "1",
            "DVC_SITE_CACHE_DIR": str(base / "site-cache"),
        }

    def setup(self) -> None:
        super().setup()
        self.timed(
            [
                self.cmd("init", "-q"),
                self.cmd("remote", "add", "-d", "bench", self.url),
                self.cmd("remote", "modify", "bench", "endpointurl", self.endpoint),
                ["git", "add", "-A"],
                ["git", "commit", "-q", "-m", "dvc init"],
            ]
        )

    def save_steps(self, ds: Dataset) -> list[list[str]]:
        return [self.cmd("add", "-q", f"data/{ds.payload}"), self.cmd("push", "-q")]

    def fresh_step(self) -> list[str]:
        return self.cmd("pull", "-q")


class RemoteBench:
    """Runs the rounds of every dataset, each dataset on a server of its own."""

    def __init__(
        self,
        python: str,
        dvc: list[str] | None,
        runner: Runner,
        work: Path,
        start_server: Callable[[Path], S3Server],
        figs: Figures,
    ) -> None:
        self.python, self.dvc, self.runner = python, dvc, runner
        self.work = work / "remote"
        self.start_server = start_server
        self.figs = figs
        self.server: S3Server | None = None
        self.proxy: DelayProxy | None = None
        self.servers: list[str] = []  # name and version of each server started
        self.last_rep = 1  # the repetition whose request timelines are kept

    def run(self, datasets: list[Dataset], rtts: list[int], reps: int, peer_reps: int) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        self.last_rep = reps
        for ds in datasets:
            folder = self.work / f"server-{ds.name}"
            try:
                self.server = self.start_server(folder)
                make_bucket(self.server, self.python, self.runner)
            except StepFailed as e:
                self.figs.error(ds.name, "server", 1, "start", str(e))
                self.stop_server(folder)
                continue
            self.proxy = DelayProxy(("127.0.0.1", self.server.port))
            self.proxy.start()
            errors = len(self.figs.errors)
            try:
                self.servers.append(f"{self.server.name} {self.server.version}")
                self.attempt(ds, "server", 1, 0, self.floor)
                for rep in range(1, reps + 1):
                    for rtt in rotated(rtts, rep - 1):
                        self.proxy.delay = rtt / 2000  # one way: half the round trip
                        self.attempt(ds, "datavc", rep, rtt, self.datavc_round)
                        if self.dvc and rep <= peer_reps:
                            self.attempt(ds, "dvc", rep, rtt, self.dvc_round)
            finally:
                self.proxy.stop()
                if self.server is not None and len(self.figs.errors) > errors:  # it may say why
                    self.figs.notes.append(
                        {"dataset": ds.name, "server_log": log_tail(self.server)}
                    )
                self.stop_server(folder)

    def stop_server(self, folder: Path) -> None:
        if self.server is not None:
            stop(self.server)
            self.server = None
        remove(folder)

    def attempt(
        self,
        ds: Dataset,
        tool: str,
        rep: int,
        rtt: int,
        fn: Callable[[Dataset, int, int], None],
    ) -> None:
        try:
            fn(ds, rep, rtt)
        except (StepFailed, OSError, subprocess.SubprocessError, ValueError, KeyError) as e:
            self.figs.error(ds.name, tool, rep, f"{rtt} ms", str(e))

    @property
    def endpoint(self) -> str:
        assert self.proxy is not None  # set by run()
        return f"http://127.0.0.1:{self.proxy.port}"

    def env(self) -> dict[str, str]:
        return {**S3_ENV, "AWS_ENDPOINT_URL": self.endpoint}

    def take(self) -> Traffic:
        assert self.proxy is not None
        return self.proxy.take()

    # -- the rounds --------------------------------------------------------------------------

    def floor(self, ds: Dataset, rep: int, rtt: int) -> None:
        """What the server moves with plain boto3 (parallel PUTs, then GETs, of 16 MiB
        objects), straight and through the proxy at 0 ms: the ceiling of every figure. A
        first pass, not recorded, warms a new server up with as many bytes as the dataset
        (SeaweedFS allocates its volumes on the first writes: a request then can outlast
        datavc's 2.5 s timeout, and the first round would pay for it)."""
        assert self.server is not None
        direct, proxied = self.server.endpoint, self.endpoint
        warm = min(max(FLOOR_OBJECTS, ds.sizes[0] // (FLOOR_MIB << 20)), 4 * FLOOR_OBJECTS)
        for via, endpoint in (("warm-up", direct), ("direct", direct), ("proxy", proxied)):
            prefix = f"floor-{via}"
            args = [self.python, "-c", FLOOR_PROBE, endpoint, BUCKET, prefix]
            objects = warm if via == "warm-up" else FLOOR_OBJECTS
            args += [str(objects), str(FLOOR_MIB), str(FLOOR_STREAMS)]
            done = self.runner.must(args, self.work, {**S3_ENV, "AWS_ENDPOINT_URL": endpoint})
            got = json.loads(done.out.strip().splitlines()[-1])
            remove_prefix(self.server, self.python, self.runner, prefix)
            self.take()
            if via == "warm-up":
                continue
            for op in ("put", "get"):
                self.figs.add("server", via, f"{op}_MBps", got["bytes"] / got[f"{op}_s"] / 1e6)
            log(
                f"  server {via:6} PUT {got['bytes'] / got['put_s'] / 1e6:6.0f} MB/s  "
                f"GET {got['bytes'] / got['get_s'] / 1e6:6.0f} MB/s"
            )

    def datavc_round(self, ds: Dataset, rep: int, rtt: int) -> None:
        prefix = f"{ds.name}-{rtt}ms-r{rep}-datavc"
        base = self.work / prefix
        tool = RemoteDatavc(
            self.runner, [self.python, "-m", "datavc"], base, f"s3://{BUCKET}/{prefix}", self.env()
        )
        try:
            tool.setup()
            self.save(tool, ds, rep, rtt, prefix)
            self.open_file(tool, ds, rep, rtt, prefix)
            self.fresh(tool, ds, rep, rtt, prefix)
        finally:
            self.clean(base, prefix)

    def dvc_round(self, ds: Dataset, rep: int, rtt: int) -> None:
        assert self.dvc is not None
        prefix = f"{ds.name}-{rtt}ms-r{rep}-dvc"
        base = self.work / prefix
        url = f"s3://{BUCKET}/{prefix}"
        tool = RemoteDvc(self.runner, self.dvc, base, url, self.env(), self.endpoint)
        try:
            tool.setup()
            self.save(tool, ds, rep, rtt, prefix)
            self.fresh(tool, ds, rep, rtt, prefix)
        finally:
            self.clean(base, prefix)

    def clean(self, base: Path, prefix: str) -> None:
        remove(base)
        if self.server is not None:
            remove_prefix(self.server, self.python, self.runner, prefix)
        self.take()

    def save(
        self, tool: RemoteDatavc | RemoteDvc, ds: Dataset, rep: int, rtt: int, prefix: str
    ) -> None:
        """v1 added and put in the store: datavc add + commit, DVC add + push (each step
        timed alone too: DVC's add does not touch the remote)."""
        ds.install(0, tool.data(ds))
        page_cache(tool.data(ds), True)  # add reads its input from memory, as after writing it
        os.sync()
        self.take()
        zero, seconds = time.monotonic(), 0.0
        for step in tool.save_steps(ds):
            timing = tool.timed([step])
            seconds += timing.seconds
            self.figs.add(ds.name, tool.name, f"{step[len(tool.exe)]}.s@{rtt}", timing.seconds)
        self.record(ds, tool.name, "save", rep, rtt, seconds, self.take(), prefix, zero)
        tool.git_commit("data v1")

    def fresh(
        self, tool: RemoteDatavc | RemoteDvc, ds: Dataset, rep: int, rtt: int, prefix: str
    ) -> None:
        """A fresh git clone (no datavc cache, no DVC cache) brings v1 from the store."""
        clone = tool.clone()
        self.take()
        zero = time.monotonic()
        timing = tool.timed([tool.fresh_step()], cwd=clone)
        self.record(ds, tool.name, "fresh", rep, rtt, timing.seconds, self.take(), prefix, zero)
        if fingerprint(clone / "data" / ds.payload) != ds.fingerprints[0]:
            raise StepFailed(f"fresh checkout at {rtt} ms does not match v1 byte for byte")
        self.figs.add(ds.name, tool.name, f"fresh.rss_kib@{rtt}", timing.rss_kib)

    def open_file(self, tool: RemoteDatavc, ds: Dataset, rep: int, rtt: int, prefix: str) -> None:
        """``datavc.open`` + one file in a new process; requests counted from the moment
        after its imports."""
        path, length, expected = probe_target(ds)
        self.take()
        done = self.runner.must(
            [self.python, "-c", OPEN_PROBE, tool.url, f"{ds.name}@v1", path, str(length)],
            tool.base,
            tool.env,
        )
        got: dict[str, Any] = json.loads(done.out.strip().splitlines()[-1])
        if got["blake3"] != expected:
            raise StepFailed(f"datavc.open read wrong bytes of {path}")
        wall = got["end"] - got["start"]
        start = got["start"]
        self.record(ds, tool.name, "open", rep, rtt, wall, self.take(), prefix, start, start)
        self.figs.add(ds.name, tool.name, f"open.bytes@{rtt}", got["bytes"])

    def record(
        self,
        ds: Dataset,
        tool: str,
        op: str,
        rep: int,
        rtt: int,
        wall: float,
        traffic: Traffic,
        prefix: str,
        zero: float,
        since: float = 0.0,
    ) -> None:
        """The figures of one operation; ``zero``: when it began (monotonic), ``since``: count
        only the requests that began after that."""
        figures = summarize(traffic, wall, since)
        self.figs.add(ds.name, tool, f"{op}.s@{rtt}", wall)
        for metric, value in figures.items():
            self.figs.add(ds.name, tool, f"{op}.{metric}@{rtt}", value)
        note = {"dataset": ds.name, "tool": tool, "op": op, "rtt_ms": rtt, "rep": rep}
        note["load"] = os.getloadavg()[0]  # the machine's, over the last minute: shared cores
        note["kinds"] = by_kind(traffic, prefix, since)
        if tool == "datavc" and rep == self.last_rep:  # DVC's run to tens of thousands
            note["timeline"] = timeline(traffic, prefix, since or zero, TIMELINE_REQUESTS)
        self.figs.notes.append(note)
        log(
            f"  {ds.name:6} {tool:6} {op:5} {rtt:3} ms {wall:8.2f} s  "
            f"{figures['requests']:6,.0f} requests  {figures['connections']:4,.0f} conns  "
            f"in flight max {figures['in_flight_max']:.0f} mean {figures['in_flight_mean']:.1f}"
        )


def rotated(rtts: list[int], by: int) -> list[int]:
    """The round trips in order, starting ``by`` places on (each repetition starts at another
    one, so what a new server or a busy machine costs a first round falls on each in turn)."""
    by %= len(rtts)
    return rtts[by:] + rtts[:by]


def probe_target(ds: Dataset) -> tuple[str, int, str]:
    """The file ``datavc.open`` reads, how much of it (-1: all), and the BLAKE3 of that."""
    if ds.probe_file is not None:
        return ds.probe_file, -1, ds.fingerprints[0][ds.probe_file][1]
    with open(ds.versions[0], "rb") as f:
        head = f.read(PROBE_BYTES)
    return ds.payload, PROBE_BYTES, blake3(head).hexdigest()
