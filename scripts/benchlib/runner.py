"""Running commands: wall time and the peak RSS of a process tree, with a timeout."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# -- running commands ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Run:
    """One finished command: wall seconds and the peak RSS of its process tree (KiB)."""

    cmd: list[str]
    code: int
    seconds: float
    rss_kib: int
    out: str
    err: str
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.code == 0 and not self.timed_out

    def failure(self) -> str:
        why = "timed out" if self.timed_out else f"exited {self.code}"
        tail = (self.err.strip() or self.out.strip()).splitlines()[-3:]
        return f"`{shlex.join(self.cmd[:4])}` {why}: {' | '.join(tail)[:400]}"


class StepFailed(Exception):
    """A measured step did not succeed; the message says which command and why."""


# Runs one command and reports its wall time and peak RSS (``os.wait4``'s ru_maxrss, KiB). A
# child forked from this process would inherit its high-water RSS (the datasets are generated
# here), so a small interpreter in between spawns the command and measures it.
LAUNCHER = """
import json, os, sys, time
out, cmd = sys.argv[1], sys.argv[2:]
start = time.perf_counter()
try:
    pid = os.posix_spawnp(cmd[0], cmd, os.environ)
except OSError as e:
    result = {"code": 127, "seconds": 0.0, "rss_kib": 0, "error": str(e)}
else:
    _, status, usage = os.wait4(pid, 0)
    seconds = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    result = {"code": code, "seconds": seconds, "rss_kib": usage.ru_maxrss}
with open(out, "w") as f:
    json.dump(result, f)
"""


class Runner:
    """Runs commands with a timeout (the whole process group is killed), in a session of
    their own, with stdout and stderr captured in files."""

    def __init__(self, timeout: float, env: dict[str, str], scratch: Path) -> None:
        self.timeout = timeout
        self.env = env
        self.result = scratch / "launcher.json"

    def run(self, cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> Run:
        full_env = {**self.env, **(env or {})}
        launcher = [sys.executable, "-I", "-S", "-c", LAUNCHER, str(self.result), *cmd]
        self.result.unlink(missing_ok=True)
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            try:
                proc = subprocess.Popen(
                    launcher,
                    cwd=cwd,
                    env=full_env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    start_new_session=True,
                )
            except OSError as e:
                return Run(cmd, 127, 0.0, 0, "", str(e))
            timed_out = _wait(proc, self.timeout)
            result = self._result()
            return Run(
                cmd,
                int(result.get("code", proc.returncode)),
                float(result.get("seconds", 0.0)),
                int(result.get("rss_kib", 0)),
                _text(out),
                _text(err) + str(result.get("error", "")),
                timed_out,
            )

    def _result(self) -> dict[str, Any]:
        try:
            doc: dict[str, Any] = json.loads(self.result.read_text())
        except (OSError, ValueError):
            return {}
        return doc

    def must(self, cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> Run:
        done = self.run(cmd, cwd, env)
        if not done.ok:
            raise StepFailed(done.failure())
        return done


def _wait(proc: subprocess.Popen[bytes], timeout: float) -> bool:
    """Wait for ``proc``; after ``timeout`` kill its process group. True if it timed out."""
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc.pid)
        proc.wait()
        return True
    except BaseException:
        _kill_group(proc.pid)
        proc.wait()
        raise
    return False


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def _text(f: Any) -> str:
    f.seek(0)
    return str(f.read().decode(errors="replace"))


@dataclass(slots=True)
class Timing:
    """The sum of the wall times of one operation's commands and the largest peak RSS."""

    seconds: float = 0.0
    rss_kib: int = 0
    output: str = ""

    def add(self, run: Run) -> None:
        self.seconds += run.seconds
        self.rss_kib = max(self.rss_kib, run.rss_kib)
        self.output += run.out
