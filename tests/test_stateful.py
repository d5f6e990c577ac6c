"""A Hypothesis state machine that drives a real workspace on a local-folder store.

Rules change the dataset folder the way a user would (write, overwrite in place, delete,
chmod, create folders, replace a file by a folder and back), then ``add``, ``commit`` and
``checkout`` (forced, and unforced where the model knows whether it must be refused).

The model keeps the current folder, what the last ``add`` recorded, the version the pointer
file names, and for every committed version the exact tree {path: (bytes, executable)}.
Checks: a checkout of vN makes the folder equal the model's vN exactly (files, bytes, exec
bit, no extra files or folders, no temporary files); add without a change since the last
commit publishes nothing; version numbers are 1..N without gaps; status is 'clean' right
after a checkout, and right after a commit whenever the folder still equals what was
committed ('moved' if it equals another committed version, 'modified' otherwise); listings
of a version agree with the model; a checkout without --force is refused exactly when a
file's content is in no committed version.

The dataset folder can also vanish (status 'missing', add refuses, checkout restores it), and
a `wait` rule makes the stat cache trust what it saw, so unchanged-file shortcuts in status,
add and checkout are exercised too. Bugs found on the way are minimal xfail tests at the end.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Iterable
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from datavc.errors import PathNotFound, UsageError
from datavc.format.hashing import file_hasher
from datavc.format.pointer import decode_pointer
from datavc.store import versions
from datavc.store.files import TMP_PREFIX
from datavc.workspace import statcache
from datavc.workspace.core import Workspace
from datavc.workspace.initialize import init_workspace

NAME = "ds"
DS_REL = "data/ds"
KiB = 1024

Tree = dict[str, tuple[bytes, bool]]

# Lower-case names only: datavc refuses paths that differ only by case, by design. The same
# names serve as files and folders, so a file can later be replaced by a folder and back.
COMPONENT = st.sampled_from(["a", "b", "c", "naïve dir"])
PATH = st.lists(COMPONENT, min_size=1, max_size=3).map("/".join)
MODES = {True: [0o755, 0o744, 0o711, 0o700], False: [0o644, 0o600, 0o664]}


def big_bytes(seed: int, size: int) -> bytes:
    """Random (incompressible) bytes, several chunks long at ~300 KiB."""
    return random.Random(seed).randbytes(size)


CONTENT = st.one_of(
    st.binary(max_size=200),
    st.builds(big_bytes, st.integers(0, 3), st.integers(260 * KiB, 340 * KiB)),
)


def file_hash(data: bytes) -> bytes:
    h = file_hasher()
    h.update(data)
    return h.digest()


def read_folder(root: str) -> tuple[Tree, set[str], list[str]]:
    """Files (bytes, exec bit), folders, and anything that is neither, under ``root``."""
    files: Tree = {}
    folders: set[str] = set()
    odd: list[str] = []
    for current, dirs, names in os.walk(root):
        rel_dir = os.path.relpath(current, root).replace(os.sep, "/")
        prefix = "" if rel_dir == "." else rel_dir + "/"
        for d in dirs:
            if os.path.islink(os.path.join(current, d)):
                odd.append(prefix + d)
            else:
                folders.add(prefix + d)
        for n in names:
            p = os.path.join(current, n)
            st_ = os.lstat(p)
            if not stat.S_ISREG(st_.st_mode):
                odd.append(prefix + n)
                continue
            with open(p, "rb") as f:
                files[prefix + n] = (f.read(), bool(st_.st_mode & 0o111))
    return files, folders, odd


def ancestors(paths: Iterable[str]) -> set[str]:
    """Every folder above the given paths."""
    out: set[str] = set()
    for p in paths:
        parts = p.split("/")
        for i in range(1, len(parts)):
            out.add("/".join(parts[:i]))
    return out


def describe(a: Tree, b: Tree) -> str:
    """A short account of how two trees differ, for assertion messages."""
    lines = []
    for p in sorted(set(a) | set(b)):
        if p not in a:
            lines.append(f"  only in second: {p!r}")
        elif p not in b:
            lines.append(f"  only in first: {p!r}")
        elif a[p] != b[p]:
            (da, xa), (db, xb) = a[p], b[p]
            lines.append(
                f"  {p!r}: {len(da)} bytes exec={xa} vs {len(db)} bytes exec={xb}"
                f"{' (same bytes)' if da == db else ''}"
            )
    return "\n".join(lines)


class WorkspaceMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.mkdtemp(prefix="datavc-stateful-")
        self.root = os.path.join(self.tmp, "ws")
        os.makedirs(os.path.join(self.root, *DS_REL.split("/")))
        init_workspace(self.root, os.path.join(self.tmp, "store"))
        self.ws = Workspace(self.root)
        self.ds = os.path.join(self.root, *DS_REL.split("/"))
        self.fs: Tree = {}  # what the dataset folder holds now
        self.present = True  # whether the dataset folder exists
        self.reference: Tree | None = None  # what the last add recorded (or the pointer names)
        self.staged = False  # whether an add is waiting to be committed
        self.head: int | None = None  # the version the pointer file names
        self.versions: dict[int, Tree] = {}
        # The stat cache trusts a row only if the file was last changed 2 s before the save;
        # a run takes well under 2 s, so without help it would never trust one. The `wait`
        # rule lets time pass for the stat cache only (see there).
        self.clock: int | None = None
        self._clock_patch = mock.patch.object(
            statcache, "time", types.SimpleNamespace(time_ns=self._time_ns)
        )
        self._clock_patch.start()

    def teardown(self) -> None:
        self._clock_patch.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _time_ns(self) -> int:
        return time.time_ns() if self.clock is None else self.clock

    # -- helpers ------------------------------------------------------------------------

    def _abs(self, rel: str) -> str:
        return os.path.join(self.ds, *rel.split("/"))

    def _make_room(self, path: str) -> None:
        """Like a user would: remove a file where a folder must go, and a folder (with what
        it holds) where the file must go."""
        for parent in sorted(ancestors([path])):
            if parent in self.fs:
                os.unlink(self._abs(parent))
                del self.fs[parent]
            elif os.path.lexists(self._abs(parent)) and not os.path.isdir(self._abs(parent)):
                os.unlink(self._abs(parent))
        target = self._abs(path)
        if os.path.isdir(target):
            shutil.rmtree(target)
            for p in [p for p in self.fs if p.startswith(path + "/")]:
                del self.fs[p]

    def _write(self, path: str, data: bytes, executable: bool, mode: int) -> None:
        self._make_room(path)
        self.present = True
        target = self._abs(path)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "wb") as f:
            f.write(data)
        os.chmod(target, mode)
        self.fs[path] = (data, executable)

    def _numbers(self) -> list[int]:
        return versions.version_numbers(self.ws.store, NAME)

    def _status(self) -> str | None:
        found = self.ws.status()
        if self.reference is None:  # never added: datavc knows no dataset
            assert found == []
            return None
        assert [s.name for s in found] == [NAME], found
        assert found[0].path == DS_REL
        if not self.present:
            assert found[0].state == "missing"
        return found[0].state

    def _check_folder_is(self, want: Tree, exact_folders: bool) -> None:
        files, folders, odd = read_folder(self.ds)
        assert not odd, f"unexpected symlinks or special files: {odd}"
        tmp = self._temporaries()
        assert not tmp, f"temporary files left in the workspace: {tmp}"
        assert files == want, "folder differs from the expected tree:\n" + describe(files, want)
        if exact_folders:
            extra = folders - ancestors(want)
            assert not extra, f"folders that are not in the snapshot: {sorted(extra)}"

    def _temporaries(self) -> list[str]:
        """Names starting with the checkout's temporary prefix, anywhere in the workspace
        (the dataset folder and beside it, where checkout stages files) but .datavc."""
        found = []
        for current, dirs, names in os.walk(self.root):
            dirs[:] = [d for d in dirs if d != ".datavc"]
            found += [os.path.join(current, n) for n in dirs + names if n.startswith(TMP_PREFIX)]
        return found

    def _check_listing(self, n: int) -> None:
        rec, entries = self.ws.ls(f"{NAME}@v{n}")
        assert rec.version == n
        want = self.versions[n]
        got = {e.path: (e.size, e.executable, e.hash) for e in entries}
        assert got == {p: (len(d), x, file_hash(d)) for p, (d, x) in want.items()}, (
            f"listing of v{n} differs from the model"
        )
        assert rec.stats.files == len(want)
        assert rec.stats.bytes == sum(len(d) for d, _ in want.values())

    def _check_pointer(self) -> None:
        path = self.ds + ".datavc"
        if self.head is None:
            assert not os.path.exists(path)
            return
        with open(path, encoding="utf-8") as f:
            p = decode_pointer(f.read(), path)
        assert (p.name, p.kind, p.version) == (NAME, "dir", self.head)
        assert p.files == len(self.versions[self.head])
        assert p.snapshot == versions.read_version(self.ws.store, NAME, self.head).tree

    # -- changing the folder --------------------------------------------------------------

    @rule(path=PATH, data=CONTENT, executable=st.booleans(), pick=st.integers(0, 3))
    def write_file(self, path: str, data: bytes, executable: bool, pick: int) -> None:
        modes = MODES[executable]
        self._write(path, data, executable, modes[pick % len(modes)])

    @precondition(lambda self: self.fs)
    @rule(
        data=st.data(), offset=st.integers(0, 400 * KiB), patch=st.binary(min_size=1, max_size=64)
    )
    def overwrite_in_place(self, data: st.DataObject, offset: int, patch: bytes) -> None:
        path = data.draw(st.sampled_from(sorted(self.fs)), label="path")
        old, executable = self.fs[path]
        offset %= len(old) + 1
        with open(self._abs(path), "r+b") as f:  # same inode, maybe the same size
            f.seek(offset)
            f.write(patch)
        new = old[:offset] + patch + old[offset + len(patch) :]
        self.fs[path] = (new, executable)

    @precondition(lambda self: self.fs)
    @rule(data=st.data())
    def delete_file(self, data: st.DataObject) -> None:
        path = data.draw(st.sampled_from(sorted(self.fs)), label="path")
        os.unlink(self._abs(path))
        del self.fs[path]

    @precondition(lambda self: self.fs)
    @rule(data=st.data(), executable=st.booleans())
    def chmod(self, data: st.DataObject, executable: bool) -> None:
        path = data.draw(st.sampled_from(sorted(self.fs)), label="path")
        target = self._abs(path)
        mode = stat.S_IMODE(os.stat(target).st_mode)
        os.chmod(target, (mode | 0o111) if executable else (mode & ~0o111))
        self.fs[path] = (self.fs[path][0], executable)

    @rule(path=PATH)
    def make_folders(self, path: str) -> None:
        """Empty nested folders: not part of any snapshot."""
        if any(p in self.fs for p in ancestors([path]) | {path}):
            return
        target = self._abs(path)
        if os.path.lexists(target) and not os.path.isdir(target):
            return
        os.makedirs(target, exist_ok=True)
        self.present = True

    @rule()
    def remove_dataset_folder(self) -> None:
        """The whole folder goes: status says 'missing', add refuses, checkout restores."""
        shutil.rmtree(self.ds, ignore_errors=True)
        self.fs = {}
        self.present = False
        self._status()

    @rule()
    def wait(self) -> None:
        """Let two seconds pass, as far as the stat cache can tell, without sleeping them.

        Wait until the file system's clock has moved past every timestamp so far (W is the
        first new reading), then freeze the stat cache's clock at W + 2 s: from now on it
        trusts exactly the files last changed before W, as it would two seconds later. Any
        change made after this rule gets a timestamp >= W, so a stale row is a real bug."""
        probe = os.path.join(self.tmp, "clock")
        with open(probe, "ab") as f:
            f.write(b".")
        before = os.stat(probe).st_mtime_ns
        while True:
            time.sleep(0.001)
            with open(probe, "ab") as f:
                f.write(b".")
            now = os.stat(probe)
            if now.st_mtime_ns > before:
                break
        self.clock = min(now.st_mtime_ns, now.st_ctime_ns) + statcache.RACY_NS
        self._status()  # like a user's `datavc status`: fills the stat cache

    # -- datavc commands ------------------------------------------------------------------

    @initialize(files=st.dictionaries(PATH, CONTENT, max_size=4), executable=st.booleans())
    def first_version(self, files: dict[str, bytes], executable: bool) -> None:
        """Most runs start from a committed v1, so checkouts happen early."""
        for i, (path, data) in enumerate(sorted(files.items())):
            x = executable and i % 2 == 0
            self._write(path, data, x, MODES[x][0])
        if self.fs:
            self.commit("first", add_first=True)

    @rule()
    def add(self) -> None:
        if not self.present:
            with pytest.raises(PathNotFound):
                self.ws.add(self.ds)
            return
        result = self.ws.add(self.ds)
        assert result.dataset.name == NAME
        assert result.staged.files == len(self.fs)
        assert result.staged.bytes == sum(len(d) for d, _ in self.fs.values())
        head_tree = self.versions[self.head] if self.head is not None else None
        self.reference = dict(self.fs)
        self.staged = self.fs != head_tree
        # Only a changed tree is staged: status says so.
        state = self._status()
        if self.head is None:
            assert state == "new"
        else:
            assert state == ("staged" if self.staged else "clean")

    @rule(
        message=st.sampled_from(["m", "a message", "ünïcode ✓"]),
        add_first=st.sampled_from([True, True, False]),
    )
    def commit(self, message: str, add_first: bool) -> None:
        if add_first:
            self.add()
        before = self._numbers()
        published, unchanged = self.ws.commit([], message)
        if self.reference is None:  # nothing was ever added: no dataset is known
            assert (published, unchanged) == ([], [])
            assert self._numbers() == []
            return
        if not self.staged:
            assert published == [], "commit published a version with nothing staged"
            assert unchanged == [NAME]
            assert self._numbers() == before
        else:
            n = len(self.versions) + 1
            assert [r.version for r in published] == [n]
            assert unchanged == []
            assert published[0].message == message
            assert published[0].parent == self.head
            self.versions[n] = dict(self.reference)
            self.head = n
            self.staged = False
            self._check_listing(n)
        self._check_pointer()
        if self.head is not None and self.present:
            if self.fs == self.versions[self.head]:
                want = "clean"
            elif any(self.fs == tree for tree in self.versions.values()):
                want = "moved"  # another committed version: the pointer moved, not the data
            else:
                want = "modified"
            assert self._status() == want
        else:
            self._status()

    @precondition(lambda self: self.versions)
    @rule(data=st.data())
    def checkout_forced(self, data: st.DataObject) -> None:
        n = data.draw(st.sampled_from(sorted(self.versions)), label="version")
        results = self.ws.checkout([f"{NAME}@v{n}"], force=True)
        assert [(r.name, r.version, r.path) for r in results] == [(NAME, n, DS_REL)]
        assert results[0].files == len(self.versions[n])
        self._after_checkout(n)

    @precondition(lambda self: self.versions)
    @rule(data=st.data())
    def checkout_unforced(self, data: st.DataObject) -> None:
        """Refused exactly when some file's content is in no committed version of the
        dataset (modes do not count; a staged, uncommitted snapshot does not count either,
        since checkout drops it); a refused checkout changes nothing."""
        n = data.draw(st.sampled_from(sorted(self.versions)), label="version")
        saved = {d for tree in self.versions.values() for d, _ in tree.values()}
        staged_only = self.staged and any(
            d not in saved for d, _ in (self.reference or {}).values()
        )
        if all(d in saved for d, _ in self.fs.values()):
            if staged_only:
                return  # checkout would drop added, uncommitted data: a known bug (below)
            self.ws.checkout([f"{NAME}@v{n}"])
            self._after_checkout(n)
        else:
            with pytest.raises(UsageError, match="not stored"):
                self.ws.checkout([f"{NAME}@v{n}"])
            self._check_folder_is(self.fs, exact_folders=False)

    def _after_checkout(self, n: int) -> None:
        assert os.path.isdir(self.ds)
        self._check_folder_is(self.versions[n], exact_folders=True)
        self.present = True
        self.fs = dict(self.versions[n])
        self.reference = dict(self.versions[n])
        self.head = n
        self.staged = False
        self._check_pointer()
        assert self._status() == "clean"

    # -- invariants -----------------------------------------------------------------------

    @invariant()
    def versions_have_no_gaps(self) -> None:
        assert self._numbers() == list(range(1, len(self.versions) + 1))

    @invariant()
    def folder_matches_model(self) -> None:
        """No command changes a file it should not (add and commit never touch data)."""
        assert os.path.isdir(self.ds) == self.present
        self._check_folder_is(self.fs, exact_folders=False)


def test_workspace_state_machine() -> None:
    run_state_machine_as_test(
        WorkspaceMachine,
        settings=settings(
            max_examples=100,
            stateful_step_count=25,
            deadline=None,
            database=None,
            report_multiple_bugs=False,  # shrink one failure, not every distinct one
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        ),
    )


# -- bugs found while writing the machine (minimal reproductions) -----------------------


def _workspace(tmp_path: Path) -> tuple[Workspace, Path]:
    root = tmp_path / "ws"
    ds = root / "data" / "ds"
    ds.mkdir(parents=True)
    init_workspace(str(root), str(tmp_path / "store"))
    return Workspace(str(root)), ds


# Runs a forced checkout and dies (SIGKILL, as from the OOM killer or a lost node) the moment
# it first renames a file into the dataset folder: after fetching, before putting in place.
_KILLED_CHECKOUT = """
import os, signal, sys
from datavc.workspace.core import Workspace
dataset = os.path.realpath(sys.argv[2])
real_replace = os.replace
def replace(src, dst, *args, **kwargs):
    if os.path.realpath(dst).startswith(dataset + os.sep):
        os.kill(os.getpid(), signal.SIGKILL)
    return real_replace(src, dst, *args, **kwargs)
