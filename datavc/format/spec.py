"""Version specs: ``NAME``, ``NAME@vN``, ``NAME@latest``, ``NAME@<tag>``,
``NAME@<snapshot-id prefix>``, ``NAME@git:<rev>`` (pure parsing)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import BadInput
from .paths import check_name

_VERSION = re.compile(r"v(\d+)")
_HEX = re.compile(r"[0-9a-f]{6,64}")
_TAG = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


@dataclass(frozen=True, slots=True)
class VersionSpec:
    """``kind`` is one of: none, number, latest, git, ref (a tag or a snapshot-id prefix)."""

    name: str
    kind: str
    value: str = ""

    @property
    def number(self) -> int:
        return int(self.value)

    def __str__(self) -> str:
        if self.kind == "none":
            return self.name
        if self.kind == "number":
            return f"{self.name}@v{self.value}"
        if self.kind == "latest":
            return f"{self.name}@latest"
        if self.kind == "git":
            return f"{self.name}@git:{self.value}"
        return f"{self.name}@{self.value}"

    @property
    def may_be_snapshot_prefix(self) -> bool:
        return self.kind == "ref" and bool(_HEX.fullmatch(self.value))


def parse_spec(text: str) -> VersionSpec:
    name, sep, rest = text.partition("@")
    check_name(name)
    if not sep:
        return VersionSpec(name, "none")
    if not rest:
        raise BadInput(f"empty version in {text!r}: use NAME@vN, NAME@latest, NAME@<tag>")
    m = _VERSION.fullmatch(rest)
    if m:
        if int(m.group(1)) < 1:
            raise BadInput(f"versions start at v1: {text!r}")
        return VersionSpec(name, "number", str(int(m.group(1))))
    if rest == "latest":
        return VersionSpec(name, "latest")
    if rest.startswith("git:"):
        rev = rest[4:]
        if not rev:
            raise BadInput(f"empty git revision in {text!r}")
        if rev.startswith("-") or any(c.isspace() or c == "\x00" for c in rev):
            raise BadInput(f"invalid git revision in {text!r}")
        return VersionSpec(name, "git", rest[4:])
    if not _TAG.fullmatch(rest) or ".." in rest:
        raise BadInput(
            f"invalid version {rest!r} in {text!r}: use vN, latest, git:REV, a tag "
            "(letters, digits, '.', '_', '-') or a snapshot-id prefix"
        )
    return VersionSpec(name, "ref", rest)


def check_tag(tag: str) -> None:
    """A tag name a spec can reach: the ref form, and not ``vN``, ``latest`` or something
    that reads as a snapshot-id prefix (those would be ambiguous)."""
    if not _TAG.fullmatch(tag) or ".." in tag:
        raise BadInput(
            f"invalid tag {tag!r}: 1-128 letters, digits, '.', '_' or '-', starting with a "
            "letter or digit"
        )
    if _VERSION.fullmatch(tag) or tag == "latest" or _HEX.fullmatch(tag):
        raise BadInput(
            f"invalid tag {tag!r}: it reads as a version number, 'latest' or a snapshot-id prefix"
        )
