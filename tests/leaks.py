"""What the suite may leave behind on this machine, to compare before and after a run."""

from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from fixtures.reference.reference_vm import RUN_PREFIX


@dataclass(frozen=True)
class HostState:
    qemu_processes: frozenset[str]
    netns: frozenset[str]
    links: frozenset[str]
    run_dirs: frozenset[str]

    def leaked_since(self, before: "HostState") -> dict[str, set[str]]:
        return {name: set(getattr(self, name)) - set(getattr(before, name))
                for name in ("qemu_processes", "netns", "links", "run_dirs")
                if set(getattr(self, name)) - set(getattr(before, name))}


def _lines(argv: list[str]) -> frozenset[str]:
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout
    return frozenset(line.strip() for line in out.splitlines() if line.strip())


def snapshot() -> HostState:
    links = frozenset(line.split(":")[1].strip().split("@")[0]
                      for line in _lines(["ip", "-o", "link", "show"]) if ":" in line)
    return HostState(
        qemu_processes=_lines(["pgrep", "-a", "-f", "qemu-system"]),
        netns=_lines(["ip", "netns", "list"]),
        links=links,
        run_dirs=frozenset(str(p) for p in Path(tempfile.gettempdir()).glob(RUN_PREFIX + "*")),
    )
