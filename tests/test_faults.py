"""Faults, crashes and concurrency (issue 12, "What must hold"), with fsck as the oracle.

1. A store operation of a small add+commit fails, at every operation in turn, in each way
   a store can fail (:mod:`faultstore`): afterwards fsck is clean, every committed version
   checks out byte-exact, and add+commit run again completes.
2. ``datavc add``; ``datavc commit`` is killed with SIGKILL at random moments, on a local
   store and on S3 (moto): afterwards the same holds, and no version is lost.
3. Four clones commit five times each to one dataset on S3 at once: 20 versions, each
   exactly what its writer committed.

Leftovers of an interrupted write (temporary files, packs no version needs) are notes of
fsck, not problems: the write order makes them harmless.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import fsspec
import pytest
from faultstore import KINDS, WRITES, Crash, Fault, FaultyBackend
from helpers import rand, tree_state, write

from datavc.errors import DatavcError
from datavc.store.backend import Backend
from datavc.store.check import fsck
from datavc.store.chunkstore import ChunkStore
from datavc.store.files import NoProgress
from datavc.store.materialize import as_pages, materialize
from datavc.store.trees import iter_entries
from datavc.store.versions import read_version, version_numbers
from datavc.workspace.core import Workspace
from datavc.workspace.initialize import init_workspace

MiB = 1 << 20
NAME = "data"


# -- checks shared by the tests ------------------------------------------------------------


def checkout_state(url: str | Backend, name: str, number: int, dest: Path) -> dict[str, object]:
    """``name@v<number>`` materialized into the fresh folder ``dest`` by a fresh store
    object (nothing cached from the run under test), as :func:`tree_state` sees it."""
    store = ChunkStore.open(url if isinstance(url, Backend) else Backend(url))
    rec = read_version(store, name, number)
    entries = list(iter_entries(store, rec.root))
    materialize(store, as_pages(entries), str(dest), rec.kind, lambda f, e: False, NoProgress())
    return tree_state(dest)


def fsck_problems(url: str) -> list[str]:
    """fsck of the whole store, by a fresh store object: one line per problem."""
    report = fsck(ChunkStore.open(Backend(url)))
    return [p.line() for p in report.problems.values()]


# -- 1. a fault at every store operation of a small add+commit -------------------------------


@dataclass
class Case:
    """A workspace at v1 of dataset ``data`` over a counted store, with v2's content in
    place (one file changed, two added, three kept) but not added yet."""

    root: Path
    url: str
    backend: FaultyBackend
    v1: dict[str, object]
    v2: dict[str, object]

    def workspace(self) -> Workspace:
        return Workspace(str(self.root), store=ChunkStore.open(self.backend))


def make_case(base: Path, backend_kind: str) -> Case:
    root = base / "ws"
    root.mkdir(parents=True)
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    if backend_kind == "memory":
        url = f"memory://datavc-faults-{uuid.uuid4().hex}"
    else:
        url = str(base / "store")
    init_workspace(str(root), url, pack_target=MiB)
    data = root / "data"
    write(data / "a.bin", rand("a", 600_000))
    write(data / "b.bin", rand("b", 300_000))
    write(data / "c.bin", rand("c", 1_200_000), executable=True)
    write(data / "s" / "one", b"x")
    write(data / "s" / "empty", b"")
    backend = FaultyBackend(url)
    ws = Workspace(str(root), store=ChunkStore.open(backend))
    ws.add(str(data))
    ws.commit([NAME], "v1")
    v1 = tree_state(data)
    write(data / "b.bin", rand("b2", 300_000))
    write(data / "d.bin", rand("d", 1_500_000))  # with b: two 1 MiB packs of new chunks
    write(data / "s" / "new", rand("new", 5_000))
    return Case(root, url, backend, v1, tree_state(data))


def add_commit(ws: Workspace, message: str) -> None:
    ws.add(os.path.join(ws.root, "data"))
    ws.commit([NAME], message)


@pytest.fixture
def memory_cleanup() -> Iterator[list[str]]:
    """Memory-store URLs to remove when the test ends (the memory filesystem is global)."""
    urls: list[str] = []
    yield urls
    fs = fsspec.filesystem("memory")
    for url in urls:
        path = url.split("://", 1)[-1]
        if url.startswith("memory://") and fs.exists(path):
            fs.rm(path, recursive=True)


def clean_run_ops(base: Path, backend_kind: str, cleanup: list[str]) -> list[tuple[str, str]]:
    """The store operations of one clean v2 add+commit (checked: it gives v2 exactly)."""
    case = make_case(base, backend_kind)
    cleanup.append(case.url)
    case.backend.arm(None)
    add_commit(case.workspace(), "v2")
    assert checkout_state(case.url, NAME, 2, base / "v2") == case.v2
    return list(case.backend.calls.ops)


def after_fault(case: Case, fault: Fault, base: Path) -> list[str]:
    """Run add+commit with ``fault`` armed, then check what must hold; the failures.

    The run is retried with the same Workspace and store objects (as a Python caller
    would), or, after a ``crash``, with new ones (as the next process would)."""
    case.backend.arm(fault)
    ws = case.workspace()
    failed = False
    try:
        add_commit(ws, "v2")
    except DatavcError:
        failed = True  # the fault surfaced as a datavc error
    except Crash:
        failed = True
        ws = case.workspace()
    except Exception as err:  # anything else escaped the error boundary
        return [f"{fault}: untranslated {type(err).__name__}: {err}"]
    fired = case.backend.calls.fired
    if not fired:
        return [f"{fault} never fired"]
    case.backend.arm(None)
    where = f"{fault} hit {fired[0][1]} {fired[0][2]}"
    failures = [f"{where}: fsck: {line}" for line in fsck_problems(case.url)]
    if tree_state(case.root / "data") != case.v2:
        failures.append(f"{where}: the dataset's files changed")  # add only reads them
    store = ChunkStore.open(Backend(case.url))
    numbers = version_numbers(store, NAME)
    # A commit that failed published nothing; one that did not fail published v2, once
    # (a lost answer to the record's create is recognised by the record's nonce). A
    # process that died may have died after its record was created.
    allowed = [[1, 2]] if not failed else [[1], [1, 2]] if fault.kind == "crash" else [[1]]
    if numbers not in allowed:
        return [*failures, f"{where}: versions after the fault: {numbers}, failed: {failed}"]
    for n in numbers:
        want = case.v1 if n == 1 else case.v2
        failures += differs(case.url, n, base / f"fault-v{n}", want, f"{where}: v{n}")
    try:
        add_commit(ws, "v2 again")
    except DatavcError as err:
        return [*failures, f"{where}: rerun failed: {err}"]
    numbers = version_numbers(store, NAME)
    if numbers != [1, 2]:
        failures.append(f"{where}: versions after the rerun: {numbers}")
    else:
        failures += differs(case.url, 2, base / "rerun-v2", case.v2, f"{where}: rerun's v2")
    failures += [f"{where}: fsck after the rerun: {line}" for line in fsck_problems(case.url)]
    return failures


def differs(url: str, number: int, dest: Path, want: dict[str, object], what: str) -> list[str]:
    """[] if version ``number`` checks out as ``want``, else what went wrong."""
    try:
        if checkout_state(url, NAME, number, dest) == want:
            return []
    except DatavcError as err:
        return [f"{what} does not check out: {err}"]
    return [f"{what} checks out, but not byte-exact"]


def sweep(
    tmp_path: Path, backend_kind: str, kind: str, cleanup: list[str]
) -> tuple[int, list[str]]:
    """Run :func:`after_fault` with the fault at every operation index in turn (``inner``:
    every filesystem call); the number of runs, and the failures."""
    ops = clean_run_ops(tmp_path / "clean", backend_kind, cleanup)
    if kind == "inner":
        case = make_case(tmp_path / "count", backend_kind)
        cleanup.append(case.url)
        case.backend.arm(None)
        add_commit(case.workspace(), "v2")
        count = len(case.backend.calls.fs_calls)
    elif kind in ("lost", "truncate"):
        count = sum(1 for op, _ in ops if op in WRITES)
    else:
        count = len(ops)
    failures: list[str] = []
    runs = 0
    for n in range(count):
        base = tmp_path / f"{kind}-{n}"
        case = make_case(base, backend_kind)
        cleanup.append(case.url)
        failures += after_fault(case, Fault(kind, n), base)
        runs += 1
    return runs, failures


@pytest.mark.parametrize("kind", ["unreachable", "inner", "lost", "crash"])
@pytest.mark.parametrize("backend_kind", ["memory", "local"])
def test_a_fault_at_every_store_operation_of_add_commit(
    tmp_path: Path, backend_kind: str, kind: str, memory_cleanup: list[str]
) -> None:
    """A store operation fails (before it acts, inside fsspec, or after it acted, its
    answer lost), or the process dies right after it, at each operation of a v2
    add+commit in turn: fsck stays clean, v1 (and v2 if it got published) check out
    byte-exact, and add+commit run again gives v2, once."""
    assert kind in KINDS
    runs, failures = sweep(tmp_path, backend_kind, kind, memory_cleanup)
    assert runs >= (5 if kind == "lost" else 10), runs  # the sweep covered a real run
    assert not failures, "\n".join(failures)


# Each kind of object a v2 add+commit writes: a truncated one must never be referenced. The
# writer checks the size the store kept of every pack, index and page (rewriting an index or
# page once), and reads back the version record it created (writing it over once).
TRUNCATED = ("packs/", "index/", "trees/", "versions/")


@pytest.mark.parametrize("target", TRUNCATED)
@pytest.mark.parametrize("backend_kind", ["memory", "local"])
def test_a_truncated_write_is_never_referenced(
    tmp_path: Path, backend_kind: str, target: str, memory_cleanup: list[str]
) -> None:
    """The store keeps only the first half of one object of v2's add+commit, and says it
    kept it all: no committed version may come to depend on the damaged object (fsck
    clean, every version byte-exact, add+commit run again gives v2)."""
    ops = clean_run_ops(tmp_path / "clean", backend_kind, memory_cleanup)
    writes = [key for op, key in ops if op in WRITES]
    n = next(i for i, key in enumerate(writes) if key.startswith(target))
    case = make_case(tmp_path / "run", backend_kind)
    memory_cleanup.append(case.url)
    failures = after_fault(case, Fault("truncate", n), tmp_path / "run")
    assert not failures, "\n".join(failures)


# -- 2. SIGKILL at random moments of add+commit ----------------------------------------------

TIMEOUT = 180


def dvc(cwd: Path, *args: str, code: int | None = 0) -> subprocess.CompletedProcess[str]:
    """Run ``datavc`` in ``cwd``; with ``code``, require that exit code and no traceback."""
    proc = subprocess.run(
        [sys.executable, "-m", "datavc", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        stdin=subprocess.DEVNULL,
    )
    if code is not None:
        assert proc.returncode == code, (args, proc.returncode, proc.stdout, proc.stderr)
        assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    return proc


ADD_COMMIT = '"$0" -m datavc add data && "$0" -m datavc commit -m "$1"'


def add_commit_cli(root: Path, message: str) -> int | None:
    """``datavc add data`` then ``datavc commit``, each must succeed: the version published
    (None: nothing to commit)."""
    proc = subprocess.run(
        ["sh", "-c", ADD_COMMIT, sys.executable, message],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    return published(proc.stdout)


def published(stdout: str) -> int | None:
    """The version a commit's output says it published (``NAME@vN  snapshot ...``)."""
    for line in stdout.splitlines():
        head = line.split("  snapshot ", 1)[0]
        if head.startswith(f"{NAME}@v") and " snapshot " in line:
            return int(head.split("@v", 1)[1])
    assert "nothing to commit" in stdout, stdout
    return None


