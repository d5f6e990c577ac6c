"""The store config, ``datavc.json`` at a store's root (pure).

Canonical-enough JSON, written once when the store is created and never changed: the store
format, the hash and compression, the chunker parameters (the same bytes must cut at the
same places forever, or deduplication across versions is lost) and the pack target size::

    {"chunker": {...}, "compression": "zstd", "format": 2, "hash": "blake3",
     "pack_target": 67108864, "type": "datavc-store"}
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from ..errors import CorruptObject
from .chunker import ChunkerParams

STORE_FORMAT = 2
CONFIG_KEY = "datavc.json"
DEFAULT_PACK_TARGET = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class StoreConfig:
    chunker: ChunkerParams
    pack_target: int = DEFAULT_PACK_TARGET

    def encode(self) -> bytes:
        doc = {
            "type": "datavc-store",
            "format": STORE_FORMAT,
            "hash": "blake3",
            "compression": "zstd",
            "chunker": self.chunker.to_json(),
            "pack_target": self.pack_target,
        }
        return json.dumps(doc, sort_keys=True, indent=1).encode() + b"\n"

    @classmethod
    def decode(cls, data: bytes) -> StoreConfig:
        try:
            doc = json.loads(data)
            if doc.get("type") != "datavc-store":
                raise CorruptObject(CONFIG_KEY, "not a datavc store config")
            if doc.get("format") != STORE_FORMAT:
                raise CorruptObject(CONFIG_KEY, f"unsupported store format {doc.get('format')}")
            return cls(ChunkerParams.from_json(doc["chunker"]), int(doc["pack_target"]))
        except (ValueError, KeyError, TypeError, AttributeError):
            raise CorruptObject(CONFIG_KEY, "store config is malformed") from None
