"""Bad input stops the run in seconds with one line naming the fix: never a traceback or a hang."""

from __future__ import annotations

import subprocess
import sys

import pytest

from slirp_conformance.checkout import REPO
from tests.suite_runner import refused_run


def _one_line_error(r: subprocess.CompletedProcess) -> str:
    text = r.stdout + r.stderr
    assert "Traceback" not in text, text
    errors = [line for line in text.splitlines() if "error" in line.lower()]
    assert errors, text
    return errors[0]


def test_unknown_target():
    r = refused_run("--target=minikube")
    assert r.returncode == 4
    text = r.stdout + r.stderr
    assert "Traceback" not in text
    assert "argument --target: invalid choice: 'minikube' (choose from 'kind', 'cluster', 'qemu')" in text


def test_kind_without_docker_stops_in_seconds_naming_docker(tmp_path):
    # No docker CLI at all: a daemon that merely does not answer is no failure for root, who gets
    # the project's own dockerd (docker_daemon).
    r = refused_run("--target=kind", env={"PATH": str(tmp_path), "DOCKER_HOST": "unix:///nonexistent.sock"})
    assert r.returncode == 4
    line = _one_line_error(r)
    assert "docker" in line.lower() and "--target=qemu" in line, line


def test_cluster_with_unreadable_kubeconfig():
    r = refused_run("--target=cluster", "--kubeconfig=/nonexistent/kubeconfig")
    assert r.returncode == 4
    assert "--kubeconfig" in _one_line_error(r)


def test_unknown_kubevirt_version():
    r = refused_run("--target=cluster", "--kubevirt-version=v1.10.0", "--kubeconfig=/nonexistent")
    assert r.returncode == 4
    assert "v1.10.0" in _one_line_error(r)


@pytest.mark.parametrize(
    "value, fix",
    [
        ("net.ipv4.ping_group_range", "KEY=VALUE"),
        ("kernel.hostname=x", "only net.*"),
        ("net.ipv4.no_such_knob=1", "no such sysctl"),
    ],
)
def test_malformed_qemu_sysctl(value, fix):
    r = refused_run("--target=qemu", "--qemu-sysctl", value)
    assert r.returncode == 4
    assert fix in _one_line_error(r)


def test_missing_qemu():
    r = refused_run("--target=qemu", env={"SLIRP_QEMU_BINARY": "qemu-system-nowhere"})
    assert r.returncode == 4
    line = _one_line_error(r)
    assert "SLIRP_QEMU_BINARY=qemu-system-nowhere" in line and "apt-get install qemu-system-x86" in line


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf"])
def test_bad_timeout_scale(value):
    r = refused_run("--target=qemu", f"--timeout-scale={value}")
    assert r.returncode == 4
    assert "give a positive finite factor" in _one_line_error(r)


@pytest.mark.parametrize("option", ["--artifacts", "--report-dir"])
def test_output_directory_under_a_file(option, tmp_path):
    a_file = tmp_path / "hostname"
    a_file.write_text("x")
    r = refused_run("--target=qemu", f"{option}={a_file}/sub")
    assert r.returncode == 4
    assert f"{a_file} is a file, not a directory" in _one_line_error(r)


def test_kvm_that_does_not_admit_qemus_uid(monkeypatch):
    """QEMU runs as uid/gid 107: a /dev/kvm with mode 0600 (root) must be named, with the fix."""
    import os as real_os

    from slirp_conformance.errors import SetupError
    from slirp_conformance.reference import reference_vm

    class St:
        st_mode, st_uid, st_gid = 0o020600, 0, 0

    monkeypatch.setattr(reference_vm.os, "stat", lambda p: St() if p == "/dev/kvm" else real_os.stat(p))
    with pytest.raises(SetupError, match=r"mode 0600.*uid/gid 107.*chmod 0666 /dev/kvm.*--qemu-accel tcg"):
        reference_vm._check_kvm_for_qemu_user()
    St.st_mode = 0o020666
    reference_vm._check_kvm_for_qemu_user()


def test_collect_only_needs_no_vm():
    r = refused_run("--collect-only", "-q")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "test_slirp_icmp.py::test_icmp_echo_to_peer_gets_no_reply[console]" in r.stdout


def test_the_qemu_target_never_imports_the_kubernetes_client():
    # The client costs about a third of a second to import, before the VM can start: on
    # --target=qemu (which collects the KubeVirt-only suite too) nothing may import it. Nor
    # paramiko before QEMU runs (0.1 s; ssh_client imports it while the guest boots).
    code = (
        "import sys, pytest; "
        "rc = pytest.main(['-q', '-k', 'slirp', '--target=qemu', '--collect-only', '-p', 'no:cacheprovider']); "
        "print('kubernetes imported:', 'kubernetes' in sys.modules); "
        "print('paramiko imported:', 'paramiko' in sys.modules); sys.exit(rc)"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "kubernetes imported: False" in r.stdout, r.stdout[-2000:]
    assert "paramiko imported: False" in r.stdout, r.stdout[-2000:]
