"""The host as a stand-in guest: a shell with the console/SSH ``run`` contract, and the peer
services (TCP echo, UDP echo, DNS) on loopback, so a profile's commands run for real in the
self-tests without booting a VM. The host has python3, busybox and OpenBSD netcat, the tools
the guest profiles use."""

from __future__ import annotations

import socket
import socketserver
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import ClassVar

from dnslib import QTYPE, RR, A, DNSRecord

from slirp_conformance.console import Result


class LocalShell:
    """``sh -c`` on the host (dash, like busybox ash: an ash), stdout and stderr apart, like the
    guest shells; ``LocalShell("bash")`` is the Fedora guest's shell."""

    def __init__(self, shell: str = "sh") -> None:
        self.shell = shell

    def run(self, command: str, timeout: float = 60) -> Result:
        if "\n" in command:  # the console's rule: a profile command must also work there
            raise ValueError("one line per console command; join with ';' or '&&'")
        p = subprocess.run([self.shell, "-c", command], capture_output=True, text=True, timeout=timeout)
        return Result(command, p.stdout, p.returncode, p.stderr)


class _TcpEcho(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)


class _TcpEchoFlippingOneBit(socketserver.BaseRequestHandler):
    """An echo that changes one bit of the byte at 5 MiB: as many bytes come back, not the same ones
    (the transfer check's negative control)."""

    at = 5 << 20

    def handle(self) -> None:
        seen = 0
        while data := self.request.recv(65536):
            if seen <= self.at < seen + len(data):
                i = self.at - seen
                data = data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1 :]
            seen += len(data)
            self.request.sendall(data)


class _UdpEcho(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        data, sock = self.request
        sock.sendto(data, self.client_address)


class _Dns(socketserver.BaseRequestHandler):
    records: ClassVar[dict[str, str]] = {}

    def handle(self) -> None:
        data, sock = self.request
        query = DNSRecord.parse(data)
        reply = query.reply()
        address = self.records.get(str(query.q.qname).rstrip("."))
        if address:
            reply.add_answer(RR(query.q.qname, QTYPE.A, rdata=A(address), ttl=30))
        sock.sendto(reply.pack(), self.client_address)


class _Threaded(socketserver.ThreadingMixIn):
    daemon_threads = True


class _TCP(_Threaded, socketserver.TCPServer):
    pass


class _UDP(_Threaded, socketserver.UDPServer):
    pass


@contextmanager
def loopback_peers(dns_records: dict[str, str]) -> Iterator[dict[str, int]]:
    """TCP echo, UDP echo and a DNS server on 127.0.0.1, and a TCP echo that changes one bit
    (``tcp_echo_flipping_one_bit``); yields their ports."""
    dns_handler = type("Dns", (_Dns,), {"records": dict(dns_records)})
    servers = {
        "tcp_echo": _TCP(("127.0.0.1", 0), _TcpEcho),
        "tcp_echo_flipping_one_bit": _TCP(("127.0.0.1", 0), _TcpEchoFlippingOneBit),
        "udp_echo": _UDP(("127.0.0.1", 0), _UdpEcho),
        "dns": _UDP(("127.0.0.1", 0), dns_handler),
    }
    threads = [
        threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True) for s in servers.values()
    ]
    for t in threads:
        t.start()
    try:
        yield {name: s.server_address[1] for name, s in servers.items()}
    finally:
        for s in servers.values():
            s.shutdown()
            s.server_close()
        for t in threads:
            t.join(5)


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
