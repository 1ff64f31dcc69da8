"""The test bed's parts that need no build: wrapper-module specs, process supervision, the record."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from slirp_conformance import waits
from slirp_conformance.errors import SetupError
from tests.testbed import bed, components, processes
from tests.testbed.pki import CertificateAuthority


def test_kubernetes_module_points_staging_modules_at_their_published_tags():
    spec = components.kubernetes_module("v1.34.4")
    assert spec.replace_from == "k8s.io/kubernetes@v1.34.4"
    assert spec.local_replace_version == "v0.34.4", spec
    assert "-X k8s.io/component-base/version.gitVersion=v1.34.4" in spec.ldflags, spec.ldflags
    assert "-X k8s.io/component-base/version.gitMinor=34" in spec.ldflags, spec.ldflags


@pytest.mark.parametrize("bad", ["1.34", "v2.0.1", "v1.34.x", ""])
def test_kubernetes_pin_that_is_not_v1_x_y_is_refused_with_the_fix(bad):
    with pytest.raises(SetupError, match=re.escape("hack/versions.env")):
        components.kubernetes_module(bad)


def test_pins_come_from_versions_env():
    pins = components.Pins.from_versions_env()
    assert pins.kubernetes.startswith("v1.") and pins.etcd.startswith("v3.") and pins.kwok.startswith("v0."), pins


def _sleeper(tmp_path: Path, *, ignore_term: bool = False) -> processes.Proc:
    on_term = "signal.SIG_IGN" if ignore_term else "lambda *_: (print('got SIGTERM', flush=True), sys.exit(0))"
    code = (
        f"import signal, sys, time\nsignal.signal(signal.SIGTERM, {on_term})\n"
        "print('up', flush=True)\ntime.sleep(120)\n"
    )
    return processes.start("sleeper", [sys.executable, "-c", code], tmp_path / "sleeper.log")


def test_stop_ends_a_started_process(tmp_path):
    proc = _sleeper(tmp_path)
    assert processes.alive(proc), proc
    processes.stop(proc)
    assert not processes.alive(proc), f"{proc} survived stop()"


def test_stop_kills_a_process_that_ignores_sigterm(tmp_path, monkeypatch):
    monkeypatch.setattr(processes, "STOP_GRACE", 1.0)
    proc = _sleeper(tmp_path, ignore_term=True)
    waits.wait_for("the sleeper to ignore SIGTERM", lambda: "up" in Path(proc.log).read_text(), 30)
    processes.stop(proc)
    assert not processes.alive(proc), f"{proc} survived SIGKILL"


def test_a_recycled_pid_is_not_taken_for_our_process(tmp_path):
    """Negative control of ``alive``: same pid, other start time = not ours, never signalled."""
    proc = _sleeper(tmp_path)
    try:
        impostor = processes.Proc(proc.name, proc.pid, str(int(proc.start_time) + 1), proc.log)
        assert processes.alive(proc) and not processes.alive(impostor)
        processes.stop(impostor)  # must not touch the real process
        assert processes.alive(proc), "stop() signalled a process whose start time did not match"
    finally:
        processes.stop(proc)


def test_down_without_a_record_says_what_to_pass(tmp_path):
    with pytest.raises(SetupError, match=r"no test bed is recorded.*--kubeconfig"):
        bed.stop(tmp_path / "kubeconfig")


def test_down_stops_recorded_processes_and_removes_every_file(tmp_path, monkeypatch):
    monkeypatch.setattr(bed.tempfile, "tempdir", str(tmp_path))
    state = Path(bed.tempfile.mkdtemp(prefix=bed.STATE_DIR_PREFIX))
    kubeconfig = tmp_path / "kc"
    kubeconfig.write_text("{}")
    proc = _sleeper(state)
    bed.BedRecord(
        kubeconfig=str(kubeconfig), state_dir=str(state), kubernetes_version="v1.34.4", processes=[proc]
    ).save()
    bed.stop(kubeconfig)
    left = [p for p in (kubeconfig, bed.record_path(kubeconfig), state) if p.exists()]
    assert not processes.alive(proc) and not left, f"alive={processes.alive(proc)} left={left}"


def test_issued_certificates_chain_to_the_bed_ca(tmp_path):
    ca = CertificateAuthority(tmp_path)
    pair = ca.issue("server", "kube-apiserver", hosts=("127.0.0.1", "localhost"), server=True)
    out = subprocess.run(
        ["openssl", "verify", "-CAfile", str(ca.pair.cert), str(pair.cert)], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert oct(pair.key.stat().st_mode & 0o777) == "0o600", "private keys must be owner-only"


def test_a_process_started_while_signals_are_deferred_still_stops_on_sigterm(tmp_path):
    """Children must not inherit the mask that holds Ctrl-C back while a start is recorded."""
    with processes.signals_deferred():
        proc = _sleeper(tmp_path)
    waits.wait_for("the sleeper to start", lambda: "up" in Path(proc.log).read_text(), 30)
    processes.stop(proc)
    assert not processes.alive(proc)
    assert "got SIGTERM" in Path(proc.log).read_text(), "SIGTERM never reached the child (blocked): it took SIGKILL"


def test_the_bed_says_why_it_cannot_run_without_root(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert "needs root" in bed.unusable_reason()
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert bed.unusable_reason() is None
