"""Benchmark datavc against the machine's floors and its peers, side by side, in one run.

Generates seeded datasets in a temporary folder (images: many small files; table: a Parquet file
appended to and edited in the middle; tensor: a large .npy edited in place), then measures on the
same bytes:

- datavc through its CLI in subprocesses, in a real git repo with the embedded store;
- ``cp -r`` (the floor for checkout) and a single-threaded read-and-BLAKE3 (the floor for add);
- DVC 3.x (add + push to a local remote, checkout, pull in a fresh clone, status) and restic
  (backup, restore) when they are installed (``make bench-peers``); without them it says so.

Writes docs/BENCHMARKS.md and docs/BENCHMARKS.json (``--quick``: docs/BENCHMARKS-quick.*).
Every external command runs with a timeout; a failing peer is reported, never fatal. Nothing
touches the network. Runs are warm-cache: the page cache cannot be dropped here.

    python scripts/bench.py             # full size, 1 repetition (20-40 minutes)
    python scripts/bench.py --quick     # scaled down, 3 repetitions (1-2 minutes)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from blake3 import blake3

ROOT = Path(__file__).resolve().parent.parent
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


# -- running commands ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Run:
    """One finished command: wall seconds and the peak RSS of its process tree (KiB)."""

    cmd: list[str]
    code: int
    seconds: float
    rss_kib: int
    out: str
    err: str
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.code == 0 and not self.timed_out

    def failure(self) -> str:
        why = "timed out" if self.timed_out else f"exited {self.code}"
        tail = (self.err.strip() or self.out.strip()).splitlines()[-3:]
        return f"`{shlex.join(self.cmd[:4])}` {why}: {' | '.join(tail)[:400]}"


class StepFailed(Exception):
    """A measured step did not succeed; the message says which command and why."""


# Runs one command and reports its wall time and peak RSS (``os.wait4``'s ru_maxrss, KiB). A
# child forked from this process would inherit its high-water RSS (the datasets are generated
# here), so a small interpreter in between spawns the command and measures it.
LAUNCHER = """
import json, os, sys, time
out, cmd = sys.argv[1], sys.argv[2:]
start = time.perf_counter()
try:
    pid = os.posix_spawnp(cmd[0], cmd, os.environ)
except OSError as e:
    result = {"code": 127, "seconds": 0.0, "rss_kib": 0, "error": str(e)}
else:
    _, status, usage = os.wait4(pid, 0)
    seconds = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    result = {"code": code, "seconds": seconds, "rss_kib": usage.ru_maxrss}
with open(out, "w") as f:
    json.dump(result, f)
"""


class Runner:
    """Runs commands with a timeout (the whole process group is killed), in a session of
    their own, with stdout and stderr captured in files."""

    def __init__(self, timeout: float, env: dict[str, str], scratch: Path) -> None:
        self.timeout = timeout
        self.env = env
        self.result = scratch / "launcher.json"

    def run(self, cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> Run:
        full_env = {**self.env, **(env or {})}
        launcher = [sys.executable, "-I", "-S", "-c", LAUNCHER, str(self.result), *cmd]
        self.result.unlink(missing_ok=True)
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            try:
                proc = subprocess.Popen(
                    launcher,
                    cwd=cwd,
                    env=full_env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    start_new_session=True,
                )
            except OSError as e:
                return Run(cmd, 127, 0.0, 0, "", str(e))
            timed_out = _wait(proc, self.timeout)
            result = self._result()
            return Run(
                cmd,
                int(result.get("code", proc.returncode)),
                float(result.get("seconds", 0.0)),
                int(result.get("rss_kib", 0)),
                _text(out),
                _text(err) + str(result.get("error", "")),
                timed_out,
            )

    def _result(self) -> dict[str, Any]:
        try:
            doc: dict[str, Any] = json.loads(self.result.read_text())
        except (OSError, ValueError):
            return {}
        return doc

    def must(self, cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> Run:
        done = self.run(cmd, cwd, env)
        if not done.ok:
            raise StepFailed(done.failure())
        return done


def _wait(proc: subprocess.Popen[bytes], timeout: float) -> bool:
    """Wait for ``proc``; after ``timeout`` kill its process group. True if it timed out."""
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc.pid)
        proc.wait()
        return True
    except BaseException:
        _kill_group(proc.pid)
        proc.wait()
        raise
    return False


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def _text(f: Any) -> str:
    f.seek(0)
    return str(f.read().decode(errors="replace"))


@dataclass(slots=True)
class Timing:
    """The sum of the wall times of one operation's commands and the largest peak RSS."""

    seconds: float = 0.0
    rss_kib: int = 0
    output: str = ""

    def add(self, run: Run) -> None:
        self.seconds += run.seconds
        self.rss_kib = max(self.rss_kib, run.rss_kib)
        self.output += run.out


# -- datasets --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Scale:
    images: int
    image_folders: int
    table_rows: int
    tensor_shape: tuple[int, int]
    edit_bytes: int = MiB


FULL = Scale(images=20_000, image_folders=100, table_rows=10_000_000, tensor_shape=(16_384, 16_384))
QUICK = Scale(images=2_000, image_folders=100, table_rows=1_000_000, tensor_shape=(4_096, 8_192))

Fingerprint = dict[str, tuple[int, str]]


@dataclass(frozen=True, slots=True)
class Rewrite:
    """The new version is the whole file written again (what pyarrow does)."""

    def apply(self, src: Path, dest: Path) -> None:
        shutil.copyfile(src, dest)


@dataclass(frozen=True, slots=True)
class Patch:
    """The new version differs by ``length`` bytes at ``offset``, written in place."""

    offset: int
    length: int

    def apply(self, src: Path, dest: Path) -> None:
        with open(src, "rb") as f:
            f.seek(self.offset)
            data = f.read(self.length)
        with open(dest, "r+b") as f:
            f.seek(self.offset)
            f.write(data)


@dataclass(slots=True)
class Dataset:
    """A generated dataset: the payload of each version, and how to turn v(N-1) into vN."""

    name: str
    payload: str  # file or folder name under data/ in each workspace
    versions: list[Path]
    edits: list[Rewrite | Patch] = field(default_factory=list)
    probe_file: str | None = None  # a ~64 KB file to read through datavc.open
    sizes: list[int] = field(default_factory=list)
    files: int = 0
    fingerprints: list[Fingerprint] = field(default_factory=list)

    def install(self, version: int, dest: Path) -> None:
        """Make ``dest`` hold version ``version`` (0-based): a copy of v1, or an edit."""
        if version == 0:
            _remove(dest)
            dest.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(["cp", "-a", str(self.versions[0]), str(dest)], check=True)
        else:
            self.edits[version - 1].apply(self.versions[version], dest)


