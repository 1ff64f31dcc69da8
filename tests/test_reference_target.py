"""The reference target's machinery on a real VM: the sidecar's arguments reach QEMU, QEMU runs
like virt-launcher's, and SSH refuses a wrong host key or an unauthorized key."""

from __future__ import annotations

import time

import pytest

from slirp_conformance import waits
from slirp_conformance.reference import sidecar_render
from slirp_conformance.reference.qemu_target import QemuTarget
from slirp_conformance.reference.reference_vm import GUEST_KERNEL_ARGS, QemuOptions
from slirp_conformance.ssh_client import SSHClient, SSHRefused, generate_keypair, parse_host_key
from slirp_conformance.vmspec import conformance_vm, slirp_qemu_args

pytestmark = pytest.mark.selftest_vm


@pytest.fixture(scope="module")
def target():
    t = QemuTarget(conformance_vm("selftest-vm"), QemuOptions(sidecar_render="go"))
    try:
        yield t.start()
    finally:
        t.close()


def _contains_slice(haystack: list[str], needle: list[str]) -> bool:
    return any(haystack[i : i + len(needle)] == needle for i in range(len(haystack) - len(needle) + 1))


def test_qemu_gets_exactly_the_sidecar_arguments(target):
    """The running QEMU's command line holds what KubeVirt's own sidecar code renders (and, by
    the golden test, what slirp_qemu_args renders), and the report says so."""
    cmdline = target.vm.qemu_cmdline()
    version = sidecar_render.default_version()
    real = sidecar_render.render(target.spec, target.vm.search_domains, version).args
    assert _contains_slice(cmdline, real), f"{real} not in {cmdline}"
    assert real == slirp_qemu_args(target.spec, target.vm.search_domains)
    described = target.describe()
    assert (described["sidecar_render"], described["sidecar_kubevirt_version"]) == ("go", version), described


def test_a_variant_yields_the_cpu_to_the_vm_it_boots_beside(target):
    """Variants boot beside the conformance VM from the moment its QEMU runs (fixtures/slirp_vm.py):
    theirs runs at nice 19, so the conformance VM's boot and checks keep the CPU they want."""
    from slirp_conformance.vmspec import variant_vm

    variant = target.variant(variant_vm("virtio", "selftest-vm"))
    seen = []  # when_launched: once QEMU runs, before the login (where the fixture starts the variants)
    variant.when_launched(lambda: seen.append((variant.vm.lab_pid is not None, variant._console is None)))
    try:
        variant.start()
        assert seen == [(True, True)]
        assert (target.vm.qemu_nice(), variant.vm.qemu_nice()) == (0, 19)
        assert variant.console().run("true").ok  # a VM like any other, only patient
    finally:
        variant.close()


def test_qemu_runs_unprivileged_without_net_raw(target):
    ev = target.icmp_evidence()
    assert (ev["qemu_uid"], ev["qemu_gid"]) == (107, 107), ev
    cap_net_raw = 1 << 13
    assert int(ev["qemu_cap_eff"], 16) & cap_net_raw == 0 and int(ev["qemu_cap_bnd"], 16) & cap_net_raw == 0, ev
    assert ev["ping_group_range"] == "1 0", ev


def test_peer_sees_the_pod_address_as_source(target):
    console = target.console()
    r = console.run(target.profile.tcp_echo_command(target.peers.tcp_echo.host, target.peers.tcp_echo.port, "hi"))
    assert r.output.strip() == "hi"
    sources = {e["source"] for e in target.vm.peer_seen() if e["service"] == "tcp-echo"}
    assert sources == {target.vm.pod_ip}, sources


def test_ssh_refuses_a_host_key_other_than_the_one_read_on_the_console(target):
    other = parse_host_key(generate_keypair().public_openssh)
    with pytest.raises(SSHRefused, match="BadHostKeyException"):
        SSHClient.connect(
            lambda: target.port_forward(22), user="root", key=target._key, host_key=other, name="selftest-vm", budget=20
        )


def test_ssh_refuses_a_key_the_guest_does_not_authorize(target):
    with pytest.raises(SSHRefused, match="AuthenticationException"):
        SSHClient.connect(
            lambda: target.port_forward(22),
            user="root",
            key=generate_keypair(),
            host_key=target._host_key,
            name="selftest-vm",
            budget=20,
        )


def test_ssh_and_console_see_the_same_guest(target):
    token = "selftest-" + target.spec.name
    target.console().run(f"echo {token} > /tmp/same-guest")
    assert target.ssh().run("cat /tmp/same-guest").output.strip() == token


def test_artifacts_hold_the_transcript_but_no_password(target, tmp_path):
    target.collect_artifacts(tmp_path)
    transcript = (tmp_path / "console-transcript.log").read_text()
    assert "login:" in transcript
    assert target.profile.credentials.password not in transcript
    for f in tmp_path.iterdir():
        assert target.profile.credentials.password not in f.read_text(errors="replace"), f


def test_unlisted_port_refused_at_the_pod_and_listed_port_open(target):
    with pytest.raises(ConnectionRefusedError):
        target.dial_guest_port(8081)
    sock = waits.wait_for(
        "the pod's hostfwd listener on 22", lambda: target.dial_guest_port(22), 10, retry_on=(ConnectionError,)
    )
    sock.close()


def test_the_guest_kernel_skips_the_io_apic_timer_check(target):
    """A starved vCPU fails the kernel's boot-time timer check and the guest panics ("IO-APIC + timer
    doesn't work!", a Fedora-like soak run's false red at load 57): the guests boot with
    ``no_timer_check``, as Fedora's cloud images do."""
    cmdline = target.console().run("cat /proc/cmdline").output.split()
    assert GUEST_KERNEL_ARGS == "no_timer_check" and GUEST_KERNEL_ARGS in cmdline, cmdline


def test_a_detached_job_that_ends_by_itself_leaves_the_console_logged_in(target):
    """With the terminal's echo off, busybox ash takes a SIGCHLD that comes while it waits for a
    line for the end of its input: a job of the login shell that ended by itself logged the console
    out (seen in the restrict=on e2e run: the IPv6 query). ``detached_job_command`` starts it as no
    child of the shell; after it ended, the console still answers, and the job's output is there."""
    console = target.console()
    job = target.profile.detached_job_command("sleep 0.3; echo job-ended", "/tmp/slirp-selftest-job.out")
    console.run(job)
    time.sleep(1.5)  # the job ends while the shell waits for its next line
    r = console.run("cat /tmp/slirp-selftest-job.out; rm -f /tmp/slirp-selftest-job.out", timeout=10)
    assert r.output.strip() == "job-ended", r
