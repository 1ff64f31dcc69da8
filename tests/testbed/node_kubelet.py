"""The kubelet's streaming endpoints of the test bed's node: exec and port-forward into the pods
whose network the node agent really provides, everything else passed on to kwok.

The node advertises this server as its kubelet (kwok's ``--node-port``; kwok itself listens on
another port), so the real API server proxies ``kubectl exec``/``port-forward`` (and the Python
client's) here, over TLS with its kubelet client certificate. Per connection the request head is
read first:

- ``/exec/<ns>/<pod>[/<uid>]/<container>`` and ``/portForward/<ns>/<pod>[/<uid>]`` (the kubelet
  paths the API server uses: k8s.io/kubernetes pkg/kubelet/server/server.go) for a pod of a
  namespace where the agent runs a VM (outside kwok's exec namespace) are served here: the launcher
  pod's containers run in its VMI lab's pod network namespace (nsenter, so ``cat /etc/resolv.conf``
  shows the pod's resolv.conf and ``/proc`` shows QEMU), the namespace's other pods on the lab's
  cluster side. The protocols: SPDY/3.1 (``spdy`` via ``frontdoor.SpdyUpgrades``, what kubectl
  and the API server's stream translator speak) and the ``v4.channel.k8s.io`` websockets the API
  server passes through (``tests/testbed/node_pod_streams.py``); the request line is rewritten to
  the API path those expect.
- anything else (kwok's ``ClusterExec``/``ClusterPortForward`` namespace, logs, health) is piped
  byte for byte to kwok's own server.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import ssl
import urllib.parse

from aiohttp import web

from tests.kube_api import errors
from tests.testbed import node_lab_exec
from tests.testbed.frontdoor import MAX_HEAD, FrontDoor, SpdyUpgrades
from tests.testbed.node_pod_streams import PodStreams

log = logging.getLogger("slirp.testbed.node_kubelet")
# The API server writes /portForward/ (k8s.io/kubernetes pkg/registry/core/pod/strategy.go,
# PortForwardLocation); the kubelet serves both spellings.
_KUBELET_PATH = re.compile(r"^/(exec|portforward|portForward)/([^/]+)/([^/]+)(?:/(.*))?$")
_EXEC_PARAMS = {"input": "stdin", "output": "stdout", "error": "stderr"}
_PORTFORWARD_PARAMS = {"port": "ports"}


class PodView:
    """The pods of the node as ``frontdoor``/``pod_streams`` look them up."""

    def __init__(self, agent) -> None:
        self.agent = agent

    def pod(self, namespace: str, name: str) -> dict:
        pod = self.agent.pods.get((namespace, name))
        if pod is None:
            raise errors.ApiError(404, "NotFound", f'pods "{name}" not found')
        return pod


def rewrite(request_line: str) -> tuple[str, str, str] | None:
    """``(namespace, pod, rewritten request line)`` for a kubelet exec/port-forward request, else None."""
    method, _, rest = request_line.partition(" ")
    target, _, version = rest.partition(" ")
    url = urllib.parse.urlsplit(target)
    m = _KUBELET_PATH.match(url.path)
    if m is None:
        return None
    action, ns, pod, tail = m.groups()
    action = action.lower()
    # The API server hands the kubelet its own parameter names (k8s.io/kubernetes
    # pkg/registry/core/pod/strategy.go streamParams and PortForwardLocation; k8s.io/api core/v1
    # ExecStdinParam...): renamed to the API's, which the stream handlers read.
    renames = _PORTFORWARD_PARAMS if action == "portforward" else _EXEC_PARAMS
    query = "&".join(
        renames.get(q.partition("=")[0], q.partition("=")[0]) + "=" + q.partition("=")[2]
        for q in url.query.split("&")
        if q
    )
    if action == "exec":
        parts = [p for p in (tail or "").split("/") if p]
        if not parts:
            return None
        query = "&".join(q for q in (query, "container=" + urllib.parse.quote(parts[-1])) if q)
    path = f"/api/v1/namespaces/{ns}/pods/{pod}/{action}" + (f"?{query}" if query else "")
    return ns, pod, f"{method} {path} {version}"


class KubeletDoor(asyncio.Protocol):
    def __init__(self, server: KubeletServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.upstream: asyncio.StreamWriter | None = None
        self.decided = False

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.decided:  # piping to kwok
            if self.upstream is not None:
                self.upstream.write(data)
            else:
                self.buf += data
            return
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0 and len(self.buf) < MAX_HEAD:
            return
        self.decided = True
        head = self.buf[: max(end, 0)].decode("latin-1")
        request_line, _, rest = head.partition("\r\n")
        found = rewrite(request_line)
        log.info("kubelet request %s -> %s", request_line.split("?")[0], "node agent" if found else "kwok")
        if found is not None and self.server.backs(found[0], found[1]):
            self.buf = (found[2] + "\r\n" + rest).encode("latin-1") + self.buf[end:]
            door = FrontDoor(self.server.http, self.server.upgrades)
            self.transport.set_protocol(door)
            door.connection_made(self.transport)
            door.data_received(self.buf)
            return
        asyncio.get_running_loop().create_task(self._to_kwok())

    async def _to_kwok(self) -> None:
        host, _, port = self.server.agent.cfg.kwok_address.rpartition(":")
        try:
            reader, self.upstream = await asyncio.open_connection(host, int(port), ssl=self.server.kwok_tls)
        except OSError as e:
            body = f"node agent: kwok's kubelet server at {host}:{port} is not reachable: {e}".encode()
            self.transport.write(
                b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\nContent-Length: "
                + str(len(body)).encode()
                + b"\r\nConnection: close\r\n\r\n"
                + body
            )
            self.transport.close()
            return
        self.upstream.write(self.buf)
        self.buf = b""
        try:
            while chunk := await reader.read(65536):
                self.transport.write(chunk)
        except OSError:
            pass
        finally:
            self.transport.close()
            self.upstream.close()

    def eof_received(self):
        return False  # TLS cannot half-close: the connection ends

    def connection_lost(self, exc) -> None:
        if self.upstream is not None:
            self.upstream.close()


class KubeletServer:
    def __init__(self, agent) -> None:
        self.agent = agent
        cfg = agent.cfg
        view = PodView(agent)
        self.streams = PodStreams(view.pod, agent.lab_for_pod)
        # Only the API server's kubelet client certificate may open SPDY streams (no token exists).
        self.upgrades = SpdyUpgrades(view.pod, agent.lab_for_pod, secrets.token_urlsafe(32), cfg.kubelet_client_cn)
        self.tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.tls.load_cert_chain(cfg.serving_cert, cfg.serving_key)
        self.tls.load_verify_locations(cfg.ca_file)
        self.tls.verify_mode = ssl.CERT_REQUIRED  # the bed's CA: the API server's kubelet client
        self.kwok_tls = ssl.create_default_context(cafile=cfg.ca_file)
        self.kwok_tls.load_cert_chain(cfg.kubelet_client_cert, cfg.kubelet_client_key)
        self.kwok_tls.set_alpn_protocols(["http/1.1"])
        app = web.Application(middlewares=[_api_errors])
        for action, handler in (("exec", self.streams.pod_exec), ("portforward", self.streams.pod_portforward)):
            route = f"/api/v1/namespaces/{{ns}}/pods/{{name}}/{action}"
            app.router.add_route(
                "*",
                route,
                lambda request, h=handler, a=action: h(
                    request, None, request.match_info["ns"], request.match_info["name"], a
                ),
            )
        self.app = app
        self.runner: web.AppRunner | None = None
        self.listener: asyncio.Server | None = None

    def backs(self, namespace: str, pod: str) -> bool:
        """Is the pod's network one of the agent's labs? (Else kwok answers, e.g. "no exec found".)"""
        found = self.agent.pods.get((namespace, pod))
        return (
            namespace != self.agent.cfg.exec_namespace
            and found is not None
            and self.agent.lab_for_pod(found)[0] is not None
        )

    async def start(self) -> None:
        self.runner = web.AppRunner(self.app, handle_signals=False, access_log=None, shutdown_timeout=2)
        await self.runner.setup()
        self.http = self.runner.server
        self.listener = await asyncio.get_running_loop().create_server(
            lambda: KubeletDoor(self), "127.0.0.1", self.agent.cfg.kubelet_port, ssl=self.tls
        )

    async def close(self) -> None:
        if self.listener is not None:
            self.listener.close()
        await self.streams.close_all()
        self.upgrades.close_all()
        node_lab_exec.kill_all()
        if self.runner is not None:
            await self.runner.cleanup()


@web.middleware
async def _api_errors(request: web.Request, handler):
    try:
        return await handler(request)
    except errors.ApiError as exc:
        return web.json_response(exc.status(), status=exc.code)


async def serve(agent) -> KubeletServer:
    server = KubeletServer(agent)
    await server.start()
    return server