def iter_files(path: Path) -> Iterator[Path]:
    if path.is_file():
        yield path
        return
    for folder, dirs, names in os.walk(path):
        dirs.sort()
        for name in sorted(names):
            yield Path(folder) / name


def fingerprint(path: Path) -> Fingerprint:
    """Relative path -> (size, BLAKE3) of every file; a single file has the path ""."""
    out: Fingerprint = {}
    for f in iter_files(path):
        rel = "" if f == path else f.relative_to(path).as_posix()
        size = f.stat().st_size
        h = blake3(max_threads=blake3.AUTO)
        if size:
            h.update_mmap(f)
        out[rel] = (size, h.hexdigest())
    return out


def make_images(root: Path, scale: Scale, rng: np.random.Generator) -> Dataset:
    """Random bytes (incompressible, like JPEG) of 10-100 KB in ``image_folders`` folders."""
    dest = root / "v1" / "images"
    sizes = rng.integers(10_000, 100_001, scale.images)
    for i, size in enumerate(sizes):
        folder = dest / f"class{i % scale.image_folders:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"img{i:05d}.jpg").write_bytes(rng.bytes(int(size)))
    probe = int(np.argmin(np.abs(sizes - 65_536)))
    probe_path = f"class{probe % scale.image_folders:03d}/img{probe:05d}.jpg"
    return Dataset("images", "images", [dest], probe_file=probe_path)


def _table_rows(rng: np.random.Generator, start: int, n: int) -> dict[str, np.ndarray]:
    ids = np.arange(start, start + n, dtype=np.int64)
    cols: dict[str, np.ndarray] = {
        "id": ids,
        "ts": 1_700_000_000_000 + ids * 997 + rng.integers(0, 997, n),
    }
    for c in ("x0", "x1", "x2", "x3"):
        cols[c] = rng.standard_normal(n)
    cols["y"] = rng.standard_normal(n, dtype=np.float32)
    cols["label"] = rng.integers(0, 1000, n, dtype=np.int32)
    return cols


def _write_parquet(cols: dict[str, np.ndarray], path: Path, row_group: int) -> None:
    """Snappy, no dictionary, fixed row groups: unchanged row groups stay byte-identical."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(
        pa.table(cols), path, row_group_size=row_group, compression="snappy", use_dictionary=False
    )


def make_table(root: Path, scale: Scale, rng: np.random.Generator) -> Dataset:
    """v1: ``table_rows`` rows; v2: 1% rows appended; v3: 1% of the rows in the middle changed."""
    n = scale.table_rows
    row_group = n // 10
    v1 = _table_rows(rng, 0, n)
    paths = [root / f"v{i}" / "table.parquet" for i in (1, 2, 3)]
    _write_parquet(v1, paths[0], row_group)
    extra = _table_rows(rng, n, n // 100)
    v2 = {c: np.concatenate([v1[c], extra[c]]) for c in v1}
    del v1
    _write_parquet(v2, paths[1], row_group)
    lo = len(v2["id"]) // 2 - n // 200
    fresh = _table_rows(rng, 0, n // 100)
    for c in ("x0", "x1", "x2", "x3", "y", "label"):
        v2[c][lo : lo + n // 100] = fresh[c]
    _write_parquet(v2, paths[2], row_group)
    return Dataset("table", "table.parquet", paths, [Rewrite(), Rewrite()])


def make_tensor(root: Path, scale: Scale, rng: np.random.Generator) -> Dataset:
    """v1: float32 normal values; v2: ``edit_bytes`` in the middle written in place."""
    v1, v2 = root / "v1" / "tensor.npy", root / "v2" / "tensor.npy"
    v1.parent.mkdir(parents=True)
    v2.parent.mkdir(parents=True)
    arr = np.lib.format.open_memmap(v1, mode="w+", dtype=np.float32, shape=scale.tensor_shape)
    step = max(1, (16 * MiB) // (4 * scale.tensor_shape[1]))
    for row in range(0, scale.tensor_shape[0], step):
        rows = min(step, scale.tensor_shape[0] - row)
        arr[row : row + rows] = rng.standard_normal((rows, scale.tensor_shape[1]), np.float32)
    arr.flush()
    del arr
    header = v1.stat().st_size - 4 * scale.tensor_shape[0] * scale.tensor_shape[1]
    offset = header + (v1.stat().st_size - header) // 2 // 4 * 4
    shutil.copyfile(v1, v2)
    patch = Patch(offset, scale.edit_bytes)
    with open(v2, "r+b") as f:
        f.seek(offset)
        f.write(rng.standard_normal(scale.edit_bytes // 4, np.float32).tobytes())
    return Dataset("tensor", "tensor.npy", [v1, v2], [patch])


MAKERS: dict[str, Callable[[Path, Scale, np.random.Generator], Dataset]] = {
    "images": make_images,
    "table": make_table,
    "tensor": make_tensor,
}


def generate(name: str, root: Path, scale: Scale) -> Dataset:
    start = time.perf_counter()
    ds = MAKERS[name](root / name, scale, np.random.default_rng([SEED, len(name)]))
    ds.fingerprints = [fingerprint(v) for v in ds.versions]
    ds.sizes = [sum(size for size, _ in fp.values()) for fp in ds.fingerprints]
    ds.files = len(ds.fingerprints[0])
    log(
        f"generated {name}: {ds.files:,} files, {ds.sizes[0] / MB:,.1f} MB, "
        f"{len(ds.versions)} versions ({time.perf_counter() - start:.1f} s)"
    )
    return ds


# -- the tools -------------------------------------------------------------------------------


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def tree_stats(path: Path) -> tuple[int, int]:
    """(files, bytes) under ``path``."""
    files = total = 0
    for f in iter_files(path):
        files += 1
        total += f.stat().st_size
    return files, total


class Tool:
    """A versioning tool driven through its CLI in one workspace ``base/ws``.

    ``save`` puts the data into the store (add+commit, add+push, backup); ``restore`` brings
    it back after the data was deleted; ``restore_fresh`` does it with an empty local cache
    (a fresh clone). Each returns the summed wall time and peak RSS of its commands.
    """

    name = ""
    uses_git = True
    restores_in_place = True  # restore writes into the workspace (else into another folder)

    def __init__(self, runner: Runner, exe: list[str], base: Path) -> None:
        self.runner = runner
        self.exe = exe
        self.base = base
        self.ws = base / "ws"
        self.env: dict[str, str] = {}

    def data(self, ds: Dataset) -> Path:
        return self.ws / "data" / ds.payload

    def store(self) -> Path:
        raise NotImplementedError

    def cmd(self, *args: str) -> list[str]:
        return [*self.exe, *args]

    def timed(
        self, cmds: list[list[str]], cwd: Path | None = None, env: dict[str, str] | None = None
    ) -> Timing:
        timing = Timing()
        for c in cmds:
            timing.add(self.runner.must(c, cwd or self.ws, {**self.env, **(env or {})}))
        return timing

    def git_commit(self, message: str) -> None:
        """Commit the pointer files, config and .gitignore (the tool ignores the data)."""
        self.timed([["git", "add", "-A"], ["git", "commit", "-q", "--allow-empty", "-m", message]])

    def setup(self) -> None:
        self.base.mkdir(parents=True)
        self.ws.mkdir()
        if self.uses_git:
            self.timed([["git", "init", "-q"]])

    def save(self, ds: Dataset, version: int) -> Timing:
        raise NotImplementedError

    def restore(self, ds: Dataset) -> tuple[Timing, Path]:
        raise NotImplementedError

    def restore_fresh(self, ds: Dataset) -> tuple[Timing, Path]:
        raise NotImplementedError

    def status(self) -> Timing | None:
        return None

    def probe(self, ds: Dataset) -> dict[str, Any] | None:
        return None

    def clone(self) -> Path:
        fresh = self.base / "clone"
        self.timed([["git", "clone", "-q", str(self.ws), str(fresh)]], cwd=self.base)
        return fresh


OPEN_PROBE = """
import json, sys, time
import datavc
import datavc.fs  # what datavc.open imports on first use (fsspec): part of "import"
from blake3 import blake3
t0 = time.perf_counter()
fs = datavc.open(sys.argv[1])
with fs.open(sys.argv[2], "rb") as f:
    data = f.read()
