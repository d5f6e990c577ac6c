"""datavc: version ML datasets next to Git code.

``datavc.open("images@v3")`` returns a read-only fsspec filesystem over that snapshot.
The filesystem (and fsspec with it) is imported on first use, so the CLI starts fast.

The package is cut into layers; imports point down only (``make lint`` checks it):

- ``cli``, ``fs``: the interfaces (the command line; ``datavc.open`` and ``datavc://``);
  they never import each other;
- ``lineage``: runs (``datavc.track``, ``datavc run``), lineage, audit, reproduce;
- ``workspace``: a Git repo's datasets: add, commit, checkout, status, pointer files;
- ``store``: everything that talks to a store or to the files of a snapshot;
- ``format``: the byte formats, pure (bytes in, values out);
- ``errors``: the one error tree, under everything.
"""

from typing import TYPE_CHECKING, Any

from .errors import DatavcError

if TYPE_CHECKING:
    from .fs import DatavcFileSystem, open
    from .lineage.run import track

__all__ = ["DatavcError", "DatavcFileSystem", "add", "materialize", "open", "track"]
__version__ = "0.1.0"


def add(path: str, name: str | None = None, *, client: Any = None) -> Any:
    """``datavc add PATH`` in the workspace of the current folder: the dataset staged for
    the next commit (an ``AddResult``). With a Dask ``client`` (``distributed.Client``),
    the changed files are chunked, packed and stored by the cluster's workers, a shard
    each, and the snapshot is the one a local add makes (``datavc.workspace.cluster``)."""
    from .workspace.core import Workspace

    return Workspace.find(".").add(path, name, client)


def materialize(
    spec: str,
    dest: str,
    *,
    shard: tuple[int, int] | None = None,
    store: str | None = None,
    storage_options: dict[str, Any] | None = None,
) -> int:
    """Write snapshot ``spec`` (``NAME@vN``, as :func:`open` takes it) into ``dest``;
    return the files written. ``shard=(i, n)``: only every n-th file from the i-th (in
    path order), nothing removed, so that n workers write one snapshot together."""
    from . import fs
    from .fs.filesystem import check_shard

    if shard is not None:
        check_shard(shard)  # before the store is opened: a bad argument is said first
    return int(fs.open(spec, store=store, storage_options=storage_options).materialize(dest, shard))


def __getattr__(name: str) -> Any:
    if name in ("open", "DatavcFileSystem"):
        from . import fs

        return getattr(fs, name)
    if name == "track":
        from .lineage.run import track

        return track
    raise AttributeError(f"module 'datavc' has no attribute {name!r}")
