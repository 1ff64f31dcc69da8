"""A fake Kubernetes API server with KubeVirt behaviour, for testing the suite's cluster code.

Run ``python -m tests.fake_cluster --kubeconfig PATH [--preinstalled-kubevirt [VERSION]]``, or
from Python::

    with running(path, preinstalled_kubevirt="v1.1.0") as fake:
        kubernetes.config.load_kube_config(str(fake.kubeconfig))

The suite's own cluster target runs against it:
``pytest suites --target=cluster --kubeconfig PATH`` (the guest profile is found from the
guest's /etc/os-release).

What is emulated, and where the facts come from, is described in the module docstrings:
``server`` (REST, watch, auth), ``discovery`` (resources, OpenAPI stubs), ``store``
(resourceVersion, graceful deletes, watch history), ``kubevirt`` (operator, component pods,
propagation, admission, healthz), ``launcher`` and ``controllers`` (virt-controller/handler,
backed by a real ReferenceVM), ``core`` (defaulting, CRDs, the kubelet for other pods),
``virt_api`` (healthz, version, the websocket console), ``tests/node_side`` (websocket exec,
port-forward and logs into a VM's lab, shared with the test bed's node agent), ``tls`` (the
throwaway CA; token and client-certificate auth).

Stopping (SIGTERM/SIGINT, or ``stop()``) closes every VM's lab (QEMU and its namespaces) and
removes the kubeconfig (it writes no other file); ``running()`` keeps its log next to the
kubeconfig (``<kubeconfig>.log``) for post-mortems.

Known limits (where the fake is simpler than a cluster): one node; only VMIs whose pod-network
interface uses a binding plugin can run (always as slirp); the busybox reference guest has only
``root`` (the cloud-init password and first key go to root; its profile is ``reference-busybox``);
pod commands are not run (peer and client pods stand for the lab's peer namespace); exec ignores
``tty``; no SPDY (kubectl exec and port-forward: the test bed's); no aggregated discovery, no OpenAPI v3; list
``limit``/``continue`` and watch bookmarks are ignored; only JSON bodies.
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
    ``qemu_sysctl=["net.ipv4.ping_group_range=0 2147483647"]``, ``propagation_delay=1``.
    """
    kubeconfig = Path(kubeconfig_path)
    log_file = Path(log_path) if log_path else kubeconfig.with_name(kubeconfig.name + ".log")
    with contextlib.suppress(FileNotFoundError):
        kubeconfig.unlink()
    argv = [sys.executable, "-m", "tests.fake_cluster", "--kubeconfig", str(kubeconfig), *_options_to_argv(options)]
    with open(log_file, "wb") as log:
        proc = subprocess.Popen(argv, cwd=REPO, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONPATH": str(REPO)})
    fake = RunningFake(proc, kubeconfig, log_file)
    try:
        deadline = time.monotonic() + START_BUDGET
        while not kubeconfig.exists():
            if proc.poll() is not None:
                raise FakeClusterError(f"the fake cluster exited with {proc.returncode}: {fake.log()[-2000:]}")
            if time.monotonic() > deadline:
                raise FakeClusterError(f"no kubeconfig at {kubeconfig} after {START_BUDGET:.0f} s: {fake.log()[-2000:]}")
            time.sleep(0.1)
        yield fake
    finally:
        fake.stop()
