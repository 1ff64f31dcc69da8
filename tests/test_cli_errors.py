"""Bad input stops the run in seconds with one line naming the fix: never a traceback or a hang."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.suite_runner import REPO


def _pytest(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", "-k", "slirp", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=60, env={**os.environ, **(env or {})})


def _one_line_error(r: subprocess.CompletedProcess) -> str:
    text = r.stdout + r.stderr
    assert "Traceback" not in text, text
    errors = [line for line in text.splitlines() if "error" in line.lower()]
    assert errors, text
    return errors[0]


def test_unknown_target():
    r = _pytest("--target=minikube")
    assert r.returncode == 4
    text = r.stdout + r.stderr
    assert "Traceback" not in text
    assert "argument --target: invalid choice: 'minikube' (choose from 'kind', 'cluster', 'qemu')" in text


def test_kind_without_docker_stops_in_seconds_naming_docker():
    r = _pytest("--target=kind", env={"PATH": "/usr/bin:/bin", "DOCKER_HOST": "unix:///nonexistent.sock"})
    assert r.returncode == 4
    assert "docker" in _one_line_error(r).lower()


def test_cluster_with_unreadable_kubeconfig():
    r = _pytest("--target=cluster", "--kubeconfig=/nonexistent/kubeconfig")
    assert r.returncode == 4
    assert "--kubeconfig" in _one_line_error(r)


def test_unknown_kubevirt_version():
    r = _pytest("--target=cluster", "--kubevirt-version=v1.10.0", "--kubeconfig=/nonexistent")
    assert r.returncode == 4
    assert "v1.10.0" in _one_line_error(r)


@pytest.mark.parametrize("value, fix", [
    ("net.ipv4.ping_group_range", "KEY=VALUE"),
    ("kernel.hostname=x", "only net.*"),
    ("net.ipv4.no_such_knob=1", "no such sysctl"),
])
def test_malformed_qemu_sysctl(value, fix):
    r = _pytest("--target=qemu", "--qemu-sysctl", value)
    assert r.returncode == 4
    assert fix in _one_line_error(r)


def test_missing_qemu():
    r = _pytest("--target=qemu", env={"SLIRP_QEMU_BINARY": "qemu-system-nowhere"})
    assert r.returncode == 4
    assert "apt-get install qemu-system-x86" in _one_line_error(r)


def test_bad_timeout_scale():
    r = _pytest("--target=qemu", "--timeout-scale=0")
    assert r.returncode == 4
    assert "--timeout-scale must be positive" in _one_line_error(r)


def test_collect_only_needs_no_vm():
    r = _pytest("--collect-only", "-q")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "test_slirp_icmp.py::test_icmp_echo_to_peer_gets_no_reply[console]" in r.stdout
