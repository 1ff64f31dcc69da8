"""The bed's console path end to end: the real kube-apiserver's aggregator -> the real virt-api ->
our virt-handler console endpoint -> the VMI's serial console socket (here a test server standing
in for QEMU's, published where the node agent publishes it: node_layout.console_socket).

Both clients are exercised: the suite's own (src/slirp_conformance/kubevirt/console_websocket.ConsoleBridge)
and `virtctl console` built from KubeVirt's module. The negative controls get virt-api's own
errors, at once: a VMI that is not running, and a running VMI whose console is not published.

Marked ``testbed`` (see tests/test_testbed.py).
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import ssl
import subprocess
from pathlib import Path

import pexpect
import pytest
import websocket
from kubernetes import config as kube_config

from slirp_conformance import waits
from slirp_conformance.kubevirt.console_websocket import ConsoleBridge
from tests import testbed_cli
from tests.testbed import bed, components, handler_console, kubevirt, node_layout, processes, service_address
from tests.testbed.serial_stand_in import GREETING, SerialConsoleStandIn
from tests.testbed_probes import kubectl

pytestmark = pytest.mark.testbed

KUBEVIRT_VERSION = testbed_cli.KUBEVIRT_VERSION
NAMESPACE = "default"
# virt-api lets only KubeVirt's service accounts write a VMI's status (vmi-mutator.go, v1.1.0):
# the test writes it as virt-handler does (its account; the group for RBAC, which the bed lacks).
AS_VIRT_HANDLER = ("--as=system:serviceaccount:kubevirt:kubevirt-handler", "--as-group=system:masters")


@pytest.fixture(scope="module")
def testbed(tmp_path_factory):
    """The module's own bed: its tests leave VMIs behind and the last one takes it down."""
    with testbed_cli.bed_up(tmp_path_factory.mktemp("testbed-console") / "kubeconfig", KUBEVIRT_VERSION) as running:
        yield running.kubeconfig, running.record


def _virtctl() -> Path:
    """virtctl, built with virt-api (cached by the bed's `up`)."""
    return components.build_kubevirt_components(KUBEVIRT_VERSION).binary("virtctl")


def _create_vmi(kubeconfig: Path, name: str, *, running: bool) -> None:
    """A VMI admitted by virt-api, which the node agent leaves alone (``AGENT_SKIP_ANNOTATION``):
    the test plays its VM. virt-controller schedules it (kwok runs its launcher pod); ``running``:
    its status then says Running, as virt-handler writes it once the VM is up (what virt-api's
    console handler checks)."""
    kubectl(
        kubeconfig,
        "create",
        "-f",
        "-",
        input=json.dumps(
            {
                "apiVersion": "kubevirt.io/v1",
                "kind": "VirtualMachineInstance",
                "metadata": {
                    "name": name,
                    "namespace": NAMESPACE,
                    "annotations": {node_layout.AGENT_SKIP_ANNOTATION: "skip"},
                },
                "spec": {
                    "domain": {
                        "devices": {"interfaces": [{"name": "default", "masquerade": {}}]},
                        "resources": {"requests": {"memory": "128Mi"}},
                    },
                    "networks": [{"name": "default", "pod": {}}],
                },
            }
        ),
    )
    if running:
        # virt-controller fails a Running VMI that has no running launcher pod: wait for Scheduled.
        waits.wait_for(
            f"virt-controller to schedule VMI {name}",
            lambda: (
                kubectl(kubeconfig, "get", "vmi", "-n", NAMESPACE, name, "-o", "jsonpath={.status.phase}")
                == "Scheduled"
            ),
            60,
        )
        kubectl(
            kubeconfig,
            "patch",
            "vmi",
            "-n",
            NAMESPACE,
            name,
            *AS_VIRT_HANDLER,
            "--type=merge",
            "-p",
            json.dumps({"status": {"phase": "Running", "nodeName": bed.NODE_NAME}}),
        )
        phase = kubectl(kubeconfig, "get", "vmi", "-n", NAMESPACE, name, "-o", "jsonpath={.status.phase}")
        assert phase == "Running", f"premise: the VMI's status says Running, it says {phase!r}"


@pytest.fixture
def serial_console(testbed):
    _, record = testbed
    opened = []

    def publish(name: str) -> SerialConsoleStandIn:
        opened.append(SerialConsoleStandIn(Path(record.state_dir), NAMESPACE, name))
        return opened[-1]

    yield publish
    for server in opened:
        server.close()


def _read_until(sock: socket.socket, marker: bytes, budget: float) -> bytes:
    seen = b""

    def more() -> bytes:
        nonlocal seen
        sock.settimeout(1.0)
        try:
            chunk = sock.recv(4096)
        except TimeoutError:
            return seen
        if not chunk:
            raise AssertionError(f"console closed before {marker!r}; got {seen!r}")
        seen += chunk
        return seen

    return waits.wait_for(f"{marker!r} on the console", more, budget, accept=lambda got: marker in got)


