#!/usr/bin/env python3
"""Scale check: a snapshot of many tiny files (default 1,000,000) is committed, listed,
diffed against its parent, opened for one file, checked out (over the other version, and
into an empty folder) and checked by fsck, each step in its own process, with its wall
time, peak memory (RSS), time to its first byte of output and seconds per 1,000 files.

    python scripts/scale.py [--files N] [--json OUT] [--workdir DIR] [--fs-image IMG] [--no-git]
                            [--no-checkouts] [--keep]

Exits non-zero if a step fails or gives a wrong answer. ``scripts/bench.py`` runs it and
puts the figures in docs/BENCHMARKS.md; it also runs alone.

Each step's stdout goes through a pipe to the measuring wrapper, which notes when the first
bytes arrive (what ``datavc ls | head`` would see: a program that buffers its output is
measured when it first flushes), then counts the bytes and lines and keeps only the tail, so
nothing here holds a per-file list. ``datavc status`` is also timed warm, once untimed then
the median of 3, against ``git status --porcelain`` on the same tree: a second git repo
whose work tree is the dataset folder after the v2 edits, its commit written in one pack by
``git fast-import`` (no loose object per file) and its index refreshed before timing, also
once untimed then the median of 3. ``status_vs_git`` in the JSON is the ratio of the medians.

10,000,000 files. On ext4 with 4 KiB blocks each ~15-byte file costs a block, 40 GB for the
files alone, more than the machine this was written on has free. ``--fs-image IMG`` (root
only) builds everything in a new sparse image file, ``mkfs.ext4 -O inline_data -I 256
-N <files + 10%>``, loop-mounted with ``noinit_itable,discard``: a tiny file lives in its
256-byte inode, inode tables take disk only where written, freed blocks are given back to
the host, and the image is deleted afterwards. A 1,000,000-file run took 826 bytes of disk a
file, all included (files, store, stat cache, git baseline, journal). The image's
apparent size is IMAGE_BYTES_PER_FILE a file + 4 GiB and the run refuses to start unless
IMG's disk has that free, so a full image fails inside the image, never on the host:

    python scripts/scale.py --files 10000000 --fs-image /work/scale-10m.img --no-git --json s.json

Per-file costs (``s_per_1k_files``) and peak RSS in the JSON compare a 10M run with a 1M one
(``peak_rss_mib`` leaves out git's). A 1M run takes 5-10 minutes; a 10M run about ten times
that if every cost stays linear, more once the inodes no longer fit the page cache.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO

PER_FOLDER = 1000
EDITS = 100  # files modified, added and removed for v2
WARM_RUNS = 3  # timed runs after an untimed one; their median is reported
IMAGE_BYTES_PER_FILE = 2048  # apparent image size a file (a 1M-file run used 826; 1024 ran
# out at the end of a 10M add v1: the store and add's temporary files outgrew it)
TAIL_BYTES = 1 << 16  # the end of a step's output kept for its checks
GIT_STATUS = "git status (same tree, nothing changed)"  # the baseline's step, not datavc's

OPEN_PROBE = r"""
import json, sys, time
t0 = time.perf_counter()
import datavc
fs = datavc.open(sys.argv[1])
with fs.open(sys.argv[2], "rb") as f:
    data = f.read()
stats = fs.chunks.backend.stats
print(json.dumps({"seconds": time.perf_counter() - t0, "reads": stats.reads,
                  "lists": stats.lists, "keys": list(stats.read_keys), "data": data.decode()}))
"""

# Runs argv[1:] with stdout on a pipe; reports wall time, time to the first stdout bytes,
# peak RSS (wait4), output bytes and lines as JSON on stderr; writes the output's tail.
WRAPPER = r"""
import json, os, subprocess, sys, time
t0 = time.perf_counter()
p = subprocess.Popen(sys.argv[2:], stdout=subprocess.PIPE)
first, size, lines, tail, keep = None, 0, 0, b"", int(sys.argv[1])
while chunk := os.read(p.stdout.fileno(), 1 << 20):
    if first is None:
        first = time.perf_counter() - t0
    size, lines, tail = size + len(chunk), lines + chunk.count(b"\n"), (tail + chunk)[-keep:]
