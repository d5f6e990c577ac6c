"""Git hooks: what ``datavc hook pre-commit`` checks before git records a commit.

The check looks at what is staged in git's index, not at the working tree's files:

- each staged pointer file parses (a merge-conflict marker is named with its line), names a
  dataset path that is allowed, and names a version the store holds completely: its
  record (with the pointer's snapshot id), its tree pages, and for every chunk a pack whose
  footer lists it (listings, indexes and footers: no data is read);
- no staged file lies inside a tracked dataset (data must not enter git history);
- each dataset's folder equals the snapshot its pointer file names (stat cache first: an
  unchanged folder costs one ``lstat`` per file), and the staged pointer file is the one in
  the working tree;
- a staged datavc config holds no credentials.

Each problem is one line that names the file and the command that fixes it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import TYPE_CHECKING, Any

from ..errors import DatavcError, NotFoundError, UsageError
from ..format.pointer import HEADER, SUFFIX, conflict_line, decode_pointer

if TYPE_CHECKING:
    from .core import Workspace

CONFIG_FILES = (".datavc/config.toml", ".datavc/config.local.toml")
_SECRET_OPTIONS = ("secret", "password", "token", "key", "credential", "sas")


def _git_raw(root: str, *args: str) -> bytes:
    out = subprocess.run(["git", *args], cwd=root, capture_output=True, check=False)
    if out.returncode != 0:
        raise DatavcError(
            f"git {' '.join(args[:2])} failed: {out.stderr.decode(errors='replace')[:200].strip()}"
        )
    return out.stdout


def staged_files(top: str) -> list[str]:
    """Paths (from the git top) added, copied, modified, renamed or retyped in the index."""
    raw = _git_raw(top, "diff", "--cached", "--name-only", "--diff-filter=ACMRT", "-z")
    return [p.decode("utf-8", "surrogateescape") for p in raw.split(b"\0") if p]


def staged_text(top: str, path: str) -> str:
    return _git_raw(top, "show", f":{path}").decode("utf-8", "replace")


def pre_commit(ws: Workspace) -> list[str]:
    """The problems that should stop this git commit (empty: let it through)."""
    top = _git_raw(ws.root, "rev-parse", "--show-toplevel").decode().strip()
    staged = staged_files(top)
    problems: list[str] = []

    def rel(path: str) -> str:
        return os.path.relpath(os.path.join(top, path), ws.root).replace(os.sep, "/")

    pointers: dict[str, str] = {}  # dataset path -> dataset name, of staged pointer files
    for path in staged:
        where = rel(path)
        if where in CONFIG_FILES:
            problems += _config_problems(path, staged_text(top, path))
        elif path.endswith(SUFFIX) and not where.startswith((".datavc/", "../")):
            found = _pointer_problems(ws, top, path, where, pointers)
            problems += found
    datasets = {ds.path: ds.name for ds in ws.datasets().values()} | pointers
    for path in staged:
        where = rel(path)
        for dpath, name in datasets.items():
            if where == dpath or where.startswith(dpath + "/"):
                problems.append(
                    f"{path}: inside dataset {name!r} ({dpath}), whose data must not enter "
                    f"git: git rm --cached -r -- {_quote(dpath)}"
                )
                break
    problems += _workspace_problems(ws, top)
    return problems


def _pointer_problems(
    ws: Workspace, top: str, path: str, where: str, pointers: dict[str, str]
) -> list[str]:
    from ..store.check import version_holes
    from ..store.versions import read_version
    from .core import _check_dataset_path

    text = staged_text(top, path)
    if not text.startswith(HEADER) and conflict_line(text) is None:
        return []  # a *.datavc file that is no pointer file
    try:
        pointer = decode_pointer(text, path)
        _check_dataset_path(where[: -len(SUFFIX)], path)
    except DatavcError as err:
        text = str(err)
        return [text if text.startswith(path) else f"{path}: {text}"]
    pointers[where[: -len(SUFFIX)]] = pointer.name
    problems = []
    try:
        with open(os.path.join(ws.root, where), encoding="utf-8") as f:
            if f.read() != text:
                problems.append(
                    f"{path}: the staged pointer file is not the one in the working tree: "
                    f"git add {_quote(path)}"
                )
    except OSError:
        problems.append(
            f"{path}: staged, but not in the working tree: git rm --cached {_quote(path)}"
        )
    spec = f"{pointer.name}@v{pointer.version}"
    try:
        rec = read_version(ws.store, pointer.name, pointer.version)
    except NotFoundError as err:
        return [
            *problems,
            f"{path}: names {spec}, which the store {ws.store.backend.shown_url} does not "
            f"have ({err}): run 'datavc commit' (or 'datavc push' to the store it names)",
        ]
    if rec.tree != pointer.snapshot:
        return [
            *problems,
            f"{path}: names snapshot {pointer.snapshot[:12]} but {spec} in the store is "
            f"snapshot {rec.tree[:12]}: run 'datavc checkout {spec}' and git add {path}",
        ]
    return problems + [
        f"{path}: {hole}: run 'datavc repair' (or 'datavc push' the data it needs)"
        for hole in version_holes(ws.store, rec)
    ]


def _workspace_problems(ws: Workspace, top: str) -> list[str]:
    """Datasets whose folder is not what their pointer file says, and pointer files whose
    staged text is not the working tree's."""
    out = []
    try:
        rows = ws.status()
    except DatavcError as err:  # a pointer file naming a version that is not there, ...
        return [f"datasets cannot be compared with their pointer files: {err}"]
    for st in rows:
        pointer = f"{st.path}{SUFFIX}"
        if st.state == "modified":
            out.append(
                f"{st.path}: changed since it was added: run 'datavc add {_quote(st.path)}' "
                f"and 'datavc commit', then git add {_quote(pointer)} (or 'datavc checkout "
                f"{st.name}' to drop the changes)"
            )
        elif st.state == "moved":
            out.append(
                f"{st.path}: {st.detail}; to commit the version the folder holds, git add "
                f"{_quote(pointer)} after 'datavc checkout' of it"
            )
        elif st.error is not None:
            out.append(f"{st.path}: cannot be compared with its pointer file: {st.error}")
        elif st.state in ("new", "staged"):
            out.append(
                f"{st.path}: added but not committed: run 'datavc commit', then git add "
                f"{_quote(pointer)}"
            )
    return out


