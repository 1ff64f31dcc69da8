"""A fake Kubernetes API server with KubeVirt behaviour, for testing the suite's cluster code where
the cluster test bed (tests/testbed) cannot: KubeVirt versions the bed cannot build (v1.5.3) and
virt-operator's install/uninstall path (the bed has no virt-operator). It boots no VM.

Run ``python -m tests.fake_cluster --kubeconfig PATH [--preinstalled-kubevirt [VERSION]]``, or
from Python::

    with running(path, preinstalled_kubevirt="v1.5.3") as fake:
        kubernetes.config.load_kube_config(str(fake.kubeconfig))

What is emulated, and where the facts come from, is described in the module docstrings:
``server`` (REST, watch, auth), ``discovery`` (resources, OpenAPI stubs), ``store``
(resourceVersion, graceful deletes, watch history), ``kubevirt`` (operator, component pods,
propagation, admission, healthz), ``core`` (defaulting, CRDs, a kubelet that runs no container),
``virt_api`` (healthz, version), ``tls`` (the throwaway CA; token and client-certificate auth);
Status errors and conditions come from ``tests/kube_api``, shared with the test bed's node agent.

Stopping (SIGTERM/SIGINT, or ``stop()``) removes the kubeconfig (it writes no other file);
``running()`` keeps its log next to the kubeconfig (``<kubeconfig>.log``) for post-mortems.

Known limits (where the fake is simpler than a cluster): one node; VirtualMachines and VMIs are
stored and admitted (virt-api's feature-gate check) but no controller acts on them; pod commands
are not run and pods have no exec, port-forward or logs; no aggregated discovery, no OpenAPI v3;
list ``limit``/``continue`` and watch bookmarks are ignored; only JSON bodies.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
START_BUDGET = 30.0
STOP_BUDGET = 60.0


class FakeClusterError(RuntimeError):
    pass


class RunningFake:
    def __init__(self, proc: subprocess.Popen, kubeconfig: Path, log_path: Path) -> None:
        self.proc, self.kubeconfig, self.log_path = proc, kubeconfig, log_path

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> int:
        """SIGTERM, then wait (bounded) for the teardown; SIGKILL as the last resort."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_BUDGET)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


def _options_to_argv(options: dict) -> list[str]:
    argv = []
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if value is None or value is False:
            continue
        if value is True:
            argv.append(flag)
        elif isinstance(value, (list, tuple)):
            for v in value:
                argv += [flag, str(v)]
        else:
            argv += [flag, str(value)]
    return argv


@contextlib.contextmanager
def running(kubeconfig_path, log_path=None, **options) -> Iterator[RunningFake]:
    """Start the fake in a subprocess; yield once its kubeconfig exists (bounded); stop it on exit.

    ``options`` are the command-line flags with underscores, e.g. ``preinstalled_kubevirt="v1.1.0"``,
    ``propagation_delay=1``.
    """
    kubeconfig = Path(kubeconfig_path)
    log_file = Path(log_path) if log_path else kubeconfig.with_name(kubeconfig.name + ".log")
    with contextlib.suppress(FileNotFoundError):
        kubeconfig.unlink()
    argv = [sys.executable, "-m", "tests.fake_cluster", "--kubeconfig", str(kubeconfig), *_options_to_argv(options)]
    with open(log_file, "wb") as log:
        proc = subprocess.Popen(
            argv,
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
    fake = RunningFake(proc, kubeconfig, log_file)
    try:
        deadline = time.monotonic() + START_BUDGET
        while not kubeconfig.exists():
            if proc.poll() is not None:
                raise FakeClusterError(f"the fake cluster exited with {proc.returncode}: {fake.log()[-2000:]}")
            if time.monotonic() > deadline:
                raise FakeClusterError(
                    f"no kubeconfig at {kubeconfig} after {START_BUDGET:.0f} s: {fake.log()[-2000:]}"
                )
            time.sleep(0.1)
        yield fake
    finally:
        fake.stop()