_, status, ru = os.wait4(p.pid, 0)
seconds = time.perf_counter() - t0
lines += bool(tail) and not tail.endswith(b"\n")
sys.stdout.buffer.write(tail)
sys.stderr.write(json.dumps({"rc": os.waitstatus_to_exitcode(status), "seconds": seconds,
    "maxrss_kib": ru.ru_maxrss, "first": first, "bytes": size, "lines": lines}) + "\n")
"""


@dataclass(frozen=True, slots=True)
class Run:
    """One measured process: its wall time, peak RSS, first output, and output's tail."""

    seconds: float
    peak_rss_mib: float
    first_output_s: float | None
    lines: int
    tail: str


@dataclass
class Step:
    name: str
    seconds: float
    peak_rss_mib: float
    first_output_s: float | None
    s_per_1k_files: float
    detail: str = ""


def content(i: int, version: int = 1) -> bytes:
    return f"file {i} v{version}\n".encode()


def rel(i: int) -> str:
    return f"{i // PER_FOLDER:04d}/{i % PER_FOLDER:04d}.txt"


def generate(root: Path, n: int) -> None:
    for i in range(n):
        if i % PER_FOLDER == 0:
            (root / f"{i // PER_FOLDER:04d}").mkdir(parents=True)
        fd = os.open(root / rel(i), os.O_WRONLY | os.O_CREAT, 0o644)
        os.write(fd, content(i))
        os.close(fd)


def edit_v2(ds: Path, n: int) -> None:
    """Modify, add and remove EDITS files each, spread over the folders."""
    stride = n // EDITS
    for k in range(EDITS):
        i = k * stride
        (ds / rel(i)).write_bytes(content(i, 2))
        (ds / rel(i + 1)).unlink()
        (ds / f"{i // PER_FOLDER:04d}" / f"new-{k}.txt").write_bytes(b"new %d\n" % k)


def measured(cmd: list[str], cwd: Path, env: dict[str, str]) -> Run:
    """Run ``cmd`` under WRAPPER, in its own process, and return what it measured."""
    proc = subprocess.run(
        [sys.executable, "-c", WRAPPER, str(TAIL_BYTES), *cmd],
        cwd=cwd,
        env=env,
        capture_output=True,
    )
    lines = proc.stderr.decode(errors="replace").strip().splitlines()
    report = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {}
    if proc.returncode != 0 or report.get("rc") != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {proc.stderr.decode()[-2000:]}")
    return Run(
        report["seconds"],
        report["maxrss_kib"] / 1024,
        report["first"],
        report["lines"],
        proc.stdout.decode(errors="replace"),
    )


class Session:
    """Runs and records the steps of one scale check on ``n`` files in ``cwd``."""

    def __init__(self, n: int, cwd: Path, env: dict[str, str]) -> None:
        self.n, self.cwd, self.env = n, cwd, env
        self.steps: list[Step] = []

    def record(self, name: str, run: Run, detail: str = "") -> Step:
        st = Step(
            name,
            run.seconds,
            run.peak_rss_mib,
            run.first_output_s,
            run.seconds * 1000 / self.n,
            detail,
        )
        self.steps.append(st)
        first = "-" if st.first_output_s is None else f"{st.first_output_s:.2f} s"
        print(
            f"{name:<42} {st.seconds:8.2f} s {st.peak_rss_mib:8.1f} MiB  first out {first:>8}"
            f"  {st.s_per_1k_files * 1000:7.2f} ms/1k files  {detail}",
            flush=True,
        )
        return st

    def step(self, name: str, cmd: list[str], detail: str = "") -> Run:
        run = measured(cmd, self.cwd, self.env)
        self.record(name, run, detail)
        return run

    def warm(self, name: str, cmd: list[str]) -> Run:
        """Run ``cmd`` once untimed, then WARM_RUNS times: median time, highest peak RSS."""
        measured(cmd, self.cwd, self.env)
        runs = [measured(cmd, self.cwd, self.env) for _ in range(WARM_RUNS)]
        firsts = [r.first_output_s for r in runs if r.first_output_s is not None]
        median = Run(
            statistics.median(r.seconds for r in runs),
            max(r.peak_rss_mib for r in runs),
            statistics.median(firsts) if len(firsts) == len(runs) else None,
            runs[-1].lines,
            runs[-1].tail,
        )
        spread = ", ".join(f"{r.seconds:.2f}" for r in runs)
        self.record(name, median, f"median of {WARM_RUNS} warm runs ({spread} s)")
        return median