def _config_problems(path: str, text: str) -> list[str]:
    """A staged datavc config with credentials in it (a store or remote URL with a password
    or a signed query, or a secret-looking storage option)."""
    from ..store.backend import url_credentials

    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]

    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        return [f"{path}: invalid TOML ({err}): fix it before committing"]
    urls: list[str] = []
    core = doc.get("core", {})
    if isinstance(core, dict) and isinstance(core.get("store"), str):
        urls.append(core["store"])
    remotes = doc.get("remotes", {})
    if isinstance(remotes, dict):
        urls += [
            r["url"]
            for r in remotes.values()
            if isinstance(r, dict) and isinstance(r.get("url"), str)
        ]
    out = [
        f"{path}: a store URL holds {kind}: remove it (credentials go in the environment "
        "or .datavc/config.local.toml, which git ignores)"
        for url in urls
        if (kind := url_credentials(url)) is not None
    ]
    for table in _option_tables(doc):
        for key in table:
            if any(word in str(key).lower() for word in _SECRET_OPTIONS):
                out.append(
                    f"{path}: storage option {key!r} looks like a credential: move it to "
                    ".datavc/config.local.toml (ignored by git) or the environment"
                )
    return out


def _option_tables(doc: dict[str, Any]) -> list[dict[str, Any]]:
    tables = [doc.get("storage_options")]
    remotes = doc.get("remotes", {})
    if isinstance(remotes, dict):
        tables += [r.get("storage_options") for r in remotes.values() if isinstance(r, dict)]
    return [t for t in tables if isinstance(t, dict)]


def _quote(path: str) -> str:
    import shlex

    return shlex.quote(path)


# -- plain git hooks (datavc install-hooks) --------------------------------------------------

HOOKS = ("pre-commit", "post-checkout", "post-merge", "pre-push")
MARK = "# datavc hook: written by 'datavc install-hooks'"
CHAINED = ".before-datavc"  # a hook that was there first is kept under this suffix, and run


def hooks_dir(ws: Workspace) -> str:
    path = _git_raw(ws.root, "rev-parse", "--git-path", "hooks").decode().strip()
    return os.path.join(ws.root, path) if not os.path.isabs(path) else path


def _script(name: str, datavc: str) -> str:
    """A hook that runs the hook that was there before (if any), then datavc's; pre-push
    reads the refs on stdin, so both get them."""
    run_first = (
        f'if [ -x "$here/{name}{CHAINED}" ]; then\n  "$here/{name}{CHAINED}" "$@" || exit $?\nfi\n'
    )
    if name == "pre-push":
        run_first = (
            "refs=$(cat)\n"
            f'if [ -x "$here/{name}{CHAINED}" ]; then\n'
            f'  printf "%s\\n" "$refs" | "$here/{name}{CHAINED}" "$@" || exit $?\n'
            "fi\n"
        )
        last = f'printf "%s\\n" "$refs" | exec {_sh_quote(datavc)} hook {name} "$@"\n'
    else:
        last = f'exec {_sh_quote(datavc)} hook {name} "$@"\n'
    return f'#!/bin/sh\n{MARK}\nhere=$(dirname "$0")\n{run_first}{last}'


def _sh_quote(text: str) -> str:
    import shlex

    return shlex.quote(text)


