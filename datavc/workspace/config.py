"""Workspace configuration: ``.datavc/config.toml`` (committed) and ``config.local.toml``.

::

    [core]
    store = ".datavc/store"        # any fsspec URL; a relative path is relative to the repo root

    [storage_options]              # passed to fsspec (no secrets here: use env or profiles)
    endpoint_url = "http://127.0.0.1:9000"

``config.local.toml`` (ignored by git) has the same shape and wins over ``config.toml``.
``DATAVC_STORE`` in the environment wins over both for the store URL.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from typing import Any

from ..errors import BadInput, NotARepository

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
    return Config(resolve_store_url(store, root), options)


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