def git_baseline(ds: Path, gitdir: Path, env: dict[str, str]) -> list[str]:
    """Commit ``ds`` to a repo of its own and refresh its index; return the git command
    prefix that works on it. The commit streams through fast-import: one pack, no loose
    objects, one folder listing in memory at a time."""
    subprocess.run(
        ["git", "init", "-q", "--bare", "--initial-branch=main", str(gitdir)], check=True, env=env
    )
    git = ["git", f"--git-dir={gitdir}", f"--work-tree={ds}"]
    read, write = os.pipe()
    imp = subprocess.Popen([*git, "fast-import", "--quiet"], stdin=read, env=env)
    os.close(read)
    # If fast-import stops early, writing fails: its exit status says so below.
    with suppress(BrokenPipeError), open(write, "wb", buffering=1 << 20) as out:
        write_commit(ds, out)
    if imp.wait() != 0:
        raise SystemExit("git fast-import failed building the git status baseline")
    subprocess.run([*git, "read-tree", "HEAD"], check=True, env=env)
    subprocess.run([*git, "update-index", "-q", "--refresh"], check=True, env=env)
    return git


def write_commit(ds: Path, out: BinaryIO) -> None:
    """Write a fast-import commit of every file under ``ds`` (folders of files) to ``out``."""
    out.write(b"commit refs/heads/main\ncommitter bench <b@example.invalid> 0 +0000\n")
    out.write(b"data 2\nv2\n")
    for folder in sorted(e.name for e in os.scandir(ds)):
        for name in sorted(e.name for e in os.scandir(ds / folder)):
            data = (ds / folder / name).read_bytes()
            path = f"{folder}/{name}".encode()
            out.write(b"M 100644 inline %s\ndata %d\n%s\n" % (path, len(data), data))


def image_size(image: Path, n: int) -> int:
    """The apparent size of an image for ``n`` files; exit unless its disk has that free."""
    if os.geteuid() != 0:
        raise SystemExit("--fs-image needs root (it runs mkfs.ext4 and mount -o loop)")
    if image.exists():
        raise SystemExit(f"{image} exists: --fs-image makes a new image and deletes it after")
    size = n * IMAGE_BYTES_PER_FILE + (4 << 30)
    free = shutil.disk_usage(image.parent).free
    if free < size:
        raise SystemExit(
            f"--fs-image needs {size / 1e9:.1f} GB free at {image.parent}, has {free / 1e9:.1f}"
        )
    return size


@contextmanager
def image_mount(image: Path, n: int) -> Iterator[Path]:
    """Make a sparse ext4 image for ``n`` tiny files at ``image``, loop-mount it, yield
    the mount point; unmount and delete the image afterwards."""
    size = image_size(image, n)
    with open(image, "xb") as f:
        f.truncate(size)
    mnt = Path(tempfile.mkdtemp(prefix="datavc-scale-mnt-"))
    mkfs = f"mkfs.ext4 -q -O inline_data -I 256 -N {n + n // 10 + 100_000}"
    mkfs += " -E lazy_itable_init=1,lazy_journal_init=1"
    mount = "mount -o loop,noinit_itable,discard"
    try:
        for cmd in ([*mkfs.split(), str(image)], [*mount.split(), str(image), str(mnt)]):
            proc = subprocess.run(cmd, capture_output=True)
            if proc.returncode != 0:
                raise SystemExit(f"{' '.join(cmd)} failed: {proc.stderr.decode().strip()}")
        try:
            yield mnt
        finally:
            # an interrupted step can leave the mount busy for a moment: then it is
            # detached lazily (freed once nothing uses it), so the image still goes
            if subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", str(mnt)], check=True)
    finally:
        mnt.rmdir()
        image.unlink()


