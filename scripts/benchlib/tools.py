"""The tools measured on the same bytes: datavc (its CLI and ``datavc.open``), DVC, restic."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .datasets import Dataset, iter_files
from .runner import Runner, StepFailed, Timing

# -- the tools -------------------------------------------------------------------------------


def tree_stats(path: Path) -> tuple[int, int]:
    """(files, bytes) under ``path``."""
    files = total = 0
    for f in iter_files(path):
        files += 1
        total += f.stat().st_size
    return files, total


class Tool:
    """A versioning tool driven through its CLI in one workspace ``base/ws``.

    ``save`` puts the data into the store (add+commit, add+push, backup); ``restore`` brings
    it back after the data was deleted; ``restore_fresh`` does it with an empty local cache
    (a fresh clone). Each returns the summed wall time and peak RSS of its commands.
    """

    name = ""
    uses_git = True
    restores_in_place = True  # restore writes into the workspace (else into another folder)

    def __init__(self, runner: Runner, exe: list[str], base: Path) -> None:
        self.runner = runner
        self.exe = exe
        self.base = base
        self.ws = base / "ws"
        self.env: dict[str, str] = {}

    def data(self, ds: Dataset) -> Path:
        return self.ws / "data" / ds.payload

    def store(self) -> Path:
        raise NotImplementedError

    def cmd(self, *args: str) -> list[str]:
        return [*self.exe, *args]

    def timed(
        self, cmds: list[list[str]], cwd: Path | None = None, env: dict[str, str] | None = None
    ) -> Timing:
        timing = Timing()
        for c in cmds:
            timing.add(self.runner.must(c, cwd or self.ws, {**self.env, **(env or {})}))
        return timing

    def git_commit(self, message: str) -> None:
        """Commit the pointer files, config and .gitignore (the tool ignores the data)."""
        self.timed([["git", "add", "-A"], ["git", "commit", "-q", "--allow-empty", "-m", message]])

    def setup(self) -> None:
        self.base.mkdir(parents=True)
        self.ws.mkdir()
        if self.uses_git:
            self.timed([["git", "init", "-q"]])

    def save(self, ds: Dataset, version: int) -> Timing:
        raise NotImplementedError

    def restore(self, ds: Dataset) -> tuple[Timing, Path]:
        raise NotImplementedError

    def restore_fresh(self, ds: Dataset) -> tuple[Timing, Path]:
        raise NotImplementedError

    def status(self) -> Timing | None:
        return None

    def probe(self, ds: Dataset) -> dict[str, Any] | None:
        return None

    def clone(self) -> Path:
        fresh = self.base / "clone"
        self.timed([["git", "clone", "-q", str(self.ws), str(fresh)]], cwd=self.base)
        return fresh


OPEN_PROBE = """
import json, sys, time
import datavc
import datavc.fs  # what datavc.open imports on first use (fsspec): part of "import"
from blake3 import blake3
t0 = time.perf_counter()
fs = datavc.open(sys.argv[1])
with fs.open(sys.argv[2], "rb") as f:
    data = f.read()
seconds = time.perf_counter() - t0
def counts(backend):
    stats = getattr(backend, "stats", None)
    if stats is None:
        return 0, 0, []
    return stats.reads, getattr(stats, "lists", 0), list(getattr(stats, "read_keys", []))
reads, lists, keys = counts(fs.chunks.backend)
cache = getattr(fs.chunks, "cache", None)
c_reads, c_lists, c_keys = counts(cache) if cache is not None else (0, 0, [])
print(json.dumps({"seconds": seconds, "store_reads": reads, "cache_reads": c_reads,
                  "lists": lists + c_lists, "keys": keys + c_keys, "bytes": len(data),
                  "blake3": blake3(data).hexdigest()}))
