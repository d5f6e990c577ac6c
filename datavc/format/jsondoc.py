"""Strict JSON for datavc's documents read from a store or a workspace (pure).

Version records, tree roots, ``datavc.json`` and staged state are JSON, and whoever can
write to the store can write them. A document is read completely and checked before any of
it is used:

- at most ``MAX_DOCUMENT`` bytes of UTF-8, whose top level is an object;
- numbers are integers: a fraction, an exponent, ``NaN`` or ``Infinity`` is refused (so
  ``1e999`` is an error, not an infinity that a later ``int()`` turns into a traceback);
- a key appears once per object, and nesting is at most ``MAX_DEPTH`` deep;
- each field is read with its JSON type and range checked (:func:`integer` refuses
  ``true``, ``"1"`` and ``1.0``). Unknown keys are ignored.

A violation raises :class:`Malformed`, which the caller turns into the error that names the
object (exit code 6).
"""

from __future__ import annotations

import json
from typing import Any

MAX_DOCUMENT = 16 << 20
MAX_DEPTH = 8
MAX_INT = (1 << 64) - 1  # every integer of datavc's documents fits 64 unsigned bits


class Malformed(ValueError):
    """A document or one of its fields breaks the rules above; ``str()`` says which."""


def load_document(data: bytes | str) -> dict[str, Any]:
    """Parse one document by the rules above."""
    if len(data) > MAX_DOCUMENT:
        raise Malformed(f"larger than {MAX_DOCUMENT} bytes")
    try:
        doc = json.loads(
            data.decode("utf-8") if isinstance(data, bytes) else data,
            parse_float=_refuse_number,
            parse_constant=_refuse_number,
            object_pairs_hook=_unique_keys,
        )
    except Malformed:
        raise
    except RecursionError:
        raise Malformed("nested too deeply") from None
    except ValueError as err:  # not UTF-8, not JSON, an integer of thousands of digits
        raise Malformed(f"not JSON ({str(err)[:80]})") from None
    if not isinstance(doc, dict):
        raise Malformed("not a JSON object")
    if _depth(doc) > MAX_DEPTH:
        raise Malformed(f"nested more than {MAX_DEPTH} deep")
    return doc


def _refuse_number(text: str) -> Any:
    raise Malformed(f"{text[:20]} is not an integer")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    doc = dict(pairs)
    if len(doc) != len(pairs):
        raise Malformed("a key appears twice in one object")
    return doc


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


def member(doc: Any, key: str) -> Any:
    """``doc[key]``; ``doc`` must be an object that has the key."""
    if not isinstance(doc, dict):
        raise Malformed("not a JSON object")
    if key not in doc:
        raise Malformed(f"{key!r} is missing")
    return doc[key]


def integer(doc: Any, key: str, low: int = 0, high: int = MAX_INT) -> int:
    """A JSON integer field within ``[low, high]`` (``true`` is not an integer)."""
    value = member(doc, key)
    if type(value) is not int:
        raise Malformed(f"{key!r} is not an integer")
    if not low <= value <= high:
        raise Malformed(f"{key!r} is {value}, outside {low}..{high}")
    return value


def optional_integer(doc: Any, key: str, low: int = 0, high: int = MAX_INT) -> int | None:
    return None if member(doc, key) is None else integer(doc, key, low, high)


def string(doc: Any, key: str) -> str:
    """A JSON string field."""
    value = member(doc, key)
    if not isinstance(value, str):
        raise Malformed(f"{key!r} is not a string")
    return value


def optional_string(doc: Any, key: str) -> str | None:
    return None if doc.get(key) is None else string(doc, key)


def array(doc: Any, key: str) -> list[Any]:
    """A JSON array field."""
    value = member(doc, key)
    if not isinstance(value, list):
        raise Malformed(f"{key!r} is not an array")
    return value
