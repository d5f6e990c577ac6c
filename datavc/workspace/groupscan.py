"""What a folder holds, group by group of its stat cache, without building a file list:
for each group, how many files fall in its path range and the digest of their paths and
stat fields (what :func:`.statcache.scan_digest` gives). ``status`` and ``add`` compare
these with the cache's groups and scan again, file by file, only the groups that differ.

Most of the time goes to one ``lstat`` per file. A folder of many files is split into
contiguous ranges of groups, one per worker process (``os.fork``: nothing to import or
pickle), each walking only the folders its paths fall in; the calling process walks the
first range itself. Workers are used only where forking is safe (no other thread runs in
the process) and worth it (at least :data:`SPREAD_MIN_FILES` files); their number is
``DATAVC_SCAN_WORKERS``, by default the CPUs this process may run on, at most
:data:`MAX_WORKERS`. A worker that fails has its range walked here instead.

A group is *odd* when its walk met anything a scan would refuse or could not read (a
link, a special file, a name that is not UTF-8, a file gone between listing and lstat):
the caller scans it again, which gives the real error. With ``check``, each folder's names
are also checked as :class:`~datavc.format.paths.SortedPathCheck` would (rules, and no two
names in a folder equal by case), the whole listing of every folder a walk enters: a name
that fails makes every group of that walk odd. Each name lies in a group of a walk that
listed its folder, so the caller scans (and checks) it, and any name it clashes with, again.
"""

from __future__ import annotations

import os
import struct
import threading
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from itertools import chain, repeat
from operator import attrgetter
from stat import S_ISDIR, S_ISREG

from ..errors import BadInput, UnsafePath
from ..format.paths import check_depth, check_last_part, check_path
from ..store.files import LocalFile, below, local_from_stat
from .statcache import KEY, UNUSABLE, Group, GroupDigest, StatCache

SPREAD_MIN_FILES = 50_000  # fewer files: walked in this process (a fork costs milliseconds)
MAX_WORKERS = 8
_MODE = attrgetter("st_mode")
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_SEEN = struct.Struct("<IB32s")  # count, odd, digest: one group of a worker's answer


@dataclass(frozen=True, slots=True)
class Seen:
    """One group's files as found: their number and digest, or odd (scan it yourself).

    With a cache to compare with (``against``), an exact group whose files differ from
    its rows also says how: ``changed``, the files with no row or whose stat fields differ
    from their row's, in path order; ``gone``, the rows with no file. None when not worked
    out (more than :data:`DELTA_FILES` changed, or past :data:`DELTA_TOTAL` in the walk):
    the caller scans the group itself."""

    count: int
    digest: bytes
    odd: bool
    changed: tuple[LocalFile, ...] | None = None
    gone: tuple[str, ...] = ()


_Found = tuple[str, str, bytes, os.stat_result]  # path, base, packed stat key, lstat
DELTA_FILES = 256  # changed files one group's answer lists at most
DELTA_TOTAL = 16_384  # and one walk (a worker's answer stays small)


def unchanged(seen: Seen, g: Group) -> bool:
    """Whether a group's files are those its rows recorded, and its rows its page's
    entries: the page still describes them, unread."""
    return g.exact and not seen.odd and seen.count == g.count and seen.digest == g.digest


def seen_groups(
    root: str,
    kind: str,
    bounds: Sequence[str | None],
    counts: Sequence[int],
    check: bool,
    against: tuple[StatCache, Sequence[Group]] | None = None,
) -> list[Seen]:
    """Each group's files under ``root``: group i takes the paths above ``bounds[i-1]``
    up to ``bounds[i]`` (the last bound is None: to the end). ``counts``: how many files
    each group had (to share the work out evenly). ``against``: the cache and its groups
    (one per bound) to work out how changed exact groups differ (see :class:`Seen`)."""
    if not bounds or bounds[-1] is not None:
        raise ValueError("the last group must be open-ended")
    if against is not None and len(against[1]) != len(bounds):
        raise ValueError("one group of the cache per bound")
    walk = _Spec(root, kind, bounds, check, against)
    workers = _workers(sum(counts)) if kind == "dir" else 1
    if workers <= 1:
        return _Walk(walk, 0, len(bounds)).run()
    return _spread(walk, _ranges(counts, workers))


