"""A lineage graph (:mod:`.graph`) written out for people and tools: text, mermaid,
graphviz dot, JSON and OpenLineage run events.

Everything in a graph was read from a store and is untrusted: names keep to the dataset
name alphabet, but a run's command, author, paths and a foreign store's URL may hold any
character. Each format escapes them its own way, so no value can end a label, a string or
a line early; a store URL is shown only with its credentials removed (:func:`namespace`).

Formats:

- ``text``: the version asked about, then what it was made from (``<-``, up) and what was
  made from it (``->``, down) as indented trees, one line a node; a node met again is
  named, not repeated.
- ``mermaid``: ``flowchart LR``; versions are cylinders, runs stadiums, ``derived`` links
  dotted; node ids are ``v0``, ``r0``...; labels are quoted, and every character outside
  letters, digits and `` ._-@:/+=,()`` is written as mermaid's ``#NNN;`` entity.
- ``dot``: a graphviz digraph with every id and label quoted, ``\\`` and ``"`` escaped.
- ``json``: ``{"root", "direction", "nodes", "edges", "truncated"}`` (README, "JSON
  output").
- ``openlineage``: one OpenLineage RunEvent (spec 2-0-2) a line for each run in the graph
  that has a record (an unfinished or damaged run has nothing to report): COMPLETE or
  FAIL at the run's end. Datasets are ``NAME@vN`` in the namespace of their store's URL,
  with the snapshot id in the standard ``version`` facet; the run's code, parameters and
  environment are in the ``datavc_run`` run facet, an input's workspace path in the
  ``datavc_input`` input facet. datavc has no web home yet, so its producer URI and its
  facets' schema URIs are URNs (``urn:datavc:VERSION``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

from ..format.record import VersionRecord
from ..format.run import RunInput, RunRecord, uuid_text
from .graph import Edge, Lineage, RunNode, VersionNode

FORMATS = ("text", "mermaid", "dot", "json", "openlineage")
OPENLINEAGE_SCHEMA = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent"
VERSION_FACET_SCHEMA = (
    "https://openlineage.io/spec/facets/1-0-1/DatasetVersionDatasetFacet.json"
    "#/$defs/DatasetVersionDatasetFacet"
)
MAX_INDENT = 40  # deeper text trees stop indenting (and show the depth instead)

Node = VersionNode | RunNode


def render(
    graph: Lineage, fmt: str, store_url: str, up: bool = True, down: bool = True
) -> list[str]:
    """``graph`` in format ``fmt`` (one of FORMATS) as lines; ``store_url`` is the URL of
    the store it was read from, ``up``/``down`` the directions that were walked."""
    if fmt == "text":
        return text_lines(graph, store_url, up, down)
    if fmt == "mermaid":
        return mermaid_lines(graph)
    if fmt == "dot":
        return dot_lines(graph)
    if fmt == "json":
        doc = json_doc(graph, store_url, up, down)
        return json.dumps(doc, indent=1, ensure_ascii=True).splitlines()
    if fmt == "openlineage":
        return [json.dumps(e, ensure_ascii=True) for e in openlineage_events(graph, store_url)]
    raise ValueError(f"unknown lineage format {fmt!r}")


def namespace(url: str) -> str:
    """A store's URL as a name that holds no secret: without the user and password, the
    query (where signed URLs keep theirs) and the fragment, so nothing that
    :func:`~datavc.store.backend.url_credentials` looks for is left; a local folder as a
    ``file://`` URL."""
    if "://" not in url:
        return ("file://" if url.startswith("/") else "file:") + quote(url, safe="/")
    scheme, rest = url.split("://", 1)
    rest = rest.split("?", 1)[0].split("#", 1)[0]
    host, sep, path = rest.partition("/")
    return f"{scheme}://{host.rpartition('@')[2]}{sep}{path}".rstrip("/")


def public_ids(graph: Lineage) -> dict[str, str]:
    """Each node's id in the output: ``NAME@vN``, ``NAMESPACE#NAME@vN`` for a version in
    another store, ``run:ID``; unique even if two store URLs read alike once cleaned."""
    out: dict[str, str] = {}
    taken: set[str] = set()
    for key, node in graph.nodes.items():
        base = key
        if isinstance(node, VersionNode) and node.store is not None:
            base = f"{namespace(node.store)}#{node.label}"
        ident, n = base, 1
        while ident in taken:
            n += 1
            ident = f"{base}~{n}"
        taken.add(ident)
        out[key] = ident
    return out


# -- text -----------------------------------------------------------------------------


