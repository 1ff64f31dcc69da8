"""The reference target end to end: the contract passes, and each negative control turns
exactly the checks that guard the broken behaviour red. Nothing is left behind, whether the
run passes, fails or is interrupted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from fixtures import waits
from tests.leaks import snapshot
from tests.suite_runner import REPO, interrupt_suite, run_suite

pytestmark = pytest.mark.selftest_vm

CHANNELS = ("console", "ssh")


def _both(test: str) -> set[str]:
    return {f"{test}[{c}]" for c in CHANNELS}


ALL_MODULES = {"test_slirp_dhcp", "test_slirp_tcp", "test_slirp_udp", "test_slirp_icmp", "test_slirp_ports"}

# restrict=on: slirp offers no router and no DNS and drops the guest's outbound traffic. A
# client pod's connection to a listed port cannot be answered without a default route, while
# a port-forward (loopback in the pod) still reaches the guest, so SSH keeps working.
RESTRICT_RED = (
    _both("test_slirp_dhcp::test_default_route_via_slirp_gateway")
    | _both("test_slirp_dhcp::test_nameserver_is_slirp_dns")
    | _both("test_slirp_tcp::test_egress_echo")
    | {"test_slirp_tcp::test_egress_transfer_8mib_each_way"}
    | _both("test_slirp_udp::test_udp_echo")
    | _both("test_slirp_udp::test_dns_through_slirp_relay")
    | {"test_slirp_ports::test_listed_port_reaches_guest_service"}
)
# A pod whose ping_group_range admits QEMU's gid (containerd 2.x): slirp forwards ICMP.
PING_GROUP_RED = _both("test_slirp_icmp::test_icmp_echo_to_peer_gets_no_reply")


@pytest.fixture
def no_leaks():
    before = snapshot()
    yield
    after = waits.wait_for("the host to be as it was before the run", snapshot, 15,
                           accept=lambda s: not s.leaked_since(before),
                           describe=lambda s: f"left behind: {s.leaked_since(before)}")
    assert not after.leaked_since(before)


def test_contract_passes_on_the_reference_target(tmp_path, no_leaks):
    """With the QEMU network arguments KubeVirt's own sidecar code renders (--sidecar-render go)."""
    run = run_suite(tmp_path, "--target=qemu", "--sidecar-render=go")
    assert run.returncode == 0, run.output[-4000:]
    modules = {t.split("::")[0] for t in run.outcomes}
    assert modules == ALL_MODULES, f"collected modules {modules}"
    assert not run.failed and len(run.ids("passed")) >= 25, run.outcomes
    reported = {(p.get("name"), p.get("value")) for p in ET.parse(tmp_path / "junit.xml").iter("property")
                if p.get("name") == "sidecar_render"}
    assert reported == {("sidecar_render", "go")}, reported


def test_restrict_on_turns_exactly_tcp_udp_and_dhcp_router_checks_red(tmp_path, no_leaks):
    run = run_suite(tmp_path, "--target=qemu", "--qemu-netdev-extra", "restrict=on")
    assert run.failed == RESTRICT_RED, (f"unexpected red: {sorted(run.failed - RESTRICT_RED)}; "
                                        f"unexpected green: {sorted(RESTRICT_RED - run.failed)}")
    assert run.returncode == 1


def test_open_ping_group_range_turns_exactly_icmp_red(tmp_path, no_leaks):
    run = run_suite(tmp_path, "--target=qemu", "--qemu-sysctl", "net.ipv4.ping_group_range=0 2147483647")
    assert run.failed == PING_GROUP_RED, (f"unexpected red: {sorted(run.failed - PING_GROUP_RED)}; "
                                          f"unexpected green: {sorted(PING_GROUP_RED - run.failed)}")
    assert "0 2147483647" in run.output or run.failed  # the evidence names the range


def test_interrupted_run_leaves_nothing(tmp_path, no_leaks):
    """Ctrl-C in the middle of a run: QEMU, namespaces, veths and run dirs all go."""
    rc, out = interrupt_suite("--target=qemu", when="the child run's QEMU to start",
                              ready=lambda: snapshot().qemu_processes)
    assert rc in (1, 2), out[-2000:]  # 2: interrupted


def test_killed_run_is_cleaned_up(tmp_path, no_leaks):
    """SIGKILL gives no chance to clean up: the kernel ends QEMU and the namespaces (parent-death
    signal, PID namespace), and the next run sweeps the orphaned run dir."""
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "-k", "slirp", "--target=qemu", "-q"], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    waits.wait_for("the child run's QEMU to start", lambda: snapshot().qemu_processes, 120)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    waits.wait_for("QEMU to die with its parent", lambda: not snapshot().qemu_processes, 15)
    from fixtures.reference.reference_vm import sweep_stale_run_dirs

    sweep_stale_run_dirs()


def test_terminated_run_leaves_nothing(tmp_path, no_leaks):
    """SIGTERM (a cancelled CI job) unwinds like Ctrl-C."""
    rc, out = interrupt_suite("--target=qemu", when="the child run's QEMU to start",
                              ready=lambda: snapshot().qemu_processes, sig=signal.SIGTERM)
    assert rc in (1, 2), out[-2000:]
