"""TCP through slirp: egress to the peers, and ingress to guest ports at the pod's address."""

from __future__ import annotations

import re
import secrets
import socket
from dataclasses import dataclass
from typing import ClassVar

from slirp_conformance import ahead, waits
from slirp_conformance.console import GuestShell
from slirp_conformance.evidence import Evidence
from slirp_conformance.guest_profiles import GuestProfile
from slirp_conformance.target import Endpoint

TRANSFER_BYTES = 8 << 20  # 8 MiB each way


@dataclass
class EchoEvidence(Evidence):
    """A token sent to an echo peer and what came back (TCP here, UDP in ``udp.py``)."""

    check: ClassVar[str] = "tcp-egress-echo"
    peer: str
    sent: str
    received: str
    rc: int


@dataclass
class TransferEvidence(Evidence):
    check: ClassVar[str] = "tcp-transfer"
    peer: str
    # MD5: the check guards against bytes lost, reordered or changed in transit, not against an
    # adversary; busybox's md5sum costs the guest 0.13 s less per 2 x 8 MiB than its sha256sum under
    # TCG (0.79 s against 0.92 s of vCPU for the whole transfer, 2026-12-07)
    md5_sent: str | None
    md5_received: str | None
    bytes_sent: int | None
    bytes_received: int | None
    rc: int
    output: str


def egress_echo(shell: GuestShell, profile: GuestProfile, echo: Endpoint) -> EchoEvidence:
    token = "slirp-tcp-" + secrets.token_hex(8)
    r = shell.run(profile.tcp_echo_command(echo.host, echo.port, token))
    return EchoEvidence(peer=str(echo), sent=token, received=r.output.strip(), rc=r.rc)


@ahead.probe("tcp-echo")
def egress_echo_probe(target, shell: GuestShell) -> EchoEvidence:
    """``egress_echo`` to the target's TCP echo peer (a probe: it may run ahead, ahead.py)."""
    return egress_echo(shell, target.profile, target.peers.tcp_echo)


def transfer(shell: GuestShell, profile: GuestProfile, echo: Endpoint, budget: int) -> TransferEvidence:
    # As for the ping: the guest-side bound plus the allowance every command has (it was 30 s).
    command = profile.transfer_command(echo.host, echo.port, TRANSFER_BYTES, budget)
    r = shell.run(command, timeout=budget + waits.timeout("console-command"))
    sums = re.findall(r"^([0-9a-f]{32})\s", r.output, re.M)
    sizes = re.findall(r"^\s*(\d+)\s*$", r.output, re.M)
    return TransferEvidence(
        peer=str(echo),
        md5_sent=sums[0] if sums else None,
        md5_received=sums[1] if len(sums) > 1 else None,
        bytes_sent=int(sizes[0]) if sizes else None,
        bytes_received=int(sizes[1]) if len(sizes) > 1 else None,
        rc=r.rc,
        output=r.output[-500:],
    )


def http_get(sock: socket.socket, path: str, timeout: float = 10) -> str:
    """A minimal HTTP/1.0 GET over an already connected socket; returns the body.

    Stops at Content-Length when the server sends one, so a relay that keeps the connection
    half-open (nc under exec in a client pod) does not turn a good answer into a timeout.
    """
    sock.settimeout(timeout)
    sock.sendall(f"GET {path} HTTP/1.0\r\nHost: guest\r\n\r\n".encode())
    data = b""
    while True:
        head, sep, body = data.partition(b"\r\n\r\n")
        if sep:
            length = re.search(rb"(?im)^content-length:\s*(\d+)\s*$", head)
            if length and len(body) >= int(length.group(1)):
                break
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0].decode(errors="replace")
    if " 200 " not in status + " ":
        raise ConnectionError(f"HTTP status {status!r}")
    return body.decode(errors="replace")
