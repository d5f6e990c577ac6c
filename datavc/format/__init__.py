"""The format layer: datavc's byte formats, pure (bytes in, values out).

Hashing, chunking, packs and indexes, tree pages and roots, version records, pointer files,
version specs, snapshot paths and the store config (with strict JSON for the documents):
each module encodes and decodes one format, and is the one place its untrusted bytes are
parsed and checked against the limits in docs/FORMAT.md, the spec. Nothing here touches a
file, a store, git or the clock: callers pass bytes or callables in. May import:
``datavc.errors`` only (and pure libraries: blake3, pyfastcdc, zstandard).
"""
