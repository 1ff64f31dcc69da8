"""What the suite may leave behind on this machine, to compare before and after a run.

Only what is this process's doing counts: a QEMU or run directory whose creating pytest is
still alive and not one of ours belongs to another run on the machine (a concurrent self-test
or conformance run), and host links other than the lab's own veth name belong to other programs
(docker0...). The lab's namespaces are anonymous, so a named netns is never the lab's either
way, but a new one is still reported.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from slirp_conformance.reference.reference_vm import RUN_PREFIX


@dataclass(frozen=True)
class HostState:
    qemu_processes: frozenset[str]
    netns: frozenset[str]
    links: frozenset[str]
    run_dirs: frozenset[str]

    def leaked_since(self, before: HostState) -> dict[str, set[str]]:
        return {
            name: set(getattr(self, name)) - set(getattr(before, name))
            for name in ("qemu_processes", "netns", "links", "run_dirs")
            if set(getattr(self, name)) - set(getattr(before, name))
        }


LAB_LINKS = {
    "cluster0"
}  # the peer end of the lab's veth (src/slirp_conformance/reference/pod_lab.py), should it escape
_OWNER = re.compile(re.escape(RUN_PREFIX) + r"(\d+)-")


def _parent(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _ours_or_orphaned(text: str) -> bool:
    """False when ``text`` names a run directory of a live pytest outside this process's tree, or
    no run directory at all."""
    m = _OWNER.search(text)
    if not m:
        # Not the suite's: every QEMU the suite starts runs from a run directory of its own. A QEMU
        # without one is another program's (KubeVirt's launchers in another engineer's kind cluster
        # on this shared machine, which came and went during a run and read as leaks).
        return False
    owner = int(m.group(1))
    if not Path(f"/proc/{owner}").exists():
        return True  # its pytest is gone: whatever is left is an orphan, and counts
    pid = owner
    while pid and pid > 1:
        if pid == os.getpid():
            return True
        pid = _parent(pid) or 0
    return False


def qemu_of(pid: int) -> frozenset[str]:
    """The QEMU processes (command lines) of the suite run whose pytest has this pid: a readiness
    probe that another run's QEMU, or one still dying from an earlier test, cannot satisfy."""
    return frozenset(
        p for p in _lines(["pgrep", "-a", "-f", "qemu-system"]) if (m := _OWNER.search(p)) and int(m.group(1)) == pid
    )


def _lines(argv: list[str]) -> frozenset[str]:
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout
    return frozenset(line.strip() for line in out.splitlines() if line.strip())


def snapshot() -> HostState:
    links = frozenset(
        line.split(":")[1].strip().split("@")[0] for line in _lines(["ip", "-o", "link", "show"]) if ":" in line
    )
    return HostState(
        qemu_processes=frozenset(p for p in _lines(["pgrep", "-a", "-f", "qemu-system"]) if _ours_or_orphaned(p)),
        netns=_lines(["ip", "netns", "list"]),
        links=links & LAB_LINKS,
        run_dirs=frozenset(
            str(p) for p in Path(tempfile.gettempdir()).glob(RUN_PREFIX + "*") if _ours_or_orphaned(p.name)
        ),
    )
