"""Snapshot tree roots: their canonical JSON, the snapshot id, and the checks a root read
from a store or a workspace gets (pure). The root's layout is in :mod:`.tree`'s docstring
and FORMAT.md, "Snapshot trees"."""

from __future__ import annotations

import json
from typing import Any

from ..errors import CorruptObject
from .hashing import ObjectId, is_object_id, object_id
from .jsondoc import Malformed, array, integer, load_document, member, string
from .tree import CUT_RULE, PAGE_LIMIT_ENTRIES, TREE_FORMAT, PageRef, TreeRoot


def root_doc(root: TreeRoot) -> dict[str, Any]:
    doc = {
        "type": "datavc-tree",
        "format": TREE_FORMAT,
        "files": root.files,
        "bytes": root.bytes,
        "pages": [
            {
                "id": p.id,
                "content": p.content,
                "first": p.first,
                "last": p.last,
                "files": p.files,
                "bytes": p.bytes,
            }
            for p in root.pages
        ],
    }
    if root.cut:
        doc["cut"] = root.cut
    return doc


def encode_root(root: TreeRoot) -> bytes:
    """The root's canonical bytes."""
    return _canonical(root_doc(root))


def snapshot_id(root: TreeRoot) -> ObjectId:
    """BLAKE3 of the root's canonical JSON without the page object ids (see above)."""
    doc = root_doc(root)
    for page in doc["pages"]:
        del page["id"]
    return object_id(_canonical(doc))


def _canonical(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def root_from_doc(doc: Any, obj: str) -> TreeRoot:
    """A tree root from its JSON document, checked (see :func:`check_root`)."""
    try:
        if member(doc, "type") != "datavc-tree":
            raise CorruptObject(obj, "not a datavc tree root")
        if member(doc, "format") != TREE_FORMAT:
            raise CorruptObject(obj, f"unsupported tree format {doc.get('format')}")
        pages = tuple(_page_ref(p) for p in array(doc, "pages"))
        cut = integer(doc, "cut", CUT_RULE, CUT_RULE) if "cut" in doc else 0
        root = TreeRoot(integer(doc, "files"), integer(doc, "bytes"), pages, cut)
    except Malformed as err:
        raise CorruptObject(obj, f"tree root is malformed: {err}") from None
    check_root(root, obj)
    return root


def _page_ref(doc: Any) -> PageRef:
    ref = PageRef(
        ObjectId(string(doc, "id")),
        string(doc, "first"),
        string(doc, "last"),
        integer(doc, "files", 1, PAGE_LIMIT_ENTRIES),
        integer(doc, "bytes"),
        ObjectId(string(doc, "content")),
    )
    if not (is_object_id(ref.id) and is_object_id(ref.content)):
        raise Malformed("a page is named by an invalid id")
    return ref


def check_root(root: TreeRoot, obj: str) -> None:
    """A root's totals are the sums of its pages', and its pages' path ranges are in order
    and do not overlap (a forged root can carry wrong totals and still hash correctly)."""
    if root.files != sum(p.files for p in root.pages):
        raise CorruptObject(obj, "tree root's file count is not the sum of its pages'")
    if root.bytes != sum(p.bytes for p in root.pages):
        raise CorruptObject(obj, "tree root's byte count is not the sum of its pages'")
    last = None
    for page in root.pages:
        if page.first > page.last or (last is not None and page.first <= last):
            raise CorruptObject(obj, "tree root's pages are not in path order")
        last = page.last


def decode_root(data: bytes, obj: str) -> TreeRoot:
    try:
        doc = load_document(data)
    except Malformed as err:
        raise CorruptObject(obj, f"tree root is malformed: {err}") from None
    return root_from_doc(doc, obj)
