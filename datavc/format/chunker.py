"""Content-defined chunking with FastCDC (pyfastcdc).

The parameters are frozen in the store's ``datavc.json`` at init: the same bytes must cut at the
same places forever, or deduplication across versions is lost.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

from ..errors import CorruptObject


@dataclass(frozen=True, slots=True)
class ChunkerParams:
    avg_size: int = 64 * 1024
    min_size: int = 16 * 1024
    max_size: int = 256 * 1024
    normalization: int = 1
    seed: int = 0
    algorithm: str = "fastcdc2020"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ChunkerParams:
        params = cls(**data)
        if params.algorithm != "fastcdc2020":
            raise CorruptObject("datavc.json", f"unknown chunker {params.algorithm!r}")
        return params


class Chunker:
    """Cuts buffers into chunks; one instance per thread (pyfastcdc is not thread-safe)."""

    def __init__(self, params: ChunkerParams) -> None:
        from pyfastcdc.cy import FastCDC  # here, not at the top: commands that never cut

        self.params = params
        self._cdc = FastCDC(
            params.avg_size,
            min_size=params.min_size,
            max_size=params.max_size,
            normalized_chunking=params.normalization,
            seed=params.seed,
        )

    def cut(self, buf: bytes | memoryview) -> Iterator[memoryview]:
        """Yield the chunks of ``buf`` as memoryviews into it (nothing for an empty buffer)."""
        if len(buf) == 0:
            return
        for chunk in self._cdc.cut_buf(buf):
            yield chunk.data
