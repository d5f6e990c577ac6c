"""The readers' measurements (issue 15), run in a process of their own by
:mod:`benchlib.readers` with the interpreter that has datavc:

    python reader_probe.py CONFIG.json OUT.json

CONFIG names a task (``random``, ``ranges``, ``loader``, ``parquet``, ``s3``) and its
inputs; OUT gets one JSON document: per-round seconds for datavc and for local disk (the
two interleaved, round by round, on the same bytes), counts, and with ``profile`` the
top functions of one more datavc round under cProfile. Every datavc read is checked
against the local file's bytes outside the timed part. Needs only the standard library,
datavc (fsspec), and for the Parquet tasks pyarrow and pandas; ``loader`` uses PyTorch's
DataLoader if torch is installed, else a pool of spawned processes doing the same.
"""

from __future__ import annotations

import contextlib
import cProfile
import importlib.util
import io
import json
import multiprocessing
import os
import pickle
import pstats
import random
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

KiB = 1024
PROFILE_LINES = 25


def profiled(title: str, fn: Callable[[], Any]) -> dict[str, str]:
    """The top functions (by internal time, then cumulative) of one call of ``fn``."""
    prof = cProfile.Profile()
    prof.enable()
    fn()
    prof.disable()
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out).strip_dirs()
    stats.sort_stats("tottime").print_stats(PROFILE_LINES)
    stats.sort_stats("cumulative").print_stats(PROFILE_LINES)
    lines = [line.rstrip() for line in out.getvalue().splitlines()]
    text = "\n".join(line for line in lines if line and not line.startswith("   Ordered by"))
    return {"title": title, "text": text}


def open_fs(cfg: dict[str, Any]) -> tuple[Any, float]:
    """``datavc.open`` of the configured version (import not timed), and its seconds."""
    import datavc
    import datavc.fs  # what datavc.open imports on first use: not timed

    start = time.perf_counter()
    fs = datavc.open(cfg["spec"], store=cfg["store"])
    return fs, time.perf_counter() - start


