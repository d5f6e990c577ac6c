"""Bounded, process-wide caches of checked, content-addressed objects (tree pages, chunks,
decoded pages).

An object is checked against its id when first read, so it is the same in every store and
may be reused by every filesystem of the process and every copy of one unpickled in it (a
DataLoader or Dask worker). Only readers that want that use them: fsck and repair read the
store every time (damage that came later must be seen).
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

V = TypeVar("V")


class Cache(Generic[V]):
    """Values by id, the least recently used dropped past ``limit`` in all, each value
    weighing ``weigh(value)``."""

    def __init__(self, limit: int, weigh: Callable[[V], int]) -> None:
        self.limit = limit
        self.size = 0
        self._weigh = weigh
        self._items: OrderedDict[Hashable, V] = OrderedDict()
        self._lock = threading.Lock()
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self.after_fork)

    def get(self, key: Hashable) -> V | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: Hashable, value: V) -> None:
        weight = self._weigh(value)
        if weight > self.limit:
            return
        with self._lock:
            if key in self._items:
                return
            self._items[key] = value
            self.size += weight
            while self.size > self.limit:
                _, dropped = self._items.popitem(last=False)
                self.size -= self._weigh(dropped)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.size = 0

    def after_fork(self) -> None:
        """A child keeps the values; its lock is new (a thread of the parent may have held
        the old one at the fork)."""
        self._lock = threading.Lock()


class BytesCache(Cache[bytes]):
    """Bytes by id, the least recently used dropped past ``limit`` bytes in all."""

    def __init__(self, limit: int) -> None:
        super().__init__(limit, len)
