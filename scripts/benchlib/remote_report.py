"""The remote benchmark's run and report: docs/BENCHMARKS-remote.md and .json (``--quick``:
BENCHMARKS-remote-quick.*), figures as ratios against the 0 ms baseline of the same run."""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

from .common import MB, X, fmt_bytes, fmt_seconds, log
from .datasets import Dataset
from .options import Options
from .remote import FLOOR_MIB, FLOOR_OBJECTS, FLOOR_STREAMS, PROBE_BYTES, RemoteBench
from .report import machine_facts
from .runner import Runner
from .s3server import S3Server, start_moto, start_seaweedfs, weed_exe
from .session import Figures
from .targets import Target, targets_table

TARGET_RTT = 80
OPS = {"save": "add + commit", "fresh": "fresh-clone checkout", "open": "`datavc.open` + one file"}
PEER_OPS = {"save": "add + push", "fresh": "pull (fresh clone)"}


def choose_server(opts: Options) -> tuple[Callable[[Path], S3Server], str]:
    """The server to start for each dataset, and a note on the choice."""
    weed = weed_exe(opts.weed)
    if opts.s3_server == "moto" or (opts.s3_server is None and weed is None):
        why = "asked for" if opts.s3_server == "moto" else "SeaweedFS is not installed"
        return partial(start_moto, opts.python), f"moto ({why}: `make bench-peers` installs it)"
    if weed is None:
        raise SystemExit("--s3-server seaweedfs: weed not found (run `make bench-peers`)")
    return partial(start_seaweedfs, weed), "SeaweedFS"


def dvc_with_s3(dvc: list[str] | None, runner: Runner, work: Path) -> tuple[list[str] | None, str]:
    """DVC's executable if it has its S3 remote (dvc-s3), else why not."""
    if dvc is None:
        return None, "not installed (run `make bench-peers`)"
    done = runner.run([*dvc, "version"], work)
    if not done.ok or "s3" not in done.out.split("Supports:", 1)[-1]:
        return None, "installed without dvc-s3 (run `make bench-peers`)"
    return dvc, ""


def bench_remote(
    opts: Options,
    datasets: dict[str, Dataset],
    runner: Runner,
    peers: dict[str, list[str]],
    missing: dict[str, str],
) -> None:
    start, load_before = time.perf_counter(), os.getloadavg()
    start_server, server_note = choose_server(opts)
    dvc, dvc_missing = dvc_with_s3(peers.get("dvc"), runner, opts.workdir)
    if "dvc" in missing:
        dvc_missing = missing["dvc"]
    log(f"remote (issue 16): {server_note}; round trips {opts.rtts} ms; DVC {dvc_missing or 'yes'}")
    figs = Figures()
    bench = RemoteBench(opts.python, dvc, runner, opts.workdir, start_server, figs)
    bench.run(list(datasets.values()), opts.rtts, opts.reps, opts.peer_reps)
    facts = machine_facts(opts.python, {"dvc": dvc} if dvc else {})
    facts["S3 server"] = ", ".join(sorted(set(bench.servers))) or server_note
    load_after = os.getloadavg()
    facts["load average (1, 5, 15 min)"] = (
        f"{fmt_load(load_before)} before, {fmt_load(load_after)} after"
    )
    elapsed = time.perf_counter() - start
    Report(opts, datasets, figs, server_note, dvc_missing).write(facts, elapsed)


def fmt_load(load: tuple[float, float, float]) -> str:
    return " / ".join(f"{v:.2f}" for v in load)


def metric(op: str, what: str, rtt: int) -> str:
    return f"{op}.{what}@{rtt}"


