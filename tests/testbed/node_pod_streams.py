"""The kubelet's streaming endpoints for a pod backed by a reference VM's lab, over websockets with
the real wire protocols; served by the test bed's node agent (tests/testbed/node_kubelet.py, to
which the real API server passes websocket requests through).

- Pod exec: ``v5.channel.k8s.io``/``v4.channel.k8s.io``/``channel.k8s.io``; channel
  byte first (0 stdin, 1 stdout, 2 stderr, 3 error Status with the exit code, 4 resize).
  The command runs in the lab: the launcher's containers in the pod namespace, other pods in
  the peer namespace of a VM's lab in the same namespace; it is a live process with stdin and
  streamed output (see ``node_lab_exec``), except for rootless labs where it runs to completion.
- Pod port-forward: ``v4.channel.k8s.io``/``channel.k8s.io``/``portforward.k8s.io``;
  two channels per port (2i data, 2i+1 error), each opened by a frame with the port number as
  2 bytes little-endian; the port is dialled on the pod's loopback from inside the pod.
  SPDY is the bed's (tests/testbed/spdy.py): upgrade requests here that offer none of these
  subprotocols get HTTP 400.
- Pod logs are not served here: the bed's kubelet endpoint passes them on to kwok.

Who owns the pods says ``pod_of(namespace, name)`` (raises ``errors.ApiError`` 404) and which lab
a pod's containers live in ``lab_for_pod(pod) -> (ReferenceVM or None, "pod" | "peer")``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import Callable

from aiohttp import WSMsgType, web

from tests.kube_api import errors
from tests.testbed import node_lab_exec

log = logging.getLogger("slirp.testbed.node_pod_streams")
EXEC_PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io", "channel.k8s.io")
PORTFORWARD_PROTOCOLS = ("v4.channel.k8s.io", "channel.k8s.io", "portforward.k8s.io")
EXEC_TIMEOUT = 3600  # a bound on one exec session (kubelet has none; streaming idle timeouts are hours)


def _internal_error(exc: BaseException) -> dict:
    return {
        "metadata": {},
        "status": "Failure",
        "reason": "InternalError",
        "code": 500,
        "message": f"Internal error occurred: error executing command in container: {exc}",
        "details": {"causes": [{"message": str(exc)}]},
    }


def _truthy(value: str | None) -> bool:
    return (value or "").lower() in ("true", "1")


def _offered(request: web.Request) -> list[str]:
    return [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()]


def _is_upgrade(request: web.Request) -> bool:
    return request.headers.get("Upgrade", "").lower() == "websocket"


async def upgrade(request: web.Request, protocols: tuple[str, ...]) -> web.WebSocketResponse:
    """The websocket of ``request`` with one of ``protocols``; HTTP 400 (a Status) when it offers none."""
    if not _is_upgrade(request):
        raise errors.bad_request("Upgrade request required")
    if not any(p in protocols for p in _offered(request)):
        raise errors.bad_request(
            f"unable to upgrade: none of the offered subprotocols {_offered(request)} "
            f"is supported; supported: {list(protocols)}"
        )
    ws = web.WebSocketResponse(protocols=protocols, max_msg_size=0, autoping=True)
    await ws.prepare(request)
    return ws


class PodStreams:
    def __init__(self, pod_of: Callable[[str, str], dict], lab_for_pod: Callable[[dict], tuple]) -> None:
        self._pod = pod_of
        self.lab_for_pod = lab_for_pod
        self.sockets: set[web.WebSocketResponse] = set()

    # -- helpers --------------------------------------------------------------------------------------
    @staticmethod
    def _container(pod: dict, wanted: str | None) -> str:
        names = [c["name"] for c in pod.get("spec", {}).get("containers") or []]
        if wanted:
            if wanted not in names:
                raise errors.bad_request(f"container {wanted} is not valid for pod {pod['metadata']['name']}")
            return wanted
        default = (pod["metadata"].get("annotations") or {}).get("kubectl.kubernetes.io/default-container")
        if len(names) == 1:
            return names[0]
        if default in names:
            return default
        raise errors.bad_request(
            f"a container name must be specified for pod {pod['metadata']['name']}, choose one of: [{' '.join(names)}]"
        )

    async def _upgrade(self, request: web.Request, protocols: tuple[str, ...]) -> web.WebSocketResponse:
        ws = await upgrade(request, protocols)
        self.sockets.add(ws)
        return ws

    # -- pod exec ---------------------------------------------------------------------------------------
    async def pod_exec(self, request: web.Request, res, ns: str, name: str, sub: str) -> web.StreamResponse:
        pod = self._pod(ns, name)
        container = self._container(pod, request.query.get("container"))
        argv = request.query.getall("command", [])
        if not argv:
            raise errors.bad_request("you must specify at least 1 command")
        if (pod.get("status") or {}).get("phase") != "Running":
            raise errors.bad_request(f'container not found ("{container}")')
        vm, where = self.lab_for_pod(pod)
        if vm is None:
            raise errors.ApiError(
                500,
                "InternalError",
                f"no running reference VM backs pod {ns}/{name}"
                " (exec into client/peer pods needs a running VM in the same namespace)",
            )
        ws = await self._upgrade(request, EXEC_PROTOCOLS)
        try:
            if node_lab_exec.can_stream(vm):
                status = await self._exec_streaming(ws, vm, where, list(argv), request.query)
            else:
                status = await self._exec_buffered(ws, vm, where, list(argv))
            if not ws.closed:
                await ws.send_bytes(b"\x03" + json.dumps(status).encode())
        finally:
            await ws.close()
            self.sockets.discard(ws)
        return ws

    async def _exec_streaming(self, ws: web.WebSocketResponse, vm, where: str, argv: list[str], query) -> dict:
        """A live process: stdin (channel 0; the v5 close signal 255 ends it), stdout 1, stderr 2."""
        try:
            proc = await node_lab_exec.start(vm, where, argv, stdin=_truthy(query.get("stdin")))
        except OSError as exc:
            return _internal_error(exc)
        want = {1: _truthy(query.get("stdout", "true")), 2: _truthy(query.get("stderr", "true"))}

        async def pump(reader: asyncio.StreamReader, channel: int) -> None:
            while chunk := await reader.read(65536):
                if want[channel] and not ws.closed:
                    await ws.send_bytes(bytes([channel]) + chunk)

        async def from_client() -> None:
            async for msg in ws:
                if msg.type not in (WSMsgType.BINARY, WSMsgType.TEXT) or not msg.data or proc.stdin is None:
                    continue
                # the kubelet takes channel data from text frames too (the python client sends str as text)
                data = msg.data if isinstance(msg.data, bytes) else msg.data.encode("utf-8")
                if data[0] == 0 and not proc.stdin.is_closing():
                    try:
                        proc.stdin.write(data[1:])
                        await proc.stdin.drain()
                    except (BrokenPipeError, ConnectionResetError):
                        pass
                elif data[:2] == b"\xff\x00":
                    proc.stdin.close()

        loop = asyncio.get_running_loop()
        pumps = [loop.create_task(pump(proc.stdout, 1)), loop.create_task(pump(proc.stderr, 2))]
        client = loop.create_task(from_client())
        exited = loop.create_task(proc.wait())
        try:
            await asyncio.wait({exited, client}, timeout=EXEC_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
            if not exited.done():  # the client went away, or the bound ran out: like a killed exec session
                node_lab_exec.kill(proc)
                await asyncio.wait({exited}, timeout=10)
            await asyncio.wait(pumps, timeout=5)
        finally:
            client.cancel()
            for t in pumps:
                t.cancel()
            node_lab_exec.kill(proc)
        return node_lab_exec.exit_status(proc.returncode if proc.returncode is not None else 137)

    async def _exec_buffered(self, ws: web.WebSocketResponse, vm, where: str, argv: list[str]) -> dict:
        """Rootless labs: the command runs to completion through the lab, without input."""
        drain = asyncio.get_running_loop().create_task(self._drain(ws))
        try:
            rc, out, err = await asyncio.get_running_loop().run_in_executor(
                None, lambda: vm.exec_in_pod(argv, timeout=EXEC_TIMEOUT, where=where)
            )
        except (OSError, ValueError, KeyError) as exc:
            return _internal_error(exc)
        finally:
            drain.cancel()
        if out:
            await ws.send_bytes(b"\x01" + out.encode())
        if err:
            await ws.send_bytes(b"\x02" + err.encode())
        return node_lab_exec.exit_status(rc)

    @staticmethod
    async def _drain(ws: web.WebSocketResponse) -> None:
        async for _ in ws:  # stdin, resize and close signals: read and dropped
            pass

    # -- pod port-forward -------------------------------------------------------------------------------
    async def pod_portforward(self, request: web.Request, res, ns: str, name: str, sub: str) -> web.StreamResponse:
        pod = self._pod(ns, name)
        try:
            ports = [int(p) for v in request.query.getall("ports", []) for p in v.split(",") if p.strip()]
        except ValueError:
            raise errors.bad_request("invalid port in ports") from None
        if not ports or any(not 0 < p < 65536 for p in ports):
            raise errors.bad_request('query parameter "port" is required' if not ports else "invalid port")
        if (pod.get("status") or {}).get("phase") != "Running":
            raise errors.bad_request(f"pod {name} is not running")
        vm, where = self.lab_for_pod(pod)
        ws = await self._upgrade(request, PORTFORWARD_PROTOCOLS)
        loop = asyncio.get_running_loop()
        conns: dict[int, socket.socket] = {}
        pumps = []
        try:
            for i, port in enumerate(ports):
                prefix = port.to_bytes(2, "little")
                await ws.send_bytes(bytes([2 * i]) + prefix)
                await ws.send_bytes(bytes([2 * i + 1]) + prefix)
                try:
                    if vm is None:
                        raise ConnectionError("no running reference VM backs this pod")
                    dial = vm.port_forward if where == "pod" else (lambda p: vm._dial("peer", vm.peer_ip, p, 5))
                    s = await loop.run_in_executor(None, dial, port)
                except OSError as exc:
                    msg = (
                        f"an error occurred forwarding {port} -> {port}: error forwarding port {port} to pod "
                        f"{pod['metadata']['uid']}, uid : failed to connect to localhost:{port} inside namespace: "
                        f"{exc}"
                    )
                    await ws.send_bytes(bytes([2 * i + 1]) + msg.encode())
                    continue
                s.setblocking(False)
                conns[2 * i] = s
                pumps.append(loop.create_task(self._sock_to_ws(s, ws, 2 * i)))
            reader = loop.create_task(self._ws_to_socks(ws, conns))
            if pumps:
                await asyncio.wait([reader, *pumps], return_when=asyncio.FIRST_COMPLETED)
            else:
                await asyncio.wait([reader], timeout=1)
            reader.cancel()
        finally:
            for t in pumps:
                t.cancel()
            for s in conns.values():
                s.close()
            await ws.close()
            self.sockets.discard(ws)
        return ws

    @staticmethod
    async def _sock_to_ws(s: socket.socket, ws: web.WebSocketResponse, channel: int) -> None:
        loop = asyncio.get_running_loop()
        while True:
            data = await loop.sock_recv(s, 65536)
            if not data:
                return
            await ws.send_bytes(bytes([channel]) + data)

    @staticmethod
    async def _ws_to_socks(ws: web.WebSocketResponse, conns: dict[int, socket.socket]) -> None:
        loop = asyncio.get_running_loop()
        async for msg in ws:
            if msg.type not in (WSMsgType.BINARY, WSMsgType.TEXT) or not msg.data:
                continue
            data = msg.data if isinstance(msg.data, bytes) else msg.data.encode("utf-8")
            s = conns.get(data[0])
            if s is not None and len(data) > 1:
                try:
                    await loop.sock_sendall(s, data[1:])
                except OSError:
                    return

    async def close_all(self) -> None:
        await close_websockets(self.sockets)


async def close_websockets(sockets: set[web.WebSocketResponse]) -> None:
    """Close every websocket still open (the server stops)."""
    for ws in list(sockets):
        try:
            await ws.close(code=1001, message=b"server shutting down")
        except (ConnectionError, RuntimeError) as exc:
            log.debug("closing a websocket at shutdown: %s", exc)