seconds = time.perf_counter() - t0
def counts(backend):
    stats = getattr(backend, "stats", None)
    if stats is None:
        return 0, 0, []
    return stats.reads, getattr(stats, "lists", 0), list(getattr(stats, "read_keys", []))
reads, lists, keys = counts(fs.chunks.backend)
cache = getattr(fs.chunks, "cache", None)
c_reads, c_lists, c_keys = counts(cache) if cache is not None else (0, 0, [])
print(json.dumps({"seconds": seconds, "store_reads": reads, "cache_reads": c_reads,
                  "lists": lists + c_lists, "keys": keys + c_keys, "bytes": len(data),
                  "blake3": blake3(data).hexdigest()}))
"""


class Datavc(Tool):
    name = "datavc"

    def store(self) -> Path:
        return self.ws / ".datavc" / "store"

    def setup(self) -> None:
        super().setup()
        self.timed([self.cmd("init")])

    def save(self, ds: Dataset, version: int) -> Timing:
        timing = self.timed(
            [
                self.cmd("add", f"data/{ds.payload}", "--name", ds.name),
                self.cmd("commit", ds.name, "-m", f"v{version}"),
            ]
        )
        self.git_commit(f"data v{version}")
        return timing

    def restore(self, ds: Dataset) -> tuple[Timing, Path]:
        return self.timed([self.cmd("checkout", f"{ds.name}@v1")]), self.data(ds)

    def restore_fresh(self, ds: Dataset) -> tuple[Timing, Path]:
        """A fresh clone reads the first workspace's store as a store outside the repo."""
        fresh = self.clone()
        env = {"DATAVC_STORE": str(self.store())}
        timing = self.timed([self.cmd("checkout", f"{ds.name}@v1")], cwd=fresh, env=env)
        return timing, fresh / "data" / ds.payload

    def status(self) -> Timing:
        return self.timed([self.cmd("status")])

    def probe(self, ds: Dataset) -> dict[str, Any] | None:
        if ds.probe_file is None:
            return None
        python = self.exe[0]
        done = self.runner.must(
            [python, "-c", OPEN_PROBE, f"{ds.name}@v1", ds.probe_file], self.ws, self.env
        )
        result: dict[str, Any] = json.loads(done.out.strip().splitlines()[-1])
        expected = ds.fingerprints[0][ds.probe_file][1]
        if result["blake3"] != expected:
            raise StepFailed(f"datavc.open read wrong bytes for {ds.probe_file}")
        result["reads"] = result["store_reads"] + result["cache_reads"]
        return result


class Dvc(Tool):
    name = "dvc"

    def __init__(self, runner: Runner, exe: list[str], base: Path) -> None:
        super().__init__(runner, exe, base)
        self.env = {"DVC_NO_ANALYTICS": "1", "DVC_SITE_CACHE_DIR": str(base / "site-cache")}

    def store(self) -> Path:
        return self.base / "remote"

    def setup(self) -> None:
        super().setup()
        self.timed(
            [
                self.cmd("init", "-q"),
                self.cmd("remote", "add", "-d", "local", str(self.store())),
            ]
        )
        self.store().mkdir()
        self.timed([["git", "add", "-A"], ["git", "commit", "-q", "-m", "dvc init"]])

    def save(self, ds: Dataset, version: int) -> Timing:
        timing = self.timed([self.cmd("add", "-q", f"data/{ds.payload}"), self.cmd("push", "-q")])
        self.git_commit(f"data v{version}")
        return timing

    def restore(self, ds: Dataset) -> tuple[Timing, Path]:
        return self.timed([self.cmd("checkout", "-q")]), self.data(ds)

    def restore_fresh(self, ds: Dataset) -> tuple[Timing, Path]:
        fresh = self.clone()
        return self.timed([self.cmd("pull", "-q")], cwd=fresh), fresh / "data" / ds.payload

    def status(self) -> Timing:
        return self.timed([self.cmd("status", "-q")])


class Restic(Tool):
    name = "restic"
    uses_git = False
    restores_in_place = False

    def __init__(self, runner: Runner, exe: list[str], base: Path) -> None:
        super().__init__(runner, exe, base)
        self.env = {
            "RESTIC_REPOSITORY": str(self.store()),
            "RESTIC_PASSWORD": "datavc-bench",
            "RESTIC_CACHE_DIR": str(base / "cache"),
        }

    def store(self) -> Path:
        return self.base / "repo"

    def setup(self) -> None:
        super().setup()
        self.timed([self.cmd("init", "-q")])

    def save(self, ds: Dataset, version: int) -> Timing:
        return self.timed([self.cmd("backup", "-q", "--host", "bench", f"data/{ds.payload}")])

    def _restore_into(self, target: Path, env: dict[str, str] | None = None) -> Timing:
        return self.timed([self.cmd("restore", "latest", "--target", str(target))], env=env)

    def restore(self, ds: Dataset) -> tuple[Timing, Path]:
        target = self.base / "restored"
        return self._restore_into(target), target / "data" / ds.payload

    def restore_fresh(self, ds: Dataset) -> tuple[Timing, Path]:
        target = self.base / "restored-fresh"
        timing = self._restore_into(target, {"RESTIC_CACHE_DIR": str(self.base / "cache-fresh")})
        return timing, target / "data" / ds.payload


