"""The real ``datavc`` command line, run in subprocesses inside real git repositories.

Covers init (embedded, local and S3 stores), add, commit, checkout, status, log and ls; exact
round trips; version specs; pointer files and .gitignore; errors (one line, documented exit
code, workspace untouched); the workspace lock; and two clones committing to one store at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import http.client
import os
import shutil
import socket
import subprocess
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from blake3 import blake3
from helpers import rand, tree_state, write

from datavc.format.pointer import decode_pointer
from datavc.store.backend import Backend

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

COMMANDS = ["init", "add", "commit", "checkout", "status", "log", "ls", "diff"]
TIMEOUT = 120


# -- helpers ----------------------------------------------------------------------------


def run(
    cwd: Path,
    *args: str,
    env: dict[str, str] | None = None,
    check: bool = True,
    timeout: float = TIMEOUT,
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-m", "datavc", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    if check:
        assert proc.returncode == 0, (args, proc.returncode, proc.stdout, proc.stderr)
        assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def git(cwd: Path, *args: str) -> str:
    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True)
    return proc.stdout


def git_ignores(repo: Path, path: str) -> bool:
    proc = subprocess.run(["git", "check-ignore", "-q", path], cwd=repo)
    assert proc.returncode in (0, 1)
    return proc.returncode == 0


def make_data(folder: Path, seed: str) -> None:
    write(folder / "a.bin", rand(f"{seed}-a", 300_000))
    write(folder / "empty", b"")
    write(folder / "tools" / "run.sh", rand(f"{seed}-run", 4_000), executable=True)
    write(folder / "sub" / "deep" / "c.bin", rand(f"{seed}-c", 90_000))
    write(folder / "sub" / "one", rand(f"{seed}-one", 1))


def workspace_state(repo: Path) -> dict[str, object]:
    """The user-visible workspace: everything but git's own folder and datavc's caches."""
    state = tree_state(repo)
    skip = (".git/", ".datavc/state/", ".datavc/cache/")
    return {k: v for k, v in state.items() if not k.startswith(skip) and k not in skip}


def assert_error(
    repo: Path,
    args: list[str],
    code: int | tuple[int, ...],
    contains: str,
    env: dict[str, str] | None = None,
    timeout: float = TIMEOUT,
) -> str:
    before = workspace_state(repo)
    proc = run(repo, *args, env=env, check=False, timeout=timeout)
    codes = code if isinstance(code, tuple) else (code,)
    assert proc.returncode in codes, (args, proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("datavc: error: "), lines[0]
    assert contains in lines[0], lines[0]
    assert workspace_state(repo) == before
    return lines[0]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pointer_of(path: Path):  # type: ignore[no-untyped-def]
    return decode_pointer(path.read_text(encoding="utf-8"), str(path))


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    path.mkdir()
    git(path, "init", "-q")
    return path


def _template_env(home: Path) -> dict[str, str]:
    """What conftest's clean_env gives a test, for fixtures built once per module."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DATAVC_", "GIT_", "AWS_", "FSSPEC_"))
    }
    home.mkdir(parents=True, exist_ok=True)
    (home / ".gitconfig").write_text(
        "[user]\n\tname = Test Author\n\temail = author@example.invalid\n"
        "[init]\n\tdefaultBranch = main\n"
    )
    return {**env, "HOME": str(home), "GIT_CONFIG_NOSYSTEM": "1"}


def _run_in(env: dict[str, str], cwd: Path, *args: str) -> str:
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    return proc.stdout


@pytest.fixture(scope="module")
def templates(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, Path, dict[str, object], dict[str, object]]:
    """Built once: a repo with dataset ``ds`` (embedded store) at v1, and a copy of it that
    also has v2; each commit of data is followed by a git commit of the pointer."""
    base = tmp_path_factory.mktemp("templates")
    env = _template_env(base / "home")
    one = base / "one"
    one.mkdir()
    datavc = [sys.executable, "-m", "datavc"]
    _run_in(env, one, "git", "init", "-q")
    _run_in(env, one, *datavc, "init")
    make_data(one / "data" / "ds", "v1")
    _run_in(env, one, *datavc, "add", "data/ds")
    out = _run_in(env, one, *datavc, "commit", "-m", "first version")
    assert out.startswith("ds@v1 "), out
    _run_in(env, one, "git", "add", "-A")
    _run_in(env, one, "git", "commit", "-q", "-m", "data v1")
    v1 = tree_state(one / "data" / "ds")

    two = base / "two"
    shutil.copytree(one, two, symlinks=True)
    ds = two / "data" / "ds"
    write(ds / "a.bin", rand("v2-a", 300_000))
    write(ds / "new" / "n.bin", rand("v2-n", 20_000))
    (ds / "sub" / "one").unlink()
    _run_in(env, two, *datavc, "add", "data/ds")
    out = _run_in(env, two, *datavc, "commit", "-m", "second version")
    assert out.startswith("ds@v2 "), out
    _run_in(env, two, "git", "add", "-A")
    _run_in(env, two, "git", "commit", "-q", "-m", "data v2")
    return one, two, v1, tree_state(ds)


