"""The store layer: everything that talks to a store, and to the files of a snapshot.

The backend (the only module that imports fsspec; plain files for a local folder), atomic
local writes, pack spooling, the chunk store (metadata objects, the index) with its chunk
reader and pack writer, version records, and the snapshot operations: building a tree from
files, reading and diffing trees, materializing a tree into a folder. Store maintenance
(fsck, gc, copying between stores) belongs here too. May import: ``datavc.format``,
``datavc.errors``.
"""