@dataclass(frozen=True, slots=True)
class _Spec:
    root: str
    kind: str
    bounds: Sequence[str | None]
    check: bool
    against: tuple[StatCache, Sequence[Group]] | None


def _may_fork() -> bool:
    """Whether a worker may be forked: only with no other thread in this process (one
    could hold a lock the child would wait on forever)."""
    return hasattr(os, "fork") and threading.active_count() == 1


def _workers(files: int) -> int:
    if files < SPREAD_MIN_FILES or not _may_fork():
        return 1
    wanted = os.environ.get("DATAVC_SCAN_WORKERS", "")
    if wanted.isdigit() and int(wanted) > 0:
        return min(int(wanted), MAX_WORKERS)
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, MAX_WORKERS))


def _ranges(counts: Sequence[int], workers: int) -> list[tuple[int, int]]:
    """Contiguous ranges of groups, one per worker (or per group, if fewer), of about
    equal file counts; none empty."""
    n = min(workers, len(counts))
    total = sum(counts)
    ranges: list[tuple[int, int]] = []
    start, done = 0, 0
    for i, count in enumerate(counts):
        done += count
        need = n - len(ranges) - 1  # ranges still to make after this one
        if need and (len(counts) - i - 1 == need or done * n >= total * (len(ranges) + 1)):
            ranges.append((start, i + 1))
            start = i + 1
    ranges.append((start, len(counts)))
    return ranges


def _spread(spec: _Spec, ranges: list[tuple[int, int]]) -> list[Seen]:
    """Walk ``ranges[1:]`` in forked workers and ``ranges[0]`` here; in order."""
    kids: list[tuple[int, int, int, int]] = []  # pid, read end, first group, end
    try:
        for a, b in ranges[1:]:
            read, write = os.pipe()
            code = 1
            try:
                pid = os.fork()
            except OSError:
                os.close(read)
                os.close(write)
                raise
            if pid == 0:  # the worker: its answer on the pipe, then out, whatever happens
                try:
                    os.close(read)
                    answer = _encode(_Walk(spec, a, b).run())
                    with open(write, "wb") as out:
                        out.write(answer)
                    code = 0
                finally:
                    os._exit(code)
            os.close(write)
            kids.append((pid, read, a, b))
        seen = _Walk(spec, *ranges[0]).run()
        while kids:
            pid, read, a, b = kids[0]
            with open(read, "rb") as f:
                answer = f.read()
            _, status = os.waitpid(pid, 0)
            kids.pop(0)
            got = (
                _decode(answer, spec.root, b - a)
                if os.waitstatus_to_exitcode(status) == 0
                else None
            )
            seen += got if got is not None else _Walk(spec, a, b).run()
        return seen
    finally:
        for pid, read, _, _ in kids:  # interrupted: the workers still running are stopped
            with suppress(OSError):
                os.kill(pid, 9)
            with suppress(OSError):
                os.waitpid(pid, 0)
            with suppress(OSError):
                os.close(read)


def _encode(seen: list[Seen]) -> bytes:
    """A worker's answer (read by the process that forked it, nothing else)."""
    import pickle  # (only where a walk is spread: not on every status's start-up)

    return pickle.dumps(
        [
            (
                s.count,
                s.digest,
                s.odd,
                None
                if s.changed is None
                else [(f.path, f.size, f.mode, f.mtime_ns, f.ctime_ns, f.inode) for f in s.changed],
                s.gone,
            )
            for s in seen
        ]
    )


def _decode(answer: bytes, root: str, groups: int) -> list[Seen] | None:
    import pickle

    try:
        rows = pickle.loads(answer)
    except Exception:  # a worker cut short: its range is walked here
        return None
    if len(rows) != groups:
        return None
    return [
        Seen(
            count,
            digest,
            odd,
            None if changed is None else tuple(LocalFile(f[0], root, *f[1:]) for f in changed),
            tuple(gone),
        )
        for count, digest, odd, changed, gone in rows
    ]


