"""The Python interface: ``datavc.open`` and the ``datavc://`` fsspec protocol.

A read-only fsspec filesystem over one snapshot, for pandas, pyarrow, PyTorch, Dask and any
other fsspec client. May import: ``datavc.workspace`` and the layers below; never
``datavc.cli``.
"""

from .filesystem import DatavcFileSystem, open

__all__ = ["DatavcFileSystem", "open"]
