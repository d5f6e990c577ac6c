"""The seeded datasets: images (many small files), table (a Parquet file appended to and
edited in the middle), tensor (a large .npy edited in place); their edits and fingerprints."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from blake3 import blake3

from .common import MB, SEED, MiB, log, remove

# -- datasets --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Scale:
    images: int
    image_folders: int
    table_rows: int
    tensor_shape: tuple[int, int]
    edit_bytes: int = MiB


FULL = Scale(images=20_000, image_folders=100, table_rows=10_000_000, tensor_shape=(16_384, 16_384))
QUICK = Scale(images=2_000, image_folders=100, table_rows=1_000_000, tensor_shape=(4_096, 8_192))

Fingerprint = dict[str, tuple[int, str]]


@dataclass(frozen=True, slots=True)
class Rewrite:
    """The new version is the whole file written again (what pyarrow does)."""

    def apply(self, src: Path, dest: Path) -> None:
        shutil.copyfile(src, dest)


@dataclass(frozen=True, slots=True)
class Patch:
    """The new version differs by ``length`` bytes at ``offset``, written in place."""

    offset: int
    length: int

    def apply(self, src: Path, dest: Path) -> None:
        with open(src, "rb") as f:
            f.seek(self.offset)
            data = f.read(self.length)
        with open(dest, "r+b") as f:
            f.seek(self.offset)
            f.write(data)


@dataclass(slots=True)
class Dataset:
    """A generated dataset: the payload of each version, and how to turn v(N-1) into vN."""

    name: str
    payload: str  # file or folder name under data/ in each workspace
    versions: list[Path]
    edits: list[Rewrite | Patch] = field(default_factory=list)
    probe_file: str | None = None  # a ~64 KB file to read through datavc.open
    sizes: list[int] = field(default_factory=list)
    files: int = 0
    fingerprints: list[Fingerprint] = field(default_factory=list)

    def install(self, version: int, dest: Path) -> None:
        """Make ``dest`` hold version ``version`` (0-based): a copy of v1, or an edit."""
        if version == 0:
            remove(dest)
            dest.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(["cp", "-a", str(self.versions[0]), str(dest)], check=True)
        else:
            self.edits[version - 1].apply(self.versions[version], dest)


def iter_files(path: Path) -> Iterator[Path]:
    if path.is_file():
        yield path
        return
    for folder, dirs, names in os.walk(path):
        dirs.sort()
        for name in sorted(names):
            yield Path(folder) / name


def fingerprint(path: Path) -> Fingerprint:
    """Relative path -> (size, BLAKE3) of every file; a single file has the path ""."""
    out: Fingerprint = {}
    for f in iter_files(path):
        rel = "" if f == path else f.relative_to(path).as_posix()
        size = f.stat().st_size
        h = blake3(max_threads=blake3.AUTO)
        if size:
            h.update_mmap(f)
        out[rel] = (size, h.hexdigest())
    return out


def make_images(root: Path, scale: Scale, rng: np.random.Generator) -> Dataset:
    """Random bytes (incompressible, like JPEG) of 10-100 KB in ``image_folders`` folders."""
    dest = root / "v1" / "images"
    sizes = rng.integers(10_000, 100_001, scale.images)
    for i, size in enumerate(sizes):
        folder = dest / f"class{i % scale.image_folders:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"img{i:05d}.jpg").write_bytes(rng.bytes(int(size)))
    probe = int(np.argmin(np.abs(sizes - 65_536)))
    probe_path = f"class{probe % scale.image_folders:03d}/img{probe:05d}.jpg"
    return Dataset("images", "images", [dest], probe_file=probe_path)


def _table_rows(rng: np.random.Generator, start: int, n: int) -> dict[str, np.ndarray]:
    ids = np.arange(start, start + n, dtype=np.int64)
    cols: dict[str, np.ndarray] = {
        "id": ids,
        "ts": 1_700_000_000_000 + ids * 997 + rng.integers(0, 997, n),
    }
    for c in ("x0", "x1", "x2", "x3"):
        cols[c] = rng.standard_normal(n)
    cols["y"] = rng.standard_normal(n, dtype=np.float32)
    cols["label"] = rng.integers(0, 1000, n, dtype=np.int32)
    return cols


def _write_parquet(cols: dict[str, np.ndarray], path: Path, row_group: int) -> None:
    """Snappy, no dictionary, fixed row groups: unchanged row groups stay byte-identical."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(
        pa.table(cols), path, row_group_size=row_group, compression="snappy", use_dictionary=False
    )


