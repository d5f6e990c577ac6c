"""``datavc reproduce RUN``: rebuild a recorded run and check that it gives the same bytes.

First the comparison: every input is still in the store with its recorded snapshot; the
code (the recorded commit against this working tree), each parameter file and the
environment (Python, platform, packages, recorded variables) against the record, drift
listed field by field. ``--check`` stops there.

Then the rerun, by default in a scratch folder: the code of the recorded commit
(``git archive``; the current tracked files if that commit is not here), the recorded
parameter files written back, each workspace input materialized at its recorded path, and
``datavc.open`` pinned to the versions the run opened (:func:`.tracking.pinned`). With
``in_place`` the workspace itself is used: its inputs are checked out at the recorded
versions (which rewrites their pointer files) and its code and parameters are used as they
are. Each output is then compared with the recorded snapshot, file by file: identical
files, paths and modes mean the same snapshot id.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass, field

from blake3 import blake3

from ..errors import BadInput, DatavcError, NotFoundError, StoreUnreachable, UsageError
from ..format.hashing import ObjectId
from ..format.paths import check_path, private_part, valid_name
from ..format.record import Forgotten
from ..format.run import (
    LOCK_FOLDER,
    LOCK_SUFFIX,
    CodeState,
    Environment,
    RunRecord,
    decode_lock,
    is_run_id,
)
from ..store import versions
from ..store.files import NoProgress
from ..store.materialize import materialize
from ..store.runs import find_run, read_run
from ..store.trees import decoded_pages, iter_entries
from ..store.verify import FolderDiff, compare_folder
from ..workspace.config import CONFIG, DOT, LOCAL_CONFIG
from ..workspace.core import Workspace
from . import tracking
from .environment import capture_environment, changed_files, code_state, command_python


@dataclass(frozen=True, slots=True)
class Drift:
    """One field where now differs from the record."""

    field: str
    recorded: str
    current: str

    def line(self) -> str:
        return f"{self.field}: {self.recorded} -> {self.current}"


@dataclass(frozen=True, slots=True)
class OutputCheck:
    label: str  # NAME@vN
    path: str
    tree: ObjectId
    diff: FolderDiff | None  # None: could not be compared (``note`` says why)
    note: str = ""

    @property
    def identical(self) -> bool:
        return self.diff is not None and self.diff.equal


@dataclass
class Reproduction:
    record: RunRecord
    record_hash: ObjectId
    drift: list[Drift] = field(default_factory=list)
    unavailable: list[str] = field(default_factory=list)  # inputs no longer in the store
    folder: str | None = None  # where it ran
    exit: int | None = None  # None: not run (--check)
    outputs: list[OutputCheck] = field(default_factory=list)
    checked_out: list[str] = field(default_factory=list)  # --in-place: inputs checked out

    @property
    def identical(self) -> bool:
        """Ran, exited as recorded, and every output is the recorded snapshot."""
        ran_alike = self.exit == self.record.exit
        return ran_alike and all(o.identical for o in self.outputs)


# -- which run ------------------------------------------------------------------------


def find_record(ws: Workspace, text: str) -> tuple[RunRecord, ObjectId, bool]:
    """RUN: a lock file's path, a run name (``runs/NAME.lock``), or a run id (or prefix);
    and whether a lock file pins the record. A lock file pins its record's hash: a record
    that does not match it is refused."""
    lock_path = _lock_path(ws, text)
    if lock_path is None:
        run_id = text if is_run_id(text) else find_run(ws.store, text)
        lock_path = _lock_naming(ws, run_id)
    if lock_path is None:
        return (*read_run(ws.store, run_id), False)
    with open(lock_path, encoding="utf-8", errors="replace") as f:
        lock = decode_lock(f.read(1 << 20), lock_path)
    rec, digest = read_run(ws.store, lock.id)
    if digest != lock.record:
        raise BadInput(
            f"run record {lock.id} in the store does not match {lock_path} (hash "
            f"{digest[:12]}, the lock says {lock.record[:12]}): the record was changed"
        )
    return rec, digest, True


def _lock_naming(ws: Workspace, run_id: str) -> str | None:
    """The lock file of this workspace that pins run ``run_id``, if one does."""
    folder = ws.abs(LOCK_FOLDER)
    names = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
    for name in names:
        path = os.path.join(folder, name)
        if not name.endswith(LOCK_SUFFIX) or not os.path.isfile(path):
            continue
        with open(path, encoding="utf-8", errors="replace") as f:
            try:
                if decode_lock(f.read(1 << 20), path).id == run_id:
                    return path
            except BadInput:
                continue  # not a lock file: it pins nothing
    return None


def _lock_path(ws: Workspace, text: str) -> str | None:
    if text.endswith(LOCK_SUFFIX) and os.path.isfile(text):
        return text
    if valid_name(text):
        path = ws.abs(f"{LOCK_FOLDER}/{text}{LOCK_SUFFIX}")
        if os.path.isfile(path):
            return path
        if not all(c in "0123456789abcdef-" for c in text):
            raise NotFoundError(f"no run lock {LOCK_FOLDER}/{text}{LOCK_SUFFIX} in this workspace")
    return None


# -- drift ----------------------------------------------------------------------------


def code_drift(root: str, recorded: CodeState) -> list[Drift]:
    if recorded.git_head is None:
        return [Drift("code", "not recorded (no git repository)", "cannot compare")]
    head = recorded.git_head
    files = changed_files(root, head)
    if files is None:
        return [Drift("code", f"commit {head[:12]}", "that commit is not in this repository")]
    now = code_state(root, base=head)
    if now.diff == recorded.diff:
        return []
    was = f"commit {head[:12]}" + (f" + changes {recorded.diff[:12]}" if recorded.diff else "")
    shown = ", ".join(files[:10]) + (f" and {len(files) - 10} more" if len(files) > 10 else "")
    return [Drift("code", was, f"{len(files)} files differ: {shown}" if files else "differs")]


def param_drift(root: str, rec: RunRecord) -> list[Drift]:
    out = []
    for p in rec.params:
        path = os.path.join(root, *p.path.split("/"))
        current = _file_hash(path)
        if current != p.hash:
            out.append(
                Drift(f"param {p.path}", p.hash[:12], current[:12] if current else "missing")
            )
    return out


def _file_hash(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            h = blake3()
            while block := f.read(1 << 20):
                h.update(block)
            return h.hexdigest()
    except OSError:
        return None


def environment_drift(was: Environment, now: Environment) -> list[Drift]:
    out = []
    for name in ("python", "implementation", "platform", "machine"):
        a, b = getattr(was, name), getattr(now, name)
        if a != b:
            out.append(Drift(name, a, b))
    for pkg in sorted(set(was.packages) | set(now.packages)):
        a, b = was.packages.get(pkg), now.packages.get(pkg)
        if a != b:
            out.append(Drift(f"package {pkg}", a or "absent", b or "absent"))
    for var in sorted(was.env):
        b = os.environ.get(var)
        if was.env[var] != b:
            out.append(Drift(f"env {var}", was.env[var], "unset" if b is None else b))
    for var in sorted(set(was.container) | set(now.container)):
        a, b = was.container.get(var), now.container.get(var)
        if a != b:
            out.append(Drift(f"container {var}", a or "unset", b or "unset"))
    return out


def _environment_drift(rec: RunRecord, trusted: bool) -> list[Drift]:
    """The environment against the record. Another interpreter the command names is asked
    for its packages only for a record that may be run (pinned, or ``--yes``): asking runs
    it, and a record from the store alone names any program."""
    python = command_python(list(rec.command))
    if python is not None and not trusted:
        why = "not compared: its interpreter is run only for a pinned record or with --yes"
        return [Drift("environment", rec.command[0], why)]
    now = capture_environment(list(rec.environment.env), python)
    return environment_drift(rec.environment, now)


def unavailable_inputs(ws: Workspace, rec: RunRecord) -> list[str]:
    """Inputs of the run's own store that are no longer there as recorded."""
    out = []
    for i in rec.inputs:
        if i.store is not None:
            continue
        try:
            entry = versions.read_entry(ws.store, i.name, i.version)
        except NotFoundError:
            out.append(f"{i.label} is not in the store")
            continue
        if isinstance(entry, Forgotten):
            out.append(f"{i.label} was forgotten")
        elif entry.tree != i.tree:
            out.append(f"{i.label} is snapshot {entry.tree[:12]}, the run read {i.tree[:12]}")
    return out


