"""Tags (issue 13, item 5) and the command line's polish (item 6): --version, -h, --json on
status, log, ls, diff, tag --list and fsck, and help texts without raw placeholders."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from helpers import run, write

import datavc


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    run(root, "init")
    for i in range(3):
        write(root / "data" / "d" / "a.txt", f"version {i + 1}\n".encode())
        write(root / "data" / "d" / f"only{i + 1}.txt", b"x")
        run(root, "add", "data/d")
        run(root, "commit", "-m", f"v{i + 1}")
    return root


def test_tags(repo: Path) -> None:
    assert run(repo, "tag", "d@v2", "prod").stdout.strip() == "d@prod -> v2"
    assert run(repo, "tag", "d@v2", "prod").stdout.strip() == "d@prod -> v2"  # same: no error
    err = run(repo, "tag", "d@v3", "prod", code=2).stderr
    assert "names v2: use --force" in err
    assert "d@prod -> v3 (moved from v2)" in run(repo, "tag", "d@v3", "prod", "--force").stdout
    run(repo, "tag", "d@v1", "first")
    assert run(repo, "ls", "d@first").stdout.startswith("d@v1 ")
    assert run(repo, "tag", "--list").stdout.splitlines() == ["d@first -> v1", "d@prod -> v3"]
    assert json.loads(run(repo, "tag", "--list", "d", "--json").stdout) == {
        "d": {"first": 1, "prod": 3}
    }
    log = run(repo, "log", "d").stdout
    assert "v3  " in log and "(tags: prod)" in log and "(tags: first)" in log
    for bad in ("v7", "latest", "abcdef12", "_x", "a..b", "a/b"):
        run(repo, "tag", "d@v1", bad, code=8)
    run(repo, "tag", "d@v9", "nine", code=3)
    assert "deleted tag d@first (was v1)" in run(repo, "tag", "--delete", "d", "first").stdout
    run(repo, "tag", "--delete", "d", "first", code=3)
    run(repo, "tag", "d@first", code=2)  # one word: not a usage datavc knows


def test_version_and_short_help(repo: Path) -> None:
    assert run(repo, "--version").stdout.strip() == f"datavc {datavc.__version__}"
    assert run(repo, "-h").stdout == run(repo, "--help").stdout
    listing = run(repo, "-h").stdout.split("Commands:", 1)[1]
    commands = re.findall(r"^  (\w[\w-]*)\s", listing, re.M)
    assert {"init", "add", "commit", "checkout", "status", "fsck", "gc", "tag"} <= set(commands)
    for command in commands:
        text = run(repo, command, "-h").stdout
        assert text == run(repo, command, "--help").stdout
        # no raw placeholders, nothing contradictory
        for bad in ("{", "<str>", "<int", "(default: what the pointer says)"):
            assert bad not in text, (command, bad, text)
        assert re.search(r"^Usage: datavc " + command, text, re.M), text


def test_json_outputs(repo: Path) -> None:
    status = json.loads(run(repo, "status", "--json").stdout)
    assert status == [
        {
            "name": "d",
            "path": "data/d",
            "state": "clean",
            "detail": "matches v3",
            "added": [],
            "modified": [],
            "removed": [],
        }
    ]
    write(repo / "data" / "d" / "new\x1b.txt", b"n")
    status = json.loads(run(repo, "status", "--json").stdout)
    assert status[0]["state"] == "modified" and status[0]["added"] == ["new\x1b.txt"]
    log = json.loads(run(repo, "log", "d", "--json").stdout)
    assert [r["version"] for r in log] == [3, 2, 1]
    assert log[0]["parent"] == 2 and log[0]["message"] == "v3" and log[0]["tags"] == []
    assert set(log[0]["stats"]) == {"files", "bytes", "new_bytes", "new_chunks", "new_objects"}
    ls = json.loads(run(repo, "ls", "d@v2", "--json").stdout)
    assert ls["name"] == "d" and ls["version"] == 2 and len(ls["snapshot"]) == 64
    assert [f["path"] for f in ls["files"]] == ["a.txt", "only1.txt", "only2.txt"]
    assert ls["files"][0]["mode"] == "100644" and ls["files"][0]["size"] == 10
    diff = json.loads(run(repo, "diff", "d@v2", "d@v3", "--json").stdout)
    assert diff == {
        "from": "d@v2",
        "to": "d@v3",
        "changes": [
            {"change": "modified", "path": "a.txt"},
            {"change": "added", "path": "only3.txt"},
        ],
    }
    assert json.loads(run(repo, "diff", "d@v1", "--json").stdout)["from"] is None
    fsck = json.loads(run(repo, "fsck", "--json").stdout)
    assert fsck["ok"] is True and fsck["checked"]["versions"] == 3
