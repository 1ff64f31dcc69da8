"""The reference target end to end: the contract passes, and each negative control turns
exactly the checks that guard the broken behaviour red. Nothing is left behind, whether the
run passes, fails or is interrupted."""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import xml.etree.ElementTree as ET
from datetime import datetime
from pathlib import Path

import pytest

from slirp_conformance import waits
from slirp_conformance.reference.qemu_target import PASSWORD_ENV
from tests.leaks import qemu_of
from tests.suite_runner import REPO, interrupt_suite, run_suite

pytestmark = pytest.mark.selftest_vm

CHANNELS = ("console", "ssh")


def _both(test: str) -> set[str]:
    return {f"{test}[{c}]" for c in CHANNELS}


ALL_MODULES = {
    "test_slirp_dhcp",
    "test_slirp_tcp",
    "test_slirp_udp",
    "test_slirp_icmp",
    "test_slirp_ports",
    "test_slirp_nic",
    "test_slirp_isolation",
    "test_slirp_cidr",
    "test_slirp_ipv6",
}
# A clause of a contract module that only a cluster target can check (skipped with the reason elsewhere).
CLUSTER_ONLY_CLAUSE = "test_slirp_ports::test_cluster_ip_service_reaches_guest_service"

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
    # Void, not green: without a route the guest's pings fail locally, so "no reply" proves nothing.
    | _both("test_slirp_icmp::test_icmp_echo_to_peer_gets_no_reply")
    # restrict=on also drops the guest's connections to slirp's virtual host (the pod's loopback),
    # over IPv4 and IPv6, and moves with a custom CIDR: the variant VM gets no router and no DNS
    # either. Inbound (listed UDP, NIC model, the address itself) is untouched.
    | _both("test_slirp_isolation::test_guest_reaches_the_pods_loopback_through_the_gateway")
    | {"test_slirp_ipv6::test_guest_reaches_the_pods_ipv6_loopback"}
    | {
        f"test_slirp_cidr::{t}"
        for t in (
            "test_gateway_follows_the_cidr",
            "test_nameserver_follows_the_cidr",
            "test_dns_relay_answers_at_the_cidrs_nameserver",
            "test_egress_from_the_cidr",
        )
    }
)
# A pod whose ping_group_range admits QEMU's gid (containerd 2.x): slirp forwards ICMP.
PING_GROUP_RED = _both("test_slirp_icmp::test_icmp_echo_to_peer_gets_no_reply")


# Issue 20's clauses: each fault (tests/clause_faults.py) is a defect of the stack that exactly one
# clause guards; everything else stays green.
CLAUSE_FAULTS = {
    "udp-as-tcp": {"test_slirp_ports::test_listed_udp_port_reaches_guest_service"},
    "forward-unlisted-udp": {"test_slirp_ports::test_unlisted_udp_port_is_not_reachable"},
    "virtio-as-rtl8139": {"test_slirp_nic::test_guest_sees_the_nic_the_sidecar_renders[virtio]"},
    "rtl8139-ignored": {"test_slirp_nic::test_guest_sees_the_nic_the_sidecar_renders[rtl8139]"},
    "cidr-ignored": {
        f"test_slirp_cidr::{t}"
        for t in (
            "test_the_sidecar_renders_the_cidr",
            "test_address_and_prefix_follow_the_cidr",
            "test_gateway_follows_the_cidr",
            "test_nameserver_follows_the_cidr",
            "test_dns_relay_answers_at_the_cidrs_nameserver",
        )
    },
    "invalid-cidr-accepted": {"test_slirp_cidr::test_invalid_cidr_fails_with_the_sidecars_reason"},
    "ipv6-off": {
        f"test_slirp_ipv6::{t}"
        for t in (
            "test_the_sidecar_leaves_ipv6_on",
            "test_guest_gets_an_address_in_slirps_prefix",
            "test_guest_default_route_is_slirps_router",
            "test_guest_reaches_the_pods_ipv6_loopback",  # void: no address in slirp's prefix
        )
    },
    "pod-loopback6-shielded": {"test_slirp_ipv6::test_guest_reaches_the_pods_ipv6_loopback"},
    "pod-loopback-shielded": _both("test_slirp_isolation::test_guest_reaches_the_pods_loopback_through_the_gateway"),
}


