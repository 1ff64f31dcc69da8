"""pytest plugin (``-p tests.testbed.node_agent_console``) for runs of the suite against the test bed
before it serves the console: the KubeVirt target's console comes straight from the serial socket
the node agent publishes (``node_layout.console_socket``) instead of virt-api's ``console``
subresource websocket.

A stand-in for one transport only, used by the bed's self-test so that everything else the suite
does (registration, admission, the launcher pod, exec, port-forward, SSH, the peers, every check)
runs against the real components now. The console endpoint itself (the ``subresources.kubevirt.io``
APIService and virt-handler's console server) is another part of the bed; once it serves, runs
need no plugin.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from fixtures.errors import SetupError
from tests.testbed import bed, node_layout


class NodeAgentConsole:
    """Same surface as ``console_websocket.ConsoleBridge``: ``sock`` and ``close()``."""

    state_dir: Path | None = None

    def __init__(self, _api_client, namespace: str, vmi: str, connect_timeout: float = 30) -> None:
        path = node_layout.console_socket(self.state_dir, namespace, vmi)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(connect_timeout)
        try:
            self.sock.connect(str(path))
        except OSError as e:
            self.sock.close()
            raise SetupError(f"the node agent publishes no console for {namespace}/{vmi} at {path}: {e}") from None
        self.sock.settimeout(None)

    def close(self) -> None:
        self.sock.close()


def pytest_configure(config) -> None:
    from fixtures.kubevirt import kubevirt_target

    kubeconfig = config.getoption("kubeconfig", None)
    if not kubeconfig:
        raise pytest.UsageError("-p tests.testbed.node_agent_console needs --kubeconfig of a test bed")
    try:
        NodeAgentConsole.state_dir = Path(bed.BedRecord.load(Path(kubeconfig).resolve()).state_dir)
    except SetupError as e:
        raise pytest.UsageError(str(e)) from None
    kubevirt_target.ConsoleBridge = NodeAgentConsole
