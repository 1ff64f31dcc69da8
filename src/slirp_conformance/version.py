"""Versions: one rule for the whole project (KubeVirt releases, kind, kubectl, the Python client).

The rule: a version is ``vMAJOR.MINOR.PATCH``, three decimal numbers without leading zeros joined
by dots, the ``v`` optional (``v1.5.3`` and ``1.5.3`` are the same version). Nothing else is a
version: no part missing (``v1.5``), no pre-release or build suffix (``v1.5.0-rc.1``), no other
words. ``parse`` takes a string that is exactly a version (surrounding whitespace aside) and raises
``VersionError`` naming the rule for anything else. A ``Version`` prints as ``vMAJOR.MINOR.PATCH``
and orders by (major, minor, patch).

A tool's output holds its version among other words (``kind v0.30.0 go1.26 linux/amd64``, a
server's ``v1.27.3-gke.100``): ``find_in_tool_output`` returns the first word that starts with a
version by the same rule (not the ``1.26`` inside ``go1.26``), whatever is attached after it.
"""

from __future__ import annotations

import re
from typing import NamedTuple

_NUMBER = r"(0|[1-9][0-9]*)"
_VERSION = rf"v?{_NUMBER}\.{_NUMBER}\.{_NUMBER}"
_EXACT = re.compile(rf"{_VERSION}")
# In a tool's output: at the start of a word (not after a letter, digit, dot or dash) and not
# running on into more digits or dots of a longer number (``1.2.3.4`` is no version).
_IN_TEXT = re.compile(rf"(?<![\w.-]){_VERSION}(?![0-9]|\.[0-9])")


class VersionError(ValueError):
    """Not a version by the project's rule (the message says the rule)."""


class Version(NamedTuple):
    major: int
    minor: int
    patch: int

    def __str__(self) -> str:
        return f"v{self.major}.{self.minor}.{self.patch}"

    @property
    def minor_key(self) -> str:
        """``"1.5"``: the release line (e.g. the key of its pins in hack/versions.env)."""
        return f"{self.major}.{self.minor}"


def parse(text: str) -> Version:
    """``"v1.5.3"`` (or ``"1.5.3"``) -> Version(1, 5, 3); VersionError for anything else."""
    match = _EXACT.fullmatch(str(text).strip())
    if match is None:
        raise VersionError(f"{text!r} is not a version: the rule is vMAJOR.MINOR.PATCH (e.g. v1.5.3), nothing more")
    return Version(*(int(part) for part in match.groups()))


def find_in_tool_output(text: str) -> Version | None:
    """The first version in a tool's output (``kind v0.30.0 go1.26`` -> v0.30.0), None when none is there."""
    match = _IN_TEXT.search(text)
    return None if match is None else Version(*(int(part) for part in match.groups()))