def _api_client(kubeconfig: Path):
    return kube_config.new_client_from_config(config_file=str(kubeconfig))


def test_suite_console_client_exchanges_bytes_through_the_api_server_and_virt_api(testbed, serial_console):
    kubeconfig, record = testbed
    _create_vmi(kubeconfig, "console-suite", running=True)
    stand_in = serial_console("console-suite")
    nonce = secrets.token_hex(8)
    bridge = ConsoleBridge(_api_client(kubeconfig), NAMESPACE, "console-suite", connect_timeout=30)
    try:
        _read_until(bridge.sock, GREETING, 30)
        bridge.sock.sendall(f"{nonce}\n".encode())
        got = _read_until(bridge.sock, f"echo:{nonce}".encode(), 30)
    finally:
        bridge.close()
    assert f"echo:{nonce}".encode() in got, got
    assert stand_in.connections == 1, f"expected one connection to the serial socket, saw {stand_in.connections}"
    # The bytes went the real way: the aggregator called virt-api on its Service's address,
    # and virt-api dialled our virt-handler endpoint.
    address = _virt_api_address(kubeconfig)
    virt_api_log = Path(record.state_dir, "virt-api.log").read_text()
    assert any(
        '"url":"/apis/subresources.kubevirt.io/v1/namespaces/default/virtualmachineinstances/console-suite/console"'
        in line
        and f'"remoteAddress":"{address}"' in line
        for line in virt_api_log.splitlines()
    ), f"virt-api logged no console request from the aggregator at {address}"


def test_virtctl_console_exchanges_bytes_and_leaves_on_the_escape(testbed, serial_console):
    kubeconfig, _ = testbed
    _create_vmi(kubeconfig, "console-virtctl", running=True)
    serial_console("console-virtctl")
    nonce = secrets.token_hex(8)
    virtctl = pexpect.spawn(
        str(_virtctl()),
        ["--kubeconfig", str(kubeconfig), "console", "-n", NAMESPACE, "console-virtctl", "--timeout=1"],
        timeout=60,
    )
    try:
        virtctl.expect_exact("Successfully connected to console-virtctl console")
        virtctl.expect_exact(GREETING.decode())
        virtctl.send(f"{nonce}\r")
        virtctl.expect_exact(f"echo:{nonce}")
        virtctl.send("\x1d")  # ^], virtctl's escape (pkg/virtctl/utils/utils.go)
        virtctl.expect(pexpect.EOF)
    finally:
        virtctl.close(force=True)
    assert virtctl.exitstatus == 0, f"virtctl console exited {virtctl.exitstatus}: {virtctl.before!r}"


def _console_refusal(kubeconfig: Path, name: str) -> websocket.WebSocketBadStatusException:
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        ConsoleBridge(_api_client(kubeconfig), NAMESPACE, name, connect_timeout=30).close()
    return refused.value


def test_a_vmi_that_is_not_running_gets_virt_apis_own_refusal(testbed):
    kubeconfig, _ = testbed
    _create_vmi(kubeconfig, "console-pending", running=False)
    refusal = _console_refusal(kubeconfig, "console-pending")
    body = refusal.resp_body.decode(errors="replace") if refusal.resp_body else ""
    # validateVMIForConsole (pkg/virt-api/rest/console.go): BadRequest "VMI is not running".
    assert refusal.status_code == 400 and "VMI is not running" in body, (refusal.status_code, body)