@pytest.fixture
def committed(
    tmp_path: Path, templates: tuple[Path, Path, dict[str, object], dict[str, object]]
) -> tuple[Path, dict[str, object]]:
    """A repo with datavc (embedded store) and dataset ``ds`` at data/ds committed as v1,
    the pointer and config committed to git (a private copy of the template)."""
    one, _, v1, _ = templates
    repo = tmp_path / "repo"
    shutil.copytree(one, repo, symlinks=True)
    return repo, v1


@pytest.fixture
def two_versions(
    tmp_path: Path, templates: tuple[Path, Path, dict[str, object], dict[str, object]]
) -> tuple[Path, dict[str, object], dict[str, object]]:
    """``committed`` plus v2 (one file changed, one added, one removed), also git-committed."""
    _, two, v1, v2 = templates
    repo = tmp_path / "repo"
    shutil.copytree(two, repo, symlinks=True)
    return repo, v1, v2


# -- help and usage -----------------------------------------------------------------------


def test_help_lists_every_command(tmp_path: Path) -> None:
    out = run(tmp_path, "--help").stdout
    for cmd in COMMANDS:
        assert f" {cmd} " in out, cmd
    for cmd in COMMANDS:
        proc = run(tmp_path, cmd, "--help")
        assert f"datavc {cmd}" in proc.stdout, proc.stdout
        assert "--help" in proc.stdout


