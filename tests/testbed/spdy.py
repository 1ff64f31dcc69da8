"""SPDY/3.1 streams for ``kubectl exec`` and ``kubectl port-forward`` (kubectl 1.27 speaks only SPDY).

The wire protocol as Kubernetes uses it (k8s.io/apimachinery httpstream/spdy, kubelet's
remotecommand and portforward servers; framing from draft-mbelshe-httpbis-spdy-00):

- ``POST .../pods/<pod>/exec|portforward`` with ``Upgrade: SPDY/3.1`` and one or more
  ``X-Stream-Protocol-Version``; the answer is ``101 Switching Protocols`` naming the chosen one
  (no common one: 403). Then SPDY frames: the client opens streams (SYN_STREAM, odd ids, a
  zlib-compressed header block per session and direction) and waits for each SYN_REPLY.
- exec (``v4.channel.k8s.io`` .. ``channel.k8s.io``): a stream per ``streamType`` header
  (error, stdin, stdout, stderr, resize); the exit status is a JSON ``Status`` on the error
  stream (Success, or Failure/NonZeroExitCode with an ExitCode cause), then every stream ends.
- port-forward (``portforward.k8s.io``): per connection an ``error`` and a ``data`` stream with
  headers ``port`` and ``requestID``; the port is dialled inside the pod and bytes are copied
  both ways; a dial error is written to the error stream.

Flow control (WINDOW_UPDATE) is not enforced in either direction; SETTINGS/HEADERS are ignored.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import struct
import zlib
from collections.abc import Awaitable, Callable

from .spdy_dict import DICTIONARY

log = logging.getLogger("slirp.testbed.spdy")
SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS, PING, GOAWAY, HEADERS, WINDOW_UPDATE = 1, 2, 3, 4, 6, 7, 8, 9
FLAG_FIN = 0x01
MAX_DATA = 32 * 1024
EXEC_PROTOCOLS = ("v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io", "channel.k8s.io")
PORTFORWARD_PROTOCOLS = ("portforward.k8s.io",)
# Tasks started and left to run: the event loop keeps only weak references to them.
_BACKGROUND: set[asyncio.Task] = set()


def in_background(coro: Awaitable[object]) -> asyncio.Task:
    """Run ``coro`` as a task of the running loop, referenced until it is done."""
    task = asyncio.ensure_future(coro)
    _BACKGROUND.add(task)
    task.add_done_callback(_BACKGROUND.discard)
    return task


class Stream:
    def __init__(self, conn: Connection, sid: int, headers: dict[str, str]) -> None:
        self.conn, self.id, self.headers = conn, sid, headers
        self.incoming: asyncio.Queue = asyncio.Queue()
        self.local_closed = False

    def write(self, data: bytes) -> None:
        for i in range(0, len(data), MAX_DATA):
            self.conn.send_data(self.id, data[i : i + MAX_DATA])

    def close(self) -> None:
        if not self.local_closed:
            self.local_closed = True
            self.conn.send_data(self.id, b"", fin=True)

    async def read(self) -> bytes | None:
        """Next chunk from the client; None once it finished (FIN or reset)."""
        return await self.incoming.get()


class Connection(asyncio.Protocol):
    """The server side of one SPDY session on an upgraded transport."""

    def __init__(self, on_stream: Callable[[Stream], None]) -> None:
        self.on_stream = on_stream
        self.transport: asyncio.Transport | None = None
        self.inflate = zlib.decompressobj(zdict=DICTIONARY)
        self.deflate = zlib.compressobj(zdict=DICTIONARY)
        self.buf = b""
        self.streams: dict[int, Stream] = {}
        self.closed = asyncio.get_running_loop().create_future()

    # -- asyncio.Protocol ----------------------------------------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        try:
            self._parse()
        except (zlib.error, ValueError, struct.error) as exc:
            log.warning("bad SPDY data, closing: %s", exc)
            self.close()

    def eof_received(self) -> bool:
        self.close()
        return False

    def connection_lost(self, exc) -> None:
        for s in self.streams.values():
            s.incoming.put_nowait(None)
        if not self.closed.done():
            self.closed.set_result(None)

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    # -- framing ---------------------------------------------------------------------------------------
    def _parse(self) -> None:
        while len(self.buf) >= 8:
            first, flags_len = struct.unpack(">II", self.buf[:8])
            flags, length = flags_len >> 24, flags_len & 0xFFFFFF
            if len(self.buf) < 8 + length:
                return
            payload, self.buf = self.buf[8 : 8 + length], self.buf[8 + length :]
            if first & 0x80000000:
                self._control(first & 0xFFFF, flags, payload)
            else:
                stream = self.streams.get(first & 0x7FFFFFFF)
                if stream is not None:
                    if payload:
                        stream.incoming.put_nowait(payload)
                    if flags & FLAG_FIN:
                        stream.incoming.put_nowait(None)

    def _control(self, ftype: int, flags: int, payload: bytes) -> None:
        if ftype == SYN_STREAM:
            sid = struct.unpack(">I", payload[:4])[0] & 0x7FFFFFFF
            headers = self._decode_headers(payload[10:])
            stream = self.streams[sid] = Stream(self, sid, headers)
            self._send_control(SYN_REPLY, 0, struct.pack(">I", sid) + self._encode_headers({}))
            if flags & FLAG_FIN:
                stream.incoming.put_nowait(None)
            self.on_stream(stream)
        elif ftype == RST_STREAM:
            sid = struct.unpack(">I", payload[:4])[0] & 0x7FFFFFFF
            stream = self.streams.get(sid)
            if stream is not None:
                stream.local_closed = True
                stream.incoming.put_nowait(None)
        elif ftype == PING:
            self._send_control(PING, 0, payload)
        elif ftype == GOAWAY:
            self.close()
        # SETTINGS, HEADERS, WINDOW_UPDATE: nothing to do here

    def _decode_headers(self, block: bytes) -> dict[str, str]:
        raw = self.inflate.decompress(block)
        (count,), pos, headers = struct.unpack(">I", raw[:4]), 4, {}
        for _ in range(count):
            (klen,) = struct.unpack(">I", raw[pos : pos + 4])
            key = raw[pos + 4 : pos + 4 + klen].decode()
            pos += 4 + klen
            (vlen,) = struct.unpack(">I", raw[pos : pos + 4])
            headers[key.lower()] = raw[pos + 4 : pos + 4 + vlen].split(b"\0")[0].decode()
            pos += 4 + vlen
        return headers

    def _encode_headers(self, headers: dict[str, str]) -> bytes:
        raw = struct.pack(">I", len(headers))
        for k, v in headers.items():
            raw += struct.pack(">I", len(k)) + k.encode() + struct.pack(">I", len(v)) + v.encode()
        return self.deflate.compress(raw) + self.deflate.flush(zlib.Z_SYNC_FLUSH)

    def _send_control(self, ftype: int, flags: int, payload: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(struct.pack(">HHI", 0x8000 | 3, ftype, (flags << 24) | len(payload)) + payload)

    def send_data(self, sid: int, data: bytes, fin: bool = False) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(struct.pack(">II", sid, ((FLAG_FIN if fin else 0) << 24) | len(data)) + data)


# -- kubelet behaviour on top ----------------------------------------------------------------------------
async def _wait_streams(streams: dict[str, Stream], wanted: set[str], arrived: asyncio.Event, budget: float) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + budget
    while not wanted <= set(streams):
        left = deadline - loop.time()
        if left <= 0:
            return False
        arrived.clear()
        try:
            await asyncio.wait_for(arrived.wait(), left)
        except TimeoutError:
            return False
    return True


async def serve_exec(
    conn: Connection,
    streams: dict[str, Stream],
    arrived: asyncio.Event,
    query: dict,
    run: Callable[[], Awaitable[tuple[int, str, str]]],
    spawn: Callable[[bool], Awaitable[asyncio.subprocess.Process]] | None = None,
    timeout: float = 3600,
) -> None:
    """``spawn(stdin)``: a live process (stdin/stdout/stderr streamed); else ``run()`` to completion."""
    from tests.testbed import node_lab_exec

    tty = query.get("tty", "").lower() in ("true", "1")
    wanted = {"error"} | {name for name in ("stdin", "stdout") if query.get(name, "").lower() in ("true", "1")}
    if query.get("stderr", "").lower() in ("true", "1") and not tty:
        wanted.add("stderr")
    if not await _wait_streams(streams, wanted, arrived, 10):
        conn.close()
        return
    try:
        if spawn is not None:
            status = await _exec_live(streams, await spawn("stdin" in streams), timeout)
        else:
            if "stdin" in streams:  # no live process: input is read and dropped
                in_background(_discard(streams["stdin"]))
            rc, out, err = await run()
            if out and "stdout" in streams:
                streams["stdout"].write(out.encode())
            if err and "stderr" in streams:
                streams["stderr"].write(err.encode())
            status = node_lab_exec.exit_status(rc)
    except Exception as exc:  # noqa: BLE001 - the lab is gone or broken: an internal error, like a failed CRI exec
        status = {
            "metadata": {},
            "status": "Failure",
            "reason": "InternalError",
            "code": 500,
            "message": f"Internal error occurred: error executing command in container: {exc}",
            "details": {"causes": [{"message": str(exc)}]},
        }
    streams["error"].write(json.dumps(status).encode())
    for s in streams.values():
        s.close()
    await asyncio.sleep(0.1)
    conn.close()


async def _discard(stream: Stream) -> None:
    while await stream.read() is not None:
        pass


async def _exec_live(streams: dict[str, Stream], proc: asyncio.subprocess.Process, timeout: float) -> dict:
    from tests.testbed import node_lab_exec

    loop = asyncio.get_running_loop()

    async def pump(reader: asyncio.StreamReader, name: str) -> None:
        while chunk := await reader.read(MAX_DATA):
            if name in streams:
                streams[name].write(chunk)

    async def feed() -> None:
        while (chunk := await streams["stdin"].read()) is not None:
            try:
                proc.stdin.write(chunk)
                await proc.stdin.drain()
            except (BrokenPipeError, ConnectionResetError):
                return
        proc.stdin.close()

    tasks = [loop.create_task(pump(proc.stdout, "stdout")), loop.create_task(pump(proc.stderr, "stderr"))]
    feeder = loop.create_task(feed()) if proc.stdin is not None else None
    try:
        await asyncio.wait_for(proc.wait(), timeout)
    except TimeoutError:
        node_lab_exec.kill(proc)
        await asyncio.wait_for(proc.wait(), 10)
    finally:
        await asyncio.wait(tasks, timeout=5)
        for t in tasks + ([feeder] if feeder else []):
            t.cancel()
        node_lab_exec.kill(proc)
    return node_lab_exec.exit_status(proc.returncode if proc.returncode is not None else 137)


async def serve_port_pair(
    data: Stream, error: Stream, port: int, dial: Callable[[int], Awaitable[socket.socket]], pod_desc: str
) -> None:
    loop = asyncio.get_running_loop()
    try:
        sock = await dial(port)
    except OSError as exc:
        error.write(
            f"error forwarding port {port} to pod {pod_desc}: failed to connect to localhost:{port} inside "
            f"namespace: {exc}".encode()
        )
        error.close()
        data.close()
        return
    sock.setblocking(False)

    async def upstream() -> None:
        while (chunk := await data.read()) is not None:
            await loop.sock_sendall(sock, chunk)
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    up = loop.create_task(upstream())
    try:
        while chunk := await loop.sock_recv(sock, MAX_DATA):
            data.write(chunk)
    except OSError:
        pass
    finally:
        up.cancel()
        sock.close()
        data.close()
        error.close()
