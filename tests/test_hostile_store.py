"""Hostile input from a store: sizes, counts and documents are checked before they are used.

Whoever can write to a store can write any object in it. Each case forges one (a tree page
whose entry is larger than it says, a decompression bomb, a version record with ``1e999`` or
deep nesting, a root whose totals lie, a page that is not what its root says, a
``datavc.json`` with impossible parameters) and runs the command a user would: one error
line naming the object, exit code 6, no traceback, the workspace as it was, and memory
bounded (peak RSS measured in a subprocess).
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import forged_record, rand, tree_state, write

from datavc.format.chunker import LIMITS
from datavc.format.hashing import ChunkId, FileHash, chunk_id, object_id
from datavc.format.packfile import (
    CODEC_RAW,
    CODEC_ZSTD,
    MAX_CHUNK,
    PACK_MAGIC,
    Location,
    PackEntry,
    pack_footer,
)
from datavc.format.record import encode_record
from datavc.format.tree import (
    MODE_FILE,
    PAGE_MAGIC,
    FileEntry,
    PageRef,
    TreeRoot,
    encode_content,
    encode_page,
)
from datavc.store import versions
from datavc.workspace.core import Workspace

TIMEOUT = 120
MIB = 1 << 20
# Runs a command and prints its exit code and the peak RSS (KiB) of the process it ran.
MEASURED = """
import resource, subprocess, sys
code = subprocess.run(sys.argv[1:]).returncode
print(code, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)
"""


def datavc(cwd: Path, *args: str) -> tuple[int, str, int]:
    """Run a datavc command: (exit code, its stderr, its peak RSS in MiB)."""
    done = subprocess.run(
        [sys.executable, "-c", MEASURED, sys.executable, "-m", "datavc", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    *lines, last = done.stderr.splitlines()
    code, rss = (int(x) for x in last.split())
    return code, "\n".join(lines), rss // 1024


def expect_corrupt(cwd: Path, args: list[str], obj: str) -> None:
    code, err, rss = datavc(cwd, *args)
    assert code == 6, (args, err)
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith("datavc: error: corrupt object ") and obj in err, err
    assert rss < 300, rss


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    write(root / "data" / "a.bin", rand("a", 100_000))
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    for args in (["init"], ["add", "data"], ["commit", "-m", "v1"]):
        subprocess.run([sys.executable, "-m", "datavc", *args], cwd=root, check=True)
    return root


def publish(root: Path, tree: TreeRoot) -> int:
    """Publish a version of ``data`` whose record carries ``tree`` as given; its number."""
    store = Workspace(str(root)).store
    return versions.publish_version(store, forged_record("data", tree)).version


def one_page(root: Path, entries: list[FileEntry], ref_files: int | None = None) -> TreeRoot:
    """A root over one page of ``entries`` (hints from the store's index), as given."""
    store = Workspace(str(root)).store
    store.load_index()

    def locate(cid: ChunkId) -> Location:
        loc = store.location(cid)
        return loc if loc is not None else Location(PACK, 8, 1, 1, CODEC_RAW)

    data, content = encode_page(entries, locate)
    page_id = store.write_object("trees", data)
    size = sum(e.size for e in entries)
    files = len(entries) if ref_files is None else ref_files
    ref = PageRef(page_id, entries[0].path, entries[-1].path, files, size, content)
    return TreeRoot(files, size, (ref,))


PACK = "ab" * 32


def test_an_entry_larger_than_it_says_is_refused(repo: Path) -> None:
    """A 10-byte entry whose recipe names the real 100 KB file's chunks (a size bomb: before,
    checkout wrote and held what the recipe gave, whatever the size said)."""
    real = Workspace(str(repo)).tree_entries(store_version(repo, 1))[0]
    bomb = FileEntry("a.bin", MODE_FILE, 10, real.hash, real.chunks)
    v = publish(repo, one_page(repo, [bomb]))
    before = tree_state(repo / "data")
    expect_corrupt(repo, ["checkout", "--force", f"data@v{v}"], "trees/")
    assert tree_state(repo / "data") == before


def store_version(root: Path, number: int) -> TreeRoot:
    return versions.read_version(Workspace(str(root)).store, "data", number).root


def test_a_decompression_bomb_is_refused_before_it_is_decoded(repo: Path) -> None:
    """A gigabyte of zeros compresses to kilobytes: an entry that names such a frame as one
    1 GiB chunk is over the chunk limit, refused when its page is read, never decoded."""
    import zstandard

    plain = 1 << 30
    frame = zstandard.ZstdCompressor().compress(bytes(64 * MIB)) * 16  # 16 frames: 1 GiB
    assert len(frame) < 1 * MIB
    store = Workspace(str(repo)).store
    cid = ChunkId(b"\x01" * 32)
    footer = pack_footer([PackEntry(cid, len(PACK_MAGIC), len(frame), plain, CODEC_ZSTD)])
    store.backend.write(f"packs/{PACK}", [PACK_MAGIC, frame, footer])
    bomb = FileEntry("a.bin", MODE_FILE, plain, FileHash(b"\x02" * 32), ((cid, plain),))
    v = publish(repo, one_page(repo, [bomb]))
    expect_corrupt(repo, ["checkout", "--force", f"data@v{v}"], "trees/")
    code, err, rss = datavc(repo, "ls", f"data@v{v}")
    assert code == 6 and rss < 300, err


@pytest.mark.parametrize("states_its_size", [True, False])
def test_a_chunk_that_decodes_past_its_declared_length_is_refused(
    repo: Path, states_its_size: bool
) -> None:
    """Within the limit, a frame that decodes to more than the plain length named for it is
    refused: 16 MiB of zeros named as a chunk of 1 MiB. A frame that states its size would
    be decoded into a buffer of that size (zstandard ignores the output limit then), so the
    size it states is checked first; one that does not is cut off at the named length."""
    import zstandard

    compressor = zstandard.ZstdCompressor(write_content_size=states_its_size)
    frame = compressor.compress(bytes(16 * MIB))
    cid = chunk_id(bytes(MIB))
    store = Workspace(str(repo)).store
    footer = pack_footer([PackEntry(cid, len(PACK_MAGIC), len(frame), MIB, CODEC_ZSTD)])
    store.backend.write(f"packs/{PACK}", [PACK_MAGIC, frame, footer])

    def locate(c: ChunkId) -> Location:
        return Location(PACK, len(PACK_MAGIC), len(frame), MIB, CODEC_ZSTD)

    entry = FileEntry("a.bin", MODE_FILE, MIB, FileHash(b"\x03" * 32), ((cid, MIB),))
    data, content = encode_page([entry], locate)
    page_id = store.write_object("trees", data)
    v = publish(repo, TreeRoot(1, MIB, (PageRef(page_id, "a.bin", "a.bin", 1, MIB, content),)))
    code, err, rss = datavc(repo, "checkout", "--force", f"data@v{v}")
    reason = "chunk says 16777216 bytes" if states_its_size else "does not decompress"
    assert code == 6 and reason in err and rss < 300, err


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"version": "2"}, "'version' is not an integer"),
        ({"version": True}, "'version' is not an integer"),
        ({"parent": 1.5}, "is not an integer"),
        ({"stats": {"files": "1e999"}}, "'files' is not an integer"),
        ({"message": "RAW:1e999"}, "is not an integer"),
        ({"message": "RAW:" + "[" * 100_000 + "]" * 100_000}, "nested"),
        ({"message": "RAW:NaN"}, "is not an integer"),
    ],
)
def test_a_malformed_version_record_is_one_error_line(
    repo: Path, change: dict[str, object], reason: str
) -> None:
    """Numbers that are not integers (``1e999``, ``NaN``, ``"2"``, ``true``) and deep nesting
    in a record gave tracebacks (an OverflowError, a RecursionError): now exit 6."""
    store = Workspace(str(repo)).store
    good = versions.read_version(store, "data", 1)
    doc = json.loads(encode_record(good))
    doc.update(version=2)
    raw = None
    for key, value in change.items():
        if isinstance(value, str) and value.startswith("RAW:"):
            raw = (key, value[4:])
        elif isinstance(value, dict):
            doc[key] = {**doc[key], **value}
        else:
            doc[key] = value
    text = json.dumps(doc)
    if raw is not None:
        key, literal = raw
        text = text.replace(json.dumps(doc[key]), literal, 1)
    store.backend.write("versions/data/2.json", text.encode())
    before = tree_state(repo / "data")
    for args in (["log", "data"], ["checkout", "--force", "data@v2"], ["ls", "data@latest"]):
        code, err, _ = datavc(repo, *args)
        assert code == 6, (args, err)
        assert err.startswith("datavc: error: corrupt object versions/data/2.json: "), err
        assert reason in err and len(err.splitlines()) == 1, err
    assert tree_state(repo / "data") == before


