"""UDP through slirp: a datagram round trip with the peer, and DNS through slirp's relay."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import ClassVar

from slirp_conformance import ahead
from slirp_conformance.checks.tcp import EchoEvidence
from slirp_conformance.console import GuestShell
from slirp_conformance.evidence import Evidence
from slirp_conformance.guest_profiles import GuestProfile
from slirp_conformance.target import Endpoint


@dataclass
class DnsEvidence(Evidence):
    check: ClassVar[str] = "dns"
    name: str
    server: str
    answers: list[str]  # the A records the guest got
    rc: int
    output: str


@dataclass
class UdpEchoEvidence(EchoEvidence):
    """The TCP echo's facts, over UDP."""

    check: ClassVar[str] = "udp-echo"


def echo(shell: GuestShell, profile: GuestProfile, peer: Endpoint) -> UdpEchoEvidence:
    token = "slirp-udp-" + secrets.token_hex(8)
    r = shell.run(profile.udp_echo_command(peer.host, peer.port, token))
    return UdpEchoEvidence(peer=str(peer), sent=token, received=r.output.strip(), rc=r.rc)


def dns_lookup(shell: GuestShell, profile: GuestProfile, name: str, server: str) -> DnsEvidence:
    r = shell.run(profile.dns_command(name, server))
    return DnsEvidence(
        name=name,
        server=server,
        answers=profile.parse_dns(r.output) if r.ok else [],
        rc=r.rc,
        output=r.output[-400:],
    )


@ahead.probe("udp-echo")
def echo_probe(target, shell: GuestShell) -> UdpEchoEvidence:
    """``echo`` with the target's UDP echo peer (a probe: it may run ahead, ahead.py)."""
    return echo(shell, target.profile, target.peers.udp_echo)


@ahead.probe("dns")
def dns_probe(target, shell: GuestShell) -> DnsEvidence:
    """``dns_lookup`` of the peer's name at the target's nameserver (a probe: it may run ahead, ahead.py)."""
    return dns_lookup(shell, target.profile, target.peers.dns_name, target.contract.nameserver)
