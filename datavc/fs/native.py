"""Interpreter exit while pyarrow's threads still hold datavc objects.

pyarrow reads an fsspec filesystem through ``PyFileSystem(FSSpecHandler(fs))``: its C++
threads hold the handler, the files it opened and the bytes their reads returned, and drop
them on a pool thread a moment after the read has returned to Python, taking the GIL to do
so. If the interpreter has begun to finalize by then, CPython ends that thread inside the
GIL acquisition (``pthread_exit``); the unwinding crosses a C++ destructor that may not
throw, and the process aborts: ``terminate called without an active exception``, exit 134,
after the program's work is done (apache/arrow#34314, #39162, #39862: any fsspec filesystem
does it, fsspec's memory filesystem too). When the thread instead waits for the GIL past
finalization, the process hangs at exit, in arrow's thread-pool shutdown.

So, at exit (an ``atexit`` hook: it runs before finalization, while threads can still take
the GIL), datavc lets those threads finish: it sleeps, which releases the GIL, while native
code still holds a datavc file (a live file that no Python object refers to), at most
:data:`LIMIT`, then :data:`GRACE` more for the handler and the bytes, which pyarrow drops
with the files or just after and which are not datavc's to watch. Only with pyarrow loaded,
and only in a process that opened a datavc file: then exit takes 20 ms longer.

Files do not refer to themselves (``DatavcFile``), so a file pyarrow lets go of is freed at
once, and its weak reference tells. No pin helps: those arrow issues are open and pyarrow
26.0.1 has it. (Python 3.14 hangs, by design, a thread that takes the GIL during
finalization; the hook keeps such threads out of finalization there too.)
"""

from __future__ import annotations

import atexit
import gc
import sys
import threading
import time
import weakref
from typing import Any

GRACE = 0.02
"""Seconds given to pyarrow's threads at exit, after the files they held are released
(they drop the handler and the buffers within a millisecond of the last file)."""

LIMIT = 0.2
"""Most seconds waited for files native code holds: one a live pyarrow object keeps (a
``pq.ParquetFile`` the program still refers to) is released during finalization by the main
thread, which is safe, and is not waited for past this."""

MAX_WATCHED = 64
"""Live files examined at exit (finding their referrers walks the heap once, and costs
more with each file); past this many, only :data:`GRACE` is given."""

# id -> weak reference. Not a WeakSet: that hashes and compares its items, and fsspec's
# files hash and compare their info(), which here lists the whole snapshot.
_files: dict[int, weakref.ref[Any]] = {}
_lock = threading.Lock()
_registered = False


def watch(file: Any) -> None:
    """Track a file opened from a snapshot; the first one registers the exit hook."""
    global _registered
    key = id(file)

    def forget(ref: weakref.ref[Any]) -> None:
        # called as the file is freed, before its id can be another object's
        if _files.get(key) is ref:
            del _files[key]

    _files[key] = weakref.ref(file, forget)
    if not _registered:
        with _lock:
            if not _registered:
                atexit.register(settle)
                _registered = True


def live() -> list[Any]:
    """The files opened from a snapshot that are still alive."""
    return [f for f in (ref() for ref in list(_files.values())) if f is not None]


def held_natively(files: list[Any]) -> list[weakref.ref[Any]]:
    """Weak references to those of ``files`` that no Python object refers to: alive, so
    native code (a pyarrow reader) holds them. A running function's local variable is not
    an object that refers (at exit, no function of the program is running: what the
    program still holds is in its modules' globals, which are)."""
    ids = {id(f) for f in files}
    referred: set[int] = set()
    for referrer in gc.get_referrers(*files):
        if referrer is files:
            continue
        referred.update(id(x) for x in gc.get_referents(referrer) if id(x) in ids)
    return [weakref.ref(f) for f in files if id(f) not in referred]


def settle() -> None:
    """At exit: let pyarrow's threads drop the datavc objects they hold (module docstring)."""
    if "pyarrow" not in sys.modules:
        return
    deadline = time.monotonic() + LIMIT
    files = live()
    held = held_natively(files) if 0 < len(files) <= MAX_WATCHED else []
    del files
    while any(ref() is not None for ref in held) and time.monotonic() < deadline:
        time.sleep(0.001)
    time.sleep(GRACE)
