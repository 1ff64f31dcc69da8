"""The SSH "stall" on a real VM (busybox reference guest, QEMU + libslirp in the pod lab): a guest
whose vCPUs stop while libslirp runs on (what a host too busy to schedule them does) misses the
ping's deadline with the stall's signature, every byte read by QEMU and nothing back, and the
report says the guest answered late; with the suite's deadline and a guest that runs, the same
loop passes (the control). Bad input to ``hack/ssh-stall.sh`` gets one line and exit code 4."""

from __future__ import annotations

import subprocess

import pytest

from slirp_conformance import ssh_stall
from slirp_conformance.checkout import REPO
from slirp_conformance.console import ConsoleError
from slirp_conformance.errors import BAD_INPUT
from slirp_conformance.reference.qemu_target import QemuTarget
from slirp_conformance.reference.reference_vm import QemuOptions
from slirp_conformance.vmspec import conformance_vm

PING_TIMEOUT = 8  # the deadline of the starved ping: shorter than the pause
PAUSE = 14  # how long the vCPUs stop; well within the client's look after the deadline (8 + 8 s)


@pytest.fixture(scope="module")
def target():
    t = QemuTarget(conformance_vm("selftest-stall-vm"), QemuOptions())
    try:
        yield t.start()
    finally:
        t.close()


@pytest.mark.selftest_vm
def test_a_starved_guest_is_reported_as_late_not_as_a_stall(target, no_leaks):
    target.ssh().explain_timeout = None  # what the target sees is not under test here; it costs time
    r = ssh_stall.iterate(target, pause=PAUSE, ping_timeout=PING_TIMEOUT)
    assert r["outcome"] == "timeout", r
    assert len(r["pauses"]) == 2, r  # stopped and running again
    reason = r["reason"]
    # the probe is one batch (guest_batch): the counters and route it read before the ping came in
    assert f"waited {PING_TIMEOUT} s for the end of its stdout (" in reason, reason
    assert "ping-198-18-0-1: `slirp_u() {" in reason, reason  # the ping, named among the batch's parts
    assert "the guest did answer after the deadline: exit status" in reason, reason
    assert "the guest side stopped" not in reason, reason
    # the session goes on: the next command over the same connection works
    assert target.ssh().run("echo still-here").output.strip() == "still-here"


@pytest.mark.selftest_vm
def test_the_same_loop_passes_on_a_guest_that_runs(target, no_leaks):
    r = ssh_stall.iterate(target)
    assert r["outcome"] == "pass", r
    assert r["ping_to_peer"]["replies"] == 0 and r["ping_to_peer"]["echo_requests_out"] == 3, r


@pytest.mark.parametrize(
    "args",
    [["--iterations", "0"], ["--pause-vcpus", "-1"], ["--ping-timeout", "0"], ["--reference-guest", "centos"]],
    ids=["iterations", "pause", "ping-timeout", "guest"],
)
def test_bad_input_is_one_line_and_exit_4(args):
    p = subprocess.run([str(REPO / "hack" / "ssh-stall.sh"), *args], capture_output=True, text=True, timeout=60)
    assert p.returncode == BAD_INPUT, p
    assert p.stderr.count("\n") == 1 and p.stderr.startswith("ssh-stall: error: "), p.stderr
    assert not p.stdout


def test_a_guest_that_never_comes_up_is_reported_not_raised(monkeypatch):
    """A boot that fails (a console that never offers a login) ends the reproducer with its reason in
    the JSON and exit code 1, not a traceback; the target is closed all the same."""
    closed = []

    def failing_start(self):
        raise ConsoleError("vm serial console: no shell after 360 s of login attempts")

    monkeypatch.setattr(QemuTarget, "start", failing_start)
    monkeypatch.setattr(QemuTarget, "close", lambda self: closed.append(True))
    report, code = ssh_stall.run(["--reference-guest", "busybox", "--iterations", "2"])
    assert code == 1 and closed == [True], report
    assert report["boot_failure"].startswith("ConsoleError: vm serial console: no shell after 360 s"), report
    assert report["iterations"] == [] and report["summary"]["iterations_done"] == 0, report


def test_importing_the_stall_fault_installs_nothing():
    """The e2e self-test imports STALL_MARK from tests.stall_injection; only a run that loads it as a
    plugin may get the hang (it once leaked into every later test of the self-tests' process)."""
    from slirp_conformance import guest_profiles
    from tests import stall_injection

    assert stall_injection.STALL_MARK not in guest_profiles.REFERENCE.ping_command("198.18.0.1")
