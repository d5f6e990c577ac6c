"""Where a ``datavc`` filesystem's store is, and how its paths read: ``[datavc://]NAME@SPEC/
path`` split and normalised; fsspec's instance cache keyed on where the store was found."""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import unquote

from fsspec.spec import _Cached

from ..errors import NotARepository, PathNotFound
from ..store.retry import RetryPolicy
from ..workspace.config import DOT, find_root, load_config, resolve_store_url, retry_from_env

PROTOCOL = "datavc"
URL = f"{PROTOCOL}://"
# what decides which store an instance over the whole store opens, besides its arguments
FOUND_FROM = ("DATAVC_STORE", "DATAVC_TIMEOUT", "DATAVC_RETRIES", "DATAVC_PINS")


def locate_store(
    store: str | None, storage_options: dict[str, Any] | None
) -> tuple[str, dict[str, Any], str | None, RetryPolicy]:
    """Store URL, options, cache folder and retry policy: argument, then DATAVC_STORE (with
    the environment's DATAVC_TIMEOUT and DATAVC_RETRIES), then the workspace's config."""
    root = find_root(os.getcwd())
    options = dict(storage_options or {})
    if store:
        return resolve_store_url(store, os.getcwd()), options, None, retry_from_env()
    if os.environ.get("DATAVC_STORE"):
        url = resolve_store_url(os.environ["DATAVC_STORE"], os.getcwd())
        return url, options, None, retry_from_env()
    if root is None:
        raise NotARepository(
            "no store: pass store=URL, set DATAVC_STORE, or run inside a datavc workspace"
        )
    cfg = load_config(root)
    cache = os.path.join(root, DOT, "cache")
    return cfg.store, {**cfg.storage_options, **options}, cache, cfg.retry


def normalise(text: str) -> str:
    """A path inside a snapshot, normalised as LocalFileSystem does: ``./a``, ``a//b`` and
    ``a/../b`` name ``a`` and ``b``; a ``..`` above the root names nothing."""
    parts: list[str] = []
    for part in text.split("/"):
        if part == "..":
            if not parts:
                raise PathNotFound(f"{text} (above the snapshot's root)")
            parts.pop()
        elif part not in ("", "."):
            parts.append(part)
    return "/".join(parts)


def split(path: Any) -> tuple[str, str]:
    """``[datavc://]NAME@SPEC/path`` as (``NAME@SPEC``, the normalised path). A ``/`` in the
    spec (``git:origin/main``) is written ``%2F``."""
    text = str(path)
    if text.startswith(URL):
        text = text[len(URL) :]
    head, _, rest = text.lstrip("/").partition("/")
    return unquote(head), normalise(rest)


def head(path: Any) -> str:
    """The dataset part of a path over the whole store, as the caller wrote it."""
    text = str(path)
    if text.startswith(URL):
        text = text[len(URL) :]
    return text.lstrip("/").partition("/")[0]


def join(spec: str, rel: str) -> str:
    return f"{spec}/{rel}" if rel else spec


class Keyed(_Cached):  # type: ignore[misc]
    """fsspec caches instances by their arguments. One over the whole store is also keyed on
    where its store is found (the cwd's workspace and the DATAVC_* variables); one rooted at
    a snapshot is never shared (its spec, ``latest`` say, is resolved when it is made)."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        if args or kwargs.get("spec") is not None or kwargs.get("record") is not None:
            kwargs["skip_instance_cache"] = True
        else:
            where = find_root(os.getcwd())
            kwargs["found_from"] = (where, *(os.environ.get(v) for v in FOUND_FROM))
        return super().__call__(*args, **kwargs)