@pytest.mark.parametrize("fault", CLAUSE_FAULTS)
def test_a_clause_fault_turns_exactly_its_clause_red(fault, tmp_path, no_leaks):
    from tests.clause_faults import FAULT_ENV

    run = run_suite(tmp_path, "--target=qemu", "-p", "tests.clause_faults", env={FAULT_ENV: fault})
    wanted = CLAUSE_FAULTS[fault]
    assert run.failed == wanted, (
        f"unexpected red: {sorted(run.failed - wanted)}; unexpected green: {sorted(wanted - run.failed)}"
    )
    assert run.report is not None and run.report["outcome"] == "NOT CONFORMANT", run.output[-3000:]


def test_contract_passes_on_the_reference_target(tmp_path, no_leaks):
    """With the QEMU network arguments KubeVirt's own sidecar code renders (--sidecar-render go)."""
    run = run_suite(tmp_path, "--target=qemu", "--sidecar-render=go")
    assert run.returncode == 0, run.output[-4000:]
    modules = {t.split("::")[0] for t, outcome in run.outcomes.items() if outcome != "skipped"}
    assert modules == ALL_MODULES, f"collected modules {modules}"
    assert {t for t, o in run.outcomes.items() if o == "skipped"} == {
        t for t in run.outcomes if t.startswith("test_slirp_kubevirt::") or t.startswith(CLUSTER_ONLY_CLAUSE)
    }, "deselected checks are skipped in JUnit; the Service clause is skipped: there is no Service on qemu"
    assert not run.failed and len(run.ids("passed")) >= 25, run.outcomes
    report = run.report
    assert report["outcome"] == "CONFORMANT" and report["target"] == "qemu", report
    verdicts = {c["nodeid"]: c["verdict"] for c in report["clauses"]}
    service_clause = CLUSTER_ONLY_CLAUSE.split("::")[1]  # report node ids are suites/<module>.py::<test>
    assert {v for k, v in verdicts.items() if "test_slirp_kubevirt" not in k and service_clause not in k} == {"pass"}, {
        k: v for k, v in verdicts.items() if v != "pass"
    }
    assert {v for k, v in verdicts.items() if service_clause in k} == {"skipped"}, verdicts
    deselected = [c for c in report["clauses"] if c["verdict"] == "deselected"]
    assert deselected and all("--target=qemu" in c["reason"] for c in deselected), deselected
    assert report["versions"]["libslirp"] and report["versions"]["qemu"], report["versions"]
    icmp = [p for p in report["premises"] if p["check"] == "icmp"]
    assert len(icmp) == 2 and all(p["premise"] == "proven" and p["proof"]["echo_requests_out"] >= 1 for p in icmp)
    reported = {
        (p.get("name"), p.get("value"))
        for p in ET.parse(tmp_path / "junit.xml").iter("property")
        if p.get("name") == "sidecar_render"
    }
    assert reported == {("sidecar_render", "go")}, reported


def test_restrict_on_turns_exactly_tcp_udp_and_dhcp_router_checks_red(tmp_path, no_leaks):
    password = "pw-" + secrets.token_hex(12)
    run = run_suite(
        tmp_path,
        "--target=qemu",
        "--qemu-netdev-extra",
        "restrict=on",
        f"--artifacts={tmp_path / 'artifacts'}",
        env={PASSWORD_ENV: password},
    )
    assert run.failed == RESTRICT_RED, (
        f"unexpected red: {sorted(run.failed - RESTRICT_RED)}; unexpected green: {sorted(RESTRICT_RED - run.failed)}"
    )
    icmp = _both("test_slirp_icmp::test_icmp_echo_to_peer_gets_no_reply")
    assert icmp <= run.ids("error"), f"the ICMP check must be void (an error), got {run.outcomes}"
    assert "VOID icmp" in run.output and "OutEchos +0" in run.output, run.output[-3000:]
    assert run.returncode == 1
    assert run.report["outcome"] == "NOT CONFORMANT", run.report["counts"]
    void = {c["nodeid"].split("::", 1)[1] for c in run.report["clauses"] if c["verdict"] == "void"}
    assert void == {t.split("::")[1] for t in icmp}, void
    _everything_parses_and_keeps_the_secret(tmp_path, password)
    assert password not in run.output, "the run's password is in the terminal output"


