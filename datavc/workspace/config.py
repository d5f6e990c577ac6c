"""Workspace configuration: ``.datavc/config.toml`` (committed) and ``config.local.toml``.

::

    [core]
    store = ".datavc/store"        # any fsspec URL; a relative path is relative to the repo root
    timeout = 2.5                  # seconds a remote request may wait (connect, read); optional
    retries = 5                    # how often a request that failed in passing is tried again

    [storage_options]              # passed to fsspec (no secrets here: use env or profiles)
    endpoint_url = "http://127.0.0.1:9000"

``config.local.toml`` (ignored by git) has the same shape and wins over ``config.toml``.
``DATAVC_STORE``, ``DATAVC_TIMEOUT`` and ``DATAVC_RETRIES`` in the environment win over both.
The files come with ``git pull``: every value is checked for its type and range.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from typing import Any

from ..errors import BadInput, NotARepository
from ..store.retry import (
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT,
    RETRIES_RANGE,
    TIMEOUT_RANGE,
    RetryPolicy,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]

DOT = ".datavc"
CONFIG = "config.toml"
LOCAL_CONFIG = "config.local.toml"
DEFAULT_STORE = ".datavc/store"
IGNORED = ("store/", "cache/", "state/", LOCAL_CONFIG)


@dataclass(frozen=True, slots=True)
class Config:
    store: str
    storage_options: dict[str, Any] = field(default_factory=dict)
    retry: RetryPolicy = field(default_factory=RetryPolicy)


def find_root(start: str) -> str | None:
    """The nearest folder at or above ``start`` that holds ``.datavc/config.toml``."""
    current = os.path.abspath(start)
    while True:
        if os.path.isfile(os.path.join(current, DOT, CONFIG)):
            return current
        parent = os.path.dirname(current)
        if parent == current:
            return None
        current = parent


def _read_toml(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            doc: dict[str, Any] = tomllib.load(f)
            return doc
    except FileNotFoundError:
        return {}
    except tomllib.TOMLDecodeError as err:
        raise BadInput(f"{path}: invalid TOML ({err})") from None


def load_config(root: str) -> Config:
    shared = _read_toml(os.path.join(root, DOT, CONFIG))
    local = _read_toml(os.path.join(root, DOT, LOCAL_CONFIG))
    options: dict[str, Any] = {}
    for doc, name in ((shared, CONFIG), (local, LOCAL_CONFIG)):
        table, core = doc.get("storage_options", {}), doc.get("core", {})
        if not isinstance(table, dict) or not isinstance(core, dict):
            where = os.path.join(root, DOT, name)
            raise BadInput(f"{where}: [core] and [storage_options] must be tables")
        options.update(table)
    store = (
        os.environ.get("DATAVC_STORE")
        or local.get("core", {}).get("store")
        or shared.get("core", {}).get("store")
    )
    if not store or not isinstance(store, str):
        raise NotARepository(f"no store configured in {os.path.join(root, DOT, CONFIG)}")
    retry = _retry_policy(root, shared.get("core", {}), local.get("core", {}))
    return Config(resolve_store_url(store, root), options, retry)


def _retry_policy(root: str, shared: dict[str, Any], local: dict[str, Any]) -> RetryPolicy:
    """``timeout`` and ``retries``: config.local.toml's, else config.toml's, else the
    defaults; then the environment's."""
    timeout, retries = DEFAULT_TIMEOUT, DEFAULT_RETRIES
    for core, name in ((shared, CONFIG), (local, LOCAL_CONFIG)):
        where = f"{os.path.join(root, DOT, name)}: [core]"
        if "timeout" in core:
            timeout = _seconds(core["timeout"], f"{where} timeout")
        if "retries" in core:
            retries = _count(core["retries"], f"{where} retries")
    return retry_from_env(RetryPolicy(timeout, retries))


def retry_from_env(policy: RetryPolicy | None = None) -> RetryPolicy:
    """``policy`` (else the defaults) with ``DATAVC_TIMEOUT`` and ``DATAVC_RETRIES`` applied."""
    policy = policy or RetryPolicy()
    timeout = _env("DATAVC_TIMEOUT", float)
    retries = _env("DATAVC_RETRIES", int)
    return RetryPolicy(
        policy.timeout if timeout is None else _seconds(timeout, "DATAVC_TIMEOUT"),
        policy.retries if retries is None else _count(retries, "DATAVC_RETRIES"),
    )


