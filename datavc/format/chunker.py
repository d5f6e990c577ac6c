"""Content-defined chunking with FastCDC (pyfastcdc).

The parameters are frozen in the store's ``datavc.json`` at init: the same bytes must cut at the
same places forever, or deduplication across versions is lost.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

from ..errors import CorruptObject
from .jsondoc import Malformed, integer, string


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
    def from_json(cls, doc: Any) -> ChunkerParams:
        """The parameters in ``datavc.json``: no key but the six, each within the range
        FastCDC allows (:data:`LIMITS`), ``min_size <= avg_size <= max_size``; a key that is
        not given takes its default."""
        try:
            if not isinstance(doc, dict) or set(doc) - {"algorithm", *LIMITS}:
                raise Malformed("not an object of the six chunker keys")
            if string(doc, "algorithm") != "fastcdc2020":
                raise Malformed(f"unknown chunker {doc['algorithm']!r}")
            default = cls()

            def size(key: str) -> int:  # a key not given takes its default
                value: int = getattr(default, key)
                return integer(doc, key, *LIMITS[key]) if key in doc else value

            params = cls(
                avg_size=size("avg_size"),
                min_size=size("min_size"),
                max_size=size("max_size"),
                normalization=size("normalization"),
                seed=size("seed"),
            )
            if not params.min_size <= params.avg_size <= params.max_size:
                raise Malformed("chunk sizes must be min_size <= avg_size <= max_size")
        except Malformed as err:
            raise CorruptObject("datavc.json", f"chunker parameters: {err}") from None
        return params


LIMITS = {  # FastCDC's (the crate's) own bounds, and a seed that fits its u64
    "min_size": (64, 1 << 20),
    "avg_size": (256, 4 << 20),
    "max_size": (1 << 10, 16 << 20),
    "normalization": (0, 3),
    "seed": (0, (1 << 64) - 1),
}


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
