"""virt-handler's console endpoint, the one part of the console path the bed plays itself.

virt-api's console subresource (pkg/virt-api/rest/console.go and dialers.go at v1.1.0) lists the
pods labelled ``kubevirt.io=virt-handler`` on the VMI's node in KubeVirt's namespace
(kubevirt.io/client-go kubecli/handler.go ``getVirtHandler``), dials
``wss://<pod IP>:<--console-server-port>/v1/namespaces/NS/virtualmachineinstances/NAME/console``
with subprotocol ``plain.kubevirt.io`` and its handler client certificate, and copies raw bytes
between that websocket and the client's. This server answers that request as virt-handler's
console server does (pkg/virt-handler/rest/console.go ``SerialHandler`` and ``stream``,
cmd/virt-handler/virt-handler.go ``runServer``):

- mutual TLS as ``SetupTLSForVirtHandlerServer`` (pkg/util/tls/tls.go): the client certificate must
  chain to the KubeVirt CA, be for client auth and be named ``kubevirt.io:system:client:virt-handler``;
  the serving certificate is named ``kubevirt.io:system:node:virt-handler`` (virt-api checks that);
- a VMI that does not exist on this node: 404 ``VMI NS/NAME does not exist`` (``getVMI``);
- no serial console socket: 400 with the stat error, before the upgrade (``getUnixSocketPath``);
- else upgrade, dial the socket, copy binary frames to the socket and socket bytes to binary frames
  (text frames are skipped, as kubecli's ``binaryReader`` does); a second session to the same VMI
  ends the first (``newStopChan``).

The socket is where the node agent publishes the VM's serial console:
``node_layout.console_socket(state_dir, namespace, name)``.

``start`` (used by ``hack/testbed.sh up``) creates the virt-handler pod on kwok's node and runs this
server as a recorded process of the bed on the IP kwok gives that pod; ``python -m
tests.testbed.handler_console`` is that process.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import ssl
import sys
from pathlib import Path

from aiohttp import ClientSession, ClientTimeout, WSMsgType, web

from slirp_conformance import waits
from tests.testbed import processes
from tests.testbed.node_layout import console_socket

REPO_ROOT = Path(__file__).resolve().parents[2]
HANDLER_POD_LABEL = {"kubevirt.io": "virt-handler"}  # virtv1.AppLabel in (virt-handler)
SERVER_COMMON_NAME = "kubevirt.io:system:node:virt-handler"  # what virt-api's verifyPeerCert wants
CLIENT_COMMON_NAME = "kubevirt.io:system:client:virt-handler"  # what virt-handler wants of virt-api
SUBPROTOCOL = "plain.kubevirt.io"
CHUNK = 32768  # kubecli.WebsocketMessageBufferSize


# -- the server process -------------------------------------------------------------------------
def _peer_common_name(request) -> str | None:
    cert = request.transport.get_extra_info("peercert") if request.transport else None
    for rdn in (cert or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return value
    return None


class ConsoleServer:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.state_dir = Path(args.state_dir)
        self.sessions: dict[str, asyncio.Event] = {}  # VMI uid -> "stop" of its current session

    @functools.cached_property
    def api_context(self) -> ssl.SSLContext:
        """The TLS context of its API requests (made once: it reads the key and CA files)."""
        ctx = ssl.create_default_context(cafile=self.args.ca)
        ctx.load_cert_chain(self.args.api_cert, self.args.api_key)
        return ctx

    async def vmi_on_node(self, session, namespace: str, name: str) -> dict | None:
        """The VMI, if it exists and is on this node (virt-handler's informer holds only those)."""
        url = f"{self.args.api_server}/apis/kubevirt.io/v1/namespaces/{namespace}/virtualmachineinstances/{name}"
        async with session.get(url, ssl=self.api_context) as r:
            if r.status == 404:
                return None
            r.raise_for_status()
            vmi = await r.json()
        return vmi if (vmi.get("status") or {}).get("nodeName") == self.args.node_name else None

    async def console(self, request):
        if _peer_common_name(request) != CLIENT_COMMON_NAME:
            return web.Response(
                status=403,
                text=f"common name is invalid, expected {CLIENT_COMMON_NAME}, but got {_peer_common_name(request)}",
            )
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        async with ClientSession(timeout=ClientTimeout(total=waits.timeout("api-probe"))) as session:
            vmi = await self.vmi_on_node(session, namespace, name)
        if vmi is None:
            return web.Response(status=404, text=f"VMI {namespace}/{name} does not exist")
        path = console_socket(self.state_dir, namespace, name)
        try:
            os.stat(path)
        except FileNotFoundError:
            return web.Response(status=400, text=f"stat {path}: no such file or directory")
        ws = web.WebSocketResponse(protocols=(SUBPROTOCOL,), max_msg_size=0, autoping=True)
        await ws.prepare(request)
        try:
            reader, writer = await asyncio.open_unix_connection(str(path))
        except OSError as e:
            print(f"failed to dial unix socket {path}: {e}", file=sys.stderr, flush=True)
            await ws.close()
            return ws
        uid = vmi["metadata"]["uid"]
        previous = self.sessions.get(uid)
        if previous is not None:
            previous.set()
        stop = self.sessions[uid] = asyncio.Event()
        print(f"console of {namespace}/{name}: connected to {path}", file=sys.stderr, flush=True)

        async def socket_to_client() -> None:
            while data := await reader.read(CHUNK):
                await ws.send_bytes(data)

        async def client_to_socket() -> None:
            async for message in ws:
                if message.type == WSMsgType.BINARY:
                    writer.write(message.data)
                    await writer.drain()
                elif message.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
                    break

        tasks = [asyncio.ensure_future(t) for t in (socket_to_client(), client_to_socket(), stop.wait())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            writer.close()
            await ws.close()
            if self.sessions.get(uid) is stop:
                del self.sessions[uid]
        print(f"console of {namespace}/{name}: closed", file=sys.stderr, flush=True)
        return ws


def serve(args: argparse.Namespace) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2  # the KubeVirt CR's default TLSConfiguration
    ctx.load_cert_chain(args.cert, args.key)
    ctx.load_verify_locations(args.ca)
    ctx.verify_mode = ssl.CERT_REQUIRED  # RequireAndVerifyClientCert
    server = ConsoleServer(args)
    app = web.Application()
    app.router.add_get("/v1/namespaces/{namespace}/virtualmachineinstances/{name}/console", server.console)
    print(f"virt-handler console endpoint on https://{args.listen}:{args.port}", file=sys.stderr, flush=True)
    web.run_app(app, host=args.listen, port=args.port, ssl_context=ctx, print=None, shutdown_timeout=2, access_log=None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.testbed.handler_console",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for flag in ("listen", "cert", "key", "ca", "state-dir", "node-name", "api-server", "api-cert", "api-key"):
        parser.add_argument(f"--{flag}", required=True)
    parser.add_argument("--port", type=int, required=True)
    serve(parser.parse_args(argv))
    return 0


# -- started by the bed -------------------------------------------------------------------------
def handler_pod(namespace: str, node_name: str, kubevirt_version: str) -> dict:
    """The pod virt-api looks up: virt-handler's labels, on the node, with the node's network."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"virt-handler-{node_name}", "namespace": namespace, "labels": HANDLER_POD_LABEL},
        "spec": {
            "nodeName": node_name,
            "hostNetwork": True,
            "containers": [{"name": "virt-handler", "image": f"quay.io/kubevirt/virt-handler:{kubevirt_version}"}],
        },
    }


def start(testbed, namespace: str, node_name: str, kubevirt_version: str) -> int:
    """Create the virt-handler pod, serve the console endpoint on its IP; return the port (virt-api's
    ``--console-server-port``: a free one, so that beds side by side do not collide on 8186)."""
    testbed.kubectl("create", "-f", "-", input=json.dumps(handler_pod(namespace, node_name, kubevirt_version)))
    pod = handler_pod(namespace, node_name, kubevirt_version)["metadata"]["name"]

    def pod_ip() -> str:
        return testbed.kubectl("get", "pod", "-n", namespace, pod, "-o", "jsonpath={.status.podIP}").stdout.strip()

    ip = waits.wait_for(
        f"kwok to give pod {namespace}/{pod} an IP",
        pod_ip,
        waits.timeout("testbed-component"),
        describe=lambda got: repr(got or "no podIP yet"),
    )
    serving = testbed.ca.issue("virt-handler-console", SERVER_COMMON_NAME, hosts=(ip,), server=True)
    port = processes.free_port(ip)
    testbed.record.ports["virt-handler-console"] = port
    proc = testbed.spawn(
        "virt-handler-console",
        [
            # Importable from whatever directory the bed was started in.
            sys.executable,
            "-c",
            f"import runpy, sys; sys.path.insert(0, {str(REPO_ROOT)!r}); "
            "runpy.run_module('tests.testbed.handler_console', run_name='__main__')",
            f"--listen={ip}",
            f"--port={port}",
            f"--cert={serving.cert}",
            f"--key={serving.key}",
            f"--ca={testbed.ca.pair.cert}",
            f"--state-dir={testbed.state}",
            f"--node-name={node_name}",
            f"--api-server={testbed.server}",
            f"--api-cert={testbed.admin.cert}",
            f"--api-key={testbed.admin.key}",
        ],
    )
    testbed.wait_ready(
        proc, f"the virt-handler console endpoint listening on {ip}:{port}", lambda: processes.listening(port, ip)
    )
    return port


if __name__ == "__main__":
    sys.exit(main())
