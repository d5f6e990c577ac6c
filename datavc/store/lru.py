"""Bounded, process-wide caches of checked, content-addressed bytes (tree pages, chunks).

An object is checked against its id when first read, so its bytes are the same in every
store and may be reused by every filesystem of the process and every copy of one unpickled
in it (a DataLoader or Dask worker). Only readers that want that use them: fsck and repair
read the store every time (damage that came later must be seen).
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Hashable


class BytesCache:
    """Bytes by id, the least recently used dropped past ``limit`` bytes in all."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.size = 0
        self._items: OrderedDict[Hashable, bytes] = OrderedDict()
        self._lock = threading.Lock()
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self.after_fork)

    def get(self, key: Hashable) -> bytes | None:
        with self._lock:
            data = self._items.get(key)
            if data is not None:
                self._items.move_to_end(key)
            return data

    def put(self, key: Hashable, data: bytes) -> None:
        if len(data) > self.limit:
            return
        with self._lock:
            if key in self._items:
                return
            self._items[key] = data
            self.size += len(data)
            while self.size > self.limit:
                _, dropped = self._items.popitem(last=False)
                self.size -= len(dropped)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.size = 0

    def after_fork(self) -> None:
        """A child keeps the bytes; its lock is new (a thread of the parent may have held
        the old one at the fork)."""
        self._lock = threading.Lock()