# -- the rerun ------------------------------------------------------------------------


def reproduce(
    ws: Workspace,
    text: str,
    check: bool = False,
    in_place: bool = False,
    into: str | None = None,
    keep: bool = False,
    trust: bool = False,
) -> Reproduction:
    """Compare, then (unless ``check``) run again. A record that no lock file pins came
    from the store alone: its command is run only with ``trust`` (``--yes``)."""
    rec, digest, pinned = find_record(ws, text)
    if not (check or pinned or trust):
        raise UsageError(
            f"run record {rec.id} is not pinned by a lock file in this repository: "
            f"reproducing it runs {shlex.join(rec.command)[:200]!r}; pass --yes to run it"
        )
    result = Reproduction(rec, digest)
    result.unavailable = unavailable_inputs(ws, rec)
    result.drift = code_drift(ws.root, rec.code) + param_drift(ws.root, rec)
    result.drift += _environment_drift(rec, pinned or trust)
    for i in rec.inputs:
        if i.dirty:
            result.drift.append(
                Drift(f"input {i.label}", "read with local changes (--allow-dirty)", "the snapshot")
            )
    if check or result.unavailable:
        return result
    if in_place:
        _rerun(ws, rec, ws.root, result)
        return result
    if into is not None:
        _check_into(into)
    folder = into or tempfile.mkdtemp(prefix="datavc-reproduce-")
    try:
        _prepare_scratch(ws, rec, folder)
        _rerun(ws, rec, folder, result)
    finally:
        if into is None and not keep:
            shutil.rmtree(folder, ignore_errors=True)
            result.folder = None
        else:
            result.folder = folder
    return result


