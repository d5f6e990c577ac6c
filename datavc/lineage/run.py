"""Runs: ``datavc run -- CMD`` and ``with datavc.track(...)``.

A run is started (code state, parameter files, environment and the workspace datasets it
reads are taken then, and the datasets checked clean), told what it opens through
``datavc.open`` while it runs, and finished: when the command succeeded, each output is
added and committed as a version whose record names the run and its inputs; then the run
record is created, exclusively, and last; then the lock file ``runs/NAME.lock`` is
written. A run killed before its record exists leaves output versions that name a run id
with no record (``lineage`` shows it as unfinished), never a run record that names a
version that does not exist. A command that fails gets a record of its exit status and no
outputs, and its lock file is left as it was.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from blake3 import blake3

from ..errors import BadInput, PathNotFound, UsageError
from ..format.hashing import ObjectId
from ..format.paths import check_name
from ..format.record import DerivedFrom
from ..format.run import (
    LOCK_FOLDER,
    LOCK_SUFFIX,
    MAX_PARAM_CONTENT,
    MAX_PARAMS,
    CodeState,
    Environment,
    RunInput,
    RunOutput,
    RunParam,
    RunRecord,
    encode_lock,
    make_run_id,
)
from ..store.atomic import write_text_atomic
from ..store.backend import without_credentials
from ..store.runs import create_run
from ..workspace.add import add_locked, new_nonce
from ..workspace.commit import commit_locked
from ..workspace.core import Workspace, write_staged
from ..workspace.git import git_author
from ..workspace.lock import workspace_lock
from . import tracking
from .environment import capture_environment, code_state, command_python

if TYPE_CHECKING:
    from ..workspace.core import Dataset


@dataclass(frozen=True, slots=True)
class RunOptions:
    name: str | None = None
    params: tuple[str, ...] = ()  # parameter files (paths as the user gave them)
    outputs: tuple[str, ...] = ()  # folders or files the run writes
    inputs: tuple[str, ...] | None = None  # workspace datasets read (None: every other one)
    env: tuple[str, ...] = ()  # environment variables to record
    allow_dirty: bool = False
    message: str | None = None


@dataclass
class RunResult:
    record: RunRecord
    record_hash: ObjectId
    lock: str | None  # the lock file written (workspace-relative), None for a failed run


def now_text() -> str:
    t = datetime.now(timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def default_name(command: list[str]) -> str:
    """``train`` for ``python train.py``; else the program's name."""
    for arg in command:
        if arg.endswith(".py"):
            return _as_name(os.path.basename(arg)[:-3])
    return _as_name(os.path.basename(command[0]) if command else "run")


def _as_name(text: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "-_." else "-" for c in text).strip("-.")
    return cleaned or "run"


