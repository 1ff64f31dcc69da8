"""The KubeVirt serial console as a socket the console client can read: a websocket bridge.

``GET .../virtualmachineinstances/{name}/console`` upgraded with subprotocol
``plain.kubevirt.io``; serial bytes travel in BINARY frames both ways (virt-handler drops text
frames). One session per VMI: opening another closes this one, which the console client sees
as end of stream. TLS, credentials and the route (the kubeconfig's ``proxy-url`` and
``tls-server-name``) come from the official client's configuration, so certificates, tokens,
exec plugins and proxies work as they do for every other call.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import urllib.parse
from typing import Any

import websocket

from slirp_conformance.errors import SetupError
from slirp_conformance.kubevirt.apis import vmi_console_path

log = logging.getLogger("slirp.console")
SUBPROTOCOL = "plain.kubevirt.io"


def websocket_options(api_client: Any) -> tuple[str, dict]:
    """(base ws:// or wss:// URL, keyword arguments for websocket.create_connection)."""
    cfg = api_client.configuration
    if cfg.refresh_api_key_hook is not None:  # exec plugins and expiring tokens
        cfg.refresh_api_key_hook(cfg)
    # auth_settings() is how the client itself builds auth headers (token, exec plugin, basic).
    headers = [
        f"{a['key']}: {a['value']}" for a in cfg.auth_settings().values() if a.get("in") == "header" and a.get("value")
    ]
    sslopt: dict = {"cert_reqs": ssl.CERT_REQUIRED if cfg.verify_ssl else ssl.CERT_NONE}
    if cfg.ssl_ca_cert:
        sslopt["ca_certs"] = cfg.ssl_ca_cert
    if cfg.cert_file:
        sslopt["certfile"] = cfg.cert_file
    if cfg.key_file:
        sslopt["keyfile"] = cfg.key_file
    if cfg.verify_ssl and getattr(cfg, "assert_hostname", None) is False:
        sslopt["check_hostname"] = False
    # The kubeconfig's cluster `tls-server-name` (kube_config.py puts it in Configuration.tls_server_name):
    # the name sent as SNI and checked against the certificate instead of the server URL's host.
    if getattr(cfg, "tls_server_name", None):
        sslopt["server_hostname"] = cfg.tls_server_name
    base = cfg.host.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
    return base, {"header": headers, "sslopt": sslopt, **_proxy_options(cfg)}


def _proxy_options(cfg: Any) -> dict:
    """websocket-client's proxy arguments for the cluster's `proxy-url` (Configuration.proxy, which the
    client also fills from HTTPS_PROXY/NO_PROXY), so the console takes the same route as REST calls."""
    if not getattr(cfg, "proxy", None):
        return {}
    url = urllib.parse.urlsplit(cfg.proxy)
    scheme = url.scheme or "http"
    if scheme not in ("http", "socks4", "socks4a", "socks5", "socks5h"):
        raise SetupError(
            f"the kubeconfig's proxy-url scheme {scheme!r} is not supported for the console "
            f"websocket; use http:// or socks5://"
        )
    options: dict = {
        "http_proxy_host": url.hostname,
        "http_proxy_port": url.port or (1080 if "socks" in scheme else 3128),
        "proxy_type": scheme,
    }
    if url.username:
        options["http_proxy_auth"] = (urllib.parse.unquote(url.username), urllib.parse.unquote(url.password or ""))
    if getattr(cfg, "no_proxy", None):
        options["http_no_proxy"] = [h.strip() for h in cfg.no_proxy.split(",") if h.strip()]
    return options


class ConsoleBridge:
    """Pumps the websocket to one end of a socket pair; ``sock`` is the other end."""

    def __init__(self, api_client: Any, namespace: str, vmi: str, connect_timeout: float = 30) -> None:
        base, opts = websocket_options(api_client)
        url = base + vmi_console_path(namespace, vmi)
        self._ws = websocket.create_connection(url, subprotocols=[SUBPROTOCOL], timeout=connect_timeout, **opts)
        self._ws.settimeout(None)
        self.sock, self._inner = socket.socketpair()
        self._closed = threading.Event()
        for target, name in ((self._from_ws, "console-rx"), (self._to_ws, "console-tx")):
            threading.Thread(target=target, name=name, daemon=True).start()

    def _from_ws(self) -> None:
        try:
            while not self._closed.is_set():
                opcode, data = self._ws.recv_data(control_frame=False)
                if opcode == websocket.ABNF.OPCODE_CLOSE or (opcode == 0 and not data):
                    break
                if opcode in (websocket.ABNF.OPCODE_BINARY, websocket.ABNF.OPCODE_TEXT):
                    self._inner.sendall(data if isinstance(data, bytes) else data.encode())
        except (websocket.WebSocketException, OSError) as e:
            if not self._closed.is_set():
                log.info("console websocket ended: %s", e)
        finally:
            self.close()

    def _to_ws(self) -> None:
        try:
            while data := self._inner.recv(4096):
                self._ws.send_binary(data)  # text frames would be dropped by virt-handler
        except (websocket.WebSocketException, OSError):
            pass
        finally:
            self.close()

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        for closer in (self._ws.close, self._inner.close):
            try:
                closer()
            except (websocket.WebSocketException, OSError):
                pass
