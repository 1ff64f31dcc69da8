"""The fake's virt-api: the aggregated ``subresources.kubevirt.io/v1`` API.

- ``healthz`` and ``version``: what the operator emulation reports (``kubevirt``), among it the
  KubeVirt CR's resourceVersion the components have loaded (``config-resource-version``).
- VMI console (virt-api/virt-handler): ``GET /apis/subresources.kubevirt.io/v1/namespaces/{ns}/
  virtualmachineinstances/{name}/console``, subprotocol ``plain.kubevirt.io``; BINARY frames
  carry serial bytes both ways, TEXT frames from the client are dropped; one session per VMI
  (a new one closes the old, then QEMU's single-client serial socket is reconnected).

Anything else (VMI port-forward among it) is 404: no remaining self-test needs it, and the test
bed's real virt-api serves the rest.
"""

from __future__ import annotations

import asyncio
import socket

from aiohttp import WSMsgType, web

from tests.node_side import errors
from tests.node_side.pod_streams import close_websockets, upgrade

from .controllers import VMIS, Controllers, Runtime
from .store import Store


class ConsoleSession:
    def __init__(self, ws: web.WebSocketResponse, sock: socket.socket) -> None:
        self.ws, self.sock = ws, sock

    async def close(self) -> None:
        try:
            self.sock.close()
        finally:
            if not self.ws.closed:
                await self.ws.close(code=1000, message=b"a new console session replaced this one")


class VirtApi:
    def __init__(self, store: Store, controllers: Controllers, operator) -> None:
        self.store, self.ctl, self.operator = store, controllers, operator
        self.sockets: set[web.WebSocketResponse] = set()

    async def handle(self, request: web.Request, rest: list[str]) -> web.StreamResponse:
        if not self.operator.installed:
            raise errors.ApiError(503, "ServiceUnavailable", "the server is currently unable to handle the request")
        if rest == ["healthz"]:
            return self.operator.healthz()
        if rest == ["version"]:
            return self.operator.version_info()
        if len(rest) == 5 and rest[0] == "namespaces" and rest[2] == "virtualmachineinstances" and rest[4] == "console":
            return await self.console(request, rest[1], rest[3])
        raise errors.ApiError(404, "NotFound", "the server could not find the requested resource")

    def _running_vmi(self, ns: str, name: str) -> Runtime:
        vmi = self.store.get(VMIS, ns, name)
        phase = (vmi.get("status") or {}).get("phase", "")
        rt = self.ctl.runtime_for_vmi(ns, name)
        if phase != "Running" or rt is None or rt.vm is None or rt.closed:
            raise errors.bad_request(f"Unable to connect to VM because phase is {phase or 'Pending'} instead of "
                                     "Running")
        return rt

    async def console(self, request: web.Request, ns: str, name: str) -> web.StreamResponse:
        rt = self._running_vmi(ns, name)
        old = rt.console
        rt.console = None
        if old is not None:
            await old.close()
        loop = asyncio.get_running_loop()
        try:
            sock = await loop.run_in_executor(None, rt.vm.console_socket)
        except Exception as exc:  # noqa: BLE001 - the lab died under us (SetupError, WaitTimeout, OSError)
            raise errors.ApiError(500, "InternalError", f"failed to connect to the serial console: {exc}") from None
        ws = await upgrade(request, ("plain.kubevirt.io",))
        self.sockets.add(ws)
        sock.setblocking(False)
        session = rt.console = ConsoleSession(ws, sock)
        pump = loop.create_task(self._console_out(sock, ws))
        try:
            async for msg in ws:
                if msg.type == WSMsgType.BINARY:
                    try:
                        await loop.sock_sendall(sock, msg.data)
                    except OSError:
                        break
                # TEXT frames are dropped, like virt-handler does
        finally:
            pump.cancel()
            sock.close()
            if rt.console is session:
                rt.console = None
            if not ws.closed:
                await ws.close()
            self.sockets.discard(ws)
        return ws

    @staticmethod
    async def _console_out(sock: socket.socket, ws: web.WebSocketResponse) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                data = await loop.sock_recv(sock, 65536)
                if not data:
                    break
                await ws.send_bytes(data)
        except (OSError, ConnectionResetError):
            pass
        if not ws.closed:
            await ws.close(code=1000, message=b"the serial console closed")

    async def close_all(self) -> None:
        await close_websockets(self.sockets)