TOOLS: dict[str, type[Tool]] = {"datavc": Datavc, "dvc": Dvc, "restic": Restic}


# -- figures ---------------------------------------------------------------------------------


@dataclass(slots=True)
class Figures:
    """Every raw figure: dataset -> tool -> metric -> one value per repetition."""

    values: dict[str, dict[str, dict[str, list[float]]]] = field(default_factory=dict)
    errors: list[dict[str, Any]] = field(default_factory=list)
    notes: list[dict[str, Any]] = field(default_factory=list)

    def add(self, ds: str, tool: str, metric: str, value: float) -> None:
        self.values.setdefault(ds, {}).setdefault(tool, {}).setdefault(metric, []).append(value)

    def median(self, ds: str, tool: str, metric: str) -> float | None:
        got = self.values.get(ds, {}).get(tool, {}).get(metric)
        return statistics.median(got) if got else None

    def medians(self) -> dict[str, dict[str, dict[str, float]]]:
        return {
            ds: {t: {m: statistics.median(v) for m, v in ms.items()} for t, ms in tools.items()}
            for ds, tools in self.values.items()
        }

    def error(self, ds: str, tool: str, rep: int, step: str, message: str) -> None:
        self.errors.append(
            {"dataset": ds, "tool": tool, "rep": rep, "step": step, "error": message}
        )
        log(f"  ! {ds} {tool} {step}: {message}")


class Session:
    """One tool on one dataset in one repetition: runs the steps and records the figures."""

    def __init__(self, tool: Tool, ds: Dataset, figs: Figures, rep: int) -> None:
        self.tool, self.ds, self.figs, self.rep = tool, ds, figs, rep

    def record(self, metric: str, value: float) -> None:
        self.figs.add(self.ds.name, self.tool.name, metric, value)

    def record_timing(self, op: str, timing: Timing) -> None:
        self.record(f"{op}_s", timing.seconds)
        self.record(f"{op}_rss_kib", timing.rss_kib)
        log(
            f"  {self.ds.name:6} {self.tool.name:7} {op:12} {timing.seconds:8.2f} s  "
            f"{timing.rss_kib / 1024:6.0f} MiB"
        )

    def attempt(self, step: str, fn: Callable[[], None]) -> bool:
        try:
            fn()
        except (StepFailed, OSError, subprocess.SubprocessError, ValueError, KeyError) as e:
            self.figs.error(self.ds.name, self.tool.name, self.rep, step, str(e))
            return False
        return True

    def run(self) -> None:
        tool, ds = self.tool, self.ds
        if not self.attempt("setup", tool.setup) or not self.attempt("save v1", self.save_v1):
            return
        self.attempt("open", self.probe)
        self.attempt("status", self.status)
        for op, in_memory in (("restore", True), ("restore_cold", False)):
            if tool.restores_in_place:
                _remove(tool.data(ds))

            def checkout(op: str = op, in_memory: bool = in_memory) -> None:
                self.restore(op, tool.restore, in_memory)

            if not self.attempt(op, checkout) and not self.attempt(
                "reinstall", lambda: ds.install(0, tool.data(ds))
            ):
                return
        self.attempt("restore fresh", lambda: self.restore("fresh", tool.restore_fresh, False))
        for version in range(2, len(ds.versions) + 1):
            if not self.attempt(f"save v{version}", lambda v=version: self.save_next(v)):
                return

    def save_v1(self) -> None:
        before = tree_stats(self.tool.store())  # what init wrote (a config, keys)
        self.ds.install(0, self.tool.data(self.ds))
        page_cache(self.tool.data(self.ds), True)
        os.sync()
        self.record_timing("save_v1", self.tool.save(self.ds, 1))
        after = self.record_store(1)
        self.record("new_objects_v1", after[0] - before[0])

    def save_next(self, version: int) -> None:
        before = tree_stats(self.tool.store())
        self.ds.install(version - 1, self.tool.data(self.ds))
        # an edit is made in place, in a file a checkout "on disk" dropped from memory: add
        # reads its input from memory, as right after writing it
        page_cache(self.tool.data(self.ds), True)
        os.sync()
        self.record_timing(f"save_v{version}", self.tool.save(self.ds, version))
        after = self.record_store(version)
        self.record(f"new_objects_v{version}", after[0] - before[0])
        self.record(f"new_bytes_v{version}", after[1] - before[1])

    def record_store(self, version: int) -> tuple[int, int]:
        objects, nbytes = tree_stats(self.tool.store())
        self.record(f"objects_v{version}", objects)
        self.record(f"stored_v{version}", nbytes)
        return objects, nbytes

    def status(self) -> None:
        first = self.tool.status()
        if first is None:
            return
        self.record("status_first_s", first.seconds)
        second = self.tool.status()
        assert second is not None
        self.record_timing("status", second)
        self.figs.notes.append(
            {
                "dataset": self.ds.name,
                "tool": self.tool.name,
                "status_output": second.output.strip()[-300:],
            }
        )

    def probe(self) -> None:
        result = self.tool.probe(self.ds)
        if result is None:
            return
        self.record("open_s", result["seconds"])
        self.record("open_reads", result["reads"])
        self.record("open_lists", result["lists"])
        self.figs.notes.append(
            {"dataset": self.ds.name, "tool": self.tool.name, "open_keys": result["keys"]}
        )
        log(
            f"  {self.ds.name:6} {self.tool.name:7} {'open+read':12} {result['seconds']:8.3f} s  "
            f"{result['reads']} reads"
        )

    def restore(
        self, op: str, fn: Callable[[Dataset], tuple[Timing, Path]], in_memory: bool
    ) -> None:
        page_cache(self.tool.base, in_memory)  # the store, caches and all (data: deleted)
        os.sync()
        timing, where = fn(self.ds)
        self.record_timing(op, timing)
        if fingerprint(where) != self.ds.fingerprints[0]:
            raise StepFailed(f"{op}: {where} does not match v1 byte for byte")
        if where != self.tool.data(self.ds):
            _remove(where)


def bench_floors(ds: Dataset, runner: Runner, work: Path, figs: Figures) -> None:
    """``cp -r`` of v1 into an empty folder (v1 in the page cache, then not), and
    read+BLAKE3 of its bytes on one thread."""
    dest = work / "cp" / ds.payload
    for metric, in_memory in (("copy_s", True), ("copy_cold_s", False)):
        _remove(dest.parent)
        dest.parent.mkdir(parents=True)
        page_cache(ds.versions[0], in_memory)
        os.sync()
        done = runner.run(["cp", "-r", str(ds.versions[0]), str(dest)], work)
        if done.ok:
            figs.add(ds.name, "cp", metric, done.seconds)
            log(f"  {ds.name:6} {'cp -r':7} {metric[:-2]:12} {done.seconds:8.2f} s")
        else:
            figs.error(ds.name, "cp", 0, metric[:-2], done.failure())
    _remove(dest.parent)
    page_cache(ds.versions[0], True)  # read from memory, as add reads its input
    seconds = hash_floor(ds.versions[0])
    figs.add(ds.name, "blake3", "hash_s", seconds)
    log(f"  {ds.name:6} {'blake3':7} {'read+hash':12} {seconds:8.2f} s")