def text_lines(graph: Lineage, store_url: str, up: bool, down: bool) -> list[str]:
    root = graph.nodes[graph.root]
    lines = [f"{_node_text(root, store_url)}  (store {namespace(store_url)})"]
    for walked, title, arrow, adjacency in (
        (up, "made from:", "<-", _sources(graph)),
        (down, "made into:", "->", _targets(graph)),
    ):
        if walked:
            tree = list(_tree(graph, adjacency, arrow, store_url))
            lines.append(title if tree else f"{title} nothing recorded")
            lines += tree
    if graph.truncated:
        lines.append(f"note: the graph was cut at {len(graph.nodes)} nodes")
    return lines


def _sources(graph: Lineage) -> dict[str, list[Edge]]:
    out: dict[str, list[Edge]] = {}
    for e in graph.edges:
        out.setdefault(e.target, []).append(e)
    return out


def _targets(graph: Lineage) -> dict[str, list[Edge]]:
    out: dict[str, list[Edge]] = {}
    for e in graph.edges:
        out.setdefault(e.source, []).append(e)
    return out


def _tree(
    graph: Lineage, adjacency: dict[str, list[Edge]], arrow: str, store_url: str
) -> Iterator[str]:
    """Depth first from the root along ``adjacency`` (without recursion: a chain may be
    long); a node already shown is named and not followed again."""
    shown = {graph.root}
    stack = [(e, 1) for e in reversed(adjacency.get(graph.root, []))]
    while stack:
        edge, depth = stack.pop()
        key = edge.source if arrow == "<-" else edge.target
        node = graph.nodes[key]
        derived = "  (derived)" if edge.kind == "derived" else ""
        indent = "  " * min(depth, MAX_INDENT) + (f"[{depth}] " if depth > MAX_INDENT else "")
        if key in shown:
            yield f"{indent}{arrow} {_short(node)} (shown above){derived}"
            continue
        shown.add(key)
        yield f"{indent}{arrow} {_node_text(node, store_url)}{derived}"
        stack += [(e, depth + 1) for e in reversed(adjacency.get(key, []))]


def _short(node: Node) -> str:
    return node.label if isinstance(node, VersionNode) else f"run {_run_name(node)} {node.id[:12]}"


def _node_text(node: Node, store_url: str) -> str:
    if isinstance(node, RunNode):
        return _run_text(node)
    line = f"{node.label}  snapshot {node.tree[:12]}"
    if node.state == "foreign" and node.store is not None:
        return f"{line}  [in store {namespace(node.store)}]"
    return line + _VERSION_STATE.get(node.state, f"  [{node.state}]")


_VERSION_STATE = {
    "ok": "",
    "forgotten": "  [forgotten]",
    "missing": "  [missing: no such version in the store]",
    "damaged": "  [damaged: its record cannot be read or names another snapshot]",
}


def _run_text(node: RunNode) -> str:
    rec = node.record
    if rec is None:
        what = "unfinished: no run record" if node.state == "unfinished" else "damaged record"
        return f"run ? {node.id[:12]}  [{what}]"
    status = "exit 0" if rec.exit == 0 else f"exit {rec.exit} (failed)"
    return f"run {rec.name} {rec.id[:12]}  {status}  {rec.author}  {rec.ended}"


def _run_name(node: RunNode) -> str:
    return node.record.name if node.record else "?"


# -- mermaid --------------------------------------------------------------------------

_MERMAID_KEEP = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ._-@:/+=,()"
)
_MERMAID_CLASSES = {
    "asked": "fill:#fde68a,stroke:#b45309,stroke-width:3px",
    "unfinished": "fill:#fff7ed,stroke:#c2410c,stroke-dasharray:5 5",
    "damaged": "fill:#fecaca,stroke:#b91c1c",
    "gone": "fill:#e5e7eb,stroke:#6b7280,color:#6b7280",
    "foreign": "fill:#dbeafe,stroke:#1d4ed8",
}


def mermaid_text(text: str) -> str:
    """``text`` safe inside a quoted mermaid label: letters, digits and a few plain marks
    as they are, anything else (quotes, ``#``, ``<``, backticks, controls) as ``#NNN;``."""
    return "".join(c if c in _MERMAID_KEEP or c.isalnum() else f"#{ord(c)};" for c in text)


def mermaid_lines(graph: Lineage) -> list[str]:
    ids = diagram_ids(graph)
    lines = ["flowchart LR"]
    for key, node in graph.nodes.items():
        label = "<br/>".join(mermaid_text(part) for part in _label_parts(node))
        shape = ('[("', '")]') if isinstance(node, VersionNode) else ('(["', '"])')
        lines.append(f"  {ids[key]}{shape[0]}{label}{shape[1]}")
    for e in graph.edges:
        arrow = "-.->|derived|" if e.kind == "derived" else "-->"
        lines.append(f"  {ids[e.source]} {arrow} {ids[e.target]}")
    classes = _classes(graph, ids)
    for name in sorted({c for c, _ in classes}):
        lines.append(f"  classDef {name} {_MERMAID_CLASSES[name]}")
    lines += [f"  class {ident} {name}" for name, ident in classes]
    return lines


