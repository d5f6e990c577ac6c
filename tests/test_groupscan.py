"""The walk that finds what a folder holds group by group of its stat cache
(:mod:`datavc.workspace.groupscan`), in this process and in forked workers, the range scan
beside it, and the add and status built on them."""

from __future__ import annotations

import os
import random
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import from_nothing, rand, write

from datavc.errors import BadInput, UnsafePath
from datavc.format.treecut import cut_here
from datavc.store.files import iter_scan
from datavc.workspace import groupscan, statcache
from datavc.workspace.core import Workspace
from datavc.workspace.initialize import init_workspace


@pytest.fixture
def ws(tmp_path: Path) -> Iterator[Workspace]:
    root = tmp_path / "ws"
    root.mkdir()
    init_workspace(str(root), str(tmp_path / "store"))
    yield Workspace(str(root))


def spread(monkeypatch: pytest.MonkeyPatch, workers: int) -> list[int]:
    """Walks spread over ``workers`` processes, however few the files, even beside the
    threads other tests left running (a session's S3 server): the walks fork only
    plain os calls. Returns the list of forked pids, filled as walks fork."""
    monkeypatch.setattr(groupscan, "SPREAD_MIN_FILES", 0)
    monkeypatch.setattr(groupscan, "_may_fork", lambda: True)
    monkeypatch.setenv("DATAVC_SCAN_WORKERS", str(workers))
    forked: list[int] = []
    real_fork = os.fork

    def fork() -> int:
        pid = real_fork()
        if pid:
            forked.append(pid)
        return pid

    monkeypatch.setattr(groupscan.os, "fork", fork)
    return forked


