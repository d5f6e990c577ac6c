"""The readers (issue 15): datavc.open's filesystem against local disk, measured in the same
run on the same bytes, with the store in the page cache (warm):

- random 4 KiB reads of the tensor file (1 GiB at full scale), file opened once;
- ``cat_ranges`` of 4 KiB ranges of it (fsspec's LocalFileSystem for local disk);
- a DataLoader-like epoch over the images (20,000 small files) with 2 workers, and the
  store reads it makes against files + tree pages x workers;
- ``pandas.read_parquet`` of the table, and one row group of it (``ParquetFile``);
- the same row group read from a store on S3 (a moto server on 127.0.0.1) through a
  counting proxy: bytes fetched against the row group's compressed size.

One workspace holds v1 of each dataset; each measurement runs in a process of its own
(``reader_probe.py``, with the interpreter that has datavc), datavc and local disk
interleaved round by round. Figures go under the dataset name ``readers``, tools ``datavc``
and ``local``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .common import BUCKET, MOTO, S3_ENV, X, fmt_bytes, fmt_seconds, log, remove
from .datasets import Dataset
from .runner import Runner, StepFailed
from .session import Figures, page_cache
from .targets import Target
from .tools import Datavc

READERS = "readers"  # the figures' dataset name
PROBE = Path(__file__).with_name("reader_probe.py")
READ_BYTES = 4096
RANDOM_READS = 500
RANGES = 2000
WORKERS = 2
SEED = 1511


@dataclass(frozen=True, slots=True)
class Plan:
    """How many rounds each measurement takes (medians are reported)."""

    rounds: int  # random reads, cat_ranges, read_parquet
    group_rounds: int  # one row group
    epochs: int  # loader epochs, each side
    profile: bool


class S3Datavc(Datavc):
    """datavc in a workspace whose store is on S3 (the moto server)."""

    def __init__(self, runner: Runner, exe: list[str], base: Path, url: str, env: dict[str, str]):
        super().__init__(runner, exe, base)
        self.url = url
        self.env = env

    def setup(self) -> None:
        self.base.mkdir(parents=True)
        self.ws.mkdir()
        self.timed([["git", "init", "-q"], self.cmd("init", "--store", self.url)])


class Readers:
    """Runs the readers' measurements and records their figures."""

    def __init__(
        self,
        python: str,
        datasets: dict[str, Dataset],
        runner: Runner,
        work: Path,
        plan: Plan,
        figs: Figures,
    ) -> None:
        self.python = python
        self.datasets = datasets
        self.runner = runner
        self.work = work / "readers"  # removed with the benchmark's folder
        self.plan = plan
        self.figs = figs

    def run(self) -> None:
        wanted = [n for n in ("tensor", "images", "table") if n in self.datasets]
        if not wanted:
            log("readers: none of tensor, images, table in this run")
            return
        tool = Datavc(self.runner, [self.python, "-m", "datavc"], self.work / "local")
        if not self.attempt("setup", lambda: self.commit(tool, wanted)):
            return
        store = str(tool.store())
        if "tensor" in self.datasets:
            self.attempt("random reads", lambda: self.random(store))
            self.attempt("cat_ranges", lambda: self.ranges(store))
        if "images" in self.datasets:
            self.attempt("loader epoch", lambda: self.loader(store))
        if "table" in self.datasets:
            self.attempt("parquet", lambda: self.parquet(store))
            self.attempt("s3 row group", self.s3)

    def attempt(self, step: str, fn: Callable[[], None]) -> bool:
        try:
            fn()
        except (StepFailed, OSError, subprocess.SubprocessError, ValueError, KeyError) as e:
            self.figs.error(READERS, "datavc", 1, step, str(e))
            return False
        return True

    def commit(self, tool: Datavc, names: list[str]) -> None:
        """v1 of each dataset added and committed into one workspace's local store."""
        start = time.perf_counter()
        tool.setup()
        for name in names:
            ds = self.datasets[name]
            ds.install(0, tool.data(ds))
            tool.save(ds, 1)
            remove(tool.data(ds))  # the probes read the store and the generated v1
        log(f"  readers: {', '.join(names)} committed ({time.perf_counter() - start:.1f} s)")

    def probe(
        self, task: str, cfg: dict[str, Any], env: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """Run one task of reader_probe.py in a process of its own; its JSON result."""
        conf, out = self.work / f"{task}.json", self.work / f"{task}.out.json"
        conf.write_text(json.dumps({"task": task, "profile": self.plan.profile, **cfg}))
        out.unlink(missing_ok=True)
        before = os.getloadavg()[0]
        self.runner.must([self.python, str(PROBE), str(conf), str(out)], self.work, env)
        self.note(load=[task, before, os.getloadavg()[0]])
        result: dict[str, Any] = json.loads(out.read_text())
        return result

    def warm(self, store: str, ds: Dataset) -> None:
        """The store and the local copy in the page cache (datavc writes packs around it)."""
        page_cache(Path(store), True)
        page_cache(ds.versions[0], True)

    def record(self, metric: str, got: dict[str, Any]) -> None:
        for tool in ("datavc", "local"):
            for value in got[tool]:
                self.figs.add(READERS, tool, metric, value)

    def note(self, **fields: Any) -> None:
        self.figs.notes.append({"dataset": READERS, **fields})

    def profiles(self, got: dict[str, Any]) -> None:
        for prof in got.get("profiles", []):
            self.note(profile_title=prof["title"], profile=prof["text"])

    def logged(self, op: str, metric: str) -> None:
        ours = self.figs.median(READERS, "datavc", metric)
        theirs = self.figs.median(READERS, "local", metric)
        if ours is not None and theirs:
            log(
                f"  {READERS:7} {op:22} datavc {_fmt(ours, 's'):>9}  local "
                f"{_fmt(theirs, 's'):>9}  {ours / theirs:6.2f}{X}"
            )

    def file_cfg(self, store: str, ds: Dataset) -> dict[str, Any]:
        return {
            "spec": f"{ds.name}@v1",
            "store": store,
            "path": ds.payload,
            "local": str(ds.versions[0]),
            "rounds": self.plan.rounds,
            "length": READ_BYTES,
            "seed": SEED,
        }

    def random(self, store: str) -> None:
        ds = self.datasets["tensor"]
        self.warm(store, ds)
        got = self.probe("random", {**self.file_cfg(store, ds), "reads": RANDOM_READS})
        self.record("random_s", got)
        self.figs.add(READERS, "datavc", "open_s", got["open_s"])
        self.profiles(got)
        self.logged("random 4 KiB reads", "random_s")

    def ranges(self, store: str) -> None:
        ds = self.datasets["tensor"]
        self.warm(store, ds)
        got = self.probe("ranges", {**self.file_cfg(store, ds), "reads": RANGES})
        self.record("ranges_s", got)
        self.profiles(got)
        self.logged("cat_ranges", "ranges_s")

    def loader(self, store: str) -> None:
        ds = self.datasets["images"]
        self.warm(store, ds)
        cfg = {
            "spec": f"{ds.name}@v1",
            "store": store,
            "local": str(ds.versions[0]),
            "workers": WORKERS,
            "rounds": self.plan.epochs,
        }
        got = self.probe("loader", cfg)
        self.record("epoch_s", got)
        for tool in ("datavc", "local"):
            for epoch in got[f"{tool}_epochs"]:
                self.figs.add(READERS, tool, "epoch_read_s", epoch["read_s"])
                if tool == "datavc":
                    self.figs.add(READERS, tool, "epoch_unpickle_s", epoch["unpickle_s"])
                    self.figs.add(READERS, tool, "epoch_reads", epoch["reads"])
                    self.figs.add(READERS, tool, "epoch_page_reads", epoch["page_reads"])
        expected = got["files"] + got["pages"] * got["workers"]
        exact = got["runs"] + got["pages"] * got["workers"]
        self.figs.add(READERS, "expected", "epoch_reads", expected)
        self.figs.add(READERS, "exact", "epoch_reads", exact)
        self.note(
            loader=got["loader"],
            files=got["files"],
            workers=got["workers"],
            pages=got["pages"],
            runs=got["runs"],
        )
        self.profiles(got)
        self.logged("loader epoch", "epoch_s")
        reads = self.figs.median(READERS, "datavc", "epoch_reads")
        log(
            f"  {READERS:7} {'store reads per epoch':22} {reads:,.0f} (files + pages{X}workers: "
            f"{expected:,}; counting a file across two packs twice: {exact:,})"
        )

    def parquet(self, store: str) -> None:
        ds = self.datasets["table"]
        self.warm(store, ds)
        cfg = {**self.file_cfg(store, ds), "group_rounds": self.plan.group_rounds}
        got = self.probe("parquet", cfg)
        self.record("parquet_s", got["table"])
        self.record("row_group_s", got["row_group"])
        self.note(
            row_group=got["group"],
            row_groups=got["row_groups"],
            group_compressed=got["group_compressed"],
        )
        self.profiles(got)
        self.logged("read_parquet", "parquet_s")
        self.logged("one row group", "row_group_s")

    def s3(self) -> None:
        """The table's v1 committed to a store on a moto S3 server; a new process reads one
        row group through a counting proxy."""
        ds = self.datasets["table"]
        check = self.runner.run([self.python, "-c", "import moto.server"], self.work)
        if not check.ok:
            self.note(s3_missing="moto[server] is not installed for the datavc interpreter")
            log("  readers: S3 skipped (moto[server] is not installed)")
            return
        port = free_port()
        endpoint = f"http://127.0.0.1:{port}"
        env = {**S3_ENV, "AWS_ENDPOINT_URL": endpoint}
        server = subprocess.Popen(
            [self.python, str(MOTO), "-H", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            wait_for(endpoint, server)
            make_bucket = f"import boto3; boto3.client('s3').create_bucket(Bucket='{BUCKET}')"
            self.runner.must([self.python, "-c", make_bucket], self.work, env)
            url = f"s3://{BUCKET}/readers"
            tool = S3Datavc(self.runner, [self.python, "-m", "datavc"], self.work / "s3", url, env)
            tool.setup()
            ds.install(0, tool.data(ds))
            tool.save(ds, 1)
            remove(tool.data(ds))
            cfg = {
                "spec": f"{ds.name}@v1",
                "store": url,
                "path": ds.payload,
                "local": str(ds.versions[0]),
                "s3_port": port,
            }
            got = self.probe("s3", cfg, env)
        finally:
            server.terminate()
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        self.figs.add(READERS, "datavc", "s3_group_bytes", got["wire_down"])
        self.figs.add(READERS, "local", "s3_group_bytes", got["group_compressed"])
        self.note(s3=got)
        log(
            f"  {READERS:7} {'S3 row group':22} fetched {fmt_bytes(got['wire_down'])}, "
            f"row group {fmt_bytes(got['group_compressed'])} "
            f"({got['wire_down'] / got['group_compressed']:.3f}{X}), {got['gets']} GETs"
        )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(endpoint: str, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1):
                return
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise StepFailed("the moto S3 server did not start") from None
            time.sleep(0.1)


def bench_readers(
    python: str,
    datasets: dict[str, Dataset],
    runner: Runner,
    work: Path,
    figs: Figures,
    quick: bool,
    profile: bool,
) -> None:
    """The readers' figures into ``figs`` (fewer rounds at full size: datavc's cat_ranges
    and epoch take minutes there)."""
    plan = Plan(rounds=5 if quick else 3, group_rounds=11, epochs=3, profile=profile)
    log("readers (issue 15)")
    Readers(python, datasets, runner, work, plan, figs).run()


# -- targets and report ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReaderRow:
    """A row of the readers' table: datavc's figure against local disk's (or another
    reference), and the target on their ratio (None: no target, shown for information)."""

    label: str
    metric: str
    unit: str  # "s", "count", "bytes"
    limit: float | None = None
    target: str = ""
    local: str = "local"  # the tool whose median is the reference
    bound: str = ""  # the tool whose median the limit applies to, if not the reference


def reader_rows(figs: Figures) -> list[ReaderRow]:
    le = "\u2264"
    reads = f"{le} files (a file across two packs: 2) + tree pages {X} workers"
    return [
        ReaderRow(
            f"{RANDOM_READS} random 4 KiB reads, tensor v1 (file opened once)",
            "random_s",
            "s",
            3,
            f"{le} 3{X} local",
        ),
        ReaderRow(
            f"`cat_ranges`, {RANGES:,} {X} 4 KiB ranges of tensor v1",
            "ranges_s",
            "s",
            3,
            f"{le} 3{X} local",
        ),
        ReaderRow(
            f"DataLoader-like epoch, images v1, {WORKERS} workers ({loader_kind(figs)})",
            "epoch_s",
            "s",
            2,
            f"{le} 2{X} local",
        ),
        ReaderRow("of which reading (slowest worker)", "epoch_read_s", "s"),
        ReaderRow("store reads per epoch", "epoch_reads", "count", 1, reads, "expected", "exact"),
        ReaderRow("`pandas.read_parquet`, table v1", "parquet_s", "s", 1.5, f"{le} 1.5{X} local"),
        ReaderRow(
            "one row group (`ParquetFile(...).read_row_group`), table v1",
            "row_group_s",
            "s",
            2,
            f"{le} 2{X} local",
        ),
        ReaderRow(
            "one row group from S3 (moto): bytes fetched vs its compressed size",
            "s3_group_bytes",
            "bytes",
            1.2,
            f"{le} 1.2{X} compressed size",
        ),
    ]


def loader_kind(figs: Figures) -> str:
    kinds = [n["loader"] for n in figs.notes if n.get("dataset") == READERS and "loader" in n]
    return kinds[-1] if kinds else "not run"


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "s":  # milliseconds below 0.1 s: local reads take about one
        return f"{value * 1000:.3g} ms" if value < 0.1 else fmt_seconds(value)
    if unit == "bytes":
        return fmt_bytes(value)
    return f"{value:,.0f}"


@dataclass(frozen=True, slots=True)
class Judged:
    """A row's medians, their ratio, and whether the target holds (None: no figure)."""

    ours: float | None
    theirs: float | None
    ratio: float | None
    holds: bool | None
    reference: str  # the reference figure, said in words


def judge(figs: Figures, row: ReaderRow) -> Judged:
    ours = figs.median(READERS, "datavc", row.metric)
    theirs = figs.median(READERS, row.local, row.metric)
    ratio = ours / theirs if ours is not None and theirs else None
    reference = _fmt(theirs, row.unit)
    holds = None
    if row.local == "expected":
        reference = f"{reference} (files + pages {X} workers)"
    elif row.metric == "s3_group_bytes":
        reference = f"{reference} (compressed)"
    if row.bound:
        bound = figs.median(READERS, row.bound, row.metric)
        if bound is not None and bound != theirs:
            reference += f"; counting files across two packs twice: {_fmt(bound, row.unit)}"
        if ours is not None and bound and row.limit is not None:
            holds = ours <= row.limit * bound
    elif ratio is not None and row.limit is not None:
        holds = ratio <= row.limit
    return Judged(ours, theirs, ratio, holds, reference)


def reader_targets(figs: Figures) -> list[Target]:
    out = []
    for row in reader_rows(figs):
        if row.limit is None:
            continue
        op = f"readers: {row.label}"
        j = judge(figs, row)
        if j.ours is None or j.ratio is None:
            out.append(Target(op, "not measured (failed: see Failures)", row.target, None))
            continue
        who = {"expected": "expected", "s3_group_bytes": "row group"}.get(
            row.local if row.local != "local" else row.metric, "local"
        )
        figure = f"datavc {_fmt(j.ours, row.unit)}, {who} {j.reference}: {j.ratio:.2f}{X}"
        out.append(Target(op, figure, row.target, j.holds))
    return out


def readers_section(figs: Figures) -> list[str]:
    """The readers' table, what was measured and how, and the profiles of the datavc side."""
    if READERS not in figs.values:
        return []
    notes = [n for n in figs.notes if n.get("dataset") == READERS]
    lines = [
        "## Readers (issue 15)",
        "",
        "`datavc.open(NAME@v1, store=...)` of a local store holding v1 of each dataset, "
        "against the generated v1 on local disk, in the same run, both in the page cache "
        "(warm). Each measurement runs in a process of its own (`scripts/benchlib/"
        "reader_probe.py`), datavc and local disk interleaved round by round (medians); every "
        "byte datavc returns is compared with the local file's.",
        "",
        "| operation | datavc | local disk | datavc / local | target | holds |",
        "|---|---|---|---|---|---|",
    ]
    for row in reader_rows(figs):
        j = judge(figs, row)
        if j.ours is None and j.theirs is None:
            continue
        ratio = "-" if j.ratio is None else f"{j.ratio:.2f}"
        holds = "-" if row.limit is None else {None: "n/a", True: "yes", False: "**no**"}[j.holds]
        lines.append(
            f"| {row.label} | {_fmt(j.ours, row.unit)} | {j.reference} | {ratio} | "
            f"{row.target or '-'} | {holds} |"
        )
    lines += ["", *_method(figs, notes)]
    for n in notes:
        if "profile" in n:
            lines += [
                "",
                f"### Profile (cProfile, datavc side): {n['profile_title']}",
                "",
                "```",
                n["profile"],
                "```",
            ]
    return lines


def _method(figs: Figures, notes: list[dict[str, Any]]) -> list[str]:
    out = [
        f"- Random reads: the file opened once, {RANDOM_READS} reads of 4 KiB at random "
        "4 KiB-aligned offsets (new ones each round), then closed: `fs.open` against the "
        "built-in `open` (buffered); a few reads first, untimed (the tree page). "
        f"`cat_ranges`: {RANGES:,} such ranges in one call, against fsspec's "
        "`LocalFileSystem().cat_ranges`.",
    ]
    epoch = next((n for n in notes if "loader" in n), None)
    if epoch:
        out.append(
            f"- Epoch: {epoch['files']:,} files read whole in order, dealt to "
            f"{epoch['workers']} workers ({epoch['loader']}; worker w gets files w, "
            f"w + {epoch['workers']}, ...), each receiving the filesystem pickled (local "
            "disk: the folder's path); timed from starting the workers to the last result, "
            "as an epoch of a DataLoader whose workers are not persistent. Store reads: the "
            "backend's GETs in all workers (tree pages "
            f"{_fmt(figs.median(READERS, 'datavc', 'epoch_page_reads'), 'count')} of them); "
            f"expected: files + {epoch['pages']} tree page(s) {X} {epoch['workers']} workers, "
            f"and one more for each file whose chunks lie in two packs (or two places of one: "
            f"{epoch['runs'] - epoch['files']:,} here). "
            "A worker's unpickling of the filesystem (importing datavc): "
            f"{_fmt(figs.median(READERS, 'datavc', 'epoch_unpickle_s'), 's')}."
        )
    group = next((n for n in notes if "row_group" in n), None)
    if group:
        out.append(
            f"- Parquet: `pd.read_parquet(path, filesystem=fs)` against `pd.read_parquet("
            f"local_path)`; row group {group['row_group']} of {group['row_groups']} "
            f"(compressed {fmt_bytes(group['group_compressed'])}): `pq.ParquetFile(path, "
            "filesystem=fs).read_row_group(i)`, the footer read included, against the same on "
            "the local path."
        )
    s3 = next((n["s3"] for n in notes if "s3" in n), None)
    if s3:
        out.append(
            "- S3: the table's v1 committed to a store on a moto server (127.0.0.1); a new "
            "process reads the row group through a TCP proxy that counts the bytes the server "
            f"sent (HTTP headers included): {fmt_bytes(s3['wire_down'])} in all, of which "
            f"`datavc.open` {fmt_bytes(s3['open_down'])}, `ParquetFile` (the footer) "
            f"{fmt_bytes(s3['footer_down'])}, `read_row_group` {fmt_bytes(s3['group_down'])}; "
            f"{s3['gets']} GETs, {fmt_bytes(s3['object_bytes'])} of object bytes, against "
            f"the row group's {fmt_bytes(s3['group_compressed'])} compressed (datavc's packs "
            "compress chunks again with zstd: fewer bytes can cross the wire than Parquet "
            "stores)."
        )
    missing = next((n["s3_missing"] for n in notes if "s3_missing" in n), None)
    if missing:
        out.append(f"- S3: not measured ({missing}).")
    loads = [n["load"] for n in notes if "load" in n]
    if loads:
        shown = ", ".join(f"{task} {a:.1f} \u2192 {b:.1f}" for task, a, b in loads)
        out.append(
            f"- Load average (1 minute) before \u2192 after each measurement: {shown}. The "
            "machine's cores are shared with whatever else runs on it: above about 1, other "
            "processes competed for them, and both sides' times are noisier."
        )
    opened = figs.median(READERS, "datavc", "open_s")
    if opened is not None:
        out.append(f"- `datavc.open` of tensor v1 (after import): {_fmt(opened, 's')}.")
    return out