def diagram_ids(graph: Lineage) -> dict[str, str]:
    """Ids a diagram can use whatever the names: ``v0``, ``v1``... and ``r0``..."""
    out: dict[str, str] = {}
    counts = {"v": 0, "r": 0}
    for key, node in graph.nodes.items():
        kind = "v" if isinstance(node, VersionNode) else "r"
        out[key] = f"{kind}{counts[kind]}"
        counts[kind] += 1
    return out


def _classes(graph: Lineage, ids: dict[str, str]) -> list[tuple[str, str]]:
    """(class, diagram id) for the version asked about and every node not ``ok``."""
    out = [("asked", ids[graph.root])]
    for key, node in graph.nodes.items():
        name = {"forgotten": "gone", "missing": "gone"}.get(node.state, node.state)
        if name in _MERMAID_CLASSES and name != "asked":
            out.append((name, ids[key]))
    return out


def _label_parts(node: Node) -> list[str]:
    """A node's label, one item a line, for the diagrams."""
    if isinstance(node, VersionNode):
        parts = [node.label, f"snapshot {node.tree[:12]}"]
        if node.state == "foreign" and node.store is not None:
            return [*parts, f"in {namespace(node.store)}"]
        return parts if node.state == "ok" else [*parts, node.state]
    rec = node.record
    if rec is None:
        return [f"run {node.id[:12]}", node.state]
    return [f"run {rec.name}", f"{rec.id[:12]} exit {rec.exit}", rec.author, rec.ended]


# -- dot ------------------------------------------------------------------------------

_DOT_STYLE = {
    "ok": "",
    "unfinished": ', style="dashed", color="#c2410c"',
    "damaged": ', style="filled", fillcolor="#fecaca", color="#b91c1c"',
    "forgotten": ', style="filled", fillcolor="#e5e7eb", fontcolor="#6b7280"',
    "missing": ', style="filled", fillcolor="#e5e7eb", fontcolor="#6b7280"',
    "foreign": ', style="filled", fillcolor="#dbeafe"',
}


def dot_text(text: str) -> str:
    """``text`` as the inside of a quoted dot string: controls written out as ``\\xNN``
    (shown as text), then every backslash and double quote escaped."""
    shown = "".join(c if c.isprintable() else _code(c) for c in text)
    return shown.replace("\\", "\\\\").replace('"', '\\"')


def _code(c: str) -> str:
    n = ord(c)
    return f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}"


def dot_lines(graph: Lineage) -> list[str]:
    ids = diagram_ids(graph)
    lines = ['digraph "lineage" {', '  rankdir="LR";', '  node [fontname="Helvetica"];']
    for key, node in graph.nodes.items():
        label = "\\n".join(dot_text(p) for p in _label_parts(node))
        shape = "cylinder" if isinstance(node, VersionNode) else "box"
        style = _DOT_STYLE.get(node.state, "")
        if key == graph.root:
            style = ', style="filled,bold", fillcolor="#fde68a", penwidth="2"'
        lines.append(f'  "{ids[key]}" [shape="{shape}", label="{label}"{style}];')
    for e in graph.edges:
        extra = ' [style="dashed", label="derived"]' if e.kind == "derived" else ""
        lines.append(f'  "{ids[e.source]}" -> "{ids[e.target]}"{extra};')
    return [*lines, "}"]


# -- json -----------------------------------------------------------------------------


def json_doc(graph: Lineage, store_url: str, up: bool, down: bool) -> dict[str, Any]:
    ids = public_ids(graph)
    nodes = [
        _version_doc(n, ids[k]) if isinstance(n, VersionNode) else _run_doc(n, ids[k])
        for k, n in graph.nodes.items()
    ]
    return {
        "root": ids[graph.root],
        "store": namespace(store_url),
        "direction": "both" if up and down else ("up" if up else "down"),
        "nodes": nodes,
        "edges": [_edge_doc(e, ids) for e in graph.edges],
        "truncated": graph.truncated,
    }


def _edge_doc(e: Edge, ids: dict[str, str]) -> dict[str, str]:
    return {"from": ids[e.source], "to": ids[e.target], "kind": e.kind}


def _version_doc(node: VersionNode, ident: str) -> dict[str, Any]:
    rec: VersionRecord | None = node.record
    return {
        "id": ident,
        "type": "version",
        "name": node.name,
        "version": node.version,
        "snapshot": node.tree,
        "store": None if node.store is None else namespace(node.store),
        "state": node.state,
        "time": rec.time if rec else None,
        "author": rec.author if rec else None,
        "message": rec.message if rec else None,
        "run": rec.run if rec else None,
    }


