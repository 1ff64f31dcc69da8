"""hack/soak.sh: a soak of a failing run reports the failure (and of a passing one, none); its CPU
burners and its run end with it on Ctrl-C; bad input is one line, exit 4."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from slirp_conformance import soak, waits
from tests.leaks import qemu_of
from tests.suite_runner import REPO

OPEN_PING_GROUP = "--qemu-sysctl=net.ipv4.ping_group_range=0 2147483647"


def _soak(tmp: Path, *args: str, timeout: float = 600) -> tuple[int, dict | None, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "slirp_conformance.soak", "--out", str(tmp / "soak"), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    try:
        result = json.loads(proc.stdout) if proc.stdout.strip() else None
    except ValueError:
        result = None
    return proc.returncode, result, proc.stderr


@pytest.mark.selftest_vm
@pytest.mark.parametrize("broken", [True, False], ids=["open-ping-group-range", "control"])
def test_a_soak_reports_the_failing_clause_of_each_run(tmp_path, no_leaks, broken):
    """Two runs of the ICMP clauses; with an open ping_group_range slirp forwards ICMP, so each run
    is NOT CONFORMANT with the ICMP clause as its first failure; the control passes both runs."""
    args = ["--runs", "2", "--target=qemu", "-m", "icmp", *([OPEN_PING_GROUP] if broken else [])]
    rc, result, err = _soak(tmp_path, *args)
    assert result is not None, err[-3000:]
    runs = result["runs"]
    assert [r["run"] for r in runs] == [1, 2], result
    icmp = {
        "icmp.py::test_icmp_echo_to_peer_gets_no_reply[console]",
        "icmp.py::test_icmp_echo_to_peer_gets_no_reply[ssh]",
    }
    for r in runs:
        assert {c for c, v in r["clauses"].items() if v != "deselected"} == icmp, r
        assert r["wall_s"] > 0 and (tmp_path / "soak" / f"run-{r['run']:03d}" / "conformance.json").exists()
    if broken:
        assert rc == 1, err[-3000:]
        for r in runs:
            assert r["outcome"] == "NOT CONFORMANT" and r["exit_status"] == 1, r
            ff = r["first_failure"]
            assert ff["clause"] == "icmp.py::test_icmp_echo_to_peer_gets_no_reply[console]", ff
            assert ff["verdict"] == "fail" and "icmp: to_peer.replies: expected 0, got " in ff["reason"], ff
        assert result["summary"]["conformant"] == 0, result["summary"]
        assert result["summary"]["clauses_not_passing"] == {f"{c} fail": 2 for c in sorted(icmp)}, result["summary"]
    else:
        assert rc == 0, err[-3000:]
        assert all(r["outcome"] == "CONFORMANT" and r["first_failure"] is None for r in runs), runs
        assert result["summary"]["conformant"] == 2 and result["summary"]["outcomes"] == {"CONFORMANT": 2}


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, timeout=30).stdout
    return [int(p) for p in out.split()]


@pytest.mark.selftest_vm
def test_ctrl_c_stops_the_burners_and_the_run_under_way(tmp_path, no_leaks):
    """Ctrl-C at the terminal (SIGINT to the soak's process group) while a run's VM is up: the run
    cleans up as an interrupted run, both burners are gone, the JSON still comes, exit code 2."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "slirp_conformance.soak",
            "--out",
            str(tmp_path / "soak"),
            "--runs=3",
            "--load",
            "--target=qemu",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    err: list[str] = []
    reader = threading.Thread(target=lambda: err.extend(proc.stderr), daemon=True)
    reader.start()
    try:
        pids = waits.wait_for(
            "the soak to name its CPU burners",
            lambda: next(
                (re.search(r"pids \[(\d+), (\d+)\]", line) for line in err if "burners running" in line), None
            ),
            60,
        )
        burners = [int(pids.group(1)), int(pids.group(2))]
        assert all(_alive(p) for p in burners), burners
        # each in a session of its own, like another job's work (the kernel's autogroup weighs
        # sessions against each other; the run's nice-19 variants yield only to the run itself)
        assert all(os.getsid(p) == p != os.getsid(0) for p in burners), burners
        waits.wait_for("the first run's QEMU", lambda: any(qemu_of(c) for c in _children(proc.pid)), 120)
        os.killpg(proc.pid, signal.SIGINT)
        # not communicate(): it reads stderr too, and closes it under the reader thread (CI saw the
        # thread's "I/O operation on closed file"); the JSON on stdout is a few kB, within a pipe's room
        proc.wait(timeout=300)
        out = proc.stdout.read()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    reader.join(10)
    assert proc.returncode == 2, "".join(err)[-3000:]
    assert not [p for p in burners if _alive(p)], f"burners left running: {burners}"
    result = json.loads(out)
    assert result["summary"]["interrupted"] is True and result["summary"]["load"] == "2 CPU burners"
    assert [r["outcome"] for r in result["runs"]] == ["INTERRUPTED"], result["runs"]


def test_a_killed_soak_takes_its_burners_with_it(tmp_path):
    """SIGKILL leaves the soak no time to clean up: the burners' parent-death signal ends them."""
    code = (
        "import sys, time; from slirp_conformance import soak\n"
        "b = soak.Burners().__enter__(); print(*b.pids, flush=True); time.sleep(600)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        burners = [int(p) for p in proc.stdout.readline().split()]
        assert len(burners) == soak.BURNERS and all(_alive(p) for p in burners), burners
    finally:
        proc.kill()
        proc.wait()
    waits.wait_for("the burners to end with their soak", lambda: not any(_alive(p) for p in burners), 10)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--runs", "0"], "--runs '0': give a whole number of runs, at least 1"),
        (["--runs", "many"], "--runs 'many': give a whole number of runs"),
        (["--runs", "1", "--run-timeout", "-5"], "--run-timeout '-5': give a positive number of seconds"),
        (["--runs", "1", "--report-dir", "x"], "--report-dir: the soak gives every run its own reports"),
        (
            ["--runs", "1", "--target=nope"],
            "argument --target: invalid choice: 'nope'",
        ),  # pytest's own refusal, from the first run
    ],
    ids=["zero-runs", "runs-not-a-number", "negative-run-timeout", "reserved-option", "bad-pytest-option"],
)
def test_bad_input_is_one_line_and_exit_4(tmp_path, args, words):
    rc, result, err = _soak(tmp_path, *args, timeout=120)
    assert rc == 4 and result is None, (rc, err)
    lines = [line for line in err.splitlines() if line.startswith("soak: error:")]
    assert len(lines) == 1 and words in lines[0], err
    assert "Traceback" not in err, err


