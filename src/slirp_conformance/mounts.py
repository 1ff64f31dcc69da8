"""Mount points below a directory of ours, read from /proc/self/mountinfo, and their lazy unmount."""

from __future__ import annotations

import subprocess
from pathlib import Path


def mounted_under(*roots: Path) -> list[str]:
    """Mount points at or below any of ``roots``, deepest first."""
    points = []
    try:
        mountinfo = Path("/proc/self/mountinfo").read_text()
    except OSError:
        return []
    for line in mountinfo.splitlines():
        point = line.split()[4].encode().decode("unicode_escape")  # mountinfo escapes spaces as \040
        if any(point == str(r) or point.startswith(f"{r}/") for r in roots):
            points.append(point)
    return sorted(points, key=len, reverse=True)


def unmount_under(*roots: Path) -> None:
    """Lazily unmount whatever a build or a daemon of ours left mounted below ``roots``."""
    for point in mounted_under(*roots):
        subprocess.run(["umount", "-l", point], capture_output=True, timeout=30)
