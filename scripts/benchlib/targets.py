"""The targets the figures are checked against, and their table."""

from __future__ import annotations

from dataclasses import dataclass

from .common import MiB, X, fmt_bytes, fmt_seconds, fmt_value
from .datasets import Dataset
from .session import Figures


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