def page_cache(path: Path, in_memory: bool) -> None:
    """Read every file under ``path`` into the page cache, or drop them from it: write
    them back (``sync``), then ``posix_fadvise(DONTNEED)``, which drops a file's clean
    cached pages. Checkouts and ``cp -r`` are timed both ways, each tool's store and the
    copied folder in the same state."""
    if not in_memory:
        os.sync()
    for f in iter_files(path):
        try:
            with open(f, "rb", buffering=0) as fh:
                if in_memory:
                    while fh.read(8 * MiB):
                        pass
                else:
                    os.posix_fadvise(fh.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        except OSError:  # a lock or socket file, or gone meanwhile
            continue


def hash_floor(path: Path) -> float:
    """Seconds to read every file and BLAKE3 it, single-threaded, in this process."""
    buf = bytearray(MiB)
    view = memoryview(buf)
    start = time.perf_counter()
    for f in iter_files(path):
        h = blake3()
        with open(f, "rb", buffering=0) as fh:
            while n := fh.readinto(buf):
                h.update(view[:n])
        h.digest()
    return time.perf_counter() - start


# -- report ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Column:
    tool: str
    title: str


COLUMNS = [
    Column("datavc", "datavc"),
    Column("cp", "cp -r"),
    Column("blake3", "read+BLAKE3"),
    Column("dvc", "DVC"),
    Column("restic", "restic"),
]


@dataclass(frozen=True, slots=True)
class Row:
    """A table row: the datavc metric, its unit, and the metric each baseline is compared on."""

    label: str
    metric: str
    unit: str  # "s", "rate" (seconds with MB/s), "bytes", "count", "rss"
    peers: dict[str, str]
    version: int = 0  # whose size a rate is computed from


def _rows(ds: Dataset) -> list[Row]:
    both = {"dvc": "", "restic": ""}
    save = {"blake3": "hash_s", **both}
    rows = [
        Row("add + commit v1", "save_v1_s", "rate", save),
        Row("peak RSS, add + commit v1", "save_v1_rss_kib", "rss", both),
        Row("objects in the store after v1", "objects_v1", "count", both),
        Row("objects written by v1 (not by init)", "new_objects_v1", "count", both),
        Row("bytes stored after v1", "stored_v1", "bytes", both),
    ]
    for v in range(2, len(ds.versions) + 1):
        rows += [
            Row(f"add + commit v{v}", f"save_v{v}_s", "rate", both, v - 1),
            Row(f"new bytes stored, v{v}", f"new_bytes_v{v}", "bytes", both),
            Row(f"new objects, v{v}", f"new_objects_v{v}", "count", both),
        ]
    rows += [
        Row(
            "checkout v1 into an empty folder, store in memory",
            "restore_s",
            "rate",
            {"cp": "copy_s", **both},
        ),
        Row("peak RSS, checkout", "restore_rss_kib", "rss", both),
        Row(
            "checkout v1 into an empty folder, store on disk",
            "restore_cold_s",
            "rate",
            {"cp": "copy_cold_s", **both},
        ),
        Row(
            "checkout v1, empty cache (fresh clone), store on disk",
            "fresh_s",
            "rate",
            {"cp": "copy_cold_s", **both},
        ),
        Row("peak RSS, fresh checkout", "fresh_rss_kib", "rss", both),
        Row("status, nothing changed", "status_s", "s", {"dvc": ""}),
        Row("`datavc.open` + read one 64 KB file", "open_s", "s", {}),
        Row("store reads for that", "open_reads", "count", {}),
        Row("store listings for that", "open_lists", "count", {}),
    ]
    return rows


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


def _cell(figs: Figures, ds: Dataset, row: Row, col: Column) -> float | None:
    if col.tool == "datavc":
        return figs.median(ds.name, "datavc", row.metric)
    if col.tool not in row.peers:
        return None
    return figs.median(ds.name, col.tool, row.peers[col.tool] or row.metric)


def _ratios(ours: float | None, others: list[tuple[str, float | None]]) -> str:
    parts = [
        f"{title} {ours / theirs:.2g}" for title, theirs in others if ours is not None and theirs
    ]
    return ", ".join(parts) or "-"


def dataset_table(figs: Figures, ds: Dataset) -> list[str]:
    lines = [
        f"| operation | {' | '.join(c.title for c in COLUMNS)} | datavc / baseline |",
        "|---" * (len(COLUMNS) + 2) + "|",
    ]
    for row in _rows(ds):
        values = [_cell(figs, ds, row, c) for c in COLUMNS]
        if all(v is None for v in values):
            continue
        size = ds.sizes[row.version]
        cells = [fmt_value(v, row.unit, size) for v in values]
        ratio = _ratios(
            values[0], [(c.title, v) for c, v in zip(COLUMNS[1:], values[1:], strict=True)]
        )
        lines.append(f"| {row.label} | {' | '.join(cells)} | {ratio} |")
    return lines


def open_keys(figs: Figures, ds: Dataset) -> list[str]:
    """The objects `datavc.open` + one read fetched, from the last repetition."""
    keys = [n["open_keys"] for n in figs.notes if n["dataset"] == ds.name and "open_keys" in n]
    if not keys:
        return []
    shown = ", ".join(f"`{k[:20]}...`" if len(k) > 20 else f"`{k}`" for k in keys[-1])
    return ["", f"`datavc.open` + one read fetched: {shown}."]


@dataclass(frozen=True, slots=True)
class Target:
    operation: str
    figure: str
    target: str
    holds: bool | None


class TargetCheck:
    """The issue's targets, evaluated on the medians of this run."""

    def __init__(self, figs: Figures, datasets: dict[str, Dataset], missing: dict[str, str]):
        self.figs, self.datasets, self.missing = figs, datasets, missing

    def m(self, ds: str, tool: str, metric: str) -> float | None:
        return self.figs.median(ds, tool, metric)

    def faster(
        self, op: str, ds: str, metric: str, peer: str, peer_metric: str, factor: float, target: str
    ) -> Target:
        """datavc's time times ``factor`` must be at most the peer's (factor 1: no slower)."""
        ours, theirs = self.m(ds, "datavc", metric), self.m(ds, peer, peer_metric)
        if ours is None or theirs is None:
            return Target(op, self.why_missing(ds, peer), target, None)
        speed = (
            f"{theirs / ours:.2f}{X} faster" if ours <= theirs else f"{ours / theirs:.2f}{X} slower"
        )
        name = {"cp": "cp -r", "dvc": "DVC", "restic": "restic"}.get(peer, peer)
        figure = f"datavc {fmt_seconds(ours)}, {name} {fmt_seconds(theirs)}: {speed}"
        return Target(op, figure, target, ours * factor <= theirs)

    def within(self, op: str, ds: str, metric: str, limit: float, unit: str, target: str) -> Target:
        ours = self.m(ds, "datavc", metric)
        if ours is None:
            return Target(op, self.why_missing(ds, "datavc"), target, None)
        size = self.datasets[ds].sizes[0] if ds in self.datasets else 0
        return Target(op, fmt_value(ours, unit, size), target, ours <= limit)

    def rate(self, op: str, ds: str, limit_gbs: float) -> Target:
        ours = self.m(ds, "datavc", "save_v1_s")
        if ours is None or ds not in self.datasets:
            return Target(op, self.why_missing(ds, "datavc"), f"\u2265 {limit_gbs} GB/s", None)
        gbs = self.datasets[ds].sizes[0] / ours / 1e9
        return Target(
            op,
            f"{gbs:.2f} GB/s ({fmt_seconds(ours)})",
            f"\u2265 {limit_gbs} GB/s",
            gbs >= limit_gbs,
        )

    def new_bytes(self, ds: str, version: int) -> Target:
        op = f"new bytes stored, {ds} v{version}"
        target = "\u2264 4% of the file, no more than restic"
        ours = self.m(ds, "datavc", f"new_bytes_v{version}")
        if ours is None or ds not in self.datasets:
            return Target(op, self.why_missing(ds, "datavc"), target, None)
        share = ours / self.datasets[ds].sizes[version - 1]
        restic = self.m(ds, "restic", f"new_bytes_v{version}")
        figure = f"{fmt_bytes(ours)} ({share:.1%} of the file)"
        holds = share <= 0.04
        if restic is not None:
            figure += f"; restic {fmt_bytes(restic)}"
            holds = holds and ours <= restic
        else:
            figure += f"; restic: {self.why_missing(ds, 'restic')}"
        return Target(op, figure, target, holds)

    def rss_growth(self) -> Target:
        op = "peak RSS not growing with file size (tensor vs table)"
        metric = "save_v1_rss_kib"
        tensor, table = self.m("tensor", "datavc", metric), self.m("table", "datavc", metric)
        if tensor is None or table is None:
            return Target(op, "needs the table and tensor datasets", "flat", None)
        ratio = self.datasets["tensor"].sizes[0] / self.datasets["table"].sizes[0]
        figure = (
            f"add: tensor {tensor / 1024:.0f} MiB vs table {table / 1024:.0f} MiB "
            f"({ratio:.1f}{X} the bytes)"
        )
        return Target(
            op, figure, f"tensor \u2264 1.25{X} table + 32 MiB", tensor <= 1.25 * table + 32 * 1024
        )

    def why_missing(self, ds: str, tool: str) -> str:
        if tool in self.missing:
            return f"not measured ({self.missing[tool]})"
        if ds not in self.datasets:
            return f"not measured ({ds} not in this run)"
        return "not measured (failed: see Failures)"

    def all(self) -> list[Target]:
        le, ge = "\u2264", "\u2265"
        t = [
            self.faster(
                "add+commit images vs DVC add+push",
                "images",
                "save_v1_s",
                "dvc",
                "save_v1_s",
                4,
                f"{ge} 4{X} faster",
            ),
            self.faster(
                "add+commit images vs restic backup",
                "images",
                "save_v1_s",
                "restic",
                "save_v1_s",
                1,
                "no slower",
            ),
            self.rate("add+commit table", "table", 0.4),
            self.faster(
                "add+commit table vs DVC",
                "table",
                "save_v1_s",
                "dvc",
                "save_v1_s",
                3,
                f"{ge} 3{X} faster",
            ),
            self.rate("add+commit tensor", "tensor", 0.4),
            self.faster(
                "add+commit tensor vs DVC",
                "tensor",
                "save_v1_s",
                "dvc",
                "save_v1_s",
                3,
                f"{ge} 3{X} faster",
            ),
            self.within(
                "objects written, images v1", "images", "new_objects_v1", 20, "count", f"{le} 20"
            ),
            self.within(
                "new bytes stored, tensor v2 (1 MiB edit)",
                "tensor",
                "new_bytes_v2",
                2 * MiB,
                "bytes",
                f"{le} 2 MiB (2.1 MB)",
            ),
            self.new_bytes("table", 2),
            self.new_bytes("table", 3),
        ]
        for ds in ("images", "table", "tensor"):
            for where, metric, floor in (
                ("in memory", "restore_s", "copy_s"),
                ("on disk", "restore_cold_s", "copy_cold_s"),
            ):
                t.append(
                    self.faster(
                        f"checkout {ds}, local store {where}",
                        ds,
                        metric,
                        "cp",
                        floor,
                        0.5,
                        f"{le} 2{X} cp -r (v1 {where})",
                    )
                )
        t += [
            self.faster(
                "checkout images, empty cache",
                "images",
                "fresh_s",
                "restic",
                "fresh_s",
                1,
                "no slower than restic restore",
            )
        ]
        for ds in ("table", "tensor"):
            t.append(
                self.faster(
                    f"checkout {ds}, empty cache",
                    ds,
                    "fresh_s",
                    "cp",
                    "copy_cold_s",
                    1 / 3,
                    f"{le} 3{X} cp -r (v1 on disk)",
                )
            )
        t += [
            self.within(
                "status images, nothing changed", "images", "status_s", 0.3, "s", f"{le} 0.3 s"
            ),
            self.faster(
                "status images vs dvc status",
                "images",
                "status_s",
                "dvc",
                "status_s",
                6,
                f"{ge} 6{X} faster",
            ),
            self.within(
                "datavc.open + read 64 KB: store reads",
                "images",
                "open_reads",
                3,
                "count",
                f"{le} 3",
            ),
            self.within(
                "datavc.open + read 64 KB: seconds after import",
                "images",
                "open_s",
                0.2,
                "s",
                f"{le} 0.2 s",
            ),
        ]
        for op, metric in (
            ("add + commit", "save_v1_rss_kib"),
            ("checkout", "restore_rss_kib"),
            ("checkout, empty cache", "fresh_rss_kib"),
        ):
            t.append(
                self.within(
                    f"peak RSS, tensor {op}", "tensor", metric, 300 * 1024, "rss", f"{le} 300 MiB"
                )
            )
        t.append(self.rss_growth())
        return t


def targets_table(targets: list[Target]) -> list[str]:
    lines = ["| operation | measured (median) | target | holds |", "|---|---|---|---|"]
    for t in targets:
        holds = "n/a" if t.holds is None else "yes" if t.holds else "**no**"
        lines.append(f"| {t.operation} | {t.figure} | {t.target} | {holds} |")
    return lines


def machine_facts(python: str, peers: dict[str, list[str]]) -> dict[str, str]:
    facts = {
        "cpu": _cpu_model(),
        "nproc": str(len(os.sched_getaffinity(0))),
        "memory": f"{_mem_total_kib() / 1024 / 1024:.1f} GiB",
        "os": f"{platform.system()} {platform.release()}",
        "python": _first_line([python, "-c", "import sys; print(sys.version.split()[0])"]),
        "datavc": _datavc_version(python),
    }
    for name, exe in peers.items():
        facts[name] = _first_line([*exe, "version" if name == "restic" else "--version"])
    return facts


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_total_kib() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _first_line(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.SubprocessError) as e:
        return f"unknown ({e})"
    lines = (out.stdout or out.stderr).strip().splitlines()
    return lines[0] if lines else "unknown"


def _datavc_version(python: str) -> str:
    version = _first_line(
        [python, "-c", "import importlib.metadata as m; print(m.version('datavc'))"]
    )
    rev = _first_line(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    dirty = _first_line(["git", "-C", str(ROOT), "status", "--porcelain", "--", "datavc"])
    suffix = " + uncommitted changes" if dirty not in ("", "unknown") else ""
    return f"{version} (git {rev}{suffix})"


def method_notes(opts: Options, missing: dict[str, str]) -> list[str]:
    notes = [
        f"- Medians of {opts.reps} repetition(s) for datavc and the floors, "
        f"{min(opts.reps, opts.peer_reps)} for DVC and restic; every repetition starts from a "
        "fresh repo and store for every tool; `sync` runs before each timed step so earlier "
        "writes are on disk.",
        "- Page cache: add reads its input from memory (it was just written). Checkout is "
        "timed with the store in memory (every file of the tool's folder read first) and on "
        "disk (written back, then dropped from the page cache with "
        "`posix_fadvise(DONTNEED)`), and compared with `cp -r` of v1 in the same state; a "
        "fresh clone's checkout is timed with the store on disk. datavc writes packs with "
        "`O_DIRECT`, so right after add its store is on disk while DVC's cache is in memory: "
        "the two states make the comparison like for like.",
        "- datavc runs through its CLI (`python -m datavc`) in a git repo with the embedded "
        "store `.datavc/store`; add + commit is the sum of both commands. Checkout: the data "
        "folder is deleted, then `datavc checkout NAME@v1`. Empty cache: a fresh `git clone` "
        "of the workspace reading the first workspace's store through `DATAVC_STORE` (a store "
        "outside the clone; a local store has no cache in front).",
        "- DVC: add + push to a local remote folder (`dvc remote add -d`); checkout after the "
        "data was deleted; empty cache: `dvc pull` in a fresh `git clone`. restic: `backup`; "
        "checkout: `restore` into an empty folder; empty cache: the same with an empty "
        "`RESTIC_CACHE_DIR`.",
        "- `cp -r` copies v1 into an empty folder (the floor for checkout, v1 in memory and on "
        "disk); read+BLAKE3 reads "
        "and hashes the same bytes on one thread in one process (the floor for add).",
        "- Objects and bytes: files under the store (datavc: `.datavc/store`; DVC: the "
        "remote; restic: the repository). New bytes: the store's growth for that version.",
        "- Status: the second of two runs with nothing changed (the first one may hash files "
        "written within the racy-timestamp window). Peak RSS: `ru_maxrss` of each command "
        "from `os.wait4`, the largest of an operation's commands.",
        "- Ratio column: datavc / baseline on the same row (below 1 is better for datavc).",
        "- datavc's modules are compiled to bytecode first (`compileall`), as `pip install` "
        "does; DVC's are, by its `pip install`.",
    ]
    notes += [f"- **{name} was not measured**: {why}." for name, why in missing.items()]
    return notes


def write_report(
    opts: Options,
    datasets: dict[str, Dataset],
    figs: Figures,
    facts: dict[str, str],
    missing: dict[str, str],
    elapsed: float,
    profile: str | None,
    scale_doc: dict[str, Any] | None = None,
) -> None:
    targets = TargetCheck(figs, datasets, missing).all()
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"# datavc benchmarks{' (quick)' if opts.quick else ''}",
        "",
        f"Generated by `{opts.command}` on {date} ({elapsed / 60:.1f} minutes, "
        f"medians of {opts.reps} repetition(s)). Regenerate with "
        f"`make {'bench-quick' if opts.quick else 'bench'}` (peers: `make bench-peers`).",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v} |" for k, v in facts.items()]
    lines += ["", "## Datasets", ""]
    for ds in datasets.values():
        sizes = ", ".join(f"v{i + 1} {fmt_bytes(s)}" for i, s in enumerate(ds.sizes))
        lines.append(f"- **{ds.name}**: {ds.files:,} file(s); {sizes}.")
    lines += [
        "",
        "## Method",
        "",
        *method_notes(opts, missing),
        "",
        "## Targets (issue 3)",
        "",
        *targets_table(targets),
    ]
    for ds in datasets.values():
        lines += ["", f"## {ds.name}", "", *dataset_table(figs, ds), *open_keys(figs, ds)]
    if scale_doc:
        lines += ["", *scale_section(scale_doc)]
    lines += [
        "",
        "Legend: DVC add = `dvc add` + `dvc push`; DVC empty cache = `dvc pull` in "
        "a fresh clone; restic add = `backup`; restic checkout = `restore` (warm cache, "
        "then an empty cache); cp -r and read+BLAKE3 are measured on v1.",
    ]
    if figs.errors:
        lines += [
            "",
            "## Failures",
            "",
            "| dataset | tool | rep | step | error |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {e['dataset']} | {e['tool']} | {e['rep']} | {e['step']} | "
            f"{e['error'].replace('|', '/')} |"
            for e in figs.errors
        ]
    if profile:
        lines += [
            "",
            "## Profile: datavc add of images v1 (pyinstrument)",
            "",
            "```",
            profile,
            "```",
        ]
    stem = "BENCHMARKS-quick" if opts.quick else "BENCHMARKS"
    opts.out_dir.mkdir(parents=True, exist_ok=True)
    (opts.out_dir / f"{stem}.md").write_text("\n".join(lines) + "\n")
    doc = {
        "command": opts.command,
        "date": date,
        "quick": opts.quick,
        "reps": opts.reps,
        "peer_reps": min(opts.reps, opts.peer_reps),
        "elapsed_s": elapsed,
        "machine": facts,
        "missing_peers": missing,
        "datasets": {
            n: {"files": d.files, "bytes": d.sizes, "probe_file": d.probe_file}
            for n, d in datasets.items()
        },
        "figures": figs.values,
        "medians": figs.medians(),
        "errors": figs.errors,
        "notes": figs.notes,
        "targets": [asdict(t) for t in targets],
        "profile": profile,
        "scale": scale_doc,
    }
    (opts.out_dir / f"{stem}.json").write_text(json.dumps(doc, indent=1) + "\n")
    log(f"wrote {opts.out_dir / stem}.md and .json")


def scale_section(doc: dict[str, Any]) -> list[str]:
    """The scale check (scripts/scale.py): each step's time and peak RSS, and the target."""
    gib = 1024.0
    peak = float(doc["peak_rss_mib"])
    holds = peak < gib and doc["open_reads"] <= 3
    lines = [
        f"## Scale: {doc['files']:,} tiny files (scripts/scale.py)",
        "",
        f"Target (issue 3): committed, listed, diffed against its parent and opened for one "
        f"file, peak memory under 1 GiB, a bounded number of metadata reads to open one "
        f"file. Peak RSS of any step: {peak:.0f} MiB; opening one file: {doc['open_reads']} "
        f"store reads. Holds: **{'yes' if holds else 'no'}**. Store objects after v2: "
        f"{doc['store_objects']}.",
        "",
        "| step | seconds | peak RSS | detail |",
        "|---|---|---|---|",
    ]
    for st in doc["steps"]:
        lines.append(
            f"| {st['name']} | {st['seconds']:.2f} | {st['peak_rss_mib']:.0f} MiB | "
            f"{st['detail']} |"
        )
    return lines


def run_scale(opts: Options) -> dict[str, Any] | None:
    if opts.scale_files <= 0:
        return None
    out = opts.workdir / "scale.json"
    cmd = [opts.python, str(ROOT / "scripts" / "scale.py"), "--files", str(opts.scale_files)]
    log(f"scale check: {' '.join(cmd[1:])}")
    proc = subprocess.run(
        [*cmd, "--json", str(out), "--workdir", str(opts.workdir)], capture_output=True
    )
    sys.stderr.write(proc.stdout.decode())
    if proc.returncode != 0:
        log(f"scale check failed: {proc.stderr.decode()[-1000:]}")
        return None
    doc: dict[str, Any] = json.loads(out.read_text())
    return doc


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
        command=shlex.join(["python", os.path.relpath(__file__, Path.cwd()), *argv]),
        scale_files=a.scale_files if a.scale_files is not None else (20_000 if a.quick else 10**6),
    )