def image_bytes(image: Path) -> int:
    """Bytes the image takes on its host's disk, after writing back what is cached."""
    os.sync()
    return os.stat(image).st_blocks * 512


def run_check(
    s: Session, ws: Path, dv: list[str], git_too: bool, checkouts_too: bool = True
) -> dict[str, object]:
    """The datavc steps on ``ws/ds``, the warm status against git's (``git_too``), then the
    checkouts and fsck (``checkouts_too``); the JSON fields."""
    n, ds = s.n, ws / "ds"
    s.step("add v1", [*dv, "add", "ds"])
    s.step("commit v1", [*dv, "commit", "-m", "v1"])
    edit_v2(ds, n)
    time.sleep(2.1)  # let the stat cache trust the edits' timestamps
    s.step(f"add v2 ({EDITS} changed, {EDITS} new, {EDITS} gone)", [*dv, "add", "ds"])
    s.step("commit v2", [*dv, "commit", "-m", "v2"])
    s.step("status (nothing changed)", [*dv, "status"])
    listed = s.step("ls ds@v2", [*dv, "ls", "ds@v2"]).lines - 1
    if listed != n:
        raise SystemExit(f"ls listed {listed} files, expected {n}")
    s.steps[-1].detail = f"{listed:,} files listed"
    summary = s.step("diff ds@v2 (against v1)", [*dv, "diff", "ds@v2"]).tail.strip()
    summary = summary.splitlines()[-1]
    want = f"{EDITS} added, {EDITS} modified, {EDITS} removed"
    if summary != want:
        raise SystemExit(f"diff says {summary!r}, expected {want!r}")
    s.steps[-1].detail = summary
    fields: dict[str, object] = {"open_reads": open_one(s, n)}
    status = s.warm("status, warm", [*dv, "status"])
    if git_too:
        t0 = time.perf_counter()
        git = git_baseline(ds, ws.parent / "gitbase", s.env)
        fields["git_setup_s"] = setup = time.perf_counter() - t0
        print(f"git baseline: {n:,} files committed and index refreshed in {setup:.1f} s")
        gst = s.warm(GIT_STATUS, [*git, "status", "--porcelain"])
        if gst.lines:
            raise SystemExit("git status --porcelain reports changes in the baseline tree")
        fields["status_vs_git"] = status.seconds / gst.seconds
    if checkouts_too:
        checkouts(s, ds, dv)
        s.step("fsck (every version, index and footer)", [*dv, "fsck"])
    return fields


def checkouts(s: Session, ds: Path, dv: list[str]) -> None:
    """Check out v1 over v2 (the edited files change) and back, then v2 into an empty
    folder (every file written); each result is spot-checked where the edits were."""
    n = s.n
    s.step(f"checkout ds@v1 ({3 * EDITS} files differ)", [*dv, "checkout", "ds@v1"])
    expect_version(ds, n, 1)
    s.step("checkout ds@v2 (back)", [*dv, "checkout", "ds@v2"])
    expect_version(ds, n, 2)
    t0 = time.perf_counter()
    subprocess.run(["rm", "-rf", str(ds)], check=True)
    print(f"removed the dataset folder in {time.perf_counter() - t0:.1f} s", flush=True)
    s.step("checkout ds (empty folder: every file)", [*dv, "checkout", "ds"])
    expect_version(ds, n, 2)