def test_a_root_whose_totals_lie_is_refused(repo: Path) -> None:
    """A root's totals must be its pages' sums: a forged root hashes correctly whatever
    totals it carries, so the reader checks them."""
    good = store_version(repo, 1)
    liar = TreeRoot(good.files + 1, good.bytes, good.pages)
    v = publish(repo, liar)
    expect_corrupt(repo, ["checkout", "--force", f"data@v{v}"], f"versions/data/{v}.json")


def test_a_page_that_is_not_what_its_root_says_is_refused(repo: Path) -> None:
    real = next(iter(Workspace(str(repo)).tree_entries(store_version(repo, 1))))
    v = publish(repo, one_page(repo, [real], ref_files=2))
    # the root says two files (and its totals agree), the page holds one
    expect_corrupt(repo, ["checkout", "--force", f"data@v{v}"], "trees/")



def test_a_page_is_held_to_its_roots_count_before_its_entries_are_built(repo: Path) -> None:
    """A 4 KB page can declare a million empty entries (under the page limit) where its
    root says one: building them took 3 s and 320 MiB in each reader before the count was
    compared. Here the page declares two and holds one: refused on the count (the root's),
    not on the truncation that building the second entry would meet."""
    real = next(iter(Workspace(str(repo)).tree_entries(store_version(repo, 1))))
    content = bytearray(encode_content([real]))
    content[:4] = struct.pack("<I", 2)
    body = struct.pack("<I", len(content)) + content + struct.pack("<I", 0)
    page = PAGE_MAGIC + struct.pack("<BI", CODEC_RAW, len(body)) + body
    page_id = Workspace(str(repo)).store.write_object("trees", page)
    ref = PageRef(page_id, real.path, real.path, 1, real.size, object_id(bytes(content)))
    v = publish(repo, TreeRoot(1, real.size, (ref,)))
    for args in (["ls", f"data@v{v}"], ["checkout", "--force", f"data@v{v}"]):
        code, err, _ = datavc(repo, *args)
        assert code == 6 and "does not hold what the tree root says" in err, (args, err)
    fsck = subprocess.run(
        [sys.executable, "-m", "datavc", "fsck"], cwd=repo, capture_output=True, text=True
    )
    assert fsck.returncode == 6 and "does not hold what the tree root says" in fsck.stdout



