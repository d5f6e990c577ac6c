"""A backend that fails on purpose: the Nth store operation of a run fails, loses its
answer after doing its work, or stores a truncated object while reporting success.

:class:`FaultyBackend` is the real :class:`~datavc.store.backend.Backend` (local folder or
memory), with every public operation counted. One :class:`Fault` can be armed at a time:

- ``unreachable``: the operation raises ``StoreUnreachable`` before doing anything, as a
  network error does once the backend has translated it;
- ``inner``: the Nth call into the filesystem object under the backend (fsspec's memory
  filesystem, or the local file calls) raises ``ConnectionResetError``, so the backend's own
  error translation is what turns it into a datavc error;
- ``lost``: a write (write, replace, put_path, create_exclusive, delete) is done, then
  raises ``StoreUnreachable``: the request succeeded but its answer never arrived;
- ``truncate``: a write stores only the first half of its bytes and reports success, as a
  store that lies would;
- ``crash``: the operation is done, then :class:`Crash` (not an ``Exception``) is raised,
  as if the process died right after it: nothing else reaches the store.

``unreachable``, ``inner`` and ``crash`` count every operation; ``lost`` and ``truncate``
count only writes, so index N always names a write.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from datavc.errors import StoreUnreachable
from datavc.store.backend import Backend, Created, ObjectInfo

T = TypeVar("T")
WRITES = ("write", "replace", "put_path", "create_exclusive", "delete")
KINDS = ("unreachable", "inner", "lost", "truncate", "crash")


class Crash(BaseException):
    """The process "dies": raised after an operation, caught only by the test."""


@dataclass(frozen=True, slots=True)
class Fault:
    kind: str  # one of KINDS
    index: int  # the operation (or fs call, for "inner") it hits, counted from 0


@dataclass(slots=True)
class Calls:
    """What a run did: each operation as ``(name, key)``, and each call into the
    filesystem object under the backend."""

    ops: list[tuple[str, str]] = field(default_factory=list)
    fs_calls: list[str] = field(default_factory=list)
    fired: list[tuple[Fault, str, str]] = field(default_factory=list)  # fault, op, key


class FaultyBackend(Backend):
    """A real backend whose operations are counted and one of which may fail (see the
    module docstring). Thread-safe: the pack writer stores packs from a thread of its own."""

    def __init__(self, url: str) -> None:
        self.calls = Calls()
        self.fault: Fault | None = None
        self._count_lock = threading.Lock()
        super().__init__(url)

    def _connect(self) -> None:
        super()._connect()
        self.fs = _CountingFs(self.fs, self._fs_call)

    def arm(self, fault: Fault | None) -> None:
        """Set the fault of the next run, and start counting from 0."""
        with self._count_lock:
            self.fault = fault
            self.calls = Calls()

    # -- counting -------------------------------------------------------------------

    def _hit(self, name: str, key: str) -> str | None:
        """Count an operation; the fault's kind if it hits this one (``unreachable``
        raises here)."""
        with self._count_lock:
            writes = sum(1 for op, _ in self.calls.ops if op in WRITES)
            index = writes if name in WRITES else len(self.calls.ops)
            self.calls.ops.append((name, key))
            f = self.fault
            if f is None or f.kind == "inner":
                return None
            if f.kind in ("lost", "truncate"):
                if name not in WRITES or index != f.index:
                    return None
            elif len(self.calls.ops) - 1 != f.index:
                return None
            self.calls.fired.append((f, name, key))
        if f.kind == "unreachable":
            raise StoreUnreachable(self.shown_url, f"injected fault before {name} {key}")
        return f.kind

    def _fs_call(self, name: str) -> None:
        with self._count_lock:
            index = len(self.calls.fs_calls)
            self.calls.fs_calls.append(name)
            f = self.fault
            if f is None or f.kind != "inner" or f.index != index:
                return
            self.calls.fired.append((f, "fs." + name, ""))
        raise ConnectionResetError(104, f"injected fault in fs.{name}")

    def _do(self, name: str, key: str, action: Callable[[str | None], T]) -> T:
        """Count the operation and do it (``action`` gets the fault's kind if it hits),
        then lose its answer or crash if that is the fault."""
        fault = self._hit(name, key)
        result = action(fault)
        if fault == "lost":
            raise StoreUnreachable(self.shown_url, f"injected: answer to {name} {key} lost")
        if fault == "crash":
            raise Crash(f"injected: the process died after {name} {key}")
        return result

    # -- reads ----------------------------------------------------------------------

    def read(self, key: str) -> bytes:
        return self._do("read", key, lambda f: Backend.read(self, key))

    def read_range(self, key: str, start: int, end: int) -> bytes:
        return self._do("read_range", key, lambda f: Backend.read_range(self, key, start, end))

    def exists(self, key: str) -> bool:
        return self._do("exists", key, lambda f: Backend.exists(self, key))

    def list_detail(self, prefix: str) -> list[ObjectInfo]:
        return self._do("list_detail", prefix, lambda f: Backend.list_detail(self, prefix))

    def list(self, prefix: str) -> list[str]:
        return self._do("list", prefix, lambda f: Backend.list(self, prefix))

    def size(self, key: str) -> int:
        return self._do("size", key, lambda f: Backend.size(self, key))

    # -- writes (``truncate`` stores the first half) ------------------------------------

    def write(self, key: str, data: bytes | Sequence[bytes]) -> bool:
        def action(fault: str | None) -> bool:
            whole = data if isinstance(data, bytes) else b"".join(data)
            half = whole[: len(whole) // 2]
            return Backend.write(self, key, half if fault == "truncate" else data)

        return self._do("write", key, action)

    def replace(self, key: str, data: bytes) -> bool:
        def action(fault: str | None) -> bool:
            half = data[: len(data) // 2]
            return Backend.replace(self, key, half if fault == "truncate" else data)

        return self._do("replace", key, action)

    def put_path(self, key: str, src: str, move: bool) -> bool:
        def action(fault: str | None) -> bool:
            if fault == "truncate":
                os.truncate(src, os.path.getsize(src) // 2)
            return Backend.put_path(self, key, src, move)

        return self._do("put_path", key, action)

    def create(self, key: str, data: bytes) -> Created:
        """Also what ``create_exclusive`` calls: counted once, as ``create_exclusive``."""

        def action(fault: str | None) -> Created:
            half = data[: len(data) // 2]
            return Backend.create(self, key, half if fault == "truncate" else data)

        return self._do("create_exclusive", key, action)

    def delete(self, key: str) -> None:
        self._do("delete", key, lambda f: Backend.delete(self, key))


class _CountingFs:
    """The filesystem object under a backend, each method call reported to ``hook`` first
    (which may raise, as the network under fsspec would)."""

    def __init__(self, inner: Any, hook: Callable[[str], None]) -> None:
        self._inner = inner
        self._hook = hook

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if not callable(attr) or name.startswith("_"):
            return attr
        hook = self._hook

        def call(*args: Any, **kwargs: Any) -> Any:
            hook(name)
            return attr(*args, **kwargs)

        return call
