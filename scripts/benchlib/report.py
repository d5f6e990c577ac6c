"""The report: docs/BENCHMARKS.md and .json, with the tables, the machine, the method."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .common import ROOT, fmt_bytes, fmt_value, log
from .datasets import Dataset
from .options import DEFAULT_PARTS, Options
from .readers import reader_targets, readers_section
from .session import Figures
from .targets import TargetCheck, targets_table

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


def machine_facts(python: str, peers: dict[str, list[str]]) -> dict[str, str]:
    facts = {
        "cpu": _cpu_model(),
        "nproc": str(len(os.sched_getaffinity(0))),
        "memory": f"{_mem_total_kib() / 1024 / 1024:.1f} GiB",
        "os": f"{platform.system()} {platform.release()}",
        "python": first_line([python, "-c", "import sys; print(sys.version.split()[0])"]),
        "datavc": _datavc_version(python),
    }
    for name, exe in peers.items():
        facts[name] = first_line([*exe, "version" if name == "restic" else "--version"])
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


def first_line(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.SubprocessError) as e:
        return f"unknown ({e})"
    lines = (out.stdout or out.stderr).strip().splitlines()
    return lines[0] if lines else "unknown"


def _datavc_version(python: str) -> str:
    version = first_line(
        [python, "-c", "import importlib.metadata as m; print(m.version('datavc'))"]
    )
    rev = first_line(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    dirty = first_line(["git", "-C", str(ROOT), "status", "--porcelain", "--", "datavc"])
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
    cli = "cli" in opts.parts
    targets = TargetCheck(figs, datasets, missing).all() if cli else []
    if "readers" in opts.parts:
        targets += reader_targets(figs)
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
    if cli:
        lines += ["", "## Method", "", *method_notes(opts, missing)]
    lines += ["", "## Targets (issues 3 and 15)", "", *targets_table(targets)]
    for ds in datasets.values():
        if cli:
            lines += ["", f"## {ds.name}", "", *dataset_table(figs, ds), *open_keys(figs, ds)]
    readers = readers_section(figs)
    if readers:
        lines += ["", *readers]
    if scale_doc:
        lines += ["", *scale_section(scale_doc)]
    if cli:
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
    parts = [p for p in opts.parts if p != "remote"]  # the remote part has its own report
    if set(parts) != set(DEFAULT_PARTS):  # a partial run never replaces the whole report
        stem += "-" + "-".join(parts)
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
        "parts": opts.parts,
    }
    (opts.out_dir / f"{stem}.json").write_text(json.dumps(doc, indent=1) + "\n")
    log(f"wrote {opts.out_dir / stem}.md and .json")


def scale_section(doc: dict[str, Any]) -> list[str]:
    """The scale check (scripts/scale.py): each step's time, cost per 1,000 files, time to
    first output and peak RSS; the targets of issues 3 and 16; status against git status."""
    gib = 1024.0
    peak = float(doc["peak_rss_mib"])
    holds = peak < gib and doc["open_reads"] <= 3
    steps = {st["name"]: st for st in doc["steps"]}
    firsts = [steps[k]["first_output_s"] for k in steps if k.startswith(("ls ", "diff "))]
    prompt = all(f is not None and f <= 1.0 for f in firsts)
    git_step = steps.get("git status (same tree, nothing changed)")
    versus_git = "not measured (--no-git)"
    if git_step is not None:
        versus_git = f"{doc['status_vs_git']:.1f}x `git status` on the same tree "
        versus_git += f"({git_step['seconds']:.2f} s)"
    lines = [
        f"## Scale: {doc['files']:,} tiny files (scripts/scale.py)",
        "",
        f"Target (issue 3): committed, listed, diffed against its parent and opened for one "
        f"file, peak memory under 1 GiB, a bounded number of metadata reads to open one "
        f"file. Peak RSS of any step: {peak:.0f} MiB; opening one file: {doc['open_reads']} "
        f"store reads. Holds: **{'yes' if holds else 'no'}**. Store objects after v2: "
        f"{doc['store_objects']}.",
        "",
        f"Target (issue 16): ls and diff start printing within 1 s: "
        f"**{'yes' if prompt else 'no'}**; every command within 256 MiB: "
        f"**{'yes' if peak <= 256 else 'no'}**. Warm status, nothing changed: {versus_git}.",
        "",
        "| step | seconds | ms / 1,000 files | first output | peak RSS | detail |",
        "|---|---|---|---|---|---|",
    ]
    for st in doc["steps"]:
        first = "-" if st["first_output_s"] is None else f"{st['first_output_s']:.2f} s"
        lines.append(
            f"| {st['name']} | {st['seconds']:.2f} | {st['s_per_1k_files'] * 1000:.2f} | "
            f"{first} | {st['peak_rss_mib']:.0f} MiB | {st['detail']} |"
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
