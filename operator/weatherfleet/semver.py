"""Semantic Versioning 2.0.0: parsing and precedence (https://semver.org)."""

from __future__ import annotations

import re
from functools import total_ordering

# The regular expression published on semver.org, anchored.
SEMVER_PATTERN = (
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)
_SEMVER = re.compile(SEMVER_PATTERN)


@total_ordering
class Version:
    """A parsed semantic version; build metadata is kept but ignored for precedence."""

    __slots__ = ("build", "major", "minor", "patch", "prerelease")

    def __init__(self, text: str) -> None:
        match = _SEMVER.fullmatch(text)  # fullmatch: `$` alone would accept a trailing newline
        if match is None:
            raise ValueError(f"{text!r} is not a semantic version (MAJOR.MINOR.PATCH[-PRE][+BUILD])")
        self.major, self.minor, self.patch = (int(match.group(i)) for i in (1, 2, 3))
        self.prerelease: tuple[str, ...] = tuple(match.group(4).split(".")) if match.group(4) else ()
        self.build = match.group(5) or ""

    def _key(self) -> tuple:
        # A version without pre-release ranks above any of its pre-releases; numeric
        # identifiers rank below alphanumeric ones and compare as numbers.
        pre = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in self.prerelease)
        return (self.major, self.minor, self.patch, 0 if self.prerelease else 1, pre)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Version) and self._key() == other._key()

    def __lt__(self, other: Version) -> bool:
        return self._key() < other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __str__(self) -> str:
        text = f"{self.major}.{self.minor}.{self.patch}"
        if self.prerelease:
            text += "-" + ".".join(self.prerelease)
        if self.build:
            text += "+" + self.build
        return text

    def __repr__(self) -> str:
        return f"Version({str(self)!r})"


def is_semver(text: str) -> bool:
    return _SEMVER.fullmatch(text) is not None


def highest(tags: list[str] | tuple[str, ...]) -> str | None:
    """The tag with the highest precedence among those that are semantic versions."""
    versions = [(Version(t), t) for t in tags if is_semver(t)]
    return max(versions)[1] if versions else None