@dataclass
class Run:
    """One run in a workspace: :meth:`start`, then :meth:`finish` with the exit status."""

    ws: Workspace
    command: list[str]
    options: RunOptions
    python: str | None = None  # the interpreter whose environment is recorded (None: this)
    id: str = ""
    name: str = ""
    cwd: str = ""
    started: str = ""
    code: CodeState | None = None
    environment: Environment | None = None
    params: list[RunParam] = field(default_factory=list)
    inputs: dict[tuple[str | None, str, int], RunInput] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)  # workspace-relative paths

    def start(self) -> None:
        ws, opts = self.ws, self.options
        self.name = opts.name or default_name(self.command)
        check_name(self.name)
        ws.check_parents(self.lock_path)  # ``runs`` may be a symlink from git: refused now
        self.cwd = _cwd_in(ws)
        self.outputs = [ws.rel(p) for p in opts.outputs]
        if len(set(self.outputs)) != len(self.outputs):
            raise BadInput("an output is named twice")
        known = ws.datasets()  # one walk of the workspace for its pointer files
        _check_overlaps(self.outputs, [d.path for d in known.values()])
        self.params = [_param(ws, p) for p in opts.params]
        if len(self.params) > MAX_PARAMS:
            raise BadInput(f"at most {MAX_PARAMS} parameter files")
        for ds, dirty in self._workspace_inputs(known):
            rec = ws.pointed(ds.pointer, ds.path) if ds.pointer else None
            if rec is None:
                raise UsageError(f"{ds.name} has no committed version: commit it first")
            key = (None, rec.name, rec.version)
            self.inputs[key] = RunInput(rec.name, rec.version, rec.tree, ds.path, None, dirty)
        self.code = code_state(ws.root)
        self.environment = capture_environment(list(opts.env), self.python)
        self.id = make_run_id(int(time.time() * 1000), secrets.randbits(80))
        self.started = now_text()
        tracking.listen(self.opened)

    @property
    def lock_path(self) -> str:
        return f"{LOCK_FOLDER}/{self.name}{LOCK_SUFFIX}"

    def _workspace_inputs(self, known: dict[str, Dataset]) -> list[tuple[Dataset, bool]]:
        """The workspace datasets read, each with whether its folder differs from its
        pointer's snapshot (an error unless allow_dirty)."""
        ws = self.ws
        by_path = {d.path: d for d in known.values()}
        if self.options.inputs is None:
            chosen = [d for d in known.values() if d.path not in self.outputs]
        else:
            chosen = [_dataset(ws, known, by_path, x) for x in self.options.inputs]
        for ds in chosen:
            if ds.path in self.outputs:
                raise BadInput(f"{ds.path} is both an input and an output of the run")
        states = {s.name: s for s in ws.status()} if chosen else {}
        out = []
        for ds in sorted(chosen, key=lambda d: d.path):
            st = states[ds.name]
            if st.error is not None:
                raise st.error
            dirty = st.state != "clean"
            if dirty and not self.options.allow_dirty:
                raise UsageError(
                    f"{ds.path} is {st.state} ({st.detail}): a run reads committed data; "
                    "commit or check it out first, or pass --allow-dirty"
                )
            out.append((ds, dirty))
        return out

    def opened(self, store_url: str, name: str, version: int, tree: ObjectId) -> None:
        """``datavc.open`` resolved a snapshot in this process."""
        own = _same_store(store_url, self.ws.config.store)
        store = None if own else without_credentials(store_url)  # the record is shared
        self.inputs.setdefault((store, name, version), RunInput(name, version, tree, None, store))

    def read_log(self, path: str) -> None:
        """Snapshots the command's processes opened (see :mod:`.tracking`)."""
        for url, found in tracking.read_log(path):
            self.opened(url, found.name, found.version, found.tree)

    def finish(self, exit_code: int) -> RunResult:
        """Commit the outputs (if the command succeeded), then create the run record, then
        write the lock file."""
        tracking.stop_listening(self.opened)
        ended = now_text()
        inputs = tuple(sorted(self.inputs.values(), key=lambda i: (i.name, i.version)))
        outputs: tuple[RunOutput, ...] = ()
        if exit_code == 0:
            outputs = self._commit_outputs(inputs)
        record = RunRecord(
            id=self.id,
            name=self.name,
            command=tuple(self.command),
            cwd=self.cwd,
            author=git_author(self.ws.root),
            started=self.started,
            ended=ended,
            exit=max(-255, min(255, exit_code)),
            code=self.code or CodeState(None, False, None),
            inputs=inputs,
            params=tuple(self.params),
            environment=self.environment or capture_environment([]),
            outputs=outputs,
        )
        digest = create_run(self.ws.store, record)
        lock = None
        if exit_code == 0:
            lock = self.lock_path
            self.ws.check_parents(lock)  # and again: never written through a symlink
            os.makedirs(self.ws.abs(LOCK_FOLDER), exist_ok=True)
            write_text_atomic(self.ws.abs(lock), encode_lock(record, digest))
        return RunResult(record, digest, lock)

    def _commit_outputs(self, inputs: tuple[RunInput, ...]) -> tuple[RunOutput, ...]:
        ws = self.ws
        for rel in self.outputs:
            if not os.path.lexists(ws.abs(rel)):
                raise PathNotFound(f"{rel} (an output of the run: the command did not write it)")
        derived = tuple(DerivedFrom(i.name, i.version, i.tree, i.store) for i in inputs)
        message = self.options.message or f"run {self.name} ({self.id[:12]})"
        names = []
        with workspace_lock(ws.state):
            for rel in self.outputs:
                added = add_locked(ws, rel, None)
                # A version each run, with a nonce of its own: unchanged data still gets
                # a record naming this run, and data staged by a run that was killed
                # while committing is not taken for this run's (its record names it).
                fresh = dataclasses.replace(added.staged, nonce=new_nonce())
                write_staged(ws.staged_path(added.staged.name), fresh)
                names.append(added.staged.name)
            records, _ = commit_locked(ws, names, message, False, derived, self.id)
        by_name = {r.name: r for r in records}
        return tuple(
            RunOutput(n, by_name[n].version, by_name[n].tree, rel)
            for n, rel in zip(names, self.outputs, strict=True)
        )


