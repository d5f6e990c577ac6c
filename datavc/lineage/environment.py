"""What a run ran with: the code (git), the Python environment, chosen environment variables.

The code state is the git HEAD and a hash of the uncommitted changes. datavc's own files
(pointer files, run locks, ``.gitignore`` and ``.datavc/``) are left out of both the
"dirty" test and the hash: a run's own outputs change them, and they are not code. The hash
is BLAKE3 over ``git diff --binary HEAD`` of the rest, then each untracked, not ignored file
(path, NUL, size, NUL, BLAKE3 of its content), in path order. The same function applied to
a later tree against the recorded HEAD tells whether the code is still the same.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
import shutil
import subprocess
import sys

from blake3 import blake3

from ..errors import BadInput
from ..format.jsondoc import Malformed, load_document
from ..format.run import MAX_ENV, MAX_PACKAGES, MAX_TEXT, CodeState, Environment

# Left out of the code state: datavc's own files in a workspace (see the module docstring).
NOT_CODE = (
    ":(glob,exclude)**/*.datavc",
    ":(glob,exclude)**/.gitignore",
    ":(glob,exclude)runs/*.lock",
    ":(glob,exclude).datavc/**",
)

# Environment variables that name the container image a run ran in, when it ran in one.
# (No runtime sets one standard variable; these are the names CI systems and deployment
# templates commonly use. A run records those that are set.)
CONTAINER_VARIABLES = (
    "DATAVC_IMAGE",
    "DATAVC_IMAGE_DIGEST",
    "CONTAINER_IMAGE",
    "CONTAINER_IMAGE_DIGEST",
    "IMAGE_DIGEST",
    "IMAGE_NAME",
    "DOCKER_IMAGE",
    "DOCKER_IMAGE_DIGEST",
    "OCI_IMAGE_DIGEST",
)


def _git_bytes(root: str, *args: str) -> bytes | None:
    try:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, check=False)
    except OSError:
        return None
    return out.stdout if out.returncode == 0 else None


def git_head(root: str) -> str | None:
    out = _git_bytes(root, "rev-parse", "--verify", "--quiet", "HEAD^{commit}")
    text = out.decode("ascii", "replace").strip() if out else ""
    return text if re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", text) else None


def changed_files(root: str, base: str) -> list[str] | None:
    """Code files that differ between commit ``base`` and the working tree (tracked
    changes and untracked files, datavc's own files left out); None if ``base`` is not in
    this repository."""
    if _git_bytes(root, "cat-file", "-e", f"{base}^{{commit}}") is None:
        return None
    diff = _git_bytes(root, "diff", "--name-only", "-z", base, "--", ".", *NOT_CODE) or b""
    names = [n.decode("utf-8", "replace") for n in diff.split(b"\0") if n]
    return sorted(set(names) | set(_untracked(root)))


def _untracked(root: str) -> list[str]:
    out = _git_bytes(root, "ls-files", "--others", "--exclude-standard", "-z", "--", ".", *NOT_CODE)
    return sorted(n.decode("utf-8", "replace") for n in (out or b"").split(b"\0") if n)


def code_state(root: str, base: str | None = None) -> CodeState:
    """The code in ``root`` against commit ``base`` (default: HEAD): clean, or dirty with
    the hash of the changes. Outside a git repository: no head, clean."""
    head = git_head(root)
    base = base or head
    if base is None:
        return CodeState(None, False, None)
    diff = _git_bytes(
        root, "diff", "--binary", "--no-color", "--no-ext-diff", base, "--", ".", *NOT_CODE
    )
    untracked = _untracked(root)
    if not diff and not untracked:
        return CodeState(base, False, None)
    h = blake3()
    h.update(diff or b"")
    for name in untracked:
        path = os.path.join(root, *name.split("/"))
        try:
            with open(path, "rb") as f:
                content = blake3()
                size = 0
                while block := f.read(1 << 20):
                    content.update(block)
                    size += len(block)
        except OSError:
            continue  # vanished or unreadable: not part of the code that ran
        h.update(f"{name}\0{size}\0".encode())
        h.update(content.digest())
    return CodeState(base, True, h.hexdigest())


# -- the Python environment -----------------------------------------------------------


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _probe() -> dict[str, object]:
    packages: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        found = _name_version(dist)
        if found is not None:
            packages.setdefault(_normal(found[0]), found[1])  # the first on sys.path wins
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "packages": packages,
    }


def _name_version(dist: importlib.metadata.Distribution) -> tuple[str, str] | None:
    """A distribution's name and version from the headers of its metadata file (what
    ``dist.metadata`` gives, without parsing the whole file as e-mail: that was half of
    the time ``datavc run`` adds to a command)."""
    text = dist.read_text("METADATA") or dist.read_text("PKG-INFO")
    if text is None:
        return None
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            break  # the headers end at the first empty line; the description follows
        key, sep, value = line.partition(":")
        if sep and key in ("Name", "Version") and key not in fields:
            fields[key] = value.strip()
    if fields.get("Name") and fields.get("Version"):
        return fields["Name"], fields["Version"]
    return None


# The same probe, run by another interpreter (the command's own Python).
_PROBE = (
    "import importlib.metadata as m, json, platform, re\n"
    "p = {}\n"
    "for d in m.distributions():\n"
    "    n = d.metadata.get('Name') if d.metadata else None\n"
    "    if n and d.version: p.setdefault(re.sub(r'[-_.]+', '-', n).lower(), d.version)\n"
    "print(json.dumps({'python': platform.python_version(),"
    " 'implementation': platform.python_implementation(), 'platform': platform.platform(),"
    " 'machine': platform.machine(), 'packages': p}))\n"
)


def command_python(command: list[str]) -> str | None:
    """The interpreter a command runs, if it is a Python other than this one."""
    if not command:
        return None
    found = shutil.which(command[0])
    if found is None or not re.fullmatch(r"python[0-9.]*(\.exe)?", os.path.basename(found)):
        return None
    if os.path.realpath(found) == os.path.realpath(sys.executable):
        return None
    return found


def capture_environment(env_names: list[str], python: str | None = None) -> Environment:
    """This interpreter's environment, or that of ``python`` (another interpreter);
    ``env_names``: environment variables to record (an unset one is recorded as unset:
    absent)."""
    facts = _probe() if python is None else _probe_other(python)
    env = {n: os.environ[n] for n in env_names if n in os.environ}
    container = {n: os.environ[n] for n in CONTAINER_VARIABLES if os.environ.get(n)}
    for n, v in {**env, **container}.items():
        if len(n) + len(v) > MAX_TEXT:
            raise BadInput(f"environment variable {n} is too long to record")
    if len(env) > MAX_ENV:
        raise BadInput(f"at most {MAX_ENV} --env variables")
    packages = facts["packages"] if isinstance(facts["packages"], dict) else {}
    return Environment(
        python=str(facts["python"]),
        implementation=str(facts["implementation"]),
        platform=str(facts["platform"]),
        machine=str(facts["machine"]),
        packages={k: v for k, v in sorted(packages.items())[:MAX_PACKAGES]},
        env=env,
        container=container,
    )


def _probe_other(python: str) -> dict[str, object]:
    try:
        out = subprocess.run(
            [python, "-c", _PROBE], capture_output=True, check=True, timeout=120
        ).stdout
        doc = load_document(out)
    except (OSError, subprocess.SubprocessError, Malformed) as err:
        raise BadInput(f"cannot read the environment of {python}: {err}") from None
    packages = doc.get("packages")
    fields = ("python", "implementation", "platform", "machine")
    ok = isinstance(packages, dict) and all(isinstance(doc.get(k), str) for k in fields)
    if not ok or not all(isinstance(v, str) for v in packages.values()):  # type: ignore[union-attr]
        raise BadInput(f"cannot read the environment of {python}: unexpected answer")
    return doc
