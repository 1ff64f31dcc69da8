"""Runs the conformance suite in a child pytest, as a user would, and reads its JUnit report."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from slirp_conformance.checkout import REPO, suite_pytest_argv


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

    @property
    def guest_profile(self) -> str | None:
        """The guest profile the run met after login (from /etc/os-release), as its report names it."""
        return ((self.report or {}).get("versions") or {}).get("guest_profile")


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


def refused_run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """``pytest -k slirp ARGS`` from the repo, for runs that must stop before anything boots (60 s)."""
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-k", "slirp", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def run_suite(tmp: Path, *args: str, timeout: float = 600, env: dict | None = None) -> SuiteRun:
    junit = tmp / "junit.xml"
    proc = subprocess.run(
        suite_pytest_argv("-p", "no:randomly", f"--junitxml={junit}", f"--report-dir={tmp / 'reports'}", *args),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    output = proc.stdout + proc.stderr
    (tmp / "suite-output.log").write_text(output)  # whole, for when an assertion shows only its tail
    return SuiteRun(proc.returncode, output, _outcomes(junit), _report(tmp / "reports"))


def _report(directory: Path) -> dict | None:
    path = directory / "conformance.json"
    return json.loads(path.read_text()) if path.exists() else None


def interrupt_suite(
    tmp: Path,
    *args: str,
    when: str,
    ready,
    timeout: float = 120,
    sig: int = signal.SIGINT,
    times: int = 1,
    env: dict | None = None,
) -> tuple[int, str]:
    """Start the suite, and once ``ready(pid)`` holds for the child's pid send it ``sig`` (Ctrl-C by
    default); with ``times=2`` send it again as soon as the child says it is cleaning up (an
    impatient user who presses twice). Returns (exit code, output). Its JUnit is ``tmp/junit.xml``,
    its report ``tmp/reports/``."""
    from slirp_conformance import waits
    from slirp_conformance.plugin.session import CLEANING_UP

    proc = subprocess.Popen(
        suite_pytest_argv("-q", f"--junitxml={tmp / 'junit.xml'}", f"--report-dir={tmp / 'reports'}", *args),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {})},
    )
    lines: list[str] = []

    def read() -> None:  # line by line, so the wait below sees the child's words as they come
        for line in proc.stdout:
            lines.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:

        def ready_while_running() -> bool:
            # a child that ended before the moment (a setup error, a full disk) is the answer: waiting
            # on for ``when`` would only burn the whole budget
            if proc.poll() is not None:
                reader.join(timeout=30)
                raise AssertionError(f"the child exited {proc.returncode} before {when}:\n{''.join(lines)[-3000:]}")
            return ready(proc.pid)

        try:
            waits.wait_for(when, ready_while_running, timeout)
        except waits.WaitTimeout:
            # the child's own cleanup (its VM, the CR it changed) still runs before the kill below
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=timeout)
            raise
        proc.send_signal(sig)
        for _ in range(times - 1):
            waits.wait_for("the child to say it is cleaning up", lambda: CLEANING_UP.decode() in lines, 30)
            proc.send_signal(sig)
        proc.wait(timeout=timeout)
        reader.join(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, "".join(lines)