def _split(text: str, known: dict[str, Any]) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"unknown: {', '.join(unknown)} (known: {', '.join(known)})")
    return names


def find_peers(opts: Options) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Executables of the peers that were asked for, and why the others are missing."""
    found: dict[str, list[str]] = {}
    missing: dict[str, str] = {}
    candidates = {
        "dvc": [opts.dvc] if opts.dvc else [str(PEER_DVC), shutil.which("dvc")],
        "restic": [opts.restic] if opts.restic else [shutil.which("restic")],
    }
    for name, paths in candidates.items():
        if name not in opts.tools:
            missing[name] = "not selected with --tools"
            continue
        usable = [p for p in paths if p and os.access(p, os.X_OK)]
        if usable:
            found[name] = [usable[0]]
        else:
            missing[name] = "not installed (run `make bench-peers`)"
    return found, missing


def profile_add(ds: Dataset, opts: Options, runner: Runner) -> str | None:
    """pyinstrument's text profile of ``datavc add`` on v1 of ``ds``, or None."""
    check = runner.run([opts.python, "-c", "import pyinstrument"], opts.workdir)
    if not check.ok:
        log("profile skipped: pyinstrument is not installed for the datavc interpreter")
        return None
    tool = Datavc(runner, [opts.python, "-m", "datavc"], opts.workdir / "profile")
    out = opts.workdir / "profile.txt"
    try:
        tool.setup()
        ds.install(0, tool.data(ds))
        os.sync()
        tool.timed(
            [
                [
                    opts.python,
                    "-m",
                    "pyinstrument",
                    "--no-color",
                    "-r",
                    "text",
                    "-o",
                    str(out),
                    "-m",
                    "datavc",
                    "add",
                    f"data/{ds.payload}",
                ]
            ]
        )
    except StepFailed as e:
        log(f"profile failed: {e}")
        return None
    finally:
        _remove(tool.base)
    return "\n".join(out.read_text().splitlines()[:80])