def _run_doc(node: RunNode, ident: str) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": ident,
        "type": "run",
        "run_id": node.id,
        "uuid": uuid_text(node.id),
        "state": node.state,
        "record_hash": node.record_hash,
    }
    fields = _run_fields(node.record) if node.record else dict.fromkeys(_RUN_FIELDS)
    return {**doc, **fields}


_RUN_FIELDS = (
    "name", "command", "cwd", "author", "started", "ended", "exit", "code", "params",
    "environment", "inputs", "outputs",
)  # fmt: skip


def _run_fields(rec: RunRecord) -> dict[str, Any]:
    return {
        "name": rec.name,
        "command": list(rec.command),
        "cwd": rec.cwd,
        "author": rec.author,
        "started": rec.started,
        "ended": rec.ended,
        "exit": rec.exit,
        "code": {"git_head": rec.code.git_head, "dirty": rec.code.dirty, "diff": rec.code.diff},
        "params": [{"path": p.path, "hash": p.hash, "size": p.size} for p in rec.params],
        "environment": _environment(rec),
        "inputs": [_input_doc(i) for i in rec.inputs],
        "outputs": [
            {"name": o.name, "version": o.version, "snapshot": o.tree, "path": o.path}
            for o in rec.outputs
        ],
    }


def _environment(rec: RunRecord) -> dict[str, Any]:
    env = rec.environment
    return {
        "python": env.python,
        "implementation": env.implementation,
        "platform": env.platform,
        "machine": env.machine,
        "packages": dict(sorted(env.packages.items())),
        "env": dict(sorted(env.env.items())),
        "container": dict(sorted(env.container.items())),
    }


def _input_doc(i: RunInput) -> dict[str, Any]:
    return {
        "name": i.name,
        "version": i.version,
        "snapshot": i.tree,
        "store": None if i.store is None else namespace(i.store),
        "path": i.path,
        "dirty": i.dirty,
    }


# -- OpenLineage ----------------------------------------------------------------------


def producer_uri(version: str) -> str:
    return f"urn:datavc:{version}"


def datavc_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("datavc")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "0+unknown"


def openlineage_events(
    graph: Lineage, store_url: str, version: str | None = None
) -> list[dict[str, Any]]:
    """One RunEvent for each run of the graph that has a record, in the order they ended."""
    producer = producer_uri(version or datavc_version())
    own = namespace(store_url)
    records = [(n.record, n.record_hash or "") for n in graph.runs() if n.record is not None]
    records.sort(key=lambda r: (r[0].ended, r[0].id))
    return [_run_event(rec, digest, own, producer) for rec, digest in records]


def _run_event(rec: RunRecord, digest: str, own: str, producer: str) -> dict[str, Any]:
    facet = _facet_maker(producer)
    return {
        "eventType": "COMPLETE" if rec.exit == 0 else "FAIL",
        "eventTime": rec.ended,
        "run": {
            "runId": uuid_text(rec.id),
            "facets": {"datavc_run": facet("DatavcRunFacet", _run_facet(rec, digest))},
        },
        "job": {"namespace": own, "name": rec.name},
        "inputs": [
            _dataset(i.name, i.version, i.tree, namespace(i.store) if i.store else own, facet)
            | {"inputFacets": {"datavc_input": facet("DatavcInputFacet", _input_facet(i))}}
            for i in rec.inputs
        ],
        "outputs": [_dataset(o.name, o.version, o.tree, own, facet) for o in rec.outputs],
        "producer": producer,
        "schemaURL": OPENLINEAGE_SCHEMA,
    }


Facet = Callable[[str, dict[str, Any]], dict[str, Any]]


def _facet_maker(producer: str) -> Facet:
    """Facets of this producer: the two fields every facet carries, then its own."""

    def facet(kind: str, fields: dict[str, Any]) -> dict[str, Any]:
        schema = VERSION_FACET_SCHEMA if kind == "version" else f"{producer}#/$defs/{kind}"
        return {"_producer": producer, "_schemaURL": schema, **fields}

    return facet


def _dataset(name: str, number: int, tree: str, ns: str, facet: Facet) -> dict[str, Any]:
    return {
        "namespace": ns,
        "name": f"{name}@v{number}",
        "facets": {"version": facet("version", {"datasetVersion": tree})},
    }


def _run_facet(rec: RunRecord, digest: str) -> dict[str, Any]:
    return {
        "runId": rec.id,
        "record": digest,
        "command": list(rec.command),
        "cwd": rec.cwd,
        "author": rec.author,
        "started": rec.started,
        "ended": rec.ended,
        "exit": rec.exit,
        "code": {"gitHead": rec.code.git_head, "dirty": rec.code.dirty, "diff": rec.code.diff},
        "params": [{"path": p.path, "hash": p.hash, "size": p.size} for p in rec.params],
        "environment": _environment(rec),
    }


def _input_facet(i: RunInput) -> dict[str, Any]:
    return {"path": i.path, "dirty": i.dirty}
