"""Which snapshots a run opened through ``datavc.open`` or a ``datavc://`` URL.

In the process of ``datavc.track``, the filesystem tells the innermost active run
directly. A command started by ``datavc run`` is another process (and may start more, such
as DataLoader workers): there, ``DATAVC_RUN_LOG`` names a file that each snapshot opened is
appended to, one JSON line each, which ``datavc run`` reads when the command ends. The log
is read as untrusted input: every line parsed and checked, at most ``MAX_LOG`` bytes.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..format.hashing import ObjectId, is_object_id
from ..format.jsondoc import Malformed, integer, load_document, optional_string, string
from ..format.paths import valid_name

if TYPE_CHECKING:  # run records: only for a run's log (a reader's import stays light)
    from ..format.run import RunInput

LOG_VARIABLE = "DATAVC_RUN_LOG"
MAX_LOG = 16 << 20
MAX_LINE = 8 << 10

Listener = Callable[[str, str, int, ObjectId], None]  # (store URL, name, version, tree)

_lock = threading.Lock()
_listeners: list[Listener] = []


def listen(listener: Listener) -> None:
    with _lock:
        _listeners.append(listener)


def stop_listening(listener: Listener) -> None:
    with _lock, contextlib.suppress(ValueError):
        _listeners.remove(listener)


def context() -> object | None:
    """Who ``note_open`` would tell now: the innermost listener, the run log's path, or
    None (no run: nothing to note). A filesystem notes each snapshot once per context."""
    with _lock:
        if _listeners:
            return _listeners[-1]
    return os.environ.get(LOG_VARIABLE) or None


def note_open(store_url: str, name: str, version: int, tree: ObjectId) -> None:
    """A snapshot was resolved by ``datavc.open`` (or a ``datavc://`` URL): tell the active
    run of this process, else append it to the log of the run this process belongs to."""
    with _lock:
        listener = _listeners[-1] if _listeners else None
    if listener is not None:
        listener(store_url, name, version, tree)
        return
    log = os.environ.get(LOG_VARIABLE)
    if not log:
        return
    line = json.dumps({"store": store_url, "name": name, "version": version, "tree": tree})
    data = (line + "\n").encode("utf-8")
    if len(data) > MAX_LINE:
        return  # a store URL this long is no store datavc opened
    try:
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    except OSError:
        return  # the run is gone: nothing to tell
    try:
        os.write(fd, data)  # one write of one line: appends from many processes do not mix
    finally:
        os.close(fd)


def read_log(path: str) -> list[tuple[str, RunInput]]:
    """The snapshots a log names, each once, with the store URL each came from. A line
    that breaks the format is skipped (a process killed mid-write leaves at most one)."""
    from ..format.run import MAX_INPUTS, RunInput

    try:
        with open(path, "rb") as f:
            data = f.read(MAX_LOG + 1)
    except FileNotFoundError:
        return []
    seen: dict[tuple[str, str, int, str], None] = {}
    for raw in data[:MAX_LOG].split(b"\n"):
        if not raw or len(raw) > MAX_LINE:
            continue
        try:
            doc = load_document(raw)
            key = (
                optional_string(doc, "store") or "",
                string(doc, "name"),
                integer(doc, "version", 1),
                string(doc, "tree"),
            )
        except Malformed:
            continue
        if valid_name(key[1]) and is_object_id(key[3]):
            seen.setdefault(key)
        if len(seen) >= MAX_INPUTS:
            break
    return [(store, RunInput(name, version, ObjectId(tree))) for store, name, version, tree in seen]


# -- pins: what a reproduction opens ----------------------------------------------------

PINS_VARIABLE = "DATAVC_PINS"
MAX_PINS = 10_000


def pins_text(store_url: str, pins: dict[str, tuple[int, str]]) -> str:
    """``DATAVC_PINS``'s value: the store, and each dataset name the run opened exactly
    one version of in it, with that version and its snapshot id."""
    doc = {n: {"version": v, "tree": t} for n, (v, t) in sorted(pins.items())}
    return json.dumps({"store": store_url, "pins": doc})


def pinned(store_url: str, name: str) -> tuple[int, ObjectId] | None:
    """The version ``datavc.open`` gives a spec of ``name`` in the store ``store_url``
    that names no number (latest, a tag, a bare name) during ``datavc reproduce``: the one
    the recorded run opened. None outside a reproduction, for another store, or for a
    name it did not pin. A malformed value pins nothing."""
    text = os.environ.get(PINS_VARIABLE)
    if not text or len(text) > MAX_LOG:
        return None
    try:
        doc = load_document(text)
        pins = doc.get("pins")
        same = string(doc, "store").rstrip("/") == store_url.rstrip("/")
        if not same or not isinstance(pins, dict) or name not in pins or len(pins) > MAX_PINS:
            return None
        version, tree = integer(pins[name], "version", 1), string(pins[name], "tree")
    except Malformed:
        return None
    return (version, ObjectId(tree)) if is_object_id(tree) else None