@pytest.fixture(params=[1, 2, 3])
def workers(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """Walks spread over this many processes; the test fails unless they forked."""
    forked = spread(monkeypatch, request.param)
    yield int(request.param)
    assert bool(forked) == (request.param > 1), "the walks forked as asked"


def odd_tree(root: Path) -> None:
    """Files and folders whose names sort in every awkward way: "a.txt" before "a/",
    "a-b" before "a/", folders at several depths, names that are not ASCII."""
    rng = random.Random(3)
    names = ["a", "a.txt", "a-b", "b", "é", "z", "0", "a0", "B.c"]
    for i in range(400):
        depth = rng.randrange(1, 4)
        parts = [rng.choice(names) for _ in range(depth)]
        path = root.joinpath(*parts[:-1], f"{parts[-1]}{i % 7}.dat")
        if any(p.is_file() for p in path.parents if root in p.parents):
            continue
        write(path, rand(i, rng.randrange(0, 40)))


def reference(root: Path, bounds: list[str | None]) -> list[tuple[int, bytes]]:
    """Each group's count and digest as the plain scan gives them."""
    out = []
    for _, files in statcache.split_scan(iter_scan(str(root), "dir"), bounds):
        listed = list(files)
        out.append((len(listed), statcache.scan_digest(listed)))
    return out


def some_bounds(paths: list[str], rng: random.Random, n: int) -> list[str | None]:
    """``n`` - 1 bounds picked among the paths and between them (a bound that is a
    folder's name, or no path at all), then None."""
    picked = set(rng.sample(paths, n - 3))
    picked |= {paths[len(paths) // 3].rsplit("/", 1)[0], paths[len(paths) // 2] + "~"}
    return [*sorted(picked), None]


def test_seen_groups_give_what_the_scan_gives(tmp_path: Path, workers: int) -> None:
    root = tmp_path / "d"
    odd_tree(root)
    paths = [f.path for f in iter_scan(str(root), "dir")]
    rng = random.Random(workers)
    for n in (3, 12, 40):
        bounds = some_bounds(paths, rng, n) if n > 3 else [paths[10], paths[-5], None]
        counts = [c for c, _ in reference(root, bounds)]
        seen = groupscan.seen_groups(str(root), "dir", bounds, counts, check=True)
        assert [(s.count, s.digest) for s in seen] == reference(root, bounds)
        assert not any(s.odd for s in seen)
        assert sum(counts) == len(paths)


def test_a_range_scan_is_the_scan_cut_to_its_range(tmp_path: Path) -> None:
    root = tmp_path / "d"
    odd_tree(root)
    whole = [f.path for f in iter_scan(str(root), "dir")]
    rng = random.Random(5)
    cuts = [*rng.sample(whole, 6), whole[0], whole[-1], "a", "a/", "a0", "zz", ""]
    for after in [None, *cuts]:
        for upto in [None, *cuts]:
            got = [f.path for f in iter_scan(str(root), "dir", after=after, upto=upto)]
            want = [
                p for p in whole if (after is None or p > after) and (upto is None or p <= upto)
            ]
            assert got == want, (after, upto)


def test_ranges_are_contiguous_and_even() -> None:
    rng = random.Random(1)
    for _ in range(200):
        counts = [rng.randrange(0, 5000) for _ in range(rng.randrange(1, 60))]
        for workers in range(1, 9):
            ranges = groupscan._ranges(counts, workers)
            assert ranges[0][0] == 0 and ranges[-1][1] == len(counts)
            assert all(a < b for a, b in ranges)  # none empty
            assert all(ranges[i][1] == ranges[i + 1][0] for i in range(len(ranges) - 1))
            assert len(ranges) == min(workers, len(counts))
            if len(counts) >= 8 * workers and min(counts) > 0:
                biggest = max(sum(counts[a:b]) for a, b in ranges)
                assert biggest <= sum(counts) / workers + max(counts)


def test_a_group_with_a_link_is_odd_and_only_it(tmp_path: Path, workers: int) -> None:
    root = tmp_path / "d"
    for i in range(300):
        write(root / f"{i // 50}" / f"{i:03d}.txt", b"x%d" % i)
    os.symlink("000.txt", root / "3" / "150-link.txt")
    bounds: list[str | None] = ["1/099.txt", "2/149.txt", "3/199.txt", "4/249.txt", None]
    seen = groupscan.seen_groups(str(root), "dir", bounds, [60] * 5, check=False)
    assert [s.odd for s in seen] == [False, False, True, False, False]
    assert [s.count for s in seen] == [100, 50, 50, 50, 50]


def test_a_name_that_breaks_the_rules_makes_every_group_odd(tmp_path: Path, workers: int) -> None:
    root = tmp_path / "d"
    for i in range(300):
        write(root / f"{i // 50}" / f"f{i:03d}.txt", b"x")
    bounds: list[str | None] = ["1/f099.txt", "3/f199.txt", None]
    clean = groupscan.seen_groups(str(root), "dir", bounds, [100] * 3, check=True)
    assert not any(s.odd for s in clean)
    write(root / "4" / "F210.txt", b"y")  # as "4/f210.txt" by case
    seen = groupscan.seen_groups(str(root), "dir", bounds, [100] * 3, check=True)
    assert seen[2].odd  # the walk that listed folder 4 refused it: its groups are odd
    if workers == 1:
        assert all(s.odd for s in seen)
    unchecked = groupscan.seen_groups(str(root), "dir", bounds, [100] * 3, check=False)
    assert not any(s.odd for s in unchecked)


def test_a_worker_that_fails_has_its_range_walked_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    forked = spread(monkeypatch, 2)
    root = tmp_path / "d"
    odd_tree(root)
    paths = [f.path for f in iter_scan(str(root), "dir")]
    bounds = some_bounds(paths, random.Random(2), 10)
    counts = [c for c, _ in reference(root, bounds)]
    parent = os.getpid()
    walks: list[int] = []
    real_run, real_encode = groupscan._Walk.run, groupscan._encode

    def run(self: groupscan._Walk) -> list[groupscan.Seen]:
        if os.getpid() == parent:
            walks.append(self.group)
        return real_run(self)

    def encode(seen: list[groupscan.Seen]) -> bytes:
        if os.getpid() != parent:
            raise OSError("the worker fails")
        return real_encode(seen)

    monkeypatch.setattr(groupscan._Walk, "run", run)
    monkeypatch.setattr(groupscan, "_encode", encode)
    seen = groupscan.seen_groups(str(root), "dir", bounds, counts, check=True)
    assert [(s.count, s.digest) for s in seen] == reference(root, bounds)
    assert len(walks) == 2  # its own range, then the failed worker's
    monkeypatch.setattr(groupscan, "_encode", real_encode)
    walks.clear()
    assert groupscan.seen_groups(str(root), "dir", bounds, counts, check=True) == seen
    assert len(walks) == 1  # the worker's answer was used
    assert len(forked) == 2


# -- add and status on the walk ---------------------------------------------------------


def many(folder: Path, n: int, per_folder: int = 100) -> None:
    for i in range(n):
        write(folder / f"{i // per_folder:03d}" / f"{i:05d}.txt", b"file %d\n" % i)


def test_adds_with_the_walk_spread_equal_adds_from_nothing(
    ws: Workspace, trusted: None, workers: int
) -> None:
    """Rounds of edits (a changed page's kept entries carried over in runs, its changed
    files read): each add gives the snapshot a fresh add of the same files gives, and
    status then finds the folder clean."""
    data = Path(ws.root) / "d"
    many(data, 9000)
    rng = random.Random(workers)
    first = ws.add(str(data))
    ws.commit([first.staged.name], "v1")
    for round_ in range(3):
        files = sorted(p for p in data.rglob("*") if p.is_file())
        for p in rng.sample(files, 6):
            p.unlink()
        for p in rng.sample(files, 6):
            if p.exists():
                p.write_bytes(rand((round_, p.name), 30))
        for k in range(6):
            write(data / f"{rng.randrange(95):03d}" / f"n{round_}-{k}.txt", b"n%d" % k)
        result = Workspace(ws.root).add(str(data))
        assert result.counts[0] == 6 and result.counts[2] >= 1
        assert from_nothing(data, Path(ws.root).parent / f"scratch{round_}") == result.staged.tree
        assert [s.state for s in Workspace(ws.root).status()] == ["staged"]


def test_status_with_the_walk_spread_sees_each_change(
    ws: Workspace, trusted: None, workers: int
) -> None:
    data = Path(ws.root) / "d"
    many(data, 6000)
    result = ws.add(str(data))
    ws.commit([result.staged.name], "v1")
    assert [s.state for s in Workspace(ws.root).status()] == ["clean"]
    (data / "010" / "01001.txt").write_bytes(b"other\n")
    os.unlink(data / "030" / "03003.txt")
    write(data / "059" / "new.txt", b"new\n")
    status = Workspace(ws.root).status()[0]
    assert status.state == "modified"
    assert status.diff.modified == ("010/01001.txt",)
    assert status.diff.removed == ("030/03003.txt",)
    assert status.diff.added == ("059/new.txt",)


def test_add_refuses_a_case_clash_with_a_file_of_a_page_kept_whole(
    ws: Workspace, trusted: None, workers: int
) -> None:
    """A new name that equals, but for case, a name of the same folder in another page:
    the page of the old name is unchanged (it would be kept unread), and still the add
    refuses the pair, as a scan of every file did."""
    data = Path(ws.root) / "d"
    names = [f"a{i:04d}.txt" for i in range(6000)]
    for name in names:
        write(data / "m" / name, b"x")
    cuts = [n for n in names if cut_here(f"m/{n}".encode())]
    assert cuts, "the folder spans pages"
    result = ws.add(str(data))
    ws.commit([result.staged.name], "v1")
    partner = names[-1]  # after the folder's first cut: another page than "m/A..."
    write(data / "m" / partner.upper(), b"y")  # sorts before every "m/a...": first page
    with pytest.raises(UnsafePath, match="differs only by case"):
        Workspace(ws.root).add(str(data))


def test_add_refuses_a_link_in_a_changed_folder(ws: Workspace, trusted: None, workers: int) -> None:
    data = Path(ws.root) / "d"
    many(data, 3000)
    result = ws.add(str(data))
    ws.commit([result.staged.name], "v1")
    os.symlink("00000.txt", data / "020" / "link.txt")
    with pytest.raises(BadInput, match="symbolic link"):
        Workspace(ws.root).add(str(data))


def test_the_folder_of_a_staged_dataset_is_not_walked_for_pointer_files(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pointer files are looked for beside datasets, not in them: a dataset added and not
    yet committed is skipped like a committed one (a commit of a million new files
    walked them all), and the workspace is walked once per add."""
    data = Path(ws.root) / "d"
    many(data, 300)
    other = Path(ws.root) / "e"
    many(other, 10)
    ws.add(str(data))
    ws.add(str(other))
    listed: list[str] = []
    real_walk = os.walk

    def walk(
        top: str, *args: object, **kwargs: object
    ) -> Iterator[tuple[str, list[str], list[str]]]:
        for current, dirs, files in real_walk(top, *args, **kwargs):  # type: ignore[arg-type]
            listed.append(os.path.relpath(current, ws.root))
            yield current, dirs, files

    monkeypatch.setattr(os, "walk", walk)
    assert sorted(Workspace(ws.root).datasets()) == ["d", "e"]
    assert not [p for p in listed if p.split(os.sep)[0] in ("d", "e")]
    walks = listed.count(".")
    (data / "000" / "00000.txt").write_bytes(b"changed\n")
    Workspace(ws.root).add(str(data))
    assert listed.count(".") == walks + 1


def test_a_folder_that_cannot_be_listed_makes_every_group_it_reaches_odd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: int
) -> None:
    """Folder 2's files fall in three groups: each is odd (its caller's scan meets the
    error), the others are not; the root gone makes them all odd."""
    root = tmp_path / "d"
    for i in range(500):
        write(root / f"{i // 100}" / f"{i:03d}.txt", b"x%d" % i)
    bounds: list[str | None] = ["1/150.txt", "2/220.txt", "2/260.txt", "3/333.txt", None]
    real = os.listdir

    def listdir(path: object = ".") -> list[str]:
        if isinstance(path, int) and os.readlink(f"/proc/self/fd/{path}").endswith("/d/2"):
            raise PermissionError(13, "Permission denied")
        return real(path)  # type: ignore[arg-type]

    monkeypatch.setattr(groupscan.os, "listdir", listdir)
    seen = groupscan.seen_groups(str(root), "dir", bounds, [100] * 5, check=True)
    assert [s.odd for s in seen] == [False, True, True, True, False]
    # a group ending at the last file before the folder: not odd (nothing of it is unread)
    before: list[str | None] = ["1/199.txt", "2/250.txt", None]
    seen = groupscan.seen_groups(str(root), "dir", before, [100] * 3, check=False)
    assert [s.odd for s in seen] == [False, True, True]
    gone = groupscan.seen_groups(str(tmp_path / "nothing"), "dir", bounds, [100] * 5, False)
    assert all(s.odd for s in gone)


def test_a_group_that_lost_many_files_is_compared_whole(
    ws: Workspace, trusted: None, workers: int
) -> None:
    """The files a group lost count against the delta's limit as changed ones do: past
    it, no list of them is carried (the add compares the group file by file)."""
    data = Path(ws.root) / "d"
    many(data, 6000, per_folder=1000)
    first = ws.add(str(data))
    ws.commit([first.staged.name], "v1")
    shutil.rmtree(data / "003")
    cache = statcache.StatCache(str(Path(ws.root) / ".datavc/state/stat/d.cache"))
    bounds = [g.last for g in cache.groups]
    counts = [g.count for g in cache.groups]
    seen = groupscan.seen_groups(str(data), "dir", bounds, counts, True, (cache, cache.groups))
    lost = [s for s, g in zip(seen, cache.groups, strict=True) if s.count < g.count]
    assert lost and all(s.changed is None or len(s.gone) <= 256 for s in lost)
    assert any(s.changed is None for s in lost)
    result = Workspace(ws.root).add(str(data))
    assert result.counts == (0, 0, 1000)
    assert from_nothing(data, Path(ws.root).parent / "scratch") == result.staged.tree