def test_the_first_failure_is_the_first_in_run_order(tmp_path):
    """Not the first by name: the JUnit order of the run decides, and clauses never reached come last."""
    junit = tmp_path / "conformance.xml"
    junit.write_text(
        "<testsuites><testsuite>"
        '<testcase classname="suites.test_slirp_udp" name="test_udp_echo[console]"/>'
        '<testcase classname="suites.test_slirp_dhcp" name="test_lease_time[ssh]"/>'
        "</testsuite></testsuites>"
    )
    report = {
        "outcome": "NOT CONFORMANT",
        "clauses": [
            {"nodeid": "suites/test_slirp_dhcp.py::test_lease_time[ssh]", "verdict": "fail", "reason": "later"},
            {"nodeid": "suites/test_slirp_udp.py::test_udp_echo[console]", "verdict": "error", "reason": "first"},
            {"nodeid": "suites/test_slirp_a.py::test_a", "verdict": "not run", "reason": ""},
        ],
    }
    line = soak.summarize_run(1, report, 1, 12.3, junit)
    assert line["first_failure"] == {"clause": "udp.py::test_udp_echo[console]", "verdict": "error", "reason": "first"}
    assert line["clauses"]["dhcp.py::test_lease_time[ssh]"] == "fail"
    assert soak.summarize_run(2, None, 3, 1.0, junit, "pytest exited 3")["outcome"] == "NO REPORT"


@pytest.mark.selftest_vm
@pytest.mark.parametrize("when", ["run-starting", "vm-up"])
def test_a_soak_started_in_the_background_stops_its_run_at_once(tmp_path, no_leaks, when):
    """A soak started with SIGINT ignored (a shell's background job) and then sent SIGTERM: the run
    under way stops within a bound and the JSON comes, whether the signal meets the run while it
    starts (before its plugin set a handler: a SIGINT was lost then, and the soak waited 300 s and
    killed the run) or while its VM is up."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "slirp_conformance.soak", "--out", str(tmp_path / "soak"), "--runs=2", "--target=qemu"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    try:
        if when == "run-starting":
            waits.wait_for("the soak's first run", lambda: _children(proc.pid), 60)
        else:
            waits.wait_for("the first run's QEMU", lambda: any(qemu_of(c) for c in _children(proc.pid)), 300)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)  # was 300 s and more
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 2, err[-3000:]
    result = json.loads(out)
    assert result["summary"]["interrupted"] is True, result["summary"]
    assert [r["run"] for r in result["runs"]] == [1], result["runs"]
    assert result["runs"][0]["exit_status"] != -signal.SIGKILL, result["runs"]
