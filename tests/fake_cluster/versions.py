"""KubeVirt version strings (``v1.4.2``, ``v1.5.0-rc.1``) compared by (major, minor, patch)."""

from __future__ import annotations

import re


def parse(version: str) -> tuple[int, int, int]:
    m = re.match(r"^v?(\d+)\.(\d+)(?:\.(\d+))?", version or "")
    if not m:
        return (0, 0, 0)
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


def at_least(version: str, floor: str) -> bool:
    return parse(version) >= parse(floor)