def _check_overlaps(outputs: list[str], tracked: list[str]) -> None:
    """Refuse, before the command runs, an output that add would refuse after it: one
    inside another output or a tracked dataset, or holding one."""
    for out in outputs:
        for other in [*tracked, *outputs]:
            if other != out and (out.startswith(other + "/") or other.startswith(out + "/")):
                raise BadInput(f"output {out} overlaps {other}: outputs are datasets of their own")


def _cwd_in(ws: Workspace) -> str:
    here = os.path.relpath(os.getcwd(), ws.root)
    if here == ".":
        return ""
    if here == ".." or here.startswith(".." + os.sep):
        raise BadInput(f"run the command inside the workspace {ws.root}")
    return "/".join(here.split(os.sep))


def _dataset(
    ws: Workspace, known: dict[str, Dataset], by_path: dict[str, Dataset], text: str
) -> Dataset:
    if text in known:
        return known[text]
    rel = ws.rel(text)
    if rel in by_path:
        return by_path[rel]
    raise BadInput(f"{text} is neither a dataset name nor a tracked path")


def _param(ws: Workspace, path: str) -> RunParam:
    rel = ws.rel(path)
    absolute = ws.abs(rel)
    if not os.path.isfile(absolute):
        raise PathNotFound(path)
    h = blake3()
    size = 0
    head = bytearray()
    with open(absolute, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
            size += len(block)
            if len(head) <= MAX_PARAM_CONTENT:
                head += block[: MAX_PARAM_CONTENT + 1 - len(head)]
    content = bytes(head) if size <= MAX_PARAM_CONTENT else None
    return RunParam(rel, h.hexdigest(), size, content)


def _same_store(a: str, b: str) -> bool:
    return a.rstrip("/") == b.rstrip("/")


def run_command(ws: Workspace, command: list[str], options: RunOptions) -> tuple[int, RunResult]:
    """Run ``command`` as a run: its exit status and what was recorded."""
    if not command:
        raise UsageError("nothing to run: give the command after --")
    run = Run(ws, command, options, python=command_python(command))
    run.start()
    log = os.path.join(ws.state, "runs", f"{run.id}.log")
    os.makedirs(os.path.dirname(log), exist_ok=True)
    env = {**os.environ, tracking.LOG_VARIABLE: log}
    try:
        try:
            code = subprocess.run(command, env=env, check=False).returncode
        except OSError as err:
            raise UsageError(f"cannot run {command[0]}: {err.strerror or err}") from None
        run.read_log(log)
        return code, run.finish(code)
    finally:
        tracking.stop_listening(run.opened)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(log)


@contextlib.contextmanager
def track(
    name: str | None = None,
    *,
    params: tuple[str, ...] | list[str] = (),
    outputs: tuple[str, ...] | list[str] = (),
    inputs: tuple[str, ...] | list[str] | None = None,
    env: tuple[str, ...] | list[str] = (),
    allow_dirty: bool = False,
    workspace: str = ".",
) -> Iterator[Run]:
    """Record the code in the ``with`` block as a run (see ``datavc run``): on a normal exit
    its outputs are committed and the run recorded; on an exception the run is recorded
    as failed (exit status 1) and the exception goes on."""
    ws = Workspace.find(workspace)
    script = [os.path.basename(sys.executable) or "python", *sys.argv] if sys.argv else []
    options = RunOptions(
        name,
        tuple(params),
        tuple(outputs),
        None if inputs is None else tuple(inputs),
        tuple(env),
        allow_dirty,
    )
    run = Run(ws, script or ["python"], options)
    run.start()
    log = os.path.join(ws.state, "runs", f"{run.id}.log")
    os.makedirs(os.path.dirname(log), exist_ok=True)
    before = os.environ.get(tracking.LOG_VARIABLE)
    os.environ[tracking.LOG_VARIABLE] = log  # child processes (DataLoader workers) report
    try:
        try:
            yield run
        finally:
            _restore(tracking.LOG_VARIABLE, before)
            run.read_log(log)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(log)
    except BaseException:
        run.finish(1)
        raise
    run.finish(0)


def _restore(variable: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(variable, None)
    else:
        os.environ[variable] = value
