"""xdist on the cluster targets (issue 7, item 5): one cluster, one KubeVirt CR, one registration and
one feature-gate toggle cannot be shared by workers that each create, register, restore and delete
them (the second `kind create` fails and its teardown deletes the cluster; the first restore pulls
the binding from under the others). So ``-n N`` is refused there, at once, with one line; the
reference target keeps one VM per worker."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.suite_runner import REPO


def _run(*args: str) -> tuple[int, str]:
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-k", "slirp", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PATH": "/usr/bin:/bin"},
    )
    return r.returncode, r.stdout + r.stderr


@pytest.mark.parametrize("target", ["kind", "cluster"])
@pytest.mark.parametrize("workers", [["-n", "2"], ["-n", "auto"], ["--tx", "2*popen", "--dist", "load"]])
def test_xdist_is_refused_on_cluster_targets_before_anything_starts(target, workers, tmp_path):
    code, text = _run(f"--target={target}", f"--kubeconfig={tmp_path / 'absent'}", *workers)
    assert code == 4, text[-3000:]
    assert "Traceback" not in text and "bringing up nodes" not in text, text[-3000:]
    errors = [line for line in text.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 1 and "-n" in errors[0] and f"--target={target}" in errors[0], text[-3000:]


def test_without_workers_the_cluster_target_goes_on_to_its_own_checks(tmp_path):
    code, text = _run("--target=cluster", f"--kubeconfig={tmp_path / 'absent'}", "-n", "0")
    assert code == 4 and "does not exist" in text and "-n" not in text.split("ERROR", 1)[1], text[-3000:]