os.replace = replace
Workspace(sys.argv[1]).checkout([sys.argv[3]], force=True)
"""


def test_checkout_cleans_up_after_a_killed_checkout(tmp_path: Path) -> None:
    ws, ds = _workspace(tmp_path)
    (ds / "f").write_bytes(b"one")
    ws.add(str(ds))
    ws.commit([], "v1")
    (ds / "f").write_bytes(b"two")
    ws.add(str(ds))
    ws.commit([], "v2")
    proc = subprocess.run(
        [sys.executable, "-c", _KILLED_CHECKOUT, ws.root, str(ds), "ds@v1"], timeout=120
    )
    if proc.returncode != -signal.SIGKILL:
        pytest.skip("the checkout was not interrupted: this reproduction no longer applies")

    Workspace(ws.root).checkout(["ds@v1"], force=True)

    assert (ds / "f").read_bytes() == b"one"
    assert sorted(os.listdir(ds)) == ["f"]
    assert sorted(os.listdir(ds.parent)) == ["ds", "ds.datavc"]  # fails: .datavc-tmp-*
    assert Workspace(ws.root).status()[0].state == "clean"


def test_unforced_checkout_keeps_added_content_that_is_not_local(tmp_path: Path) -> None:
    ws, ds = _workspace(tmp_path)
    (ds / "a").write_bytes(b"committed")
    ws.add(str(ds))
    ws.commit([], "v1")
    (ds / "b").write_bytes(b"added, not committed")
    ws.add(str(ds))  # staged: only the staged snapshot holds b now that ...
    (ds / "b").unlink()  # ... its local copy is gone (or was overwritten)

    with contextlib.suppress(UsageError):  # refusing is one fix; keeping the stage another
        Workspace(ws.root).checkout(["ds@v1"])

    published, _ = Workspace(ws.root).commit([], "keep what was added")
    assert [r.version for r in published] == [2]  # fails: nothing staged any more
    _, entries = Workspace(ws.root).ls("ds@v2")
    assert {e.path for e in entries} == {"a", "b"}
