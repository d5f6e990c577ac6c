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
  store that lies would.

``unreachable`` and ``inner`` count every operation; ``lost`` and ``truncate`` count only
writes, so index N always names a write.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from datavc.errors import StoreUnreachable
from datavc.store.backend import Backend, ObjectInfo

WRITES = ("write", "replace", "put_path", "create_exclusive", "delete")
KINDS = ("unreachable", "inner", "lost", "truncate")


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

    def _lost(self, name: str, key: str) -> StoreUnreachable:
        return StoreUnreachable(self.shown_url, f"injected: answer to {name} {key} lost")

    # -- reads ----------------------------------------------------------------------

    def read(self, key: str) -> bytes:
        self._hit("read", key)
        return super().read(key)

    def read_range(self, key: str, start: int, end: int) -> bytes:
        self._hit("read_range", key)
        return super().read_range(key, start, end)

    def exists(self, key: str) -> bool:
        self._hit("exists", key)
        return super().exists(key)

    def list_detail(self, prefix: str) -> list[ObjectInfo]:
        self._hit("list_detail", prefix)
        return super().list_detail(prefix)

    def list(self, prefix: str) -> list[str]:
        self._hit("list", prefix)
        return super().list(prefix)

    def size(self, key: str) -> int:
        self._hit("size", key)
        return super().size(key)

    # -- writes ---------------------------------------------------------------------

    def write(self, key: str, data: bytes | Sequence[bytes]) -> None:
        fault = self._hit("write", key)
        whole = data if isinstance(data, bytes) else b"".join(data)
        super().write(key, whole[: len(whole) // 2] if fault == "truncate" else data)
        if fault == "lost":
            raise self._lost("write", key)

    def replace(self, key: str, data: bytes) -> None:
        fault = self._hit("replace", key)
        super().replace(key, data[: len(data) // 2] if fault == "truncate" else data)
        if fault == "lost":
            raise self._lost("replace", key)

    def put_path(self, key: str, src: str, move: bool) -> None:
        fault = self._hit("put_path", key)
        if fault == "truncate":
            os.truncate(src, os.path.getsize(src) // 2)
        super().put_path(key, src, move)
        if fault == "lost":
            raise self._lost("put_path", key)

    def create_exclusive(self, key: str, data: bytes) -> bool:
        fault = self._hit("create_exclusive", key)
        created = super().create_exclusive(
            key, data[: len(data) // 2] if fault == "truncate" else data
        )
        if fault == "lost":
            raise self._lost("create_exclusive", key)
        return created

    def delete(self, key: str) -> None:
        fault = self._hit("delete", key)
        super().delete(key)
        if fault == "lost":
            raise self._lost("delete", key)


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
