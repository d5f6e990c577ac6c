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
from .jsondoc import Malformed, integer, load_document, member

STORE_FORMAT = 2
CONFIG_KEY = "datavc.json"
DEFAULT_PACK_TARGET = 64 * 1024 * 1024
PACK_TARGET_LIMITS = (4 << 10, 1 << 30)  # init --pack-size takes 1 MiB to 1 GiB


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
        """The store config, checked: strict JSON, the chunker parameters in their ranges,
        the pack target within ``PACK_TARGET_LIMITS``."""
        try:
            doc = load_document(data)
            if doc.get("type") != "datavc-store":
                raise CorruptObject(CONFIG_KEY, "not a datavc store config")
            if doc.get("format") != STORE_FORMAT:
                raise CorruptObject(CONFIG_KEY, f"unsupported store format {doc.get('format')}")
            chunker = ChunkerParams.from_json(member(doc, "chunker"))
            return cls(chunker, integer(doc, "pack_target", *PACK_TARGET_LIMITS))
        except Malformed as err:
            raise CorruptObject(CONFIG_KEY, f"store config is malformed: {err}") from None
