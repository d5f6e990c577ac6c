"""Content hashes: BLAKE3 everywhere.

A chunk id is the BLAKE3 digest (32 bytes) of the chunk's plain bytes; a file hash is BLAKE3 of
the file's whole content, so ``b3sum`` can check any materialized file; an object id (packs,
indexes, trees) is BLAKE3 of the object's stored bytes, written as 64 lower-case hex digits.
"""

from __future__ import annotations

from typing import NewType

from blake3 import blake3

ChunkId = NewType("ChunkId", bytes)
"""32-byte BLAKE3 digest of a chunk's plain bytes."""

FileHash = NewType("FileHash", bytes)
"""32-byte BLAKE3 digest of a file's whole content."""

ObjectId = NewType("ObjectId", str)
"""64 hex digits: BLAKE3 of a stored object's bytes (pack, index, tree)."""

DIGEST_SIZE = 32


def chunk_id(data: bytes | memoryview) -> ChunkId:
    return ChunkId(blake3(data).digest())


def content_hash(data: bytes | memoryview) -> FileHash:
    """The file hash of content held in memory."""
    return FileHash(blake3(data).digest())


def object_id(data: bytes | bytearray | memoryview) -> ObjectId:
    return ObjectId(blake3(data).hexdigest())


def file_hasher() -> blake3:
    """An incremental hasher for a whole file (``update`` then ``digest``)."""
    return blake3(max_threads=1)


def is_object_id(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)
