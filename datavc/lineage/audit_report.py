"""An audit report (:mod:`.audit`) rendered: one Markdown page, or a JSON document.

Everything a record says (commands, paths, authors, messages, times) is escaped for
Markdown: a record cannot add table columns, links or code spans to the page.
"""

from __future__ import annotations

import re

from ..format.record import VersionRecord
from ..format.run import CodeState, Environment
from .audit import AuditReport, run_label
from .graph import RunNode, VersionNode

# -- rendering: Markdown ------------------------------------------------------------------

_MD_SPECIAL = str.maketrans({c: "\\" + c for c in "\\`*[]<>|#"})


def md(text: str) -> str:
    """Text from a record, safe in Markdown (and in a table cell)."""
    return text.translate(_MD_SPECIAL)


def code(text: str) -> str:
    """Text from a record as a code span: fenced by one backtick more than its longest
    run of backticks, so that none in it can end the span early."""
    if "`" not in text:
        return f"`{text}`"
    fence = "`" * (max(len(r) for r in re.findall("`+", text)) + 1)
    return f"{fence} {text} {fence}"


def render_markdown(r: AuditReport) -> list[str]:
    """The report as Markdown lines: summary, runs, versions, verification, notes."""
    lines = [f"# Audit of {md(r.target)}", "", *_summary_md(r), "", "## Runs", ""]
    for run in r.runs():
        lines += _run_md(run)
    if not r.graph.runs():
        lines += ["No run made these versions.", ""]
    lines += ["## Versions", "", "| version | snapshot | author | time | message | made |"]
    lines.append("|---|---|---|---|---|---|")
    lines += [_version_row(v) for v in r.versions()]
    lines += ["", "## Verification", "", "| item | check | result | detail |", "|---|---|---|---|"]
    lines += [f"| {md(c.item)} | {md(c.what)} | {c.result} | {md(c.detail)} |" for c in r.checks]
    lines += ["", _fsck_line(r)]
    lines += [f"- note: {md(n)}" for n in r.notes]
    return lines


def _summary_md(r: AuditReport) -> list[str]:
    failed = r.failures()
    verdict = (
        f"**verified**: {len(r.checks)} checks passed"
        if not failed
        else f"**FAILED**: {len(failed)} of {len(r.checks)} checks (exit {r.exit_code})"
    )
    return [
        f"- snapshot: `{r.snapshot}`",
        f"- result: {verdict}",
        f"- lineage: {len(r.graph.versions())} versions, {len(r.graph.runs())} runs",
    ]


def _fsck_line(r: AuditReport) -> str:
    c = r.checked
    return (
        f"Data: fsck read {c.get('bytes_read', 0)} bytes of {c.get('packs', 0)} packs "
        f"({c.get('chunks', 0)} chunks, every one re-hashed) and checked "
        f"{c.get('versions', 0)} versions, {c.get('pages', 0)} tree pages."
    )


def _run_md(run: RunNode) -> list[str]:
    head = f"### {md(run_label(run))} (`{run.id}`)"
    rec = run.record
    if rec is None:
        why = "no record in the store (unfinished)" if run.state == "unfinished" else "damaged"
        return [head, "", f"- record: {why}", ""]
    where = f" in {code(rec.cwd)}" if rec.cwd else ""
    lines = [head, "", f"- command: {code(' '.join(rec.command))}{where}"]
    lines.append(f"- author: {md(rec.author)}")
    lines.append(f"- started {rec.started}, ended {rec.ended}, exit {rec.exit}")
    lines.append(f"- code: {_code_state(rec.code)}")
    lines += [f"- param: {code(p.path)} ({p.size} bytes, BLAKE3 `{p.hash}`)" for p in rec.params]
    lines += _environment_md(rec.environment)
    for i in rec.inputs:
        where = f", {code(i.path)}" if i.path else ""
        where += f", from {code(i.store)}" if i.store else ""
        lines.append(f"- input: {md(i.label)} (snapshot `{i.tree[:12]}`{where})")
    for o in rec.outputs:
        lines.append(f"- output: {md(o.label)} (snapshot `{o.tree[:12]}`, {code(o.path)})")
    lines.append(f"- record hash: `{run.record_hash}`")
    return [*lines, ""]


