"""Remotes: other stores this workspace pushes versions to and pulls them from.

A remote is a ``[remotes.NAME]`` table of ``.datavc/config.toml`` (committed: a URL without
credentials, and ``default = true`` on at most one); ``config.local.toml`` may add its
``storage_options``. ``push`` copies versions of the workspace's store to a remote, ``fetch``
copies versions of a remote into the workspace's store (what the pointer files name, or
the specs), and ``pull`` fetches, then checks out as ``datavc checkout`` does. The copying
is :mod:`datavc.store.sync`'s; here remotes are chosen, specs resolved (on the side that
has the versions) and ``config.toml`` rewritten.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import (
    BadInput,
    DatasetNotFound,
    DatavcError,
    NotARepository,
    NotFoundError,
    UsageError,
)
from ..format.paths import valid_name
from ..format.pointer import SUFFIX
from ..format.spec import parse_spec
from ..store.atomic import write_text_atomic
from .config import CONFIG, DOT, Remote, load_remotes, resolve_store_url

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]

if TYPE_CHECKING:
    from ..format.pointer import Pointer
    from ..format.record import VersionRecord
    from ..store.chunkstore import ChunkStore
    from ..store.files import Progress
    from ..store.sync import SyncReport
    from .checkout import CheckoutResult
    from .core import Workspace

HERE = "this workspace's store"


@dataclass(frozen=True, slots=True)
class Transfer:
    """What a push, fetch or pull did: the remote, the copy, and (pull) the checkout."""

    remote: Remote
    report: SyncReport
    checked_out: tuple[CheckoutResult, ...] = ()
    not_tracked: tuple[str, ...] = ()  # pulled versions of datasets this workspace lacks


# -- the remotes in config.toml ---------------------------------------------------------


def list_remotes(ws: Workspace) -> list[Remote]:
    return sorted(load_remotes(ws.root).values(), key=lambda r: r.name)


def add_remote(ws: Workspace, name: str, url: str, default: bool = False) -> Remote:
    """Name another store; with ``default``, the one push and pull use when none is named."""
    from ..store.backend import url_credentials

    if not valid_name(name):
        raise BadInput(
            f"invalid remote name {name!r}: use letters, digits, '-', '_' and '.', "
            "starting with a letter or digit"
        )
    if not url or not url.isprintable():
        raise BadInput(f"invalid remote URL {url!r}")
    secret = url_credentials(url)
    if secret is not None:
        raise BadInput(
            f"the remote URL holds {secret}, and datavc's config is committed: give the URL "
            "without it, and credentials through the environment (AWS_ACCESS_KEY_ID, "
            "AWS_PROFILE, ...) or [remotes.NAME.storage_options] in .datavc/config.local.toml"
        )
    known = load_remotes(ws.root, local_options=False)
    if name in known:
        raise UsageError(
            f"remote {name!r} exists ({known[name].url}); remove it first "
            f"(datavc remote remove {name})"
        )
    if "://" not in url and not os.path.isabs(url):
        url = os.path.relpath(os.path.abspath(url), ws.root)
    _refuse_own_store(ws, name, url)
    others = [dataclasses.replace(r, default=False) if default else r for r in known.values()]
    added = Remote(name, url, default)
    write_remotes(ws.root, [*others, added])
    return added


def remove_remote(ws: Workspace, name: str) -> Remote:
    known = load_remotes(ws.root, local_options=False)
    if name not in known:
        raise NotFoundError(f"no remote named {name!r}{_known_names(known)}")
    write_remotes(ws.root, [r for r in known.values() if r.name != name])
    return known[name]


def _known_names(known: dict[str, Remote]) -> str:
    return f" (remotes: {', '.join(sorted(known))})" if known else " (no remotes configured)"


_HEADER = re.compile(r"\s*\[")
_REMOTES_HEADER = re.compile(r"""\s*\[\[?\s*(remotes|"remotes"|'remotes')\s*[.\]]""")


def write_remotes(root: str, remotes: list[Remote]) -> None:
    """Rewrite the ``[remotes...]`` tables of ``config.toml``, keeping every other line as
    it is. The result is parsed back: unless it holds exactly the rest of the old file and
    these remotes, nothing is written and the user is asked to edit the file."""
    path = os.path.join(root, DOT, CONFIG)
    with open(path, encoding="utf-8") as f:
        text = f.read()
    before = _parsed(text)
    kept, skipping = [], False
    for line in text.splitlines(keepends=True):
        if _HEADER.match(line):
            skipping = bool(_REMOTES_HEADER.match(line))
        if not skipping:
            kept.append(line)
    head = "".join(kept).rstrip("\n")
    new = (head + "\n" if head else "") + "".join(_render(r) for r in remotes)
    after = _parsed(new)
    want = {r.name: _remote_doc(r) for r in remotes}
    same_rest = before is not None and after is not None and _rest(before) == _rest(after)
    if not same_rest or after is None or after.get("remotes", {}) != want:
        raise UsageError(
            f"{path}: its [remotes] tables cannot be rewritten safely; edit them by hand "
            '([remotes.NAME] with url = "..." and, on one, default = true)'
        )
    write_text_atomic(path, new)


def _parsed(text: str) -> dict[str, Any] | None:
    try:
        doc: dict[str, Any] = tomllib.loads(text)
        return doc
    except tomllib.TOMLDecodeError:
        return None


def _rest(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k != "remotes"}


def _remote_doc(r: Remote) -> dict[str, Any]:
    doc: dict[str, Any] = {"url": r.url}
    if r.default:
        doc["default"] = True
    if r.storage_options:
        doc["storage_options"] = r.storage_options
    return doc


def _render(r: Remote) -> str:
    head = f"[remotes.{json.dumps(r.name)}]"
    text = f"\n{head}\nurl = {json.dumps(r.url)}\n" + ("default = true\n" if r.default else "")
    if r.storage_options:
        text += f"\n[remotes.{json.dumps(r.name)}.storage_options]\n"
        text += "".join(f"{json.dumps(k)} = {_value(v)}\n" for k, v in r.storage_options.items())
    return text


def _value(v: Any) -> str:
    """A TOML value (JSON's forms are TOML's for these; what is not is caught by the
    parse-back check of :func:`write_remotes`)."""
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {_value(x)}" for k, x in v.items()) + " }"
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, (str, bool, int, float)):
        return json.dumps(v)
    return repr(v)


# -- choosing and opening a remote -----------------------------------------------------


def choose_remote(ws: Workspace, args: list[str]) -> tuple[Remote, list[str]]:
    """``[REMOTE] [SPEC...]``: the first argument is the remote if one has that name, else
    every argument is a spec and the remote is the default one."""
    known = load_remotes(ws.root)
    if args and args[0] in known:
        return known[args[0]], args[1:]
    if not known:
        raise NotARepository(
            "no remote configured: name one with 'datavc remote add NAME URL' "
            "(committed in .datavc/config.toml)"
        )
    default = _default(known)
    if default is None:
        raise UsageError(
            f"{len(known)} remotes and none is the default: name one ("
            f"{', '.join(sorted(known))}), or re-add one with --default"
        )
    return default, args


def _default(known: dict[str, Remote]) -> Remote | None:
    if len(known) == 1:
        return next(iter(known.values()))
    return next((r for r in known.values() if r.default), None)


def _label(remote: Remote) -> str:
    return f"remote {remote.name!r} ({remote.url})"


def _refuse_own_store(ws: Workspace, name: str, url: str) -> None:
    mine, theirs = ws.config.store, resolve_store_url(url, ws.root)
    if "://" not in mine and "://" not in theirs:
        same = os.path.realpath(mine) == os.path.realpath(theirs)
    else:
        same = mine.rstrip("/") == theirs.rstrip("/")
    if same:
        raise UsageError(f"remote {name!r} is this workspace's own store ({url})")


def open_remote(ws: Workspace, remote: Remote) -> ChunkStore:
    """The remote's store (no cache: every object is read once)."""
    from .core import open_store

    _refuse_own_store(ws, remote.name, remote.url)
    store = open_store(
        resolve_store_url(remote.url, ws.root), remote.storage_options, None, ws.config.retry
    )
    store.missing_hint = lambda: f" ({_label(remote)}: nothing has been pushed there yet)"
    return store


def missing_store_hint(ws: Workspace) -> str:
    """What to tell the user of a workspace whose store is missing: a clone of a workspace
    on the embedded store has none, since git does not carry it."""
    if "://" in ws.config.store:
        return ""
    try:
        known = load_remotes(ws.root)
    except DatavcError:
        known = {}
    default = _default(known)
    if default is not None:
        return (
            f": git does not carry a local store; run 'datavc pull' to fetch what the "
            f"pointer files name from {_label(default)}"
        )
    if known:
        return (
            ": git does not carry a local store; run 'datavc pull REMOTE' to fetch what the "
            f"pointer files name{_known_names(known)}"
        )
    return (
        ": git does not carry a local store; if another store holds this workspace's data, "
        "name it (datavc remote add NAME URL) and run 'datavc pull', or start an empty "
        "store with 'datavc init --force'"
    )


# -- push, fetch, pull -----------------------------------------------------------------


def push(ws: Workspace, args: list[str]) -> Transfer:
    """Copy versions of the workspace's store to a remote: the SPECs (resolved here), or
    every version the store holds."""
    from ..store.sync import copy_versions

    remote, specs = choose_remote(ws, args)
    dst = open_remote(ws, remote)
    if specs:
        wanted = [_named(ws, remote, ws, text, args) for text in specs]
    else:
        wanted = every_version(ws.store)
    report = copy_versions(
        ws.store, dst, wanted, (HERE, _label(remote)), _progress(ws, f"push to {remote.name}")
    )
    return Transfer(remote, report)


def fetch(ws: Workspace, args: list[str], every: bool = False) -> Transfer:
    """Copy versions of a remote into the workspace's store (created from the remote's
    config if missing): the SPECs (resolved there), ``every`` version, or what the pointer
    files name that the store lacks."""
    return _fetch(ws, args, every)[0]


def _fetch(
    ws: Workspace, args: list[str], every: bool
) -> tuple[Transfer, list[tuple[str, int]] | None]:
    """:func:`fetch`; also the versions the SPECs named (None: no SPEC given)."""
    from ..store.sync import copy_versions
    from .core import Workspace as Workspace_

    remote, specs = choose_remote(ws, args)
    src = open_remote(ws, remote)
    there = Workspace_(ws.root, store=src)
    named = None
    if every:
        if specs:
            raise UsageError("--all copies every version: give no SPEC with it")
        wanted = every_version(src)
    elif specs:
        wanted = named = [_named(ws, remote, there, text, args) for text in specs]
    else:
        wanted = [
            _pointed_there(there, remote, pointer, where)
            for pointer, where in _pointers(ws)
            if not _held(ws, pointer)
        ]
    report = copy_versions(
        src, ws.store, wanted, (_label(remote), HERE), _progress(ws, f"fetch {remote.name}")
    )
    return Transfer(remote, report), named


def pull(ws: Workspace, args: list[str], every: bool = False, force: bool = False) -> Transfer:
    """Fetch, then check out: what every pointer file says, or the fetched SPECs of the
    datasets this workspace tracks (their pointer files then name them)."""
    from .checkout import checkout

    done, named = _fetch(ws, args, every)
    if named is None:
        return dataclasses.replace(done, checked_out=tuple(checkout(ws, [], force)))
    tracked = ws.datasets()
    chosen = [f"{name}@v{n}" for name, n in named if name in tracked]
    others = tuple(f"{name}@v{n}" for name, n in named if name not in tracked)
    results = tuple(checkout(ws, chosen, force)) if chosen else ()
    return dataclasses.replace(done, checked_out=results, not_tracked=others)


def every_version(store: ChunkStore) -> list[tuple[str, int]]:
    """Every (dataset, number) a store lists (forgotten ones are skipped by the copy)."""
    from ..store.versions import dataset_names, version_numbers

    return [
        (name, n)
        for name in dataset_names(store)
        if valid_name(name)
        for n in version_numbers(store, name)
    ]


def _named(
    ws: Workspace, remote: Remote, side: Workspace, text: str, args: list[str]
) -> tuple[str, int]:
    """A spec resolved in ``side``: this workspace, or one over the remote's store (whose
    errors then name the remote)."""
    spec = parse_spec(text)
    try:
        rec = side.resolve(spec)
    except DatasetNotFound:
        if text == args[0] and spec.kind == "none":  # a mistyped remote, most likely
            known = _known_names(load_remotes(ws.root))
            raise NotFoundError(f"no remote or dataset named {text!r}{known}") from None
        if side is ws:
            raise
        raise NotFoundError(f"{_label(remote)} has no dataset {spec.name!r}") from None
    except (NotFoundError, BadInput) as err:
        if side is ws:
            raise
        kind = NotFoundError if isinstance(err, NotFoundError) else BadInput
        raise kind(f"{_label(remote)}: {err}") from None
    return rec.name, rec.version


def _in_remote(remote: Remote, read: Callable[[], VersionRecord]) -> VersionRecord:
    """``read()``, its not-found and bad-input errors naming the remote."""
    try:
        return read()
    except NotFoundError as err:
        raise NotFoundError(f"{_label(remote)}: {err}") from None
    except BadInput as err:
        raise BadInput(f"{_label(remote)}: {err}") from None


def _pointers(ws: Workspace) -> list[tuple[Pointer, str]]:
    return [
        (ds.pointer, ds.path + SUFFIX) for ds in ws.datasets().values() if ds.pointer is not None
    ]


def _held(ws: Workspace, pointer: Pointer) -> bool:
    """Whether the workspace's store has the version a pointer file names."""
    from ..store.versions import read_entry

    try:
        rec = read_entry(ws.store, pointer.name, pointer.version)
    except (NotFoundError, NotARepository):
        return False
    return rec.tree == pointer.snapshot


def _pointed_there(
    there: Workspace, remote: Remote, pointer: Pointer, where: str
) -> tuple[str, int]:
    rec = _in_remote(remote, lambda: there.pointed(pointer, where))
    return rec.name, rec.version


def _progress(ws: Workspace, label: str) -> Callable[[int], Progress]:
    return lambda total: ws.progress(label, total)
