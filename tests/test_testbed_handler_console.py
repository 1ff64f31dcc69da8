"""The bed's virt-handler console endpoint on its own (no bed, no build: runs in every self-test
run): it answers as virt-handler v1.1.0 does (pkg/virt-handler/rest/console.go) to a client
holding virt-api's handler certificate, and refuses the rest. A small TLS server stands in for
the API server's VMI GET; a unix socket server stands in for QEMU's serial console.
"""

from __future__ import annotations

import json
import secrets
import ssl
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import websocket

from slirp_conformance import waits
from tests.json_reply import reply_json
from tests.testbed import handler_console, processes
from tests.testbed.pki import CertificateAuthority
from tests.testbed.serial_stand_in import GREETING, SerialConsoleStandIn

REPO = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
NODE = "testbed-node"
VMIS = {("ns", "on-node"): NODE, ("ns", "elsewhere"): "another-node"}


def _api_server(ca: CertificateAuthority) -> ThreadingHTTPServer:
    """Answers GET of the VMIs in VMIS (with their nodeName), 404 for any other; client certs required."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            parts = self.path.strip("/").split("/")  # apis/kubevirt.io/v1/namespaces/NS/virtualmachineinstances/N
            node = VMIS.get((parts[4], parts[6])) if len(parts) == 7 else None
            body = json.dumps(
                {
                    "metadata": {"name": parts[-1], "uid": f"uid-{parts[-1]}"},
                    "status": {"phase": "Running", "nodeName": node},
                }
            ).encode()
            reply_json(self, 200 if node else 404, body)

        def log_message(self, *args):
            pass

    serving = ca.issue("fake-api", "fake-api", hosts=(HOST,), server=True)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(serving.cert), str(serving.key))
    ctx.load_verify_locations(str(ca.pair.cert))
    ctx.verify_mode = ssl.CERT_REQUIRED
    server = ThreadingHTTPServer((HOST, 0), Handler)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def endpoint(tmp_path):
    """(port, state dir, CA, virt-api's handler client pair) of a running endpoint."""
    pki = tmp_path / "pki"
    pki.mkdir()
    ca = CertificateAuthority(pki)
    api = _api_server(ca)
    api_client = ca.issue("handler-api-client", "virt-handler", client=True)
    serving = ca.issue("handler", handler_console.SERVER_COMMON_NAME, hosts=(HOST,), server=True)
    virt_api = ca.issue("virt-api", handler_console.CLIENT_COMMON_NAME, client=True)
    port = processes.free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.testbed.handler_console",
            f"--listen={HOST}",
            f"--port={port}",
            f"--cert={serving.cert}",
            f"--key={serving.key}",
            f"--ca={ca.pair.cert}",
            f"--state-dir={tmp_path}",
            f"--node-name={NODE}",
            f"--api-server=https://{HOST}:{api.server_address[1]}",
            f"--api-cert={api_client.cert}",
            f"--api-key={api_client.key}",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        waits.wait_for(
            f"the handler console endpoint on {HOST}:{port}",
            lambda: proc.poll() is None and processes.listening(port),
            waits.timeout("testbed-component"),
        )
        yield port, tmp_path, ca, virt_api
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        api.shutdown()
        api.server_close()


@pytest.fixture
def stand_ins():
    opened = []
    yield opened
    for s in opened:
        s.close()


def _dial(port: int, ca, pair, name: str, namespace: str = "ns") -> websocket.WebSocket:
    """As virt-api dials virt-handler (kubecli.Dial): wss, plain.kubevirt.io, its client certificate;
    the server's name is not checked (virt-api checks the certificate's common name instead)."""
    return websocket.create_connection(
        f"wss://{HOST}:{port}/v1/namespaces/{namespace}/virtualmachineinstances/{name}/console",
        subprotocols=[handler_console.SUBPROTOCOL],
        timeout=30,
        sslopt={
            "ca_certs": str(ca.pair.cert),
            "certfile": str(pair.cert),
            "keyfile": str(pair.key),
            "check_hostname": False,
        },
    )


def _recv_until(ws: websocket.WebSocket, marker: bytes) -> bytes:
    seen = b""
    while marker not in seen:  # bounded: the connection's 30 s timeout raises
        opcode, data = ws.recv_data()
        assert opcode == websocket.ABNF.OPCODE_BINARY, f"expected binary frames, got opcode {opcode}: {data!r}"
        seen += data
    return seen


def test_streams_binary_frames_to_the_console_socket_and_back(endpoint, stand_ins):
    port, state, ca, virt_api = endpoint
    stand_ins.append(SerialConsoleStandIn(state, "ns", "on-node"))
    ws = _dial(port, ca, virt_api, "on-node")
    try:
        assert ws.getsubprotocol() == handler_console.SUBPROTOCOL
        _recv_until(ws, GREETING)
        nonce = secrets.token_hex(8)
        ws.send("text frames are skipped\n")  # as kubecli's binaryReader does
        ws.send_binary(f"{nonce}\n".encode())
        got = _recv_until(ws, f"echo:{nonce}".encode())
    finally:
        ws.close()
    assert b"skipped" not in got, f"a text frame reached the serial console: {got!r}"


def test_a_second_session_ends_the_first(endpoint, stand_ins):
    port, state, ca, virt_api = endpoint
    stand_ins.append(SerialConsoleStandIn(state, "ns", "on-node"))
    first = _dial(port, ca, virt_api, "on-node")
    _recv_until(first, GREETING)
    second = _dial(port, ca, virt_api, "on-node")
    try:
        _recv_until(second, GREETING)
        opcode, _ = first.recv_data(control_frame=True)
        assert opcode == websocket.ABNF.OPCODE_CLOSE, f"expected the first session closed, got opcode {opcode}"
    finally:
        first.close()
        second.close()


@pytest.mark.parametrize(
    "name, status, message",
    [
        ("missing", 404, "VMI ns/missing does not exist"),
        ("elsewhere", 404, "VMI ns/elsewhere does not exist"),  # not on this node: not in virt-handler's informer
        ("on-node", 400, "console.sock: no such file or directory"),  # nothing published
    ],
)
def test_refuses_before_the_upgrade_as_virt_handler_does(endpoint, name, status, message):
    port, _, ca, virt_api = endpoint
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        _dial(port, ca, virt_api, name)
    body = (refused.value.resp_body or b"").decode(errors="replace")
    assert refused.value.status_code == status and message in body, (refused.value.status_code, body)


def test_refuses_a_client_certificate_of_another_name(endpoint, stand_ins):
    port, state, ca, _ = endpoint
    stand_ins.append(SerialConsoleStandIn(state, "ns", "on-node"))
    someone = ca.issue("someone", "someone-else", client=True)
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        _dial(port, ca, someone, "on-node")
    assert refused.value.status_code == 403, refused.value.status_code


def test_refuses_a_client_without_a_certificate(endpoint):
    """The TLS handshake itself fails (RequireAndVerifyClientCert), before any HTTP answer."""
    port, _, ca, _ = endpoint
    with pytest.raises(Exception) as refused:
        websocket.create_connection(
            f"wss://{HOST}:{port}/v1/namespaces/ns/virtualmachineinstances/on-node/console",
            subprotocols=[handler_console.SUBPROTOCOL],
            timeout=30,
            sslopt={"ca_certs": str(ca.pair.cert), "check_hostname": False},
        ).close()
    assert not isinstance(refused.value, websocket.WebSocketBadStatusException), (
        f"expected a TLS failure, got an HTTP answer: {refused.value}"
    )
    # TLS 1.3: the client's handshake ends before the server has checked; it then hangs up.
    assert isinstance(refused.value, (ssl.SSLError, ConnectionError, websocket.WebSocketConnectionClosedException)), (
        repr(refused.value)
    )
