"""The exec streams of the cluster targets, as the Kubernetes client is asked for them (no cluster)."""

from __future__ import annotations

import pytest

from slirp_conformance.kubevirt import pod_streams


class _Asked(Exception):
    """Raised by the fake ``stream`` once it has recorded what it was asked (ends dial_from_pod early)."""


class _Finished:
    returncode = 0

    def run_forever(self, timeout):
        pass

    def is_open(self):
        return False

    def read_all(self):
        return "done\n"

    def close(self):
        pass


@pytest.fixture
def asked(monkeypatch):
    calls: list[tuple[tuple, dict]] = []

    class Core:
        def __init__(self, api_client):
            pass

        def connect_get_namespaced_pod_exec(self):  # pragma: no cover - never called by the fake
            raise AssertionError

    def stream(fn, *args, **kwargs):
        calls.append((args, kwargs))
        if kwargs.get("stdin"):
            raise _Asked
        return _Finished()

    monkeypatch.setattr(pod_streams.client, "CoreV1Api", Core)
    monkeypatch.setattr(pod_streams, "stream", stream)
    return calls


def test_exec_in_pod_asks_for_stdout_and_stderr_without_stdin_or_tty(asked):
    assert pod_streams.exec_in_pod(lambda: None, "ns", "pod", ["true"], container="compute") == (0, "done\n")
    pod_streams.exec_in_pod(lambda: None, "ns", "pod", ["true"])
    common = {
        "command": ["true"],
        "stdin": False,
        "stdout": True,
        "stderr": True,
        "tty": False,
        "_preload_content": False,
    }
    assert asked == [(("pod", "ns"), {**common, "container": "compute"}), (("pod", "ns"), common)]


def test_dial_from_pod_runs_a_verbose_nc_with_binary_stdin(asked):
    with pytest.raises(_Asked):
        pod_streams.dial_from_pod(lambda: None, "ns", "client", "10.0.0.7", 8080)
    ((args, kwargs),) = asked
    assert args == ("client", "ns") and kwargs == {
        "command": ["nc", "-vv", "-w", "10", "10.0.0.7", "8080"],
        "stdin": True,
        "stdout": True,
        "stderr": True,
        "tty": False,
        "_preload_content": False,
        "binary": True,
    }