def test_console_script_is_installed(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "datavc"
    proc = subprocess.run(
        [str(script), "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=TIMEOUT
    )
    assert proc.returncode == 0, proc.stderr
    assert all(f" {cmd} " in proc.stdout for cmd in COMMANDS)


@pytest.mark.parametrize(
    "args", [["checkout", "--bogus"], ["frobnicate"], ["add"]], ids=["option", "command", "arg"]
)
def test_usage_errors_exit_2_without_traceback(repo: Path, args: list[str]) -> None:
    run(repo, "init")
    proc = run(repo, *args, check=False)
    assert "Traceback" not in proc.stderr
    assert proc.returncode == 2, proc.stderr


# -- init -------------------------------------------------------------------------------


def test_init_default_embedded_store(repo: Path) -> None:
    out = run(repo, "init").stdout
    assert str(repo / ".datavc" / "store") in out
    cfg = tomllib.loads((repo / ".datavc" / "config.toml").read_text())
    assert cfg["core"]["store"] == ".datavc/store"
    doc = (repo / ".datavc" / "store" / "datavc.json").read_text()
    assert '"datavc-store"' in doc
    # The store, cache and state are ignored by git; the config is not.
    assert git_ignores(repo, ".datavc/store/datavc.json")
    assert not git_ignores(repo, ".datavc/config.toml")
    make_data(repo / "data" / "ds", "x")
    run(repo, "add", "data/ds")
    run(repo, "commit", "-m", "m")
    assert (repo / ".datavc" / "store" / "versions" / "ds" / "1.json").is_file()


def test_init_with_store_url(repo: Path, shared_store_url: str) -> None:
    url = shared_store_url
    out = run(repo, "init", "--store", url).stdout
    assert url in out
    text = (repo / ".datavc" / "config.toml").read_text()
    assert tomllib.loads(text)["core"]["store"] == url
    assert "testing" not in text  # no credentials in the committed config
    backend = Backend(url)
    assert backend.exists("datavc.json")
    assert not (repo / ".datavc" / "store").exists()

    make_data(repo / "data" / "ds", "url")
    expected = tree_state(repo / "data" / "ds")
    run(repo, "add", "data/ds")
    run(repo, "commit", "-m", "m")
    assert backend.exists("versions/ds/1.json")
    shutil.rmtree(repo / "data" / "ds")
    shutil.rmtree(repo / ".datavc" / "cache", ignore_errors=True)
    run(repo, "checkout", "ds@v1")
    assert tree_state(repo / "data" / "ds") == expected


# -- add, commit, pointer files -----------------------------------------------------------


def test_pointer_file_and_gitignore(committed: tuple[Path, dict[str, object]]) -> None:
    repo, v1 = committed
    pointer = pointer_of(repo / "data" / "ds.datavc")
    files = {k: v for k, v in v1.items() if isinstance(v, tuple)}
    assert pointer.name == "ds"
    assert pointer.kind == "dir"
    assert pointer.version == 1
    assert pointer.files == len(files) == 5
    assert pointer.bytes == sum(len(b) for b, _ in files.values())  # type: ignore[misc]
    listing = run(repo, "ls", "ds@v1").stdout.splitlines()
    assert listing[0] == f"ds@v1 snapshot {pointer.snapshot}"

    assert "/data/ds" in (repo / ".gitignore").read_text().splitlines()
    assert git_ignores(repo, "data/ds/a.bin")
    assert not git_ignores(repo, "data/ds.datavc")
    tracked = git(repo, "ls-files").split()
    assert "data/ds.datavc" in tracked
    assert not any(p.startswith("data/ds/") for p in tracked)


def test_single_file_dataset(repo: Path) -> None:
    run(repo, "init")
    table = repo / "tables" / "train.csv"
    content = rand("csv", 150_000)
    write(table, content)
    out = run(repo, "add", "tables/train.csv").stdout
    assert out.startswith("train: staged 1 files")
    run(repo, "commit", "-m", "table")
    pointer = pointer_of(repo / "tables" / "train.csv.datavc")
    assert (pointer.name, pointer.kind) == ("train", "file")
    assert (pointer.files, pointer.bytes) == (1, 150_000)
    assert "/tables/train.csv" in (repo / ".gitignore").read_text().splitlines()
    table.unlink()
    run(repo, "checkout", "train@v1")
    assert table.read_bytes() == content


def test_commit_of_unchanged_data_makes_no_version(
    committed: tuple[Path, dict[str, object]],
) -> None:
    repo, _ = committed
    pointer = (repo / "data" / "ds.datavc").read_bytes()
    out = run(repo, "commit", "-m", "again").stdout
    assert "ds: nothing to commit" in out
    assert "ds@v2" not in out
    shutil.rmtree(repo / ".datavc" / "state")  # no stat cache: every file is read again
    add = run(repo, "add", "data/ds").stdout
    assert "(0 added, 0 modified, 0 removed); new data stored: 0 B" in add
    out = run(repo, "commit", "-m", "again").stdout
    assert "ds: nothing to commit" in out
    store = repo / ".datavc" / "store" / "versions" / "ds"
    assert sorted(os.listdir(store)) == ["1.json"]
    heads = [line for line in run(repo, "log", "ds").stdout.splitlines() if line.startswith("v")]
    assert len(heads) == 1 and heads[0].startswith("v1 "), heads
    assert (repo / "data" / "ds.datavc").read_bytes() == pointer


def test_commit_without_message_is_a_usage_error(repo: Path) -> None:
    run(repo, "init")
    make_data(repo / "data" / "ds", "m")
    run(repo, "add", "data/ds")
    assert_error(repo, ["commit"], 2, "needs a message")
    assert not (repo / "data" / "ds.datavc").exists()


# -- status, log, ls ----------------------------------------------------------------------


def test_status_log_ls(committed: tuple[Path, dict[str, object]]) -> None:
    repo, v1 = committed
    ds = repo / "data" / "ds"
    assert run(repo, "status").stdout.strip() == "ds (data/ds): clean: matches v1"

    write(ds / "a.bin", rand("edit", 1000))
    write(ds / "added.bin", rand("added", 1000))
    out = run(repo, "status").stdout.strip()
    assert out.startswith("ds (data/ds): modified (1 added, 1 modified, 0 removed)"), out
    run(repo, "add", "data/ds")
    out = run(repo, "status").stdout.strip()
    assert out.startswith("ds (data/ds): staged (1 added, 1 modified, 0 removed)"), out
    run(repo, "commit", "-m", "edited a")
    assert run(repo, "status").stdout.strip() == "ds (data/ds): clean: matches v2"
    shutil.rmtree(ds)
    assert run(repo, "status").stdout.startswith("ds (data/ds): missing")

    log = run(repo, "log", "ds").stdout.splitlines()
    heads = [line.split()[0] for line in log if not line.startswith(" ")]
    assert heads == ["v2", "v1"]
    assert "Test Author <author@example.invalid>" in log[0]
    assert log[2].strip() == "edited a"
    assert log[5].strip() == "first version"

    listing = run(repo, "ls", "ds@v1").stdout.splitlines()[1:]
    files = {k: v for k, v in v1.items() if isinstance(v, tuple)}
    assert len(listing) == len(files)
    for line in listing:
        mode, size, digest, path = line.split(None, 3)
        content, executable = files[path]  # type: ignore[misc]
        assert mode == ("100755" if executable else "100644")
        assert int(size) == len(content)
        assert digest == blake3(content).hexdigest()[:16]
    assert [line.split(None, 3)[3] for line in listing] == sorted(files)


# -- round trips and checkout -------------------------------------------------------------


def expected_changes(old: dict[str, object], new: dict[str, object]) -> list[str]:
    """``A``/``M``/``D`` lines between two folder states (files only), in path order."""
    files_old = {k: v for k, v in old.items() if v != "dir"}
    files_new = {k: v for k, v in new.items() if v != "dir"}
    lines = []
    for path in sorted(files_old.keys() | files_new.keys(), key=str.encode):
        if path not in files_old:
            lines.append(f"A {path}")
        elif path not in files_new:
            lines.append(f"D {path}")
        elif files_old[path] != files_new[path]:
            lines.append(f"M {path}")
    return lines


def test_diff_against_the_parent_and_between_versions(
    two_versions: tuple[Path, dict[str, object], dict[str, object]],
) -> None:
    repo, v1, v2 = two_versions
    forward = expected_changes(v1, v2)
    assert {line[0] for line in forward} == {"A", "M", "D"}, "premise: all three kinds"
    out = run(repo, "diff", "ds@v2").stdout.splitlines()
    assert out[0] == "ds@v1 -> ds@v2"
    assert out[1:-1] == forward
    counts = [sum(line[0] == k for line in forward) for k in "AMD"]
    assert out[-1] == f"{counts[0]} added, {counts[1]} modified, {counts[2]} removed"
    # Two versions: the changes from the first to the second (here backwards).
    back = run(repo, "diff", "ds@v2", "ds@v1").stdout.splitlines()
    assert back[0] == "ds@v2 -> ds@v1"
    assert back[1:-1] == expected_changes(v2, v1)
    # The first version has no parent: everything is added.
    first = run(repo, "diff", "ds@v1").stdout.splitlines()
    assert first[0] == "(nothing) -> ds@v1"
    assert first[1:-1] == expected_changes({}, v1)
    # A bare name is what the pointer file says (v2 here); same versions: no change.
    assert run(repo, "diff", "ds").stdout.splitlines()[1:-1] == forward
    same = run(repo, "diff", "ds@v1", "ds@v1").stdout.splitlines()
    assert same[1:] == ["0 added, 0 modified, 0 removed"]
    for args, code, text in (
        (["diff", "ds@v9"], 3, "has no version 'v9'"),
        (["diff", "ds@v1", "nope@v1"], 3, "unknown dataset 'nope'"),
    ):
        assert_error(repo, args, code, text)


def test_checkout_after_delete_restores_exact_tree(
    committed: tuple[Path, dict[str, object]],
) -> None:
    repo, v1 = committed
    shutil.rmtree(repo / "data" / "ds")
    out = run(repo, "checkout", "ds@v1").stdout
    assert out.strip() == "ds@v1 -> data/ds (5 files, 5 written)"
    assert tree_state(repo / "data" / "ds") == v1
    out = run(repo, "checkout", "ds@v1").stdout
    assert out.strip() == "ds@v1 -> data/ds (5 files, 0 written)"


def test_checkout_force_after_edits_restores_exact_tree(
    committed: tuple[Path, dict[str, object]],
) -> None:
    repo, v1 = committed
    ds = repo / "data" / "ds"
    write(ds / "a.bin", rand("edited", 300_000))
    (ds / "tools" / "run.sh").chmod(0o644)
    (ds / "empty").chmod(0o755)
    (ds / "sub" / "one").unlink()
    write(ds / "extra.bin", rand("extra", 500))
    write(ds / "more" / "deeper" / "x.bin", rand("x", 50))
    (ds / "emptydir").mkdir()
    edited = workspace_state(repo)

    # Without --force the unstored edit of a.bin is refused, and nothing changes.
    assert_error(repo, ["checkout", "ds@v1"], 2, "data/ds/a.bin has changes that are not stored")
    assert workspace_state(repo) == edited

    run(repo, "checkout", "--force", "ds@v1")
    assert tree_state(ds) == v1


def test_specs_latest_prefix_and_git(
    two_versions: tuple[Path, dict[str, object], dict[str, object]],
) -> None:
    repo, v1, v2 = two_versions
    ds = repo / "data" / "ds"
    tree1 = run(repo, "ls", "ds@v1").stdout.split()[2]
    tree2 = run(repo, "ls", "ds@latest").stdout.split()[2]
    assert tree1 != tree2
    assert run(repo, "ls", "ds").stdout.split()[:3] == ["ds@v2", "snapshot", tree2]

    cases = [
        ("ds@v1", 1, v1),
        ("ds@latest", 2, v2),
        (f"ds@{tree1[:10]}", 1, v1),
        (f"ds@{tree2[:8]}", 2, v2),
        ("ds@git:HEAD~1", 1, v1),
        ("ds@git:HEAD", 2, v2),
    ]
    for spec, version, expected in cases:
        out = run(repo, "checkout", spec).stdout
        assert out.startswith(f"ds@v{version} -> data/ds "), (spec, out)
        assert tree_state(ds) == expected, spec
        assert pointer_of(repo / "data" / "ds.datavc").version == version, spec


def test_checkout_without_argument_follows_git_checkout_force(
    two_versions: tuple[Path, dict[str, object], dict[str, object]],
) -> None:
    repo, v1, v2 = two_versions
    ds = repo / "data" / "ds"
    git(repo, "checkout", "-q", "HEAD~1")
    assert pointer_of(repo / "data" / "ds.datavc").version == 1
    out = run(repo, "checkout", "--force").stdout
    assert out.strip() == "ds@v1 -> data/ds (5 files, 2 written)"
    assert tree_state(ds) == v1
    git(repo, "checkout", "-q", "main")
    run(repo, "checkout", "--force")
    assert tree_state(ds) == v2


def test_checkout_without_argument_follows_git_checkout(
    two_versions: tuple[Path, dict[str, object], dict[str, object]],
) -> None:
    repo, v1, v2 = two_versions
    ds = repo / "data" / "ds"
    git(repo, "checkout", "-q", "HEAD~1")
    run(repo, "checkout")
    assert tree_state(ds) == v1
    git(repo, "checkout", "-q", "main")
    run(repo, "checkout")
    assert tree_state(ds) == v2


# -- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "code", "contains"),
    [
        (["checkout", "nope@v1"], 3, "unknown dataset 'nope'"),
        (["checkout", "nope"], 3, "unknown dataset 'nope'"),
        (["log", "nope"], 3, "unknown dataset 'nope'"),
        (["ls", "nope@latest"], 3, "unknown dataset 'nope'"),
        (["checkout", "ds@v9"], 3, "has no version 'v9'"),
        (["ls", "ds@v9"], 3, "has no version 'v9'"),
        (["checkout", "ds@deadbeef00"], 3, "has no version"),
        (["checkout", "ds@git:no-such-rev"], 3, "has no version"),
        (["checkout", "ds@"], 8, "empty version"),
        (["checkout", "ds@v0"], 8, "versions start at v1"),
        (["checkout", "bad name@v1"], 8, "invalid dataset name"),
        (["checkout", "ds@git:"], 8, "empty git revision"),
        (["add", "../outside"], 8, "outside the workspace"),
        (["add", ".git"], 8, "inside .git"),
        (["add", "data/missing"], 3, "no such file or folder"),
    ],
)
def test_errors_are_one_line_with_documented_code(
    committed: tuple[Path, dict[str, object]], args: list[str], code: int, contains: str
) -> None:
    repo, _ = committed
    outside = repo.parent / "outside"
    write(outside / "f", b"outside")
    # An edit in the workspace must survive every failing command.
    write(repo / "data" / "ds" / "a.bin", rand("unsaved", 1000))
    assert_error(repo, args, code, contains)
    assert (outside / "f").read_bytes() == b"outside"


def test_add_through_a_symlink_out_of_the_repo_is_refused(
    committed: tuple[Path, dict[str, object]],
) -> None:
    repo, _ = committed
    outside = repo.parent / "outside"
    write(outside / "ds" / "f.bin", rand("outside", 1000))
    os.symlink(outside, repo / "link")
    before = tree_state(outside)
    assert_error(repo, ["add", "link/ds", "--name", "outer"], 8, "link/ds")
    run(repo, "commit", "-m", "nothing staged")
    assert tree_state(outside) == before


def test_add_folder_whose_name_starts_with_two_dots(repo: Path) -> None:
    run(repo, "init")
    make_data(repo / "..data", "dots")
    expected = tree_state(repo / "..data")
    run(repo, "add", "..data", "--name", "dots")
    run(repo, "commit", "-m", "dots")
    shutil.rmtree(repo / "..data")
    run(repo, "checkout", "dots@v1")
    assert tree_state(repo / "..data") == expected


def run_typer(
    cwd: Path, args: list[str], env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """A ``datavc`` command line through the typer app, not the entry point's own forms."""
    code = (
        "import sys; sys.argv = ['datavc', *sys.argv[1:]]; from datavc.cli.app import main; main()"
    )
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        stdin=subprocess.DEVNULL,
    )


def test_plain_status_prints_a_non_ascii_path_to_an_ascii_terminal(repo: Path) -> None:
    """A C locale's ASCII stdout: both forms print the path (as UTF-8), no traceback."""
    run(repo, "init")
    make_data(repo / "data" / "caf\u00e9", "c")
    run(repo, "add", "data/caf\u00e9", "--name", "cafe")
    ascii_env = {"PYTHONIOENCODING": "ascii"}
    fast = run(repo, "status", env=ascii_env, check=False)
    full = run_typer(repo, ["status"], ascii_env)
    assert (fast.returncode, fast.stdout, fast.stderr) == (0, full.stdout, full.stderr)
    assert fast.stdout.startswith("cafe (data/caf\u00e9): new"), fast.stdout


def test_plain_status_prints_what_the_typer_command_prints(
    committed: tuple[Path, dict[str, object]], tmp_path: Path
) -> None:
    repo, _ = committed
    ds = repo / "data" / "ds"
    outside = tmp_path / "outside"
    outside.mkdir()
    empty = tmp_path / "empty"
    empty.mkdir()
    run(empty, "init")

    def both(cwd: Path) -> tuple[tuple[int, str, str], tuple[int, str, str]]:
        fast, full = run(cwd, "status", check=False), run_typer(cwd, ["status"])
        return (fast.returncode, fast.stdout, fast.stderr), (
            full.returncode,
            full.stdout,
            full.stderr,
        )

    seen = set()
    for step in ("clean", "modified", "staged", "missing"):
        if step == "modified":
            write(ds / "a.bin", rand("edit", 1000))
        elif step == "staged":
            run(repo, "add", "data/ds")
        elif step == "missing":
            shutil.rmtree(ds)
        fast, full = both(repo)
        assert fast == full, step
        assert fast[0] == 0 and fast[1].startswith(f"ds (data/ds): {step}"), fast
        seen.add(fast[1])
    assert len(seen) == 4
    assert both(empty) == ((0, "no tracked datasets\n", ""), (0, "no tracked datasets\n", ""))
    fast, full = both(outside)
    assert fast == full
    assert fast[0] == 4 and fast[2].startswith("datavc: error: "), fast
    assert "Traceback" not in fast[2]


def test_plain_checkout_does_what_the_typer_command_does(
    committed: tuple[Path, dict[str, object]], tmp_path: Path
) -> None:
    """``datavc checkout [SPEC...]`` without options runs without typer: the same files,
    output, errors and exit codes as the typer command, for each form."""
    repo, _ = committed
    ds = repo / "data" / "ds"
    expected = tree_state(ds)
    write(ds / "a.bin", rand("v2", 1000))
    run(repo, "add", "data/ds")
    run(repo, "commit", "-m", "v2")
    v2 = tree_state(ds)
    assert v2 != expected
    empty = tmp_path / "empty"
    empty.mkdir()
    run(empty, "init")
    outside = tmp_path / "outside"
    outside.mkdir()
    cases = [
        (repo, ["checkout"], v2),  # what the pointer file says
        (repo, ["checkout", "ds@v1"], expected),
        (repo, ["checkout", "ds@v1", "ds@v2"], None),  # named twice
        (repo, ["checkout", "nope@v1"], None),
        (repo, ["checkout", "ds@v9"], None),
        (repo, ["checkout", "ds@"], None),
        (empty, ["checkout"], None),
        (outside, ["checkout", "ds@v1"], None),
    ]
    codes = set()
    for cwd, args, tree in cases:
        outcomes = []
        for how in ("fast", "typer"):
            if tree is not None:
                shutil.rmtree(ds)
            done = run(cwd, *args, check=False) if how == "fast" else run_typer(cwd, args)
            assert "Traceback" not in done.stderr, done.stderr
            outcomes.append((done.returncode, done.stdout, done.stderr))
            if tree is not None:
                assert tree_state(ds) == tree, (args, how)
        assert outcomes[0] == outcomes[1], args
        codes.add(outcomes[0][0])
    assert codes == {0, 3, 4, 8}, codes
    # the plain form is served without importing typer; an option sends it to typer
    plain = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "datavc", "checkout", "ds@v1"],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=True,
    )
    assert " datavc.workspace.checkout\n" in plain.stderr and " typer\n" not in plain.stderr
    shutil.rmtree(ds)
    assert run(repo, "checkout", "--force", "ds@v1").returncode == 0
    assert tree_state(ds) == expected
    assert "Materialize" in run(repo, "checkout", "--help").stdout


