"""datavc: version ML datasets next to Git code.

``datavc.open("images@v3")`` returns a read-only fsspec filesystem over that snapshot.
The API module (and fsspec with it) is imported on first use, so the CLI starts fast.
"""

from typing import TYPE_CHECKING, Any

from .errors import DatavcError

if TYPE_CHECKING:
    from .api import DatavcFileSystem, open

__all__ = ["DatavcError", "DatavcFileSystem", "open"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in ("open", "DatavcFileSystem"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'datavc' has no attribute {name!r}")