"""


class Datavc(Tool):
    name = "datavc"

    def store(self) -> Path:
        return self.ws / ".datavc" / "store"

    def setup(self) -> None:
        super().setup()
        self.timed([self.cmd("init")])

    def save(self, ds: Dataset, version: int) -> Timing:
        timing = self.timed(
            [
                self.cmd("add", f"data/{ds.payload}", "--name", ds.name),
                self.cmd("commit", ds.name, "-m", f"v{version}"),
            ]
        )
        self.git_commit(f"data v{version}")
        return timing

    def restore(self, ds: Dataset) -> tuple[Timing, Path]:
        return self.timed([self.cmd("checkout", f"{ds.name}@v1")]), self.data(ds)

    def restore_fresh(self, ds: Dataset) -> tuple[Timing, Path]:
        """A fresh clone reads the first workspace's store as a store outside the repo."""
        fresh = self.clone()
        env = {"DATAVC_STORE": str(self.store())}
        timing = self.timed([self.cmd("checkout", f"{ds.name}@v1")], cwd=fresh, env=env)
        return timing, fresh / "data" / ds.payload

    def status(self) -> Timing:
        return self.timed([self.cmd("status")])

    def probe(self, ds: Dataset) -> dict[str, Any] | None:
        if ds.probe_file is None:
            return None
        python = self.exe[0]
        done = self.runner.must(
            [python, "-c", OPEN_PROBE, f"{ds.name}@v1", ds.probe_file], self.ws, self.env
        )
        result: dict[str, Any] = json.loads(done.out.strip().splitlines()[-1])
        expected = ds.fingerprints[0][ds.probe_file][1]
        if result["blake3"] != expected:
            raise StepFailed(f"datavc.open read wrong bytes for {ds.probe_file}")
        result["reads"] = result["store_reads"] + result["cache_reads"]
        return result


class Dvc(Tool):
    name = "dvc"

    def __init__(self, runner: Runner, exe: list[str], base: Path) -> None:
        super().__init__(runner, exe, base)
        self.env = {"DVC_NO_ANALYTICS": "1", "DVC_SITE_CACHE_DIR": str(base / "site-cache")}

    def store(self) -> Path:
        return self.base / "remote"

    def setup(self) -> None:
        super().setup()
        self.timed(
            [
                self.cmd("init", "-q"),
                self.cmd("remote", "add", "-d", "local", str(self.store())),
            ]
        )
        self.store().mkdir()
        self.timed([["git", "add", "-A"], ["git", "commit", "-q", "-m", "dvc init"]])

    def save(self, ds: Dataset, version: int) -> Timing:
        timing = self.timed([self.cmd("add", "-q", f"data/{ds.payload}"), self.cmd("push", "-q")])
        self.git_commit(f"data v{version}")
        return timing

    def restore(self, ds: Dataset) -> tuple[Timing, Path]:
        return self.timed([self.cmd("checkout", "-q")]), self.data(ds)

    def restore_fresh(self, ds: Dataset) -> tuple[Timing, Path]:
        fresh = self.clone()
        return self.timed([self.cmd("pull", "-q")], cwd=fresh), fresh / "data" / ds.payload

    def status(self) -> Timing:
        return self.timed([self.cmd("status", "-q")])


class Restic(Tool):
    name = "restic"
    uses_git = False
    restores_in_place = False

    def __init__(self, runner: Runner, exe: list[str], base: Path) -> None:
        super().__init__(runner, exe, base)
        self.env = {
            "RESTIC_REPOSITORY": str(self.store()),
            "RESTIC_PASSWORD": "datavc-bench",
            "RESTIC_CACHE_DIR": str(base / "cache"),
        }

    def store(self) -> Path:
        return self.base / "repo"

    def setup(self) -> None:
        super().setup()
        self.timed([self.cmd("init", "-q")])

    def save(self, ds: Dataset, version: int) -> Timing:
        return self.timed([self.cmd("backup", "-q", "--host", "bench", f"data/{ds.payload}")])

    def _restore_into(self, target: Path, env: dict[str, str] | None = None) -> Timing:
        return self.timed([self.cmd("restore", "latest", "--target", str(target))], env=env)

    def restore(self, ds: Dataset) -> tuple[Timing, Path]:
        target = self.base / "restored"
        return self._restore_into(target), target / "data" / ds.payload

    def restore_fresh(self, ds: Dataset) -> tuple[Timing, Path]:
        target = self.base / "restored-fresh"
        timing = self._restore_into(target, {"RESTIC_CACHE_DIR": str(self.base / "cache-fresh")})
        return timing, target / "data" / ds.payload


TOOLS: dict[str, type[Tool]] = {"datavc": Datavc, "dvc": Dvc, "restic": Restic}
