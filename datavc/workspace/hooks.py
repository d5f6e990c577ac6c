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

from ..errors import DatavcError, NotFoundError
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
        return [f"{path}: {err}"]
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
    for st in ws.status():
        pointer = f"{st.path}{SUFFIX}"
        if st.state == "modified":
            out.append(
                f"{st.path}: changed since it was added: run 'datavc add {_quote(st.path)}' "
                f"and 'datavc commit', then git add {_quote(pointer)} (or 'datavc checkout "
                f"{st.name}' to drop the changes)"
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