def change_data(data: Path, run: int) -> dict[str, object]:
    """Run ``run``'s content: two of the four 1 MB files rewritten (two new packs at a
    1 MiB pack size), one small file added; the content as :func:`tree_state` sees it."""
    for j in (run % 4, (run + 1) % 4):
        write(data / f"big{j}.bin", rand(f"run{run}-{j}", 1_000_000 + run))
    write(data / "small" / f"{run}.txt", f"run {run}\n".encode())
    return tree_state(data)


def killed_add_commit(root: Path, message: str, delay: float) -> bool:
    """Start add+commit and SIGKILL it (the shell and datavc: their process group) after
    ``delay`` seconds; True if it was killed, False if it had finished."""
    proc = subprocess.Popen(
        ["sh", "-c", ADD_COMMIT, sys.executable, message],
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        proc.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    _, err = proc.communicate(timeout=TIMEOUT)
    assert "Traceback" not in err, err
    return proc.returncode != 0


def version_list(root: Path) -> list[int]:
    """The versions ``datavc log`` lists."""
    lines = dvc(root, "log", NAME).stdout.splitlines()
    return sorted(int(line.split()[0][1:]) for line in lines if line.startswith("v"))


def store_url_of(root: Path, url: str) -> str:
    return url if "://" in url else str(Path(url).resolve())


def outcome(killed: bool, published: bool, staged: bool) -> str:
    """Where a kill landed, as far as its traces tell."""
    if not killed:
        return "finished"
    if published:
        return "published"
    return "staged" if staged else "in add"


def sigkill_runs(tmp_path: Path, url: str, runs: int) -> None:
    """``runs`` add+commits, each SIGKILLed after a seeded delay (stratified over the
    measured duration of one, so the kills spread over start-up, chunking, pack uploads,
    the index, the pages and the commit), each followed by the checks and a rerun."""
    root = tmp_path / "repo"
    root.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    dvc(root, "init", "--store", url, "--pack-size", "1")
    url = store_url_of(root, url)
    checker = Backend(url)  # one connection for the checks (an S3 session costs ~0.2 s)
    data = root / "data"
    expected: dict[int, dict[str, object]] = {}
    change_data(data, 0)
    expected[1] = change_data(data, 2)  # four 1 MB files, two small ones
    assert add_commit_cli(root, "v1") == 1
    duration = float("inf")
    for n in (2, 3):  # the duration of an add+commit: the shorter of two
        expected[n] = change_data(data, n - 1)
        start = time.monotonic()
        assert add_commit_cli(root, f"v{n}") == n
        duration = min(duration, time.monotonic() - start)
    rng = random.Random(f"sigkill-{runs}-{url.split(':', 1)[0]}")
    delays = [(i + rng.random()) / runs * 0.95 * duration for i in range(runs)]
    rng.shuffle(delays)
    outcomes = []  # where each kill landed; "+notes": fsck notes new leftovers or spare packs
    seen_notes: set[str] = set()
    for i, delay in enumerate(delays):
        before = set(expected)
        content = change_data(data, 10 + i)
        killed = killed_add_commit(root, f"run {i}", delay)
        fsck_run = dvc(root, "fsck", code=None)
        assert fsck_run.returncode == 0, (i, delay, fsck_run.stdout, fsck_run.stderr)
        listed = version_list(root)
        assert before <= set(listed), (i, delay, sorted(before), listed)  # nothing lost
        for n in sorted(set(listed) - before):
            expected[n] = content  # published by the killed run
        staged = (root / ".datavc" / "state" / "staged" / f"{NAME}.json").exists()
        notes = {line for line in fsck_run.stdout.splitlines() if line.startswith("note:")}
        label = outcome(killed, len(listed) > len(before), staged)
        outcomes.append(label + (" +notes" if notes - seen_notes else ""))
        seen_notes |= notes
        for n in listed:
            got = checkout_state(checker, NAME, n, tmp_path / f"check-{i}-v{n}")
            assert got == expected[n], (i, delay, n)
        n = add_commit_cli(root, f"run {i} again")
        if n is not None:
            expected[n] = content
        numbers = version_numbers(ChunkStore.open(checker), NAME)
        assert len(set(numbers) - before) == 1, (i, delay, sorted(before), numbers)  # once
        latest = max(numbers)
        assert expected[latest] == content, (i, delay, latest)
        assert checkout_state(checker, NAME, latest, tmp_path / f"rerun-{i}") == content
    assert fsck_problems(url) == []
    assert sum(o != "finished" for o in outcomes) >= runs // 2, outcomes  # most were killed
    print(f"SIGKILL outcomes over {duration:.2f} s: {outcomes}")


@pytest.mark.parametrize(
    "where",
    ["local", pytest.param("s3", marks=pytest.mark.stress)],  # S3: 27 s, in test-all
)
def test_sigkill_during_add_commit(
    tmp_path: Path, where: str, request: pytest.FixtureRequest
) -> None:
    shared_store_url = str(tmp_path / "shared-store")
    if where == "s3":
        import uuid

        from conftest import BUCKET

        request.getfixturevalue("s3_env")
        shared_store_url = f"s3://{BUCKET}/{uuid.uuid4().hex}"
    """Four kills at seeded moments of ``datavc add; datavc commit`` (local store and S3):
    after each, ``datavc fsck`` passes, every version checks out byte-exact, ``datavc log``
    still lists every version, and add+commit run again completes, leaving the run's
    content published exactly once."""
    sigkill_runs(tmp_path, shared_store_url, 4)


@pytest.mark.stress
def test_sigkill_during_add_commit_20_times(tmp_path: Path, shared_store_url: str) -> None:
    """As :func:`test_sigkill_during_add_commit`, 20 kills."""
    sigkill_runs(tmp_path, shared_store_url, 20)


# -- 3. four writers, one dataset, one S3 store -----------------------------------------------

WRITERS = 4
COMMITS = 5


def writer_loop(
    clone: Path, who: int, published_by: dict[int, tuple[int, dict[str, object]]]
) -> None:
    """Commit ``COMMITS`` versions of ``ds`` from one clone, each with content of its own
    (plus a file every writer shares, so the same chunks are uploaded at once), with
    ``commit -a`` (one process an add+commit); record which content the commit output
    says went into which version."""
    ds = clone / "data" / "ds"
    for j in range(COMMITS):
        write(ds / "own.bin", rand(f"writer{who}-{j}", 150_000 + j))
        write(ds / "shared.bin", rand(f"shared-{j}", 120_000))  # the same in every clone
        write(ds / "notes" / f"{who}-{j}.txt", f"writer {who} commit {j}\n".encode())
        content = tree_state(ds)
        if j == 0:
            dvc(clone, "add", "data/ds")  # then tracked: commit -a adds it again
        out = dvc(clone, "commit", "-a", "-m", f"writer {who} commit {j}").stdout
        number = published(out.replace("ds@v", f"{NAME}@v"))
        assert number is not None, out
        assert number not in published_by, (number, who, j)  # dict ops are atomic
        published_by[number] = (who, content)


@pytest.mark.stress  # 14-30 s: in make test-all
def test_four_writers_commit_to_one_dataset_on_s3(tmp_path: Path, s3_env: str) -> None:
    """Four clones sharing one S3 store commit five versions each of the same dataset at
    once: 20 distinct version numbers, each one byte-exact what its writer committed, and
    fsck clean."""
    import threading

    from conftest import BUCKET

    url = f"s3://{BUCKET}/{uuid.uuid4().hex}"
    origin = tmp_path / "origin"
    origin.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=origin, check=True)
    dvc(origin, "init", "--store", url)
    subprocess.run(["git", "add", "-A"], cwd=origin, check=True)
    subprocess.run(["git", "commit", "-q", "-m", "datavc"], cwd=origin, check=True)
    clones = [tmp_path / f"clone{i}" for i in range(WRITERS)]
    for clone in clones:
        subprocess.run(["git", "clone", "-q", str(origin), str(clone)], check=True)
    published_by: dict[int, tuple[int, dict[str, object]]] = {}
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            writer_loop(clones[i], i, published_by)
        except BaseException as err:  # reported by the main thread
            errors.append(err)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(WRITERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=TIMEOUT * COMMITS)
    assert not errors, errors
    assert sorted(published_by) == list(range(1, WRITERS * COMMITS + 1))
    assert {who for who, _ in published_by.values()} == set(range(WRITERS))
    checker = Backend(url)
    assert version_numbers(ChunkStore.open(checker), "ds") == sorted(published_by)
    for n, (who, content) in sorted(published_by.items()):
        got = checkout_state(checker, "ds", n, tmp_path / f"check-v{n}")
        assert got == content, (n, who)
    out = dvc(clones[0], "fsck").stdout
    assert "fsck: no problems; checked 20 versions" in out, out