def test_a_hint_at_an_offset_no_pack_can_have_is_one_error_line(repo: Path) -> None:
    """A hint at offset 2^63 was an OverflowError traceback (exit 1) from pread in checkout
    and every datavc.open reader, and from SQLite in fsck (found by a probe)."""
    real = next(iter(Workspace(str(repo)).tree_entries(store_version(repo, 1))))
    store = Workspace(str(repo)).store
    store.load_index()
    data, content = encode_page(
        [real], lambda cid: store.locate_stored(cid)._replace(offset=2**63)
    )
    ref = PageRef(store.write_object("trees", data), real.path, real.path, 1, real.size, content)
    v = publish(repo, TreeRoot(1, real.size, (ref,)))
    before = tree_state(repo / "data")
    expect_corrupt(repo, ["checkout", "--force", f"data@v{v}"], "trees/")
    assert tree_state(repo / "data") == before
    fsck = subprocess.run(
        [sys.executable, "-m", "datavc", "fsck"], cwd=repo, capture_output=True, text=True
    )
    assert fsck.returncode == 6 and "impossible for its chunk" in fsck.stdout, fsck
    assert "Traceback" not in fsck.stderr


@pytest.mark.parametrize("bad", ["../evil", ".git/hooks/x", "d/" * 200 + "f", "n" * 256])
def test_fsck_reports_a_version_whose_paths_checkout_would_refuse(repo: Path, bad: str) -> None:
    """fsck said nothing of a version that no checkout can write (its chunks are sound):
    each version that names the page is reported damaged, by the path rule it breaks."""
    real = next(iter(Workspace(str(repo)).tree_entries(store_version(repo, 1))))
    crafted = FileEntry(bad, real.mode, real.size, real.hash, real.chunks)
    root = one_page(repo, sorted([real, crafted], key=lambda e: e.path))
    first, second = publish(repo, root), publish(repo, root)
    fsck = subprocess.run(
        [sys.executable, "-m", "datavc", "fsck"], cwd=repo, capture_output=True, text=True
    )
    assert fsck.returncode == 6, fsck.stdout
    [line] = [x for x in fsck.stdout.splitlines() if "unsafe path" in x]
    assert f"data@v{first}" in line and f"data@v{second}" in line and "data@v1" not in line