def _code_state(c: CodeState) -> str:
    if c.git_head is None:
        return "not in a git repository"
    return f"git `{c.git_head}` " + (f"dirty (diff `{c.diff}`)" if c.dirty else "clean")


def _environment_md(env: Environment) -> list[str]:
    lines = [
        f"- environment: Python {md(env.python)} ({md(env.implementation)}) on "
        f"{md(env.platform)} ({md(env.machine)}), {len(env.packages)} packages"
    ]
    lines += [f"- env: {code(f'{k}={v}')}" for k, v in sorted(env.env.items())]
    lines += [f"- container: {code(f'{k}={v}')}" for k, v in sorted(env.container.items())]
    return lines


def _version_row(v: VersionNode) -> str:
    rec = v.record
    if rec is None:
        where = f" in {v.store}" if v.store else ""
        return f"| {md(v.label)} | `{v.tree[:12]}` | | | | {md(v.state + where)} |"
    return (
        f"| {md(v.label)} | `{v.tree[:12]}` | {md(rec.author)} | {md(rec.time)} | "
        f"{md(rec.message)} | {md(made(rec))} |"
    )


def made(rec: VersionRecord) -> str:
    """raw data, made by a run, or derived from other versions."""
    sources = ", ".join(d.label + (f" ({d.store})" if d.store else "") for d in rec.derived_from)
    if rec.run is not None:
        return f"by run {rec.run[:12]}" + (f" from {sources}" if sources else "")
    return f"derived from {sources}" if sources else "raw data"


# -- rendering: JSON ----------------------------------------------------------------------


def report_json(r: AuditReport) -> dict[str, object]:
    return {
        "target": r.target,
        "snapshot": r.snapshot,
        "ok": r.ok,
        "exit_code": r.exit_code,
        "runs": [_run_json(run) for run in r.runs()],
        "versions": [_version_json(v) for v in r.versions()],
        "checks": [
            {
                "item": c.item,
                "check": c.what,
                "result": c.result.lower(),
                "detail": c.detail,
                "exit_code": c.code,
            }
            for c in r.checks
        ],
        "fsck": r.checked,
        "notes": r.notes,
        "truncated": r.graph.truncated,
    }


def _run_json(run: RunNode) -> dict[str, object]:
    doc: dict[str, object] = {"id": run.id, "state": run.state, "record_hash": run.record_hash}
    rec = run.record
    if rec is None:
        return doc
    env = rec.environment
    doc.update(
        name=rec.name,
        command=list(rec.command),
        cwd=rec.cwd,
        author=rec.author,
        started=rec.started,
        ended=rec.ended,
        exit=rec.exit,
        code={"git_head": rec.code.git_head, "dirty": rec.code.dirty, "diff": rec.code.diff},
        params=[{"path": p.path, "hash": p.hash, "size": p.size} for p in rec.params],
        environment={
            "python": env.python,
            "implementation": env.implementation,
            "platform": env.platform,
            "machine": env.machine,
            "packages": len(env.packages),
            "env": env.env,
            "container": env.container,
        },
        inputs=[
            {"version": i.label, "snapshot": i.tree, "path": i.path, "store": i.store}
            for i in rec.inputs
        ],
        outputs=[{"version": o.label, "snapshot": o.tree, "path": o.path} for o in rec.outputs],
    )
    return doc


def _version_json(v: VersionNode) -> dict[str, object]:
    doc: dict[str, object] = {
        "version": v.label,
        "snapshot": v.tree,
        "state": v.state,
        "store": v.store,
    }
    rec = v.record
    if rec is not None:
        doc.update(
            author=rec.author,
            time=rec.time,
            message=rec.message,
            run=rec.run,
            derived_from=[d.label for d in rec.derived_from],
        )
    return doc