def run_all(opts: Options) -> None:
    start = time.perf_counter()
    env = {**os.environ, **GIT_ENV, "LC_ALL": "C.UTF-8"}
    opts.workdir.mkdir(parents=True, exist_ok=True)
    runner = Runner(opts.timeout, env, opts.workdir)
    peers, missing = find_peers(opts)
    exes = {"datavc": [opts.python, "-m", "datavc"], **peers}
    scale = QUICK if opts.quick else FULL
    log(
        f"workdir {opts.workdir}; {opts.reps} rep(s); tools {', '.join(exes)}; "
        f"missing {missing or 'none'}"
    )
    compile_bytecode(opts.python)
    datasets = {n: generate(n, opts.workdir / "src", scale) for n in opts.datasets}
    figs = Figures()
    for rep in range(1, opts.reps + 1):
        log(f"repetition {rep}/{opts.reps}")
        for ds in datasets.values():
            bench_floors(ds, runner, opts.workdir, figs)
            for name in (t for t in opts.tools if t in exes):
                if name != "datavc" and rep > opts.peer_reps:
                    continue
                base = opts.workdir / f"rep{rep}" / ds.name / name
                Session(TOOLS[name](runner, exes[name], base), ds, figs, rep).run()
                if not opts.keep:
                    _remove(base)
    profile = None
    if opts.profile and "images" in datasets:
        profile = profile_add(datasets["images"], opts, runner)
    scale_doc = run_scale(opts)
    facts = machine_facts(opts.python, peers)
    elapsed = time.perf_counter() - start
    write_report(opts, datasets, figs, facts, missing, elapsed, profile, scale_doc)


def compile_bytecode(python: str) -> None:
    """Compile datavc's modules to bytecode, as pip does when it installs a package: with an
    editable install and PYTHONDONTWRITEBYTECODE set (as on this machine), every command
    would otherwise compile them again (about 30 ms a command)."""
    where = "import datavc, os; print(os.path.dirname(datavc.__file__))"
    folder = _first_line([python, "-c", where])
    subprocess.run([python, "-m", "compileall", "-q", folder], check=True)


def main(argv: list[str] | None = None) -> None:
    opts = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        run_all(opts)
    finally:
        if opts.keep:
            log(f"kept {opts.workdir}")
        else:
            shutil.rmtree(opts.workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