@pytest.mark.parametrize(
    "change",
    [
        {"chunker": {"min_size": 0}},
        {"chunker": {"avg_size": -1}},
        {"chunker": {"max_size": 1 << 40}},
        {"chunker": {"min_size": 300_000}},  # above avg_size
        {"chunker": {"seed": "0"}},
        {"pack_target": 1},
        {"pack_target": 1 << 40},
        {"pack_target": 64.5},
    ],
)
def test_impossible_store_parameters_are_refused(repo: Path, change: dict[str, object]) -> None:
    """Chunker and pack parameters out of their documented ranges gave tracebacks (FastCDC
    refuses them) or one pack per chunk: now exit 6 naming datavc.json, nothing stored."""
    config = repo / ".datavc" / "store" / "datavc.json"
    doc = json.loads(config.read_text())
    for key, value in change.items():
        doc[key] = {**doc[key], **value} if isinstance(value, dict) else value
    config.write_text(json.dumps(doc))
    write(repo / "data" / "b.bin", rand("b", 50_000))
    packs = sorted(p.name for p in (repo / ".datavc" / "store" / "packs").iterdir())
    expect_corrupt(repo, ["add", "data"], "datavc.json")
    assert sorted(p.name for p in (repo / ".datavc" / "store" / "packs").iterdir()) == packs


def test_a_stray_file_in_the_index_folder_does_not_stop_add(repo: Path) -> None:
    """One stray file under index/ (a note, a copy tool's temporary file) made every add
    fail its hash check; only object ids are index objects."""
    (repo / ".datavc" / "store" / "index" / "README").write_text("not an index\n")
    write(repo / "data" / "b.bin", rand("b", 50_000))
    code, err, _ = datavc(repo, "add", "data")
    assert code == 0, err
    code, err, _ = datavc(repo, "commit", "-m", "v2")
    assert code == 0, err


def test_the_chunk_limit_is_the_chunkers_largest_maximum() -> None:
    """A reader's limit on a chunk's plain length is the largest ``max_size`` a store may be
    created with: no chunk a valid store holds is refused, and no larger one is read."""
    assert LIMITS["max_size"][1] == MAX_CHUNK
