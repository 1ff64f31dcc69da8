"""Runs the conformance suite in a child pytest, as a user would, and reads its JUnit report."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass
class SuiteRun:
    returncode: int
    output: str
    outcomes: dict[str, str]  # test id (file::name[param]) -> passed | failed | error | skipped
    report: dict | None = None  # reports/conformance.json of the run

    def ids(self, outcome: str) -> set[str]:
        return {t for t, o in self.outcomes.items() if o == outcome}

    @property
    def failed(self) -> set[str]:
        return self.ids("failed") | self.ids("error")


def _outcomes(junit: Path) -> dict[str, str]:
    outcomes = {}
    if not junit.exists():
        return outcomes
    for case in ET.parse(junit).getroot().iter("testcase"):
        name = f"{case.get('classname', '').rsplit('.', 1)[-1]}::{case.get('name')}"
        result = "passed"
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                result = {"failure": "failed"}.get(child.tag, child.tag)
        if outcomes.get(name) in ("failed", "error"):  # an error in teardown after a failure
            continue
        outcomes[name] = result
    return outcomes


def run_suite(tmp: Path, *args: str, timeout: float = 600, env: dict | None = None) -> SuiteRun:
    junit = tmp / "junit.xml"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-k", "slirp", "-p", "no:randomly", f"--junitxml={junit}",
         f"--report-dir={tmp / 'reports'}", *args],
        cwd=REPO, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})},
    )
    return SuiteRun(proc.returncode, proc.stdout + proc.stderr, _outcomes(junit), _report(tmp / "reports"))


def _report(directory: Path) -> dict | None:
    path = directory / "conformance.json"
    return json.loads(path.read_text()) if path.exists() else None


def interrupt_suite(tmp: Path, *args: str, when: str, ready, timeout: float = 120,
                    sig: int = signal.SIGINT, times: int = 1) -> tuple[int, str]:
    """Start the suite, send ``sig`` (Ctrl-C by default) ``times`` times, 0.3 s apart (an impatient
    user), once ``ready()`` holds; (exit code, output). Its JUnit is ``tmp/junit.xml``, its report
    ``tmp/reports/``."""
    from fixtures import waits

    proc = subprocess.Popen([sys.executable, "-m", "pytest", "-k", "slirp", "-q", f"--junitxml={tmp / 'junit.xml'}",
                             f"--report-dir={tmp / 'reports'}", *args], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        waits.wait_for(when, ready, timeout)
        for i in range(times):
            if i:
                time.sleep(0.3)  # the gap between two key presses, not a wait for a state
            proc.send_signal(sig)
        out, _ = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, out