class Report:
    """The tables and targets of one run."""

    def __init__(
        self,
        opts: Options,
        datasets: dict[str, Dataset],
        figs: Figures,
        server_note: str,
        dvc_missing: str,
    ) -> None:
        self.opts, self.datasets, self.figs = opts, datasets, figs
        self.server_note, self.dvc_missing = server_note, dvc_missing

    def m(self, ds: str, tool: str, op: str, what: str, rtt: int) -> float | None:
        return self.figs.median(ds, tool, metric(op, what, rtt))

    # -- targets -------------------------------------------------------------------------------

    def kept(self, ds: str, op: str) -> Target:
        """Throughput at TARGET_RTT against 0 ms, on the same server: ≥ 80%."""
        name = f"{OPS[op]} {ds}, {TARGET_RTT} ms: throughput against 0 ms"
        base, slow = self.m(ds, "datavc", op, "s", 0), self.m(ds, "datavc", op, "s", TARGET_RTT)
        if base is None or slow is None:
            return Target(name, self.why_missing(ds, "datavc"), "\u2265 80%", None)
        size = self.datasets[ds].sizes[0]
        figure = (
            f"{size / slow / MB:,.0f} MB/s against {size / base / MB:,.0f} MB/s: "
            f"{base / slow:.0%} ({fmt_seconds(slow)} against {fmt_seconds(base)})"
        )
        return Target(name, figure, "\u2265 80%", base / slow >= 0.8)

    def faster(self, ds: str, op: str) -> Target:
        """datavc at TARGET_RTT against DVC at the same RTT: ≥ 5x faster."""
        name = f"{OPS[op]} {ds} against DVC {PEER_OPS[op]}, {TARGET_RTT} ms"
        target = f"\u2265 5{X} faster"
        ours, theirs = (
            self.m(ds, "datavc", op, "s", TARGET_RTT),
            self.m(ds, "dvc", op, "s", TARGET_RTT),
        )
        if ours is None or theirs is None:
            who = "datavc" if ours is None else "dvc"
            return Target(name, self.why_missing(ds, who), target, None)
        figure = f"datavc {fmt_seconds(ours)}, DVC {fmt_seconds(theirs)}: {theirs / ours:.2f}{X}"
        return Target(name, figure, target, ours * 5 <= theirs)

    def round_trips(self) -> Target:
        name = f"`datavc.open` + one 64 KB file (images), {TARGET_RTT} ms: requests after start-up"
        got = self.m("images", "datavc", "open", "requests", TARGET_RTT)
        if got is None:
            return Target(name, self.why_missing("images", "datavc"), "\u2264 4", None)
        seconds = self.m("images", "datavc", "open", "s", TARGET_RTT) or 0.0
        conns = self.m("images", "datavc", "open", "connections", TARGET_RTT) or 0.0
        figure = (
            f"{got:.0f} requests ({self.kinds('images', 'datavc', 'open', TARGET_RTT)}) "
            f"on {conns:.0f} connection(s), {fmt_seconds(seconds)}"
        )
        return Target(name, figure, "\u2264 4", got <= 4)

    def targets(self) -> list[Target]:
        out = []
        for ds in ("images", "table", "tensor"):
            out += [self.kept(ds, "fresh"), self.kept(ds, "save")]
            out += [self.faster(ds, "fresh"), self.faster(ds, "save")]
        return [*out, self.round_trips()]

    def why_missing(self, ds: str, tool: str) -> str:
        if ds not in self.datasets:
            return f"not measured ({ds} not in this run)"
        if TARGET_RTT not in self.opts.rtts:
            return f"not measured ({TARGET_RTT} ms not in --rtts)"
        if tool == "dvc" and self.dvc_missing:
            return f"not measured (DVC {self.dvc_missing})"
        return "not measured (failed: see Failures)"

    # -- tables --------------------------------------------------------------------------------

    def kinds(self, ds: str, tool: str, op: str, rtt: int) -> str:
        """Requests by method and object kind, from the last repetition."""
        notes = [
            n["kinds"]
            for n in self.figs.notes
            if n.get("dataset") == ds
            and n.get("tool") == tool
            and n.get("op") == op
            and n.get("rtt_ms") == rtt
        ]
        if not notes:
            return "-"
        return ", ".join(f"{k} {v:,}" for k, v in notes[-1].items()) or "none"

    def cells(self, ds: Dataset, tool: str, op: str, rtt: int) -> list[str]:
        seconds = self.m(ds.name, tool, op, "s", rtt)
        if seconds is None:
            return ["-"] * 6
        base = self.m(ds.name, tool, op, "s", 0)
        get = partial(self.m, ds.name, tool, op, rtt=rtt)
        size = (get("bytes") or 0) if op == "open" else ds.sizes[0]
        rate = f" ({size / seconds / MB:,.0f} MB/s)" if op != "open" and seconds else ""
        share = f"{base / seconds:.0%}" if base and rtt else "-"
        serial = "-"
        if base is not None and rtt:
            added = (seconds - base) / (rtt / 1000)
            serial = f"{added:,.0f}" if added >= 0 else "< 0 (noise)"
        reqs = f"{get('requests') or 0:,.0f} / {get('connections') or 0:,.0f}"
        moved = f"{fmt_bytes(get('up') or 0)} / {fmt_bytes(get('down') or 0)}"
        flight = f"{get('in_flight_max') or 0:.0f} / {get('in_flight_mean') or 0:.1f}"
        return [f"{fmt_seconds(seconds)}{rate}", share, reqs, moved, flight, serial]

    def dataset_table(self, ds: Dataset) -> list[str]:
        lines = [
            "| operation | RTT | datavc time | of 0 ms | requests / conns | sent / received | "
            "in flight max / mean | \u2248 serial RTs | DVC time | DVC of 0 ms | DVC requests / "
            "conns | DVC in flight max / mean | DVC / datavc |",
            "|---" * 13 + "|",
        ]
        for op in OPS:
            for rtt in self.opts.rtts:
                ours = self.cells(ds, "datavc", op, rtt)
                if ours[0] == "-":
                    continue
                theirs = self.cells(ds, "dvc", op, rtt) if op in PEER_OPS else ["-"] * 6
                a = self.m(ds.name, "datavc", op, "s", rtt)
                b = self.m(ds.name, "dvc", op, "s", rtt) if op in PEER_OPS else None
                versus = f"{b / a:.1f}{X}" if a and b else "-"
                row = [OPS[op], f"{rtt} ms", *ours, theirs[0], theirs[1], theirs[2], theirs[4]]
                lines.append(f"| {' | '.join([*row, versus])} |")
        return lines

    def load_line(self, ds: Dataset) -> list[str]:
        loads = sorted(n["load"] for n in self.figs.notes if n.get("dataset") == ds.name)
        if not loads:
            return []
        return [
            "",
            f"Load average (1 minute) after each timed operation: {loads[0]:.1f} to "
            f"{loads[-1]:.1f}, median {statistics.median(loads):.1f} (2 cores: above about 2, "
            "other processes competed with the benchmark for them).",
        ]

    def kinds_list(self, ds: Dataset) -> list[str]:
        rtt = self.opts.rtts[-1]
        out = ["", f"Requests by kind at {rtt} ms (last repetition):", ""]
        for tool, ops in (("datavc", OPS), ("dvc", PEER_OPS)):
            for op, label in ops.items():
                kinds = self.kinds(ds.name, tool, op, rtt)
                if kinds == "-":
                    continue
                extra = ""
                for what, said in (
                    ("continued", "sent their body after `100 Continue`"),
                    ("unanswered", "closed by the client before their response"),
                    ("server_errors", "answered with a 5xx status"),
                ):
                    count = self.m(ds.name, tool, op, what, rtt)
                    extra += f"; {count:,.0f} {said}" if count else ""
                extra = f" ({extra[2:]})" if extra else ""
                out.append(f"- {'DVC' if tool == 'dvc' else 'datavc'} {label}: {kinds}{extra}.")
        return out

    # -- the document ----------------------------------------------------------------------------

    def floor_line(self) -> str:
        got = {
            via: (
                self.figs.median("server", via, "put_MBps"),
                self.figs.median("server", via, "get_MBps"),
            )
            for via in ("direct", "proxy")
        }
        if any(v is None for pair in got.values() for v in pair):
            return "- Server floor: not measured (see Failures)."
        (dp, dg), (pp, pg) = got["direct"], got["proxy"]
        return (
            "- Server floor (medians over the servers started, each warmed up first; what "
            f"plain boto3 moves, {FLOOR_OBJECTS} objects of {FLOOR_MIB} MiB, "
            f"{FLOOR_STREAMS} threads, PUT then GET): straight to the server PUT {dp:,.0f} MB/s, "
            f"GET {dg:,.0f} MB/s; through the proxy at 0 ms PUT {pp:,.0f} MB/s, GET {pg:,.0f} MB/s."
        )

    def method(self) -> list[str]:
        o = self.opts
        notes = [
            f"- S3 server: {self.server_note}, one per dataset, on 127.0.0.1, started and stopped "
            "with the benchmark; every command reaches it through a delay proxy "
            "(`scripts/benchlib/delayproxy.py`): each byte read from one side at time t is written "
            "to the other at t + RTT/2, both ways, no bandwidth cap. Not modelled: a new "
            "connection's handshake (a real one costs a round trip more, TLS one or two more: "
            "connections are counted), TCP slow start and windows (on a real path a connection "
            "moves at most window / RTT).",
            self.floor_line(),
            f"- Medians of {o.reps} repetition(s) for datavc, {min(o.reps, o.peer_reps)} for DVC; "
            "each round (tool, dataset, RTT, repetition) starts from a fresh git repo and an empty "
            "prefix of the bucket, deleted afterwards. Round trips in the order "
            f"{', '.join(f'{r} ms' for r in o.rtts)}, each repetition starting one further "
            "on (the second at the second), datavc then DVC at each. Each server is warmed up "
            "first with as many bytes as the dataset (16 to 64 objects of 16 MiB).",
            "- add + commit: `datavc add` + `datavc commit` of v1 (its input in the page cache), "
            "in a workspace made by `datavc init --store s3://...`; DVC: `dvc add` + `dvc push` "
            "to an S3 remote (dvc-s3, `endpointurl` at the proxy). Fresh-clone checkout: a new "
            "`git clone` of the workspace, then `datavc checkout` (empty cache; DVC: `dvc pull`, "
            "empty cache); the result is compared with v1 byte for byte, untimed.",
            f"- `datavc.open(NAME@v1, store=s3://...)` + one file, in a new process, timed from "
            f"after its imports (datavc, s3fs) to the last byte: images, a file of about 64 KB, "
            f"whole; table and tensor, their first {PROBE_BYTES // 1024} KiB. Its requests are "
            "those that began after the clock started.",
            "- Columns: time (and throughput: v1's bytes / time); of 0 ms: throughput kept "
            "against the 0 ms row of the same run; requests (HTTP requests, LIST included) / "
            "TCP connections opened; bytes sent / received on the wire, HTTP heads included; in "
            "flight: the most requests open at once, and their summed durations / the time (from "
            "a request's first byte reaching the proxy to its response's last byte leaving it); "
            "\u2248 serial RTs: (time - time at 0 ms) / RTT, the round trips the latency added "
            "as if each waited for the one before.",
        ]
        if self.dvc_missing:
            notes.append(f"- **DVC was not measured**: {self.dvc_missing}.")
        return notes

    def write(self, facts: dict[str, str], elapsed: float) -> None:
        o = self.opts
        date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        targets = self.targets()
        lines = [
            f"# datavc on S3 at a distance{' (quick)' if o.quick else ''}",
            "",
            f"Generated by `{o.command}` on {date} ({elapsed / 60:.1f} minutes). Regenerate with "
            f"`make bench-remote{'-quick' if o.quick else ''}` (peers and the S3 server: "
            "`make bench-peers`).",
            "",
            "## Machine",
            "",
            "| | |",
            "|---|---|",
            *[f"| {k} | {v} |" for k, v in facts.items()],
            "",
            "## Datasets",
            "",
            *[
                f"- **{ds.name}**: {ds.files:,} file(s), v1 {fmt_bytes(ds.sizes[0])}."
                for ds in self.datasets.values()
            ],
            "",
            "## Method",
            "",
            *self.method(),
            "",
            f"## Targets (issue 16, at {TARGET_RTT} ms)",
            "",
            *targets_table(targets),
        ]
        for ds in self.datasets.values():
            lines += ["", f"## {ds.name}", "", *self.dataset_table(ds), *self.kinds_list(ds)]
            lines += self.load_line(ds)
        lines += self.failures()
        stem = "BENCHMARKS-remote-quick" if o.quick else "BENCHMARKS-remote"
        o.out_dir.mkdir(parents=True, exist_ok=True)
        (o.out_dir / f"{stem}.md").write_text("\n".join(lines) + "\n")
        doc = self.document(facts, date, elapsed, targets)
        (o.out_dir / f"{stem}.json").write_text(json.dumps(doc, indent=1) + "\n")
        log(f"wrote {o.out_dir / stem}.md and .json")

    def failures(self) -> list[str]:
        if not self.figs.errors:
            return []
        lines = [
            "",
            "## Failures",
            "",
            "| dataset | tool | rep | RTT | error |",
            "|---|---|---|---|---|",
        ]
        for e in self.figs.errors:
            error = e["error"].replace("|", "/")
            lines.append(f"| {e['dataset']} | {e['tool']} | {e['rep']} | {e['step']} | {error} |")
        for n in self.figs.notes:
            if n.get("server_log"):
                lines += ["", f"The end of the server's log ({n['dataset']}):", "", "```"]
                lines += [n["server_log"], "```"]
        return lines

    def document(
        self, facts: dict[str, str], date: str, elapsed: float, targets: list[Target]
    ) -> dict[str, Any]:
        o = self.opts
        return {
            "command": o.command,
            "date": date,
            "quick": o.quick,
            "reps": o.reps,
            "peer_reps": min(o.reps, o.peer_reps),
            "rtts_ms": o.rtts,
            "elapsed_s": elapsed,
            "machine": facts,
            "server": self.server_note,
            "dvc_missing": self.dvc_missing,
            "datasets": {
                n: {"files": d.files, "bytes": d.sizes[0], "probe_file": d.probe_file}
                for n, d in self.datasets.items()
            },
            "figures": self.figs.values,
            "medians": self.figs.medians(),
            "errors": self.figs.errors,
            "requests_by_kind": self.figs.notes,
            "targets": [asdict(t) for t in targets],
        }