def _env(name: str, parse: type[float] | type[int]) -> object:
    """The environment variable ``name`` parsed, its text if it does not parse (for the
    check to refuse), or None if it is unset or empty."""
    text = os.environ.get(name, "").strip()
    if not text:
        return None
    try:
        return parse(text)
    except ValueError:
        return text


def _seconds(value: object, where: str) -> float:
    """A timeout: a number (TOML integer or float; not a bool) in ``TIMEOUT_RANGE``."""
    low, high = TIMEOUT_RANGE
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise BadInput(f"{where} must be a number of seconds from {low:g} to {high:g}: {value!r}")
    return float(value)


def _count(value: object, where: str) -> int:
    """A number of retries: an integer (not a bool) in ``RETRIES_RANGE``."""
    low, high = RETRIES_RANGE
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise BadInput(f"{where} must be an integer from {low} to {high}: {value!r}")
    return value


def resolve_store_url(url: str, base: str) -> str:
    """A local path relative to ``base`` becomes absolute; URLs stay as they are."""
    if "://" in url:
        return url
    return os.path.normpath(os.path.join(base, url))


def write_config(root: str, store: str) -> None:
    """Write ``.datavc/config.toml`` and ``.datavc/.gitignore``."""
    dot = os.path.join(root, DOT)
    os.makedirs(dot, exist_ok=True)
    with open(os.path.join(dot, CONFIG), "w", encoding="utf-8") as f:
        f.write("# datavc workspace configuration (committed: never put secrets here)\n")
        f.write(f"[core]\nstore = {json.dumps(store)}\n")
    with open(os.path.join(dot, ".gitignore"), "w", encoding="utf-8") as f:
        f.write("".join(f"/{name}\n" for name in IGNORED))


def require_root(start: str) -> str:
    root = find_root(start)
    if root is None:
        raise NotARepository(
            f"{os.path.abspath(start)} is not in a datavc workspace (run 'datavc init' first)"
        )
    return root


@dataclass(frozen=True, slots=True)
class Remote:
    """Another store, named in ``[remotes.NAME]`` of ``config.toml``: ``url`` as written (a
    relative path is relative to the workspace root; never credentials), whether it is the
    default, and its storage options (``config.toml``'s, then ``config.local.toml``'s)."""

    name: str
    url: str
    default: bool = False
    storage_options: dict[str, Any] = field(default_factory=dict)


def load_remotes(root: str, local_options: bool = True) -> dict[str, Remote]:
    """The remotes of ``config.toml``, checked: the file comes with ``git pull``, so names,
    types and URLs are untrusted. ``config.local.toml`` adds storage options only (unless
    ``local_options`` is False: for rewriting ``config.toml``, which is committed)."""
    where = os.path.join(root, DOT, CONFIG)
    shared = _table(_read_toml(where), "remotes", where)
    local_where = os.path.join(root, DOT, LOCAL_CONFIG)
    local = _table(_read_toml(local_where), "remotes", local_where) if local_options else {}
    remotes = {}
    for name, doc in shared.items():
        remote = _remote(name, doc, where)
        extra = _table(_table(local, name, local_where), "storage_options", local_where)
        remotes[name] = Remote(
            name, remote.url, remote.default, {**remote.storage_options, **extra}
        )
    if sum(r.default for r in remotes.values()) > 1:
        raise BadInput(f"{where}: more than one remote says default = true")
    return remotes


def _table(doc: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = doc.get(key, {})
    if not isinstance(value, dict):
        raise BadInput(f"{where}: {key} must be a table")
    return value


def _remote(name: str, doc: Any, where: str) -> Remote:
    from ..format.paths import valid_name
    from ..store.backend import url_credentials

    if not valid_name(name):
        raise BadInput(f"{where}: invalid remote name {name!r} (a name is letters, digits, -_.)")
    if not isinstance(doc, dict):
        raise BadInput(f"{where}: remotes.{name} must be a table")
    url, default = doc.get("url"), doc.get("default", False)
    if not isinstance(url, str) or not url or not url.isprintable() or len(url) > 4096:
        raise BadInput(f"{where}: remotes.{name}.url must be a store URL or path")
    if url_credentials(url) is not None:
        raise BadInput(f"{where}: remotes.{name}.url holds {url_credentials(url)}")
    if not isinstance(default, bool):
        raise BadInput(f"{where}: remotes.{name}.default must be true or false")
    return Remote(name, url, default, _table(doc, "storage_options", where))