def offsets(size: int, n: int, seed: int, length: int) -> list[int]:
    """``n`` random offsets aligned to ``length`` (a page-sized read, as a database does)."""
    rng = random.Random(seed)
    return [rng.randrange(0, (size - length) // length + 1) * length for _ in range(n)]


# -- random reads and cat_ranges ----------------------------------------------------------


def task_random(cfg: dict[str, Any]) -> dict[str, Any]:
    """Open the file and make ``reads`` random reads of ``length`` bytes, then close it:
    through datavc and from the local file (built-in ``open``), each round new offsets."""
    fs, open_s = open_fs(cfg)
    path, local, n, length = cfg["path"], cfg["local"], cfg["reads"], cfg["length"]
    size = os.path.getsize(local)

    def via_datavc(offs: list[int]) -> list[bytes]:
        out = []
        with fs.open(path, "rb") as f:
            for o in offs:
                f.seek(o)
                out.append(f.read(length))
        return out

    def via_local(offs: list[int]) -> list[bytes]:
        out = []
        with open(local, "rb") as f:
            for o in offs:
                f.seek(o)
                out.append(f.read(length))
        return out

    via_datavc(offsets(size, 4, cfg["seed"] - 1, length))  # the tree page: not timed
    result = rounds(cfg, lambda r: offsets(size, n, cfg["seed"] + r, length), via_datavc, via_local)
    if cfg.get("profile"):
        offs = offsets(size, n, cfg["seed"] + 1000, length)
        title = f"{n} random reads of {length // KiB} KiB of {path} (file opened once)"
        result["profiles"] = [profiled(title, lambda: via_datavc(offs))]
    result["open_s"] = open_s
    return result


def task_ranges(cfg: dict[str, Any]) -> dict[str, Any]:
    """``cat_ranges`` of ``reads`` ranges of ``length`` bytes of one file: datavc's
    filesystem against fsspec's LocalFileSystem."""
    from fsspec.implementations.local import LocalFileSystem

    fs, _ = open_fs(cfg)
    lfs = LocalFileSystem()
    path, local, n, length = cfg["path"], cfg["local"], cfg["reads"], cfg["length"]
    size = os.path.getsize(local)

    def ranges(offs: list[int]) -> tuple[list[int], list[int]]:
        return offs, [o + length for o in offs]

    def via_datavc(offs: list[int]) -> list[bytes]:
        starts, ends = ranges(offs)
        return list(fs.cat_ranges([path] * len(offs), starts, ends))

    def via_local(offs: list[int]) -> list[bytes]:
        starts, ends = ranges(offs)
        return list(lfs.cat_ranges([local] * len(offs), starts, ends))

    via_datavc(offsets(size, 4, cfg["seed"] - 1, length))  # the tree page: not timed
    result = rounds(cfg, lambda r: offsets(size, n, cfg["seed"] + r, length), via_datavc, via_local)
    if cfg.get("profile"):  # a tenth of the ranges: each costs the same
        offs = offsets(size, max(1, n // 10), cfg["seed"] + 1000, length)
        title = f"cat_ranges of {len(offs):,} ranges of {length // KiB} KiB of {path}"
        result["profiles"] = [profiled(title, lambda: via_datavc(offs))]
    return result


def rounds(
    cfg: dict[str, Any],
    make: Callable[[int], Any],
    via_datavc: Callable[[Any], Any],
    via_local: Callable[[Any], Any],
) -> dict[str, Any]:
    """``cfg["rounds"]`` rounds, datavc and local interleaved (the one that goes first
    alternates), each on the input ``make(round)``; the outputs must be equal."""
    out: dict[str, Any] = {"datavc": [], "local": []}
    for r in range(cfg["rounds"]):
        arg = make(r)
        got: dict[str, Any] = {}
        order = ("datavc", "local") if r % 2 == 0 else ("local", "datavc")
        for who in order:
            fn = via_datavc if who == "datavc" else via_local
            start = time.perf_counter()
            got[who] = fn(arg)
            out[who].append(time.perf_counter() - start)
        if got["datavc"] != got["local"]:
            raise SystemExit(f"round {r}: datavc read other bytes than the local file")
    return out


# -- a DataLoader-like epoch ---------------------------------------------------------------


def read_share(source: Any, files: list[str], pickled: bool) -> dict[str, Any]:
    """One worker's share of an epoch: every file read whole. ``source`` is the local
    folder, or the pickled datavc filesystem (unpickled here: what a worker receives)."""
    start = time.perf_counter()
    fs = pickle.loads(source) if pickled else None
    ready = time.perf_counter()
    nbytes = 0
    if fs is not None:
        for rel in files:
            with fs.open(rel, "rb") as f:
                nbytes += len(f.read())
    else:
        for rel in files:
            with open(os.path.join(source, rel), "rb") as f:
                nbytes += len(f.read())
    done = time.perf_counter()
    reads = pages = 0
    if fs is not None:
        stats = fs.chunks.backend.stats
        reads = stats.reads
        pages = sum(1 for k in stats.read_keys if k.startswith("trees/"))
    return {
        "files": len(files),
        "bytes": nbytes,
        "unpickle_s": ready - start,
        "read_s": done - ready,
        "reads": reads,
        "page_reads": pages,
    }


def _process_worker(args: tuple[Any, list[str], bool], conn: Any) -> None:
    try:
        conn.send(read_share(*args))
    except BaseException as err:
        conn.send({"error": f"{type(err).__name__}: {err}"})
    finally:
        conn.close()


def epoch_processes(source: Any, files: list[str], workers: int, pickled: bool) -> dict[str, Any]:
    """An epoch with ``workers`` spawned processes, each given the source and its share of
    the files (every ``workers``-th file, as a DataLoader's sampler deals them); timed from
    starting the workers to the last result, as an epoch of a DataLoader whose workers are
    not persistent."""
    ctx = multiprocessing.get_context("spawn")
    start = time.perf_counter()
    procs, conns = [], []
    for w in range(workers):
        parent, child = ctx.Pipe(duplex=False)
        proc = ctx.Process(
            target=_process_worker, args=((source, files[w::workers], pickled), child)
        )
        proc.start()
        child.close()
        procs.append(proc)
        conns.append(parent)
    parts = [conn.recv() for conn in conns]
    seconds = time.perf_counter() - start
    for proc in procs:
        proc.join(60)
    errors = [p["error"] for p in parts if "error" in p]
    if errors:
        raise SystemExit(f"a worker failed: {errors[0]}")
    return summarise(parts, seconds, len(files))


class _FileSet:
    """A map-style dataset (PyTorch's protocol) whose item is one file's size in bytes,
    and the store reads its worker has made so far."""

    def __init__(self, source: Any, files: list[str], pickled: bool) -> None:
        self.source, self.files, self.pickled = source, files, pickled
        self.fs: Any = None

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[int, int, int, int]:
        rel = self.files[i]
        if self.pickled:
            if self.fs is None:
                self.fs = pickle.loads(self.source)
            with self.fs.open(rel, "rb") as f:
                n = len(f.read())
            stats = self.fs.chunks.backend.stats
            pages = sum(1 for k in stats.read_keys if k.startswith("trees/"))
            return n, os.getpid(), stats.reads, pages
        with open(os.path.join(self.source, rel), "rb") as f:
            return len(f.read()), os.getpid(), 0, 0


def epoch_torch(source: Any, files: list[str], workers: int, pickled: bool) -> dict[str, Any]:
    """An epoch of ``torch.utils.data.DataLoader(num_workers=workers)``, spawned workers
    (so each receives the filesystem pickled), one file per item, in order."""
    from torch.utils.data import DataLoader

    loader = DataLoader(
        _FileSet(source, files, pickled),
        batch_size=None,
        num_workers=workers,
        multiprocessing_context="spawn",
    )
    start = time.perf_counter()
    per_worker: dict[int, dict[str, Any]] = {}
    for n, pid, reads, pages in loader:
        w = per_worker.setdefault(int(pid), {"files": 0, "bytes": 0, "reads": 0})
        w["files"] += 1
        w["bytes"] += int(n)
        w["reads"] = max(w["reads"], int(reads))
        w["page_reads"] = max(w.get("page_reads", 0), int(pages))
    seconds = time.perf_counter() - start
    return summarise(list(per_worker.values()), seconds, len(files))


def summarise(parts: list[dict[str, Any]], seconds: float, files: int) -> dict[str, Any]:
    got = sum(p["files"] for p in parts)
    if got != files:
        raise SystemExit(f"the epoch read {got} files of {files}")
    return {
        "seconds": seconds,
        "bytes": sum(p["bytes"] for p in parts),
        "reads": sum(p["reads"] for p in parts),
        "page_reads": sum(p.get("page_reads", 0) for p in parts),
        "read_s": max((p.get("read_s", 0.0) for p in parts), default=0.0),
        "unpickle_s": max((p.get("unpickle_s", 0.0) for p in parts), default=0.0),
    }


def runs_per_epoch(fs: Any) -> int:
    """The ranged reads that reading every file whole takes: one per run of a file's chunks
    that lie together in one pack (a file across a pack boundary has two)."""
    from datavc.store.reader import group
    from datavc.store.trees import iter_entries

    store = fs.chunks
    return sum(
        sum(1 for _ in group((cid, store.locate(cid)) for cid, _ in entry.chunks))
        for entry in iter_entries(store, fs.tree)
    )


def task_loader(cfg: dict[str, Any]) -> dict[str, Any]:
    fs, _ = open_fs(cfg)
    local, workers = cfg["local"], cfg["workers"]
    files = sorted(
        os.path.relpath(os.path.join(d, n), local) for d, _, names in os.walk(local) for n in names
    )
    listed = sorted(fs.find(""))
    if listed != files:
        raise SystemExit("the snapshot's files are not the local folder's")
    use_torch = importlib.util.find_spec("torch") is not None
    epoch = epoch_torch if use_torch else epoch_processes
    blob = pickle.dumps(fs)
    out: dict[str, Any] = {
        "loader": "torch DataLoader" if use_torch else "spawned processes",
        "files": len(files),
        "workers": workers,
        "pages": len(fs.tree.pages),
        "datavc": [],
        "local": [],
        "datavc_epochs": [],
        "local_epochs": [],
    }
    for r in range(cfg["rounds"]):
        order = (True, False) if r % 2 == 0 else (False, True)
        for pickled in order:
            who = "datavc" if pickled else "local"
            got = epoch(blob if pickled else local, files, workers, pickled)
            out[who].append(got["seconds"])
            out[f"{who}_epochs"].append(got)
        if out["datavc_epochs"][-1]["bytes"] != out["local_epochs"][-1]["bytes"]:
            raise SystemExit("the datavc epoch read another number of bytes than the local one")
    out["runs"] = runs_per_epoch(fs)
    if cfg.get("profile"):  # a tenth of one worker's share, in this process (no page cached)
        from datavc.store.trees import PAGES

        PAGES.clear()
        share = files[::workers]
        share = share[: max(1, len(share) // 10)]
        title = f"{len(share):,} files of one worker's share, unpickling included"
        out["profiles"] = [profiled(title, lambda: read_share(blob, share, True))]
    return out


# -- Parquet ------------------------------------------------------------------------------


def task_parquet(cfg: dict[str, Any]) -> dict[str, Any]:
    """``pandas.read_parquet`` of the whole table, and ``ParquetFile(...).read_row_group``
    of its middle row group, through ``filesystem=datavc.open(...)`` and from local disk."""
    import pandas as pd
    import pyarrow.parquet as pq

    fs, _ = open_fs(cfg)
    path, local = cfg["path"], cfg["local"]
    meta = pq.ParquetFile(local).metadata
    group = meta.num_row_groups // 2

    def table_datavc(_: Any) -> Any:
        return pd.read_parquet(path, filesystem=fs)

    def table_local(_: Any) -> Any:
        return pd.read_parquet(local)

    def group_datavc(_: Any) -> Any:
        return pq.ParquetFile(path, filesystem=fs).read_row_group(group)

    def group_local(_: Any) -> Any:
        return pq.ParquetFile(local).read_row_group(group)

    class Same:
        """DataFrames and tables compare with ``equals``, not ``==``."""

        def __init__(self, value: Any) -> None:
            self.value = value

        def __eq__(self, other: object) -> bool:
            return isinstance(other, Same) and bool(self.value.equals(other.value))

        __hash__ = None  # type: ignore[assignment]

    def wrap(fn: Callable[[Any], Any]) -> Callable[[Any], Same]:
        return lambda arg: Same(fn(arg))

    table_datavc(None)  # the tree page and pyarrow's first use: not timed
    table = rounds(cfg, lambda r: None, wrap(table_datavc), wrap(table_local))
    groups = rounds(
        {**cfg, "rounds": cfg["group_rounds"]},
        lambda r: None,
        wrap(group_datavc),
        wrap(group_local),
    )
    result: dict[str, Any] = {
        "table": table,
        "row_group": groups,
        "group": group,
        "row_groups": meta.num_row_groups,
        "group_compressed": compressed_size(meta, group),
    }
    if cfg.get("profile"):
        # read_parquet reads on pyarrow's I/O threads, out of cProfile's sight: its column
        # chunks are read here instead, through the same file object pyarrow is given
        chunks = column_chunks(meta)

        def replay() -> None:
            with fs.open(path, "rb") as f:
                for offset, length in chunks:
                    f.seek(offset)
                    f.read(length)

        result["profiles"] = [
            profiled(
                f"the {len(chunks)} column chunks of {path} read through fs.open (what "
                "read_parquet fetches; pyarrow reads them on its own threads, which cProfile "
                "does not see)",
                replay,
            ),
            profiled(
                f"ParquetFile({path}, pre_buffer=False).read_row_group({group}, use_threads=False)",
                lambda: pq.ParquetFile(path, filesystem=fs, pre_buffer=False).read_row_group(
                    group, use_threads=False
                ),
            ),
        ]
    return result


def column_chunks(meta: Any) -> list[tuple[int, int]]:
    """(offset, length) of every column chunk of every row group, in file order."""
    out = []
    for g in range(meta.num_row_groups):
        rg = meta.row_group(g)
        for c in range(rg.num_columns):
            col = rg.column(c)
            start = col.data_page_offset
            if col.has_dictionary_page and col.dictionary_page_offset is not None:
                start = min(start, col.dictionary_page_offset)
            out.append((int(start), int(col.total_compressed_size)))
    return sorted(out)


def compressed_size(meta: Any, group: int) -> int:
    """A row group's bytes as stored: the sum of its column chunks' compressed sizes."""
    rg = meta.row_group(group)
    return int(sum(rg.column(c).total_compressed_size for c in range(rg.num_columns)))


# -- S3: bytes fetched for one row group -------------------------------------------------


class CountingProxy:
    """A TCP proxy on 127.0.0.1 in front of the S3 server that counts the bytes each way
    (HTTP headers included): what datavc fetched from the store, measured on the wire."""

    def __init__(self, port: int) -> None:
        self.target = ("127.0.0.1", port)
        self.down = 0  # server to client: what was fetched
        self.up = 0
        self.connections = 0
        self._lock = threading.Lock()
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.port = int(self._sock.getsockname()[1])
        threading.Thread(target=self._accept, daemon=True).start()

    def counts(self) -> tuple[int, int]:
        with self._lock:
            return self.down, self.up

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._sock.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            with self._lock:
                self.connections += 1
            for src, dst, down in ((client, server, False), (server, client, True)):
                threading.Thread(target=self._pump, args=(src, dst, down), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, down: bool) -> None:
        try:
            while data := src.recv(256 * KiB):
                dst.sendall(data)
                with self._lock:
                    if down:
                        self.down += len(data)
                    else:
                        self.up += len(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)


def task_s3(cfg: dict[str, Any]) -> dict[str, Any]:
    """A new process reads the middle row group of the table from a store on S3 through a
    counting proxy: ``datavc.open``, ``ParquetFile`` (the footer), ``read_row_group``."""
    import pyarrow.parquet as pq

    proxy = CountingProxy(cfg["s3_port"])
    os.environ["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{proxy.port}"
    meta = pq.ParquetFile(cfg["local"]).metadata
    group = meta.num_row_groups // 2
    fs, _ = open_fs(cfg)
    after_open = proxy.counts()[0]
    pf = pq.ParquetFile(cfg["path"], filesystem=fs)
    after_footer = proxy.counts()[0]
    got = pf.read_row_group(group)
    down, up = proxy.counts()
    if not got.equals(pq.ParquetFile(cfg["local"]).read_row_group(group)):
        raise SystemExit("the row group read from S3 is not the local file's")
    stats = fs.chunks.backend.stats
    return {
        "group": group,
        "row_groups": meta.num_row_groups,
        "group_compressed": compressed_size(meta, group),
        "wire_down": down,
        "wire_up": up,
        "open_down": after_open,
        "footer_down": after_footer - after_open,
        "group_down": down - after_footer,
        "object_bytes": stats.bytes_read,
        "gets": stats.reads,
        "lists": stats.lists,
        "connections": proxy.connections,
    }


TASKS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "random": task_random,
    "ranges": task_ranges,
    "loader": task_loader,
    "parquet": task_parquet,
    "s3": task_s3,
}


def main() -> None:
    cfg = json.loads(Path(sys.argv[1]).read_text())
    result = TASKS[cfg["task"]](cfg)
    Path(sys.argv[2]).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