def expect_version(ds: Path, n: int, version: int) -> None:
    """Exit unless the files the v2 edits touched (and a few others) are as in ``version``."""
    stride = n // EDITS
    for k in (0, EDITS // 2, EDITS - 1):
        i = k * stride
        new = ds / f"{i // PER_FOLDER:04d}" / f"new-{k}.txt"
        want = {
            ds / rel(i): content(i, version),
            ds / rel(i + 1): content(i + 1) if version == 1 else None,
            ds / rel(i + 2): content(i + 2),
            new: None if version == 1 else b"new %d\n" % k,
        }
        for path, data in want.items():
            got = path.read_bytes() if path.exists() else None
            if got != data:
                raise SystemExit(f"after checkout of v{version}: {path} holds {got!r}")


def open_one(s: Session, n: int) -> int:
    """Open ds@v2 through datavc.open and read one file; return the store reads it took."""
    i = 5 * (n // EDITS) + 7
    run = s.step("datavc.open + read one file", [sys.executable, "-c", OPEN_PROBE, "ds@v2", rel(i)])
    result = json.loads(run.tail)
    if result["data"].encode() != content(i):
        raise SystemExit(f"datavc.open read {result['data']!r} for {rel(i)}")
    s.steps[-1].detail = (
        f"{result['reads']} store reads, {result['lists']} listings "
        f"({', '.join(k.split('/')[0] for k in result['keys'])})"
    )
    return int(result["reads"])


def scale(
    base: Path, n: int, git_too: bool = True, checkouts_too: bool = True
) -> dict[str, object]:
    """Generate ``n`` files under ``base``, run the check, and return the JSON document."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATAVC_")}
    env.update(GIT_AUTHOR_NAME="bench", GIT_AUTHOR_EMAIL="bench@example.invalid")
    ws = base / "ws"
    t0 = time.perf_counter()
    generate(ws / "ds", n)
    gen = time.perf_counter() - t0
    print(f"generated {n:,} files in {gen:.1f} s ({gen * 1e6 / n:.2f} ms/1k files)", flush=True)
    # as before add v2: files written within 2 s of an add get racy stat rows, which the
    # next add must read again (so add v2 would measure the last 2 s of this loop too,
    # more of them the sooner add v1 starts, not the 300 changes)
    time.sleep(2.1)
    subprocess.run(["git", "init", "-q"], cwd=ws, check=True)
    dv = [sys.executable, "-m", "datavc"]
    subprocess.run([*dv, "init"], cwd=ws, env=env, check=True, capture_output=True)
    s = Session(n, ws, env)
    try:
        fields = run_check(s, ws, dv, git_too, checkouts_too)
    except SystemExit:
        # a step that failed for want of space: say whose space (the image's or the host's)
        for where in (base, Path(tempfile.gettempdir())):
            du = shutil.disk_usage(where)
            print(f"disk at {where}: {du.used / 1e9:.2f} GB used, {du.free / 1e9:.2f} GB free")
        raise
    objects = sum(len(files) for _, _, files in os.walk(ws / ".datavc" / "store"))
    peak = max(st.peak_rss_mib for st in s.steps if st.name != GIT_STATUS)
    print(f"store objects: {objects}; peak RSS of any datavc step: {peak:.0f} MiB", flush=True)
    return {
        "files": n,
        "generate_s": gen,
        "steps": [asdict(st) for st in s.steps],
        "store_objects": objects,
        "peak_rss_mib": peak,
        **fields,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=1_000_000)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--workdir", type=Path, help="where to build (default: a temp folder)")
    ap.add_argument(
        "--keep", action="store_true", help="leave the tree and its store in --workdir afterwards"
    )
    ap.add_argument(
        "--fs-image",
        type=Path,
        help="build in a new ext4 image file here, loop-mounted (root; for 10M files)",
    )
    ap.add_argument(
        "--no-git",
        action="store_true",
        help="skip the git status baseline (git fast-import of 10M files takes over 30 minutes)",
    )
    ap.add_argument(
        "--no-checkouts",
        action="store_true",
        help="stop after status, ls, diff and open: no checkouts, no fsck (a 10M run's last "
        "half hour)",
    )
    args = ap.parse_args()
    n = args.files
    if n < 3 * EDITS + PER_FOLDER:
        raise SystemExit(f"--files must be at least {3 * EDITS + PER_FOLDER}")
    if args.fs_image:
        with image_mount(args.fs_image.absolute(), n) as mnt:
            doc = scale(mnt, n, not args.no_git, not args.no_checkouts)
            used = image_bytes(args.fs_image.absolute())
            doc["image_bytes_per_file"] = used / n
            print(f"image: {used / 1e9:.2f} GB on disk, {used / n:.0f} bytes a file")
    else:
        base = Path(tempfile.mkdtemp(prefix="datavc-scale-", dir=args.workdir))
        try:
            doc = scale(base, n, not args.no_git, not args.no_checkouts)
        finally:
            if args.keep:
                print(f"kept: {base}")
            else:
                shutil.rmtree(base, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