@pytest.mark.parametrize("args", [["status"], ["checkout", "ds@v1"], ["log", "ds"]])
def test_a_closed_pipe_ends_the_command_quietly(
    committed: tuple[Path, dict[str, object]], args: list[str]
) -> None:
    """``datavc status | head``: when the reader has gone, the plain forms end as the typer
    commands do, with exit code 1 and nothing on stderr (no error line, no traceback)."""
    repo, _ = committed
    shutil.rmtree(repo / "data" / "ds")
    read_end, write_end = os.pipe()
    os.close(read_end)  # nobody reads: the first write fails with EPIPE
    try:
        done = subprocess.run(
            [sys.executable, "-m", "datavc", *args],
            cwd=repo,
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=TIMEOUT,
            env={**os.environ, "PYTHONUNBUFFERED": ""},
        )
    finally:
        os.close(write_end)
    assert (done.returncode, done.stderr) == (1, "")
    if args[0] == "checkout":
        assert (repo / "data" / "ds").is_dir()  # the work was done before the printing


@pytest.mark.parametrize(
    "args", [["log", "ds"], ["checkout", "--force"], ["add", "data"], ["checkout"], ["status"]]
)
def test_an_interrupt_exits_130_with_one_line(
    args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ctrl-C during any command, through typer or the entry point's plain forms: exit
    130 and one line (typer returns 130 instead of raising it, which once exited 0)."""
    from datavc.cli import entry
    from datavc.workspace.core import Workspace

    def interrupted(*_args: object, **_kwargs: object) -> Workspace:
        raise KeyboardInterrupt

    monkeypatch.setattr(Workspace, "find", interrupted)
    monkeypatch.setattr(sys, "argv", ["datavc", *args])
    with pytest.raises(SystemExit) as info:
        entry.main()
    assert info.value.code == 130
    assert capsys.readouterr().err == "datavc: error: interrupted\n"


@pytest.mark.parametrize("cmd", [["status"], ["add", "data"], ["checkout"], ["log", "ds"]])
def test_not_a_workspace(repo: Path, cmd: list[str]) -> None:
    write(repo / "data" / "f", b"x")
    assert_error(repo, cmd, 4, "not in a datavc workspace")


def test_no_store_configured(repo: Path) -> None:
    run(repo, "init")
    (repo / ".datavc" / "config.toml").write_text("[core]\n")
    write(repo / "data" / "f", b"x")
    assert_error(repo, ["add", "data"], 4, "no store configured")
    assert_error(repo, ["log", "ds"], 4, "no store configured")


def test_store_unreachable(repo: Path, s3_env: str) -> None:
    run(repo, "init", "--store", f"s3://datavc-test/unreachable-{os.getpid()}-{id(repo)}")
    make_data(repo / "data" / "ds", "u")
    run(repo, "add", "data/ds")
    run(repo, "commit", "-m", "m")
    write(repo / "data" / "ds" / "a.bin", rand("unsaved", 1000))
    dead = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{closed_port()}"}
    assert_error(repo, ["checkout", "--force", "ds@v1"], 5, "is unreachable", env=dead, timeout=90)
    # Without botocore's retries, so that this one fails fast.
    dead["AWS_MAX_ATTEMPTS"] = "1"
    assert_error(repo, ["log", "ds"], 5, "is unreachable", env=dead, timeout=90)


def test_init_with_missing_bucket_names_it(repo: Path, s3_env: str) -> None:
    line = assert_error(
        repo, ["init", "--store", "s3://datavc-no-such-bucket/p"], (4, 5), "datavc-no-such-bucket"
    )
    assert "bucket" in line
    assert not (repo / ".datavc").exists()


def test_init_with_unreachable_store_writes_nothing(repo: Path, s3_env: str) -> None:
    dead = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{closed_port()}", "AWS_MAX_ATTEMPTS": "1"}
    assert_error(repo, ["init", "--store", "s3://datavc-test/x"], 5, "is unreachable", env=dead)
    assert not (repo / ".datavc").exists()


# -- lock ---------------------------------------------------------------------------------


def test_locked_workspace(committed: tuple[Path, dict[str, object]]) -> None:
    repo, _ = committed
    write(repo / "data" / "other" / "f.bin", rand("other", 1000))
    (repo / ".datavc" / "state").mkdir(exist_ok=True)
    fd = os.open(repo / ".datavc" / "state" / "lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        line = assert_error(repo, ["add", "data/other"], 7, "another datavc command")
        assert "is using this workspace" in line
        assert not (repo / ".datavc" / "state" / "staged" / "other.json").exists()
    finally:
        os.close(fd)
    out = run(repo, "add", "data/other").stdout
    assert out.startswith("other: staged 1 files")


# -- concurrency --------------------------------------------------------------------------


class HoldingProxy:
    """An HTTP proxy in front of the moto server that holds every PUT of one key until
    ``parties`` of them have arrived, then lets them all through at once: two writers that
    both listed an empty ``versions/ds/`` really do race for the same exclusive create."""

    def __init__(self, upstream: str, hold_suffix: str, parties: int = 2) -> None:
        self.upstream = urllib.parse.urlsplit(upstream)
        self.hold_suffix = hold_suffix
        self.barrier = threading.Barrier(parties, timeout=30)
        self.released = False
        self.log: list[tuple[str, str, int]] = []
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _body(self) -> bytes | None:
                if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                    parts = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                        if size == 0:
                            while self.rfile.readline().strip():
                                pass
                            return b"".join(parts)
                        parts.append(self.rfile.read(size))
                        self.rfile.readline()
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else None

            def _forward(self) -> None:
                body = self._body()
                path = self.path.split("?", 1)[0]
                if self.command == "PUT" and path.endswith(proxy.hold_suffix):
                    with contextlib.suppress(threading.BrokenBarrierError):
                        if not proxy.released:
                            proxy.barrier.wait()
                    proxy.released = True
                hop = {"connection", "keep-alive", "transfer-encoding", "expect", "content-length"}
                headers = {k: v for k, v in self.headers.items() if k.lower() not in hop}
                if body is not None:
                    headers["Content-Length"] = str(len(body))
                conn = http.client.HTTPConnection(
                    proxy.upstream.hostname, proxy.upstream.port, timeout=60
                )
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                finally:
                    conn.close()
                with proxy.lock:
                    proxy.log.append((self.command, path, resp.status))
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    keep = self.command == "HEAD" and k.lower() == "content-length"
                    if k.lower() in hop and not keep:
                        continue
                    self.send_header(k, v)
                if self.command != "HEAD":
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# A git that makes each caller of "git rev-parse HEAD" (the last thing datavc does before it
# publishes a version) wait until the other clone has got there too.
GIT_BARRIER = """#!{python}
import os, sys, time
if sys.argv[1:3] == ["rev-parse", "HEAD"] and os.environ.get("BARRIER_DIR"):
    folder = os.environ["BARRIER_DIR"]
    open(os.path.join(folder, str(os.getppid())), "w").close()
    deadline = time.monotonic() + 30
    while len(os.listdir(folder)) < 2 and time.monotonic() < deadline:
        time.sleep(0.0002)
os.execv({git!r}, [{git!r}, *sys.argv[1:]])
"""


def test_two_clones_commit_at_once(
    tmp_path: Path, shared_store_url: str, request: pytest.FixtureRequest
) -> None:
    env: dict[str, str] = {}
    proxy = None
    if shared_store_url.startswith("s3://"):
        prefix = shared_store_url.split("/", 3)[3]
        proxy = HoldingProxy(os.environ["AWS_ENDPOINT_URL"], f"/{prefix}/versions/ds/1.json")
        request.addfinalizer(proxy.close)
        env["AWS_ENDPOINT_URL"] = proxy.url
    else:
        bindir = tmp_path / "bin"
        bindir.mkdir()
        wrapper = bindir / "git"
        real_git = shutil.which("git")
        assert real_git is not None
        wrapper.write_text(GIT_BARRIER.format(python=sys.executable, git=real_git))
        wrapper.chmod(0o755)
        (tmp_path / "barrier").mkdir()
        env["PATH"] = f"{bindir}{os.pathsep}{os.environ['PATH']}"
        env["BARRIER_DIR"] = str(tmp_path / "barrier")

    origin = tmp_path / "origin"
    origin.mkdir()
    git(origin, "init", "-q")
    run(origin, "init", "--store", shared_store_url)
    git(origin, "add", "-A")
    git(origin, "commit", "-q", "-m", "datavc")
    clones = [tmp_path / "alice", tmp_path / "bob"]
    expected: dict[Path, dict[str, object]] = {}
    for i, clone in enumerate(clones):
        git(tmp_path, "clone", "-q", str(origin), clone.name)
        make_data(clone / "data" / "ds", f"clone{i}")
        expected[clone] = tree_state(clone / "data" / "ds")
    assert expected[clones[0]] != expected[clones[1]]

    for args in (["add", "data/ds"], ["commit", "-m", "concurrent"]):
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "datavc", *args],
                cwd=clone,
                env={**os.environ, **env},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for clone in clones
        ]
        for p in procs:
            out, err = p.communicate(timeout=TIMEOUT)
            assert p.returncode == 0, (args, out, err)
            assert "Traceback" not in err

    if proxy is not None:
        # Both writers tried to create v1 at the same moment; exactly one got it.
        tries = sorted(st for m, path, st in proxy.log if m == "PUT" and path.endswith("/1.json"))
        assert tries == [200, 412], proxy.log

    by_version = {pointer_of(c / "data" / "ds.datavc").version: c for c in clones}
    assert sorted(by_version) == [1, 2]
    snapshots = {pointer_of(c / "data" / "ds.datavc").snapshot for c in clones}
    assert len(snapshots) == 2

    log = run(clones[0], "log", "ds").stdout.splitlines()
    assert [line.split()[0] for line in log if line.startswith("v")] == ["v2", "v1"]
    for clone in clones:
        for version, owner in by_version.items():
            run(clone, "checkout", f"ds@v{version}")
            assert tree_state(clone / "data" / "ds") == expected[owner], (clone, version)
