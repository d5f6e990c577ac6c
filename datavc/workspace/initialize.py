"""``datavc init``: make a folder a workspace, and create (or join) its store."""

from __future__ import annotations

import os

from ..errors import BadInput, DatavcError, UsageError
from ..format.chunker import ChunkerParams
from ..format.storeconfig import DEFAULT_PACK_TARGET, StoreConfig
from ..store.backend import Backend, url_credentials
from ..store.chunkstore import ChunkStore
from .config import (
    DEFAULT_STORE,
    Remote,
    find_root,
    load_config,
    load_remotes,
    retry_from_env,
    write_config,
)


def init_workspace(
    root: str,
    store: str | None,
    force: bool = False,
    pack_target: int = DEFAULT_PACK_TARGET,
) -> tuple[str, ChunkStore]:
    """Write the config and create (or join) the store; return the store's URL.

    Refuses to re-point an existing workspace unless ``force``."""
    root = os.path.abspath(root)
    if find_root(root) == root and not force:
        raise UsageError(
            f"{root} is already a datavc workspace (store: {load_config(root).store}); "
            "use --force to point it at another store"
        )
    url = store or DEFAULT_STORE
    secret = url_credentials(url)
    if secret is not None:
        raise BadInput(
            f"the store URL holds {secret}, and datavc's config is committed: give the URL "
            "without it, and credentials through the environment (AWS_ACCESS_KEY_ID, "
            "AWS_PROFILE, ...) or [storage_options] in .datavc/config.local.toml (not committed)"
        )
    if "://" not in url and os.path.isabs(url) is False and store is not None:
        url = os.path.relpath(os.path.abspath(url), root)
    resolved = url if "://" in url else os.path.normpath(os.path.join(root, url))
    backend = Backend(resolved, retry=retry_from_env())
    chunks = ChunkStore.create(backend, StoreConfig(ChunkerParams(), pack_target))
    remotes = _remotes_kept(root)
    write_config(root, url)
    if remotes:
        from .remotes import write_remotes

        write_remotes(root, remotes)
    return resolved, chunks


def _remotes_kept(root: str) -> list[Remote]:
    """The remotes of a workspace re-pointed with ``--force``: kept (a damaged
    ``config.toml`` is rewritten without them)."""
    try:
        return list(load_remotes(root, local_options=False).values())
    except DatavcError:
        return []
