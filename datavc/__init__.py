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

__all__ = ["DatavcError", "DatavcFileSystem", "open", "track"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in ("open", "DatavcFileSystem"):
        from . import fs

        return getattr(fs, name)
    if name == "track":
        from .lineage.run import track

        return track
    raise AttributeError(f"module 'datavc' has no attribute {name!r}")