class _Walk:
    """The groups ``first`` to ``end`` - 1 of a folder, walked in path order."""

    def __init__(self, spec: _Spec, first: int, end: int) -> None:
        self.root, self.kind, self.bounds, self.end = spec.root, spec.kind, spec.bounds, end
        self.check, self.against = spec.check, spec.against
        bounds = spec.bounds
        self.after = bounds[first - 1] if first else None
        self.delta_left = DELTA_TOTAL
        # the group's files so far (with ``against``): path, base, key, lstat
        self.files: list[_Found] | None = [] if self.against is not None else None
        self.upto = bounds[end - 1]
        self.group = first
        self.bound = bounds[first]
        self.parts: list[bytes] = []
        self.seen: list[Seen] = []
        self.digest = GroupDigest()
        self.count = 0
        self.odd = False
        self.odd_below: str | None = None  # groups reaching below this are odd (_unreadable)
        self.refused = False  # a name failed the checks, or the root is gone: every group odd

    def run(self) -> list[Seen]:
        try:
            st = os.lstat(self.root)
        except OSError:
            st = None
        if self.kind == "file":
            if st is None or not S_ISREG(st.st_mode):
                self.refused = True
            else:
                self._file(os.path.basename(self.root), st)
        elif st is None:
            self.refused = True
        else:
            self._folder(self.root, "")
        while self.group < self.end:
            self._close()
        if self.refused:
            return [Seen(s.count, s.digest, True) for s in self.seen]
        return self.seen

    def _close(self) -> None:
        self._flush()
        seen = Seen(self.count, self.digest.digest(), self.odd)
        if self.files is not None:
            seen = self._delta(seen, self.files)
            self.files = []
        self.seen.append(seen)
        ended = self.bound  # the next group's paths are all above it
        self.digest, self.count = GroupDigest(), 0
        self.odd = ended is not None and self.odd_below is not None and ended < self.odd_below
        self.group += 1
        self.bound = self.bounds[self.group] if self.group < self.end else None

    def _delta(self, seen: Seen, files: list[_Found]) -> Seen:
        """``seen`` with how its files differ from its exact group's rows, if few do."""
        assert self.against is not None
        cache, groups = self.against
        g = groups[self.group]
        if seen.odd or not g.exact or unchanged(seen, g):
            return seen
        rows = {path: key for path, key, _ in cache.row_list(g)}
        if len(rows) != g.count:  # the cache changed under us
            return seen
        changed: list[LocalFile] = []
        most = min(DELTA_FILES, self.delta_left)
        for path, base, key, st in files:
            old = rows.pop(path, None)
            if old is None or old == UNUSABLE or old != key:
                changed.append(local_from_stat(path, base, st))
                if len(changed) > most:
                    return seen
        if len(changed) + len(rows) > most:  # (rows left: those with no file)
            return seen
        self.delta_left -= len(changed) + len(rows)
        return Seen(seen.count, seen.digest, False, tuple(changed), tuple(rows))

    def _unreadable(self, folder: str) -> None:
        """A folder that cannot be listed: every group its paths may fall in is odd (the
        caller's scan of them meets the error), the whole walk's if it is the root."""
        if not folder:
            self.refused = True
            return
        self._place(folder)
        self.odd = True
        end = below(folder)
        if self.odd_below is None or end > self.odd_below:
            self.odd_below = end

    def _flush(self) -> None:
        self.digest.feed(b"".join(self.parts))
        self.parts.clear()

    def _folder(self, abspath: str, rel: str) -> bool:
        """Walk one folder; True once past ``upto`` (the walk stops). The loop over its
        files is what a walk costs: it is kept to local names and C calls."""
        check_depth(rel)  # (the walk recurses by folder)
        try:  # (lstat relative to the folder's descriptor: shorter lookups than by path)
            fd = os.open(abspath, os.O_RDONLY | _DIRECTORY)
        except OSError:  # gone or unreadable since its parent was listed
            self._unreadable(rel)
            return False
        try:
            return self._entries(fd, abspath, rel)
        finally:
            os.close(fd)

    def _entries(self, fd: int, abspath: str, rel: str) -> bool:
        after, upto, parts, pack = self.after, self.upto, self.parts, KEY.pack
        lstat, root = os.stat, self.root
        try:
            names = os.listdir(fd)
        except OSError:
            self._unreadable(rel)
            return False
        names.sort()
        if self.check:
            self._check_names(rel, names)
        if names and self._whole_folder(fd, rel, names):
            return False
        found: list[tuple[str, os.stat_result | None]] = []
        folders = False
        for name in names:  # every entry's lstat, in name order
            try:
                st: os.stat_result | None = lstat(name, dir_fd=fd, follow_symlinks=False)
            except OSError:  # gone since the listing
                st = None
            if st is not None and S_ISDIR(st.st_mode):
                found.append((name + "/", st))
                folders = True
            else:
                found.append((name, st))
        if folders:  # a folder sorts as its name + "/" (``a.txt`` before ``a/b``)
            found.sort(key=_first)
        for key, st in found:
            path = rel + key
            if upto is not None and path > upto:
                return True
            if after is not None and path <= after and (key[-1] != "/" or below(path) <= after):
                continue
            if key[-1] == "/":
                if self._folder(os.path.join(abspath, key[:-1]), path):
                    return True
                continue
            bound = self.bound
            if bound is not None and path > bound:
                self._place(path)
            files = self.files  # (a new list for each group)
            if st is None or not S_ISREG(st.st_mode):  # gone, or not a regular file
                self.odd = True
                continue
            try:
                key_ = pack(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
            except struct.error:  # a stat field out of range: never matched
                key_ = UNUSABLE
            try:
                parts += (path.encode(), b"\0", key_)
            except UnicodeEncodeError:  # not UTF-8
                self.odd = True
                continue
            self.count += 1
            if files is not None:
                files.append((path, root, key_, st))
            if len(parts) >= 3 * 4096:
                self._flush()
        return False

    def _whole_folder(self, fd: int, rel: str, names: list[str]) -> bool:
        """Most folders: all in range and in the current group, files only (no delta
        kept): walked in one tight loop. False, with nothing added, if the folder is not
        such a one (a subfolder or an odd entry found on the way)."""
        first, last, bound = rel + names[0], rel + names[-1], self.bound
        if self.files is not None or (bound is not None and last > bound):
            return False
        if (self.after is not None and first <= self.after) or (
            self.upto is not None and last > self.upto
        ):
            return False
        pack, lstat = KEY.pack, os.stat
        try:  # (each step a comprehension or a C-level map: no Python loop body per file)
            stats = [lstat(name, dir_fd=fd, follow_symlinks=False) for name in names]
            if not all(map(S_ISREG, map(_MODE, stats))):
                return False
            keys = [pack(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino) for st in stats]
            paths = [(rel + name).encode() for name in names]
        except (OSError, UnicodeEncodeError, struct.error):
            return False  # the careful walk sorts it out
        self.parts.append(b"".join(chain.from_iterable(zip(paths, repeat(b"\0"), keys))))
        self.count += len(names)
        if len(self.parts) >= 3 * 4096:
            self._flush()
        return True

    def _place(self, path: str) -> None:
        """Close the groups that end before ``path``."""
        while self.bound is not None and path > self.bound:
            self._close()

    def _file(self, path: str, st: os.stat_result) -> None:
        """A dataset that is one file."""
        if not S_ISREG(st.st_mode):
            self.odd = True
            return
        try:
            key = KEY.pack(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
        except struct.error:
            key = UNUSABLE
        self.digest.add(path, key)
        self.count += 1
        if self.files is not None:
            self.files.append((path, os.path.dirname(self.root), key, st))

    def _check_names(self, rel: str, names: list[str]) -> None:
        try:
            if not rel:
                for name in names:
                    check_path(name)
            else:
                for name in names:
                    check_last_part(rel + name, name)
            if len({name.casefold() for name in names}) != len(names):
                raise UnsafePath(rel, "two names differ only by case")
        except (UnsafePath, BadInput, UnicodeError):
            self.refused = True


def _first(item: tuple[str, os.stat_result | None]) -> str:
    return item[0]
