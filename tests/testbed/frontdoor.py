"""The listening socket's first look at each connection: SPDY upgrades go to ``spdy``, the rest to aiohttp.

aiohttp switches protocols only for websocket/tcp upgrades, and kubectl 1.27 upgrades exec and
port-forward requests to SPDY/3.1 on a fresh connection. So the request head of every new
connection is read here first; unless it asks for SPDY the connection (and those bytes) is
handed to aiohttp unchanged. For SPDY, the same checks as the REST front (token or client
certificate, the pod, its container, Running) run before the ``101 Switching Protocols``.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import urllib.parse
from collections.abc import Callable

from tests.kube_api import errors
from tests.testbed import node_lab_exec, spdy
from tests.testbed.node_pod_streams import PodStreams

MAX_HEAD = 64 * 1024


class FrontDoor(asyncio.Protocol):
    def __init__(self, http_factory: Callable[[], asyncio.Protocol], upgrades: SpdyUpgrades) -> None:
        self.http_factory, self.upgrades = http_factory, upgrades
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.handed = False

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0 and len(self.buf) < MAX_HEAD:
            return
        lines = self.buf[: max(end, 0)].decode("latin-1").split("\r\n")
        headers: dict[str, list[str]] = {}
        for line in lines[1:]:
            key, _, value = line.partition(":")
            headers.setdefault(key.strip().lower(), []).append(value.strip())
        if end >= 0 and any(v.lower().startswith("spdy/") for v in headers.get("upgrade", [])):
            self.handed = True
            self.upgrades.upgrade(self.transport, lines[0], headers, self.buf[end + 4 :])
            return
        self._hand_to_http()

    def _hand_to_http(self) -> None:
        self.handed = True
        proto = self.http_factory()
        self.transport.set_protocol(proto)
        proto.connection_made(self.transport)
        proto.data_received(self.buf)

    def eof_received(self):
        if not self.handed and self.transport is not None:
            self.transport.close()
        return False

    def connection_lost(self, exc) -> None:
        pass


class SpdyUpgrades:
    def __init__(
        self,
        pod_of: Callable[[str, str], dict],
        lab_for_pod: Callable[[dict], tuple],
        token: str,
        client_cn: str | None,
    ) -> None:
        self.pod_of, self.lab_for_pod, self.token, self.client_cn = pod_of, lab_for_pod, token, client_cn
        self.connections: set[spdy.Connection] = set()

    def _reply(self, transport, exc: errors.ApiError) -> None:
        body = json.dumps(exc.status()).encode()
        reason = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found"}.get(exc.code, "Error")
        transport.write(
            f"HTTP/1.1 {exc.code} {reason}\r\nContent-Type: application/json\r\nContent-Length: "
            f"{len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        transport.close()

    def _authorized(self, transport, headers: dict[str, list[str]]) -> bool:
        auth = (headers.get("authorization") or [""])[0]
        if auth.startswith("Bearer ") and hmac.compare_digest(auth[7:].strip(), self.token):
            return True
        cert = transport.get_extra_info("peercert") or {}
        return bool(self.client_cn) and dict(x[0] for x in cert.get("subject", ())).get("commonName") == self.client_cn

    def upgrade(self, transport, request_line: str, headers: dict[str, list[str]], tail: bytes) -> None:
        try:
            self._upgrade(transport, request_line, headers, tail)
        except errors.ApiError as exc:
            self._reply(transport, exc)

    def _upgrade(self, transport, request_line: str, headers: dict[str, list[str]], tail: bytes) -> None:
        if not self._authorized(transport, headers):
            raise errors.ApiError(401, "Unauthorized", "Unauthorized")
        parts = request_line.split(" ")
        url = urllib.parse.urlsplit(parts[1] if len(parts) > 1 else "/")
        query = urllib.parse.parse_qs(url.query)
        seg = [s for s in url.path.split("/") if s]
        if (
            len(seg) != 7
            or seg[:3] != ["api", "v1", "namespaces"]
            or seg[4] != "pods"
            or seg[6] not in ("exec", "portforward")
        ):
            raise errors.ApiError(404, "NotFound", "the server could not find the requested resource")
        ns, name, action = seg[3], seg[5], seg[6]
        pod = self.pod_of(ns, name)
        offered = [p.strip() for v in headers.get("x-stream-protocol-version", []) for p in v.split(",") if p.strip()]
        supported = spdy.EXEC_PROTOCOLS if action == "exec" else spdy.PORTFORWARD_PROTOCOLS
        chosen = next((p for p in offered if p in supported), None)
        if action == "exec":
            container = PodStreams._container(pod, (query.get("container") or [None])[0])
            argv = query.get("command") or []
            if not argv:
                raise errors.bad_request("you must specify at least 1 command")
        else:
            container, argv = None, []
        if (pod.get("status") or {}).get("phase") != "Running":
            raise errors.bad_request(
                f'container not found ("{container}")' if container else f"pod {name} is not running"
            )
        vm, where = self.lab_for_pod(pod)
        if chosen is None:
            raise errors.ApiError(
                403,
                "Forbidden",
                f"unable to upgrade: unable to negotiate protocol: client supports "
                f"{offered}, server supports {list(supported)}",
            )
        transport.write(
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
            + f"X-Stream-Protocol-Version: {chosen}\r\n\r\n".encode()
        )
        loop = asyncio.get_running_loop()
        streams: dict[str, spdy.Stream] = {}
        pairs: dict[str, dict[str, spdy.Stream]] = {}
        arrived = asyncio.Event()

        def dial(port: int):
            if vm is None or vm.run_dir is None:
                raise ConnectionError("no running reference VM backs this pod")
            if where == "pod":
                return loop.run_in_executor(None, vm.port_forward, port)
            return loop.run_in_executor(None, lambda: vm._dial("peer", vm.peer_ip, port, 5))

        def on_stream(stream: spdy.Stream) -> None:
            kind = stream.headers.get("streamtype", "")
            if action == "exec":
                streams[kind] = stream
                arrived.set()
                return
            pair = pairs.setdefault(stream.headers.get("requestid", stream.headers.get("port", "")), {})
            pair[kind] = stream
            if "data" in pair and "error" in pair:
                try:
                    port = int(stream.headers.get("port", "0"))
                except ValueError:
                    port = 0
                spdy.in_background(
                    spdy.serve_port_pair(
                        pair["data"], pair["error"], port, dial, f"{name}, uid {pod['metadata']['uid']}"
                    )
                )

        conn = spdy.Connection(on_stream)
        self.connections.add(conn)
        conn.closed.add_done_callback(lambda _: self.connections.discard(conn))
        transport.set_protocol(conn)
        conn.connection_made(transport)
        if tail:
            conn.data_received(tail)
        if action == "exec":

            async def run():
                if vm is None:
                    raise ConnectionError(f"no running reference VM backs pod {ns}/{name}")
                return await loop.run_in_executor(None, lambda: vm.exec_in_pod(list(argv), timeout=300, where=where))

            async def spawn(stdin: bool):
                return await node_lab_exec.start(vm, where, list(argv), stdin)

            live = vm is not None and node_lab_exec.can_stream(vm)
            spdy.in_background(
                spdy.serve_exec(
                    conn, streams, arrived, {k: v[0] for k, v in query.items()}, run, spawn if live else None
                )
            )

    def close_all(self) -> None:
        for conn in list(self.connections):
            conn.close()
