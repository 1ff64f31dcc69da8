"""The console websocket dials the API server the way the kubeconfig says (issue 7, item 6):
through its ``proxy-url`` and checking the server certificate against its ``tls-server-name``,
as the official client's REST calls do (kubernetes config/kube_config.py sets
``Configuration.proxy`` and ``.tls_server_name`` from those cluster fields).

Against the real kind cluster with KubeVirt (``kubevirt_kind``, no VM needed): the console of a
VMI that does not exist gets virt-api's own NotFound through the API server's aggregator, which
proves the TLS handshake and the route to the API server worked. kind's kube-apiserver serving
certificate names localhost and 127.0.0.1 (kind's kubeadm config, ``certSANs``) and the kubernetes
Service's names, not ``not-the-api-server.example``.
"""

from __future__ import annotations

import json
import re
import socket
import ssl
import threading
from pathlib import Path

import pytest
import websocket
import yaml
from kubernetes import config as kubernetes_config

from slirp_conformance.kubevirt.console_websocket import ConsoleBridge

pytestmark = pytest.mark.kind
# virt-api looks the VMI up first (pkg/virt-api/rest/console.go, validateVMIForConsole, v1.1.0 to
# v1.9.0): a missing one is the API's NotFound Status.
NOT_FOUND = {"code": 404, "reason": "NotFound", "message": 'virtualmachineinstance.kubevirt.io "no-such-vmi" not found'}


class ConnectProxy:
    """A minimal HTTP CONNECT proxy on 127.0.0.1 that records each request line."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._sockets: list[socket.socket] = [self._server]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            self._sockets.append(client)
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = client.recv(4096)
            if not chunk:
                return
            head += chunk
        line = head.split(b"\r\n", 1)[0].decode()
        self.requests.append(line)
        host, port = line.split()[1].rsplit(":", 1)
        upstream = socket.create_connection((host, int(port)), timeout=10)
        self._sockets.append(upstream)
        client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        for s in self._sockets:
            s.close()


@pytest.fixture
def proxy():
    p = ConnectProxy()
    yield p
    p.close()


def _client(kubevirt_kind, tmp_path, **cluster_fields):
    cfg = yaml.safe_load(Path(kubevirt_kind.kubeconfig).read_text())
    cfg["clusters"][0]["cluster"].update(cluster_fields)
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(cfg))
    return kubernetes_config.new_client_from_config(config_file=str(path))


def _console_status(api_client) -> int:
    """The status of virt-api's answer for the console of a VMI that does not exist (checked to be
    virt-api's own NotFound, so a 404 of some other hop cannot pass)."""
    with pytest.raises(websocket.WebSocketBadStatusException) as err:
        ConsoleBridge(api_client, "default", "no-such-vmi", connect_timeout=10)
    body = (err.value.resp_body or b"").decode(errors="replace")
    try:
        status = json.loads(body)
    except ValueError:
        status = {}
    assert {k: status.get(k) for k in NOT_FOUND} == NOT_FOUND, (err.value.status_code, body)
    return err.value.status_code


def test_console_goes_through_the_kubeconfigs_proxy(kubevirt_kind, tmp_path, proxy):
    api_client = _client(kubevirt_kind, tmp_path, **{"proxy-url": f"http://127.0.0.1:{proxy.port}"})
    assert _console_status(api_client) == 404
    server = yaml.safe_load(Path(kubevirt_kind.kubeconfig).read_text())["clusters"][0]["cluster"]["server"]
    port = server.rsplit(":", 1)[1]
    assert proxy.requests == [f"CONNECT 127.0.0.1:{port} HTTP/1.1"], proxy.requests


def test_a_dead_proxy_is_not_bypassed(kubevirt_kind, tmp_path):
    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    api_client = _client(kubevirt_kind, tmp_path, **{"proxy-url": f"http://127.0.0.1:{port}"})
    with pytest.raises((ConnectionRefusedError, websocket.WebSocketProxyException, OSError)) as err:
        ConsoleBridge(api_client, "default", "no-such-vmi", connect_timeout=10)
    assert not isinstance(err.value, websocket.WebSocketBadStatusException), "reached the server directly"


def test_tls_server_name_is_what_the_certificate_is_checked_against(kubevirt_kind, tmp_path):
    assert _console_status(_client(kubevirt_kind, tmp_path, **{"tls-server-name": "localhost"})) == 404
    with pytest.raises(ssl.SSLCertVerificationError, match=re.escape("not-the-api-server.example")):
        ConsoleBridge(
            _client(kubevirt_kind, tmp_path, **{"tls-server-name": "not-the-api-server.example"}),
            "default",
            "no-such-vmi",
            connect_timeout=10,
        )


def test_without_either_field_the_console_dials_the_server_directly(kubevirt_kind, tmp_path, proxy):
    assert _console_status(_client(kubevirt_kind, tmp_path)) == 404
    assert proxy.requests == []
