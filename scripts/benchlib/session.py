"""One dataset's measurements: every tool's steps, the floors (cp -r, read+BLAKE3), and
the figures they give."""

from __future__ import annotations

import os
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from blake3 import blake3

from .common import MiB, log, remove
from .datasets import Dataset, fingerprint, iter_files
from .runner import Runner, StepFailed, Timing
from .tools import Tool, tree_stats

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
                remove(tool.data(ds))

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
            remove(where)


def bench_floors(ds: Dataset, runner: Runner, work: Path, figs: Figures) -> None:
    """``cp -r`` of v1 into an empty folder (v1 in the page cache, then not), and
    read+BLAKE3 of its bytes on one thread."""
    dest = work / "cp" / ds.payload
    for metric, in_memory in (("copy_s", True), ("copy_cold_s", False)):
        remove(dest.parent)
        dest.parent.mkdir(parents=True)
        page_cache(ds.versions[0], in_memory)
        os.sync()
        done = runner.run(["cp", "-r", str(ds.versions[0]), str(dest)], work)
        if done.ok:
            figs.add(ds.name, "cp", metric, done.seconds)
            log(f"  {ds.name:6} {'cp -r':7} {metric[:-2]:12} {done.seconds:8.2f} s")
        else:
            figs.error(ds.name, "cp", 0, metric[:-2], done.failure())
    remove(dest.parent)
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