def test_an_unpublished_console_gets_virt_apis_error_at_once_then_works_once_published(testbed, serial_console):
    """virt-handler answers 400 before the upgrade (no socket), which virt-api reports as its own
    internal error; the same VMI's console works once the socket is there (the premise)."""
    kubeconfig, _ = testbed
    _create_vmi(kubeconfig, "console-unpublished", running=True)
    refusal = _console_refusal(kubeconfig, "console-unpublished")
    body = refusal.resp_body.decode(errors="replace") if refusal.resp_body else ""
    assert refusal.status_code == 500 and "dialing virt-handler: websocket: bad handshake" in body, (
        refusal.status_code,
        body,
    )
    virtctl = subprocess.run(
        [
            str(_virtctl()),
            "--kubeconfig",
            str(kubeconfig),
            "console",
            "-n",
            NAMESPACE,
            "console-unpublished",
            "--timeout=1",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert virtctl.returncode != 0 and "dialing virt-handler: websocket: bad handshake" in virtctl.stderr, (
        virtctl.returncode,
        virtctl.stderr,
    )

    serial_console("console-unpublished")
    bridge = ConsoleBridge(_api_client(kubeconfig), NAMESPACE, "console-unpublished", connect_timeout=30)
    try:
        _read_until(bridge.sock, GREETING, 30)
    finally:
        bridge.close()


def test_the_handler_endpoint_refuses_a_client_that_is_not_virt_api(testbed):
    """Mutual TLS as virt-handler's: a certificate of the right CA but another name is refused
    (the bed's admin certificate; virt-api's carries kubevirt.io:system:client:virt-handler)."""
    kubeconfig, record = testbed
    pki = Path(record.state_dir) / "pki"
    ip = kubectl(
        kubeconfig,
        "get",
        "pod",
        "-n",
        kubevirt.NAMESPACE,
        "-l",
        "kubevirt.io=virt-handler",
        "-o",
        "jsonpath={.items[0].status.podIP}",
    )
    ctx = ssl.create_default_context(cafile=str(pki / "slirp-conformance-testbed-ca.crt"))
    ctx.check_hostname = False  # virt-api checks the name in the certificate, not the host
    ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
    with (
        socket.create_connection((ip, record.ports["virt-handler-console"]), timeout=10) as raw,
        ctx.wrap_socket(raw) as tls,
    ):
        tls.sendall(
            b"GET /v1/namespaces/default/virtualmachineinstances/x/console HTTP/1.1\r\n"
            b"Host: x\r\nConnection: close\r\n\r\n"
        )
        reply = tls.recv(4096)
    assert reply.startswith(b"HTTP/1.1 403") and handler_console.CLIENT_COMMON_NAME.encode() in reply, reply[:300]


def test_virtctl_version_reads_virt_apis_version_through_the_aggregator(testbed):
    """`virtctl version` asks /apis/subresources.kubevirt.io/v1/version: the APIService route to
    virt-api, which reports the release it was built from (version-stamped as KubeVirt's build)."""
    kubeconfig, _ = testbed
    out = subprocess.run(
        [str(_virtctl()), "--kubeconfig", str(kubeconfig), "version"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, (out.returncode, out.stderr)
    lines = {line.split(":", 1)[0]: line for line in out.stdout.splitlines() if ":" in line}
    for side in ("Client Version", "Server Version"):
        assert f'GitVersion:"{KUBEVIRT_VERSION}"' in lines.get(side, ""), f"{side}: {out.stdout} {out.stderr}"
    assert "Invalid character" not in out.stderr + out.stdout, out.stderr


def _virt_api_address(kubeconfig: Path) -> str:
    slice_ = json.loads(
        kubectl(kubeconfig, "get", "endpointslice", "-n", kubevirt.NAMESPACE, "virt-api-testbed", "-o", "json")
    )
    return slice_["endpoints"][0]["addresses"][0]


def test_down_removes_virt_apis_address_and_the_handler_endpoint(testbed):
    kubeconfig, record = testbed
    address = _virt_api_address(kubeconfig)
    port = record.ports["virt-handler-console"]
    assert service_address.addresses_in_use().get(address) == 1, f"premise: {address} is on this host"
    assert processes.listening(port), "premise: the handler endpoint listens"
    down = testbed_cli.run("down", "--kubeconfig", str(kubeconfig), timeout=600)
    assert down.returncode == 0, down.stderr
    assert address not in service_address.addresses_in_use(), f"{address} left on this host after down"
    assert not [p.name for p in record.processes if processes.alive(p)], "processes left after down"
    assert not os.path.exists(record.state_dir)


def _links() -> list[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, timeout=30).stdout
    return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines()]


def test_interrupted_up_leaves_no_address_behind(tmp_path):
    """Ctrl-C once virt-api runs on its address: `up` stops everything, the veth goes with its holder."""
    kubeconfig = tmp_path / "kubeconfig"
    links_before: list[str] = []
    record, returncode, _, err = testbed_cli.interrupt_up(
        kubeconfig, KUBEVIRT_VERSION, "testbed: virt-api ready", 600, on_ready=lambda: links_before.extend(_links())
    )
    holders = [p for p in record.processes if p.name == "virt-api-address"]
    assert holders, f"premise: the record names virt-api's address holder: {[p.name for p in record.processes]}"
    interface = service_address.INTERFACE_PREFIX + str(holders[0].pid)
    assert returncode == 130, f"expected exit 130 after Ctrl-C, got {returncode}: {err[-2000:]}"
    assert interface in links_before, f"premise: {interface} is there before Ctrl-C: {links_before}"
    assert interface not in _links(), f"{interface} left after Ctrl-C"
    assert not [p.name for p in record.processes if processes.alive(p)], "processes left after Ctrl-C"
    assert not os.path.exists(record.state_dir), f"{record.state_dir} left after Ctrl-C"