def _rerun(ws: Workspace, rec: RunRecord, root: str, result: Reproduction) -> None:
    """Inputs in place, the command run, the outputs compared."""
    if root == ws.root:
        specs = [i.label for i in rec.inputs if i.path is not None]
        if specs:
            ws.checkout(specs)
            result.checked_out = specs
    result.folder = root
    log = os.path.join(ws.state, "runs", f"reproduce-{rec.id}.log")
    os.makedirs(os.path.dirname(log), exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(log)
    env = {
        **os.environ,
        "DATAVC_STORE": ws.config.store,
        tracking.PINS_VARIABLE: tracking.pins_text(ws.config.store, _pins(rec)),
        tracking.LOG_VARIABLE: log,
    }
    cwd = os.path.join(root, *rec.cwd.split("/")) if rec.cwd else root
    try:
        result.exit = subprocess.run(list(rec.command), cwd=cwd, env=env, check=False).returncode
    except OSError as err:
        raise UsageError(f"cannot run {rec.command[0]}: {err.strerror or err}") from None
    result.drift += _opened_drift(ws, rec, log)
    result.outputs = [
        _compare_output(ws, root, o.name, o.version, o.tree, o.path) for o in rec.outputs
    ]


def _pins(rec: RunRecord) -> dict[str, tuple[int, str]]:
    opened: dict[str, list[tuple[int, str]]] = {}
    for i in rec.inputs:
        if i.path is None and i.store is None:
            opened.setdefault(i.name, []).append((i.version, i.tree))
    return {n: v[0] for n, v in opened.items() if len(v) == 1}


def _opened_drift(ws: Workspace, rec: RunRecord, log: str) -> list[Drift]:
    """Snapshots the rerun opened that the run did not."""
    recorded = {(i.name, i.version) for i in rec.inputs if i.path is None}
    out = []
    try:
        for _, i in tracking.read_log(log):
            if (i.name, i.version) not in recorded:
                out.append(Drift(f"input {i.label}", "not read by the run", "read by the rerun"))
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(log)
    return out


def _compare_output(
    ws: Workspace, root: str, name: str, version: int, tree: ObjectId, path: str
) -> OutputCheck:
    label = f"{name}@v{version}"
    try:
        entry = versions.read_entry(ws.store, name, version)
    except StoreUnreachable:
        raise  # says nothing about the output
    except DatavcError as err:
        return OutputCheck(label, path, tree, None, f"the recorded output cannot be read: {err}")
    if isinstance(entry, Forgotten) or entry.tree != tree:
        why = "was forgotten" if isinstance(entry, Forgotten) else "is another snapshot now"
        return OutputCheck(label, path, tree, None, f"{label} {why}: its files cannot be listed")
    target = os.path.join(root, *path.split("/"))
    entries = iter_entries(ws.store, entry.root, hints=False)
    return OutputCheck(label, path, tree, compare_folder(target, entry.kind, entries))


# -- the scratch folder ---------------------------------------------------------------


def _check_into(into: str) -> None:
    """``--into`` is a folder (or not there yet), and not inside a ``.git`` or ``.datavc``
    folder, in any case form or through a symbolic link: nothing is written into them."""
    real = os.path.realpath(into)
    if private_part(real.replace(os.sep, "/")) is not None:
        raise UsageError(f"{into} is inside a .git or .datavc folder: reproduce elsewhere")
    if os.path.lexists(into) and not os.path.isdir(into):
        raise UsageError(f"{into} is not a folder: reproduce needs an empty folder")


def _prepare_scratch(ws: Workspace, rec: RunRecord, folder: str) -> None:
    os.makedirs(folder, exist_ok=True)
    if os.listdir(folder):
        raise UsageError(f"{folder} is not empty: reproduce needs an empty folder")
    _export_code(ws.root, rec.code.git_head, folder)
    for name in (CONFIG, LOCAL_CONFIG):  # the store, as this workspace reaches it
        src = os.path.join(ws.root, DOT, name)
        if os.path.isfile(src):
            os.makedirs(os.path.join(folder, DOT), exist_ok=True)
            shutil.copyfile(src, os.path.join(folder, DOT, name))
    for p in rec.params:
        if p.content is not None:
            _write(folder, p.path, p.content)
    for i in rec.inputs:
        if i.path is not None:
            _materialize_input(ws, i.name, i.version, os.path.join(folder, *i.path.split("/")))
    for o in rec.outputs:  # what the code's commit may hold at an output path goes
        target = os.path.join(folder, *o.path.split("/"))
        if os.path.isdir(target) and not os.path.islink(target):
            shutil.rmtree(target)
        elif os.path.lexists(target):
            os.unlink(target)


def _materialize_input(ws: Workspace, name: str, version: int, dest: str) -> None:
    rec = versions.read_version(ws.store, name, version)
    pages = decoded_pages(ws.store, rec.root.pages)
    materialize(ws.store, pages, dest, rec.kind, lambda _f, _e: False, NoProgress())


def _write(folder: str, rel: str, data: bytes) -> None:
    check_path(rel)
    path = os.path.join(folder, *rel.split("/"))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)  # a symlink from the archive is replaced, not followed
    with open(path, "wb") as f:
        f.write(data)