def make_table(root: Path, scale: Scale, rng: np.random.Generator) -> Dataset:
    """v1: ``table_rows`` rows; v2: 1% rows appended; v3: 1% of the rows in the middle changed."""
    n = scale.table_rows
    row_group = n // 10
    v1 = _table_rows(rng, 0, n)
    paths = [root / f"v{i}" / "table.parquet" for i in (1, 2, 3)]
    _write_parquet(v1, paths[0], row_group)
    extra = _table_rows(rng, n, n // 100)
    v2 = {c: np.concatenate([v1[c], extra[c]]) for c in v1}
    del v1
    _write_parquet(v2, paths[1], row_group)
    lo = len(v2["id"]) // 2 - n // 200
    fresh = _table_rows(rng, 0, n // 100)
    for c in ("x0", "x1", "x2", "x3", "y", "label"):
        v2[c][lo : lo + n // 100] = fresh[c]
    _write_parquet(v2, paths[2], row_group)
    return Dataset("table", "table.parquet", paths, [Rewrite(), Rewrite()])


def make_tensor(root: Path, scale: Scale, rng: np.random.Generator) -> Dataset:
    """v1: float32 normal values; v2: ``edit_bytes`` in the middle written in place."""
    v1, v2 = root / "v1" / "tensor.npy", root / "v2" / "tensor.npy"
    v1.parent.mkdir(parents=True)
    v2.parent.mkdir(parents=True)
    arr = np.lib.format.open_memmap(v1, mode="w+", dtype=np.float32, shape=scale.tensor_shape)
    step = max(1, (16 * MiB) // (4 * scale.tensor_shape[1]))
    for row in range(0, scale.tensor_shape[0], step):
        rows = min(step, scale.tensor_shape[0] - row)
        arr[row : row + rows] = rng.standard_normal((rows, scale.tensor_shape[1]), np.float32)
    arr.flush()
    del arr
    header = v1.stat().st_size - 4 * scale.tensor_shape[0] * scale.tensor_shape[1]
    offset = header + (v1.stat().st_size - header) // 2 // 4 * 4
    shutil.copyfile(v1, v2)
    patch = Patch(offset, scale.edit_bytes)
    with open(v2, "r+b") as f:
        f.seek(offset)
        f.write(rng.standard_normal(scale.edit_bytes // 4, np.float32).tobytes())
    return Dataset("tensor", "tensor.npy", [v1, v2], [patch])


MAKERS: dict[str, Callable[[Path, Scale, np.random.Generator], Dataset]] = {
    "images": make_images,
    "table": make_table,
    "tensor": make_tensor,
}


def generate(name: str, root: Path, scale: Scale) -> Dataset:
    start = time.perf_counter()
    ds = MAKERS[name](root / name, scale, np.random.default_rng([SEED, len(name)]))
    ds.fingerprints = [fingerprint(v) for v in ds.versions]
    ds.sizes = [sum(size for size, _ in fp.values()) for fp in ds.fingerprints]
    ds.files = len(ds.fingerprints[0])
    log(
        f"generated {name}: {ds.files:,} files, {ds.sizes[0] / MB:,.1f} MB, "
        f"{len(ds.versions)} versions ({time.perf_counter() - start:.1f} s)"
    )
    return ds
