"""datavc: version ML datasets next to Git code.

``datavc.open("images@v3")`` returns a read-only fsspec filesystem over that snapshot.
"""

from .api import DatavcFileSystem, open
from .errors import DatavcError

__all__ = ["DatavcError", "DatavcFileSystem", "open"]
__version__ = "0.1.0"