def install_hooks(ws: Workspace, uninstall: bool = False) -> list[str]:
    """Write (or remove) datavc's git hooks; return what was done, a line each. A hook
    datavc did not write is kept: moved aside and run first (uninstall puts it back)."""
    folder = hooks_dir(ws)
    os.makedirs(folder, exist_ok=True)
    datavc = _datavc_command()
    done = []
    for name in HOOKS:
        path = os.path.join(folder, name)
        ours = _is_ours(path)
        chained = path + CHAINED
        if uninstall:
            if ours:
                os.unlink(path)
                if os.path.exists(chained):
                    os.replace(chained, path)
                    done.append(f"removed {name} (the hook that was there before is back)")
                else:
                    done.append(f"removed {name}")
            elif os.path.exists(path):
                done.append(f"left {name}: datavc did not write it")
            continue
        if os.path.lexists(path) and not ours:
            if os.path.lexists(chained):
                raise UsageError(
                    f"{path} is not datavc's and {chained} exists too: merge them by hand, "
                    f"then add 'datavc hook {name} \"$@\"' to the hook"
                )
            os.replace(path, chained)
            done.append(f"installed {name} (the hook that was there runs first: {name}{CHAINED})")
        else:
            done.append(f"installed {name}")
        tmp = path + ".tmp-datavc"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(_script(name, datavc))
        os.chmod(tmp, 0o755)
        os.replace(tmp, path)
    return done


def _is_ours(path: str) -> bool:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return MARK in f.read(4096)
    except OSError:
        return False


def _datavc_command() -> str:
    """This datavc's command, as an absolute path (a hook runs without the venv's PATH)."""
    import shutil

    here = os.path.join(os.path.dirname(sys.executable), "datavc")
    if os.access(here, os.X_OK):
        return here
    return shutil.which("datavc") or "datavc"


def rebasing(ws: Workspace) -> bool:
    for part in ("rebase-merge", "rebase-apply"):
        path = _git_raw(ws.root, "rev-parse", "--git-path", part).decode().strip()
        if os.path.exists(os.path.join(ws.root, path) if not os.path.isabs(path) else path):
            return True
    return False


def follow_pointers(ws: Workspace) -> list[str]:
    """After git moved the pointer files (a branch switch, a merge, a pull): materialize
    what they now say, for each dataset whose folder is a committed version or missing;
    leave alone, and report, a dataset with changes that are not committed."""
    out = []
    try:
        rows = ws.status()
    except DatavcError as err:
        return [f"nothing checked out: {err}"]
    for st in rows:
        if st.state in ("moved", "missing"):
            try:
                (result,) = ws.checkout([st.name])
            except DatavcError as err:
                out.append(f"{st.path}: not checked out: {err}")
                continue
            out.append(
                f"{st.path}: now {result.name}@v{result.version} ({result.written} files written)"
            )
        elif st.state in ("modified", "new", "staged", "conflict", "unknown"):
            out.append(f"{st.path}: left as it is ({st.state}): {st.detail}")
    return out


def pre_push(ws: Workspace, refs: str) -> list[str]:
    """Problems with the commits about to be pushed: a pointer file at a pushed commit that
    names data the data remote (the default datavc remote, else the store) does not hold."""
    from ..store.check import version_holes
    from ..store.versions import read_version
    from .config import load_remotes

    remotes = load_remotes(ws.root)
    store, where = ws.store, "the store"
    if remotes:
        from .remotes import _default, open_remote

        remote = _default(remotes)
        if remote is not None:
            store, where = open_remote(ws, remote), f"remote {remote.name!r}"
    problems: list[str] = []
    checked: set[tuple[str, int]] = set()
    zero = "0" * 40
    for line in refs.splitlines():
        parts = line.split()
        if len(parts) != 4 or parts[1].strip("0") == "" or parts[1] == zero:
            continue  # a deleted ref pushes no data
        sha = parts[1]
        names = _git_raw(ws.root, "ls-tree", "-r", "--name-only", "-z", sha).split(b"\0")
        for raw in names:
            path = raw.decode("utf-8", "surrogateescape")
            if not path.endswith(SUFFIX):
                continue
            text = _git_raw(ws.root, "show", f"{sha}:{path}").decode("utf-8", "replace")
            if not text.startswith(HEADER):
                continue
            try:
                pointer = decode_pointer(text, f"{sha[:12]}:{path}")
            except DatavcError as err:
                problems.append(str(err))
                continue
            key = (pointer.name, pointer.version)
            if key in checked:
                continue
            checked.add(key)
            spec = f"{pointer.name}@v{pointer.version}"
            try:
                rec = read_version(store, pointer.name, pointer.version)
            except NotFoundError:
                problems.append(
                    f"{path} (at {sha[:12]}) names {spec}, which {where} does not have: "
                    "run 'datavc push' first"
                )
                continue
            problems += [
                f"{path} (at {sha[:12]}): {hole}: run 'datavc push' first"
                for hole in version_holes(store, rec, limit=5)
            ]
    return problems
