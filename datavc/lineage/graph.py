"""The lineage graph: versions and runs, and how they were made from each other.

Nodes are versions (``NAME@vN`` with their snapshot id) and runs. Edges point the way the
data flowed: an input version to the run that read it (``input``), a run to a version it
wrote (``output``), and a version to one made from it without a run (``derived``, from
``datavc commit --from``). Up from a version: what it was made from, to raw data (versions
made from nothing). Down: what was made from it. Going down needs every record of the
store: each version record and run record is read once.

Records are read as untrusted: a run id with no record is an *unfinished* run (its
outputs were published, then it was killed before its record was written); a damaged
record is a node marked damaged, and the walk does not go through it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..errors import DatavcError, NotFoundError, StoreUnreachable
from ..format.hashing import ObjectId
from ..format.record import DerivedFrom, Forgotten, VersionRecord
from ..format.run import RunRecord
from ..store import runs as store_runs
from ..store import versions
from ..store.chunkstore import ChunkStore

MAX_NODES = 100_000  # a graph larger than this is cut (and says so)


@dataclass
class VersionNode:
    name: str
    version: int
    tree: ObjectId
    store: str | None = None  # None: the graph's own store
    record: VersionRecord | None = None  # None: forgotten, damaged, or in another store
    state: str = "ok"  # ok, forgotten, damaged, missing, foreign

    @property
    def key(self) -> str:
        return version_key(self.name, self.version, self.store)

    @property
    def label(self) -> str:
        return f"{self.name}@v{self.version}"


@dataclass
class RunNode:
    id: str
    record: RunRecord | None = None
    record_hash: ObjectId | None = None
    state: str = "ok"  # ok, unfinished (no record), damaged

    @property
    def key(self) -> str:
        return f"run:{self.id}"

    @property
    def label(self) -> str:
        return f"run {self.record.name if self.record else '?'} {self.id[:12]}"


@dataclass(frozen=True, slots=True)
class Edge:
    source: str
    target: str
    kind: str  # input (version -> run), output (run -> version), derived (version -> version)


@dataclass
class Lineage:
    root: str  # the key of the version asked about
    nodes: dict[str, VersionNode | RunNode] = field(default_factory=dict)
    edges: list[Edge] = field(default_factory=list)
    truncated: bool = False

    def add_edge(self, source: str, target: str, kind: str) -> None:
        edge = Edge(source, target, kind)
        if edge not in self._edge_set:
            self._edge_set.add(edge)
            self.edges.append(edge)

    def __post_init__(self) -> None:
        self._edge_set: set[Edge] = set()

    def versions(self) -> list[VersionNode]:
        return [n for n in self.nodes.values() if isinstance(n, VersionNode)]

    def runs(self) -> list[RunNode]:
        return [n for n in self.nodes.values() if isinstance(n, RunNode)]


def version_key(name: str, version: int, store: str | None = None) -> str:
    return f"{name}@v{version}" if store is None else f"{store}#{name}@v{version}"


class _Walker:
    def __init__(self, store: ChunkStore, graph: Lineage) -> None:
        self.store = store
        self.graph = graph
        # runs whose inputs (up) or outputs (down) were linked, with their keys: a run
        # that many versions name is expanded once, so the walk costs what it reads
        self.inputs_of: dict[str, set[str]] = {}
        self.outputs_of: set[str] = set()

    # -- nodes ----------------------------------------------------------------------

    def version(self, name: str, number: int, tree: ObjectId, store: str | None) -> VersionNode:
        key = version_key(name, number, store)
        node = self.graph.nodes.get(key)
        if isinstance(node, VersionNode):
            return node
        node = VersionNode(name, number, tree, store)
        if store is not None:
            node.state = "foreign"
        else:
            self._load_version(node)
        self._put(key, node)
        return node

    def _load_version(self, node: VersionNode) -> None:
        try:
            rec = versions.read_entry(self.store, node.name, node.version)
        except NotFoundError:
            node.state = "missing"
            return
        except StoreUnreachable:
            raise  # the store did not answer: that says nothing about the record
        except DatavcError:
            node.state = "damaged"
            return
        if isinstance(rec, Forgotten):
            node.state = "forgotten"
        elif rec.tree != node.tree:
            node.state = "damaged"  # the link names another snapshot than the record
        else:
            node.record = rec

    def run(self, run_id: str) -> RunNode:
        key = f"run:{run_id}"
        node = self.graph.nodes.get(key)
        if isinstance(node, RunNode):
            return node
        node = RunNode(run_id)
        try:
            node.record, node.record_hash = store_runs.read_run(self.store, run_id)
        except NotFoundError:
            node.state = "unfinished"
        except StoreUnreachable:
            raise
        except DatavcError:
            node.state = "damaged"
        self._put(key, node)
        return node

    def _put(self, key: str, node: VersionNode | RunNode) -> None:
        if len(self.graph.nodes) >= MAX_NODES:
            self.graph.truncated = True
        self.graph.nodes[key] = node

    # -- up: what a version was made from --------------------------------------------

    def up(self, start: VersionNode) -> None:
        todo = deque([start])
        seen = {start.key}
        while todo and not self.graph.truncated:
            node = todo.popleft()
            for parent in self._sources(node):
                if parent.key not in seen:
                    seen.add(parent.key)
                    todo.append(parent)

    def _sources(self, node: VersionNode) -> list[VersionNode]:
        rec = node.record
        if rec is None:
            return []
        out: list[VersionNode] = []
        via_run: set[str] = set()
        if rec.run is not None:
            run = self.run(rec.run)
            self.graph.add_edge(run.key, node.key, "output")
            if run.record is not None and run.key in self.inputs_of:
                via_run = self.inputs_of[run.key]  # linked, and queued, already
            elif run.record is not None:
                for i in run.record.inputs:
                    src = self.version(i.name, i.version, i.tree, i.store)
                    self.graph.add_edge(src.key, run.key, "input")
                    via_run.add(src.key)
                    out.append(src)
                self.inputs_of[run.key] = via_run
        for d in rec.derived_from:
            src = self._derived(d)
            if src.key not in via_run:
                self.graph.add_edge(src.key, node.key, "derived")
                out.append(src)
        return out

    def _derived(self, d: DerivedFrom) -> VersionNode:
        return self.version(d.name, d.version, d.tree, d.store)

    # -- down: what was made from a version ------------------------------------------

    def down(self, start: VersionNode) -> None:
        readers, derived = self._reverse_index()
        todo = deque([start])
        seen = {start.key}
        while todo and not self.graph.truncated:
            node = todo.popleft()
            found: list[VersionNode] = []
            for run_id in readers.get(node.key, []):
                run = self.run(run_id)
                self.graph.add_edge(node.key, run.key, "input")
                if run.key in self.outputs_of:
                    continue  # its outputs were linked, and queued, already
                self.outputs_of.add(run.key)
                for o in run.record.outputs if run.record else ():
                    out = self.version(o.name, o.version, o.tree, None)
                    self.graph.add_edge(run.key, out.key, "output")
                    found.append(out)
            for made in derived.get(node.key, []):
                found += self._derived_down(node, made)
            for child in found:
                if child.key not in seen:
                    seen.add(child.key)
                    todo.append(child)

    def _derived_down(self, node: VersionNode, made: VersionRecord) -> list[VersionNode]:
        """A version whose record names ``node`` as derived-from: linked unless its run's
        record says so already; a run without a readable record is shown, as going up."""
        run = self.run(made.run) if made.run is not None else None
        if run is not None and run.record is not None:
            return []  # the run's input and output edges say it
        child = self.version(made.name, made.version, made.tree, None)
        if run is not None:
            self.graph.add_edge(run.key, child.key, "output")
        self.graph.add_edge(node.key, child.key, "derived")
        return [child]

    def _reverse_index(self) -> tuple[dict[str, list[str]], dict[str, list[VersionRecord]]]:
        """Which runs read each version, and which versions name each as derived-from
        (one pass over every run record and version record)."""
        readers: dict[str, list[str]] = {}
        for run, _ in store_runs.iter_runs(self.store):
            for i in run.inputs:
                readers.setdefault(version_key(i.name, i.version, i.store), []).append(run.id)
        derived: dict[str, list[VersionRecord]] = {}
        for rec in _every_version(self.store):
            for d in rec.derived_from:
                derived.setdefault(version_key(d.name, d.version, d.store), []).append(rec)
        return readers, derived


def _every_version(store: ChunkStore) -> Iterable[VersionRecord]:
    for name in versions.dataset_names(store):
        for number in versions.version_numbers(store, name):
            try:
                rec = versions.read_entry(store, name, number)
            except StoreUnreachable:
                raise
            except DatavcError:
                continue  # damaged: fsck names it
            if isinstance(rec, VersionRecord):
                yield rec


def lineage(store: ChunkStore, rec: VersionRecord, up: bool = True, down: bool = True) -> Lineage:
    """The lineage graph around version ``rec``: up (what it was made from), down (what
    was made from it), or both."""
    graph = Lineage(version_key(rec.name, rec.version))
    walker = _Walker(store, graph)
    start = walker.version(rec.name, rec.version, rec.tree, None)
    if up:
        walker.up(start)
    if down:
        walker.down(start)
    return graph
