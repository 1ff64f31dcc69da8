"""The self-tests' way to drive ``hack/testbed.sh`` as a user would: run a command, or start ``up``
and interrupt it with Ctrl-C once it prints a given phase line."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest

from tests.testbed import bed

REPO = Path(__file__).resolve().parents[1]
TESTBED_SH = REPO / "hack" / "testbed.sh"
TIMEOUT_SCALE = ("--timeout-scale", "3")  # other builds may share the machine


def run(*args: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(TESTBED_SH), *TIMEOUT_SCALE, *args], capture_output=True,
                          text=True, timeout=timeout, cwd=REPO)


def interrupt_up(kubeconfig: Path, kubevirt_version: str, phase_line: str, timeout: float,
                 on_ready=None) -> tuple[bed.BedRecord, int, str, str]:
    """Start ``up``; when a stderr line starts with ``phase_line``, call ``on_ready()`` and send
    SIGINT. Returns (the bed's record as it was then, exit code, the lines seen, the rest of stderr)."""
    proc = subprocess.Popen(["bash", str(TESTBED_SH), *TIMEOUT_SCALE, "up", "--kubevirt-version",
                             kubevirt_version, "--kubeconfig", str(kubeconfig)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    seen = []
    try:
        for line in proc.stderr:  # bounded: every build and readiness wait inside `up` is
            seen.append(line)
            if line.startswith(phase_line):
                record = bed.BedRecord.load(kubeconfig.resolve())
                if on_ready is not None:
                    on_ready()
                proc.send_signal(signal.SIGINT)
                break
        else:
            pytest.fail(f"`up` ended before {phase_line!r}: {''.join(seen)[-3000:]}")
        _, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return record, proc.returncode, "".join(seen), err