def _everything_parses_and_keeps_the_secret(tmp: Path, password: str) -> None:
    """JUnit properties and evidence files are JSON; the run's password is nowhere; nonces and
    addresses are still readable."""
    properties = [p for p in ET.parse(tmp / "junit.xml").iter("property") if p.get("name").startswith("evidence.")]
    assert properties
    evidence = [json.loads(p.get("value")) for p in properties]  # raises on a mangled one
    evidence_files = list((tmp / "artifacts").rglob("evidence.json"))
    assert evidence_files, sorted(p.name for p in (tmp / "artifacts").rglob("*"))
    for path in evidence_files:
        json.loads(path.read_text())
    text = json.dumps(evidence)
    assert "slirp-port-" in text and "10.0.2.15" in text and "198.18.0.1" in text, text[:2000]
    leaked = [str(p) for p in tmp.rglob("*") if p.is_file() and password in p.read_text(errors="replace")]
    assert not leaked, f"the run's password appears in {leaked}"
    transcripts = list((tmp / "artifacts").rglob("console-transcript.log"))
    assert transcripts and all("login:" in t.read_text() for t in transcripts)
    for name, says in (("lab.log", "QEMU started"), ("qemu.log", "-netdev user"), ("peer.log", "listening on")):
        logs = list((tmp / "artifacts").rglob(name))
        assert logs and all(says in p.read_text() for p in logs), f"{name} must hold what happened: {logs}"


def test_open_ping_group_range_turns_exactly_icmp_red(tmp_path, no_leaks):
    run = run_suite(tmp_path, "--target=qemu", "--qemu-sysctl", "net.ipv4.ping_group_range=0 2147483647")
    assert run.failed == PING_GROUP_RED, (
        f"unexpected red: {sorted(run.failed - PING_GROUP_RED)}; "
        f"unexpected green: {sorted(PING_GROUP_RED - run.failed)}"
    )
    assert "0 2147483647" in run.output or run.failed  # the evidence names the range


def test_interrupted_run_leaves_nothing(tmp_path, no_leaks):
    """Ctrl-C in the middle of a run: QEMU, namespaces, veths and run dirs all go."""
    rc, out = interrupt_suite(tmp_path, "--target=qemu", when="the child run's QEMU to start", ready=qemu_of)
    assert rc in (1, 2), out[-2000:]  # 2: interrupted


def test_double_ctrl_c_cleans_up_quietly(tmp_path, no_leaks):
    """A second Ctrl-C during the cleanup the first one started: no traceback, nothing left."""
    rc, out = interrupt_suite(tmp_path, "--target=qemu", when="the child run's QEMU to start", ready=qemu_of, times=2)
    assert rc in (1, 2), out[-2000:]
    assert "still cleaning up" in out, "the second Ctrl-C must have arrived during the cleanup: " + out[-2000:]
    assert "Traceback" not in out and len(out.splitlines()) < 40, out[-3000:]