def _export_code(root: str, head: str | None, folder: str) -> None:
    """The code of commit ``head`` (the workspace's part of the repository) into
    ``folder``; the current tracked files if that commit is not here."""
    top = _git_text(root, "rev-parse", "--show-toplevel")
    if top is None:
        raise UsageError(
            "the run's code is not here (not a git repository): reproduce in a clone of its "
            "repository, or use --in-place"
        )
    prefix = os.path.relpath(root, top).replace(os.sep, "/")
    has = head is not None and _git_text(root, "cat-file", "-t", head) == "commit"
    if has and head is not None:
        treeish = head if prefix == "." else f"{head}:{prefix}"
        _extract_archive(root, treeish, folder)
        return
    out = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True, check=True)
    for name in out.stdout.decode("utf-8", "replace").split("\0"):
        src = os.path.join(root, *name.split("/")) if name else ""
        if name and os.path.isfile(src) and not os.path.islink(src) and not private_part(name):
            check_path(name)
            os.makedirs(os.path.dirname(os.path.join(folder, name)) or folder, exist_ok=True)
            shutil.copy2(src, os.path.join(folder, *name.split("/")))


def _extract_archive(root: str, treeish: str, folder: str) -> None:
    """``git archive`` of ``treeish`` into ``folder``: regular files and folders only, every
    path checked (a repository's own content, but never written outside ``folder``)."""
    with tempfile.TemporaryFile() as tmp:
        done = subprocess.run(
            ["git", "archive", "--format=tar", treeish], cwd=root, stdout=tmp, check=False
        )
        if done.returncode != 0:
            raise UsageError(f"git archive {treeish} failed: cannot export the run's code")
        tmp.seek(0)
        with tarfile.open(fileobj=tmp, mode="r:") as tar:
            for member in tar:
                name = member.name.rstrip("/")
                if not name or name == "." or private_part(name) is not None:
                    continue  # .datavc/ is copied from this workspace; .git never
                check_path(name)
                target = os.path.join(folder, *name.split("/"))
                if member.isdir():
                    os.makedirs(target, exist_ok=True)
                elif member.isfile():
                    source = tar.extractfile(member)
                    if source is None:
                        continue
                    os.makedirs(os.path.dirname(target), exist_ok=True)
                    with source, open(target, "wb") as out:
                        shutil.copyfileobj(source, out)
                    os.chmod(target, 0o755 if member.mode & 0o111 else 0o644)


def _git_text(root: str, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)
    except OSError:
        return None
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else None
