"""The self-tests' way to drive ``hack/testbed.sh`` as a user would: run a command, hold a bed up
for a block (``bed_up``), or start ``up`` and interrupt it with Ctrl-C once it prints a given
phase line."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from slirp_conformance import gobuild
from slirp_conformance.cluster import versions
from tests.testbed import bed

REPO = Path(__file__).resolve().parents[1]
TESTBED_SH = REPO / "hack" / "testbed.sh"
TIMEOUT_SCALE = ("--timeout-scale", "3")  # other builds may share the machine
KUBEVIRT_VERSION = versions.env("TESTBED_KUBEVIRT_VERSION")  # the one the module proxy lets the bed build (README)
UP_TIMEOUT = 4 * gobuild.BUILD_TIMEOUT  # every cold build of the bed, in the worst case one after the other
DOWN_TIMEOUT = 600.0


def run(*args: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(TESTBED_SH), *TIMEOUT_SCALE, *args], capture_output=True, text=True, timeout=timeout, cwd=REPO
    )


@dataclass(frozen=True)
class RunningBed:
    kubeconfig: Path
    record: bed.BedRecord
    summary: dict  # the last line `up` printed: versions, build and start times


@contextlib.contextmanager
def bed_up(kubeconfig: Path, kubevirt_version: str = KUBEVIRT_VERSION, *up_args: str) -> Iterator[RunningBed]:
    """``up`` (with ``up_args``; the test fails with its stderr when it fails), the bed for the
    block, then ``down`` unless a test in the block took it down itself."""
    up = run(
        "up", "--kubevirt-version", kubevirt_version, "--kubeconfig", str(kubeconfig), *up_args, timeout=UP_TIMEOUT
    )
    try:
        if up.returncode != 0:
            pytest.fail(f"`hack/testbed.sh up` exited {up.returncode}:\n{up.stderr[-4000:]}")
        yield RunningBed(
            kubeconfig, bed.BedRecord.load(kubeconfig.resolve()), json.loads(up.stdout.strip().splitlines()[-1])
        )
    finally:
        if bed.record_path(kubeconfig.resolve()).exists():
            run("down", "--kubeconfig", str(kubeconfig), timeout=DOWN_TIMEOUT)


def interrupt_up(
    kubeconfig: Path, kubevirt_version: str, phase_line: str, timeout: float, on_ready=None
) -> tuple[bed.BedRecord, int, str, str]:
    """Start ``up``; when a stderr line starts with ``phase_line``, call ``on_ready()`` and send
    SIGINT. Returns (the bed's record as it was then, exit code, the lines seen, the rest of stderr)."""
    proc = subprocess.Popen(
        [
            "bash",
            str(TESTBED_SH),
            *TIMEOUT_SCALE,
            "up",
            "--kubevirt-version",
            kubevirt_version,
            "--kubeconfig",
            str(kubeconfig),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
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