def test_killed_run_is_cleaned_up(tmp_path, no_leaks):
    """SIGKILL gives no chance to clean up: the kernel ends QEMU and the namespaces (parent-death
    signal, PID namespace), and the next run sweeps the orphaned run dir."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-k", "slirp", "--target=qemu", "-q"],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    waits.wait_for("the child run's QEMU to start", lambda: qemu_of(proc.pid), 120)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    waits.wait_for("QEMU to die with its parent", lambda: not qemu_of(proc.pid), 15)
    from slirp_conformance.reference.reference_vm import sweep_stale_run_dirs

    sweep_stale_run_dirs()


def test_terminated_run_leaves_nothing(tmp_path, no_leaks):
    """SIGTERM (a cancelled CI job) unwinds like Ctrl-C, and its JUnit and report say so."""
    rc, out = interrupt_suite(
        tmp_path,
        "--target=qemu",
        when="the child run's QEMU to start",
        ready=qemu_of,
        sig=signal.SIGTERM,
    )
    assert rc in (1, 2), out[-2000:]
    report = json.loads((tmp_path / "reports" / "conformance.json").read_text())
    assert report["outcome"] == "INTERRUPTED" and "signal 15" in report["interrupted"], report
    assert any(c["verdict"] == "not run" for c in report["clauses"]), report["counts"]
    suite = ET.parse(tmp_path / "junit.xml").getroot().find("testsuite")
    assert int(suite.get("errors")) >= 1, ET.tostring(suite)[:500]
    assert any(c.get("name") == "run-interrupted" for c in suite.iter("testcase"))
    assert "INTERRUPTED" in (tmp_path / "reports" / "conformance.md").read_text()


def test_cold_run_shows_progress_and_quiet_run_does_not(tmp_path, no_leaks):
    """A cold cache (a machine's first run): each long phase says what it does and how long it
    took; the network is rendered by the golden-held model (--sidecar-render auto), the report
    says so, and KubeVirt's code is built after the verdict, so the next run renders with it.
    -q says nothing of the phases. (GOCACHE and the module cache stay warm: the build takes seconds.)"""
    from slirp_conformance.cache_dirs import cache_root
    from slirp_conformance.reference import image

    env = {
        "SLIRP_CONFORMANCE_CACHE": str(tmp_path / "cache"),
        "SLIRP_REF_KERNEL_DEB": str(image.kernel_deb(cache_root())),
    }
    one = ["-k", "test_lease_time and console", "--target=qemu"]
    loud = run_suite(tmp_path / "loud", *one, env=env)
    assert loud.returncode == 0, loud.output[-3000:]
    for phase in ("building the reference guest image", "reference VM", "logging in"):
        assert re.search(rf"slirp-conformance: [^\n]*{phase}[^\n]*: \d+\.\d s", loud.output), (phase, loud.output)
    assert loud.report is not None, loud.output[-3000:]
    first = loud.report["decided_by"]
    assert (first["sidecar_render"], first["sidecar_render_mode"]) == ("python", "auto"), first
    assert "tests/test_sidecar_golden.py holds byte for byte" in first["sidecar_args_from"], first
    assert loud.report["outcome"] == "CONFORMANT" and "sidecar-render: built in" in loud.output, loud.output[-3000:]
    (build,) = (tmp_path / "cache" / "go" / "sidecar-render").glob("v*/*/bin")
    verdict = datetime.fromisoformat(loud.report["finished_at"]).timestamp()
    assert build.stat().st_mtime > verdict, "KubeVirt's code was built before the verdict, not after it"
    quiet = run_suite(tmp_path / "quiet", *one, "-q", env=env)
    assert quiet.returncode == 0 and "slirp-conformance:" not in quiet.output, quiet.output
    assert quiet.report is not None and "sidecar-render:" not in quiet.output, quiet.output
    second = quiet.report["decided_by"]
    assert (second["sidecar_render"], second["sidecar_render_mode"]) == ("go", "auto"), second


def test_a_stalled_command_is_named_in_the_report(tmp_path, no_leaks):
    """The guest's ping command hangs (``tests/stall_injection.py``): the ICMP clause of each channel
    is an error whose reason, in conformance.json and .md, is the client's own timeout naming the
    command it waited on; the later clauses of that channel still run (each wait is bounded) and pass.
    Its control is the contract run above, where the same clauses pass."""
    from tests.stall_injection import STALL_MARK

    run = run_suite(tmp_path, "--target=qemu", "-p", "tests.stall_injection", "-m", "icmp or tcp")
    report = run.report
    assert report is not None and report["outcome"] == "NOT CONFORMANT", run.output[-4000:]
    clauses = {c["nodeid"].split("::")[-1]: c for c in report["clauses"] if c["verdict"] != "deselected"}
    expected_steps = {
        # one console line for the whole batch (echo off: busybox takes 4095 characters)
        "test_icmp_echo_to_peer_gets_no_reply[console]": "waited 4 s for the end of `{ cat /sys/class/net/eth0/",
        "test_icmp_echo_to_peer_gets_no_reply[ssh]": "waited 4 s for the end of its stdout (",
    }
    for name, words in expected_steps.items():
        clause = clauses[name]
        assert clause["verdict"] == "error" and words in clause["reason"], clause
        # the busybox profile's ping (its start), in the probe's batch, and the fault at its end
        assert "slirp_u() { slirp_h=" in clause["reason"] and STALL_MARK in clause["reason"], clause
    assert "of the parts before: `cat " in clauses["test_icmp_echo_to_peer_gets_no_reply[ssh]"]["reason"]
    # With the SSH timeout, where the connection's bytes stand on each side, and a fresh connection.
    ssh_reason = clauses["test_icmp_echo_to_peer_gets_no_reply[ssh]"]["reason"]
    for words in (
        "the guest's TCP on port 22 (console): tcp 0 0 10.0.2.15:22 10.0.2.2:",
        "libslirp (info usernet): TCP[ESTABLISHED]",
        "the pod's TCP on port 22 (client and QEMU): ESTAB 0 0 127.0.0.1:",
        "a new SSH connection works",
    ):
        assert words in ssh_reason, ssh_reason
    assert {n: c["verdict"] for n, c in clauses.items() if n not in expected_steps} == {
        "test_egress_echo[console]": "pass",
        "test_egress_echo[ssh]": "pass",
        "test_egress_transfer_8mib_each_way": "pass",
    }, clauses
    markdown = (tmp_path / "reports" / "conformance.md").read_text()
    assert (
        "ConsoleError: vm-net-binding-slirp serial console: waited 4 s for the end of `{ cat /sys/class" in markdown
    ), markdown
