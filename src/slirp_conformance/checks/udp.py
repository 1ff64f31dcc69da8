"""UDP through slirp: a datagram round trip with the peer, and DNS through slirp's relay."""

from __future__ import annotations

import secrets

from slirp_conformance.evidence import Evidence
from slirp_conformance.guest_profiles import GuestProfile
from slirp_conformance.target import Endpoint


def echo(shell, profile: GuestProfile, peer: Endpoint) -> Evidence:
    token = "slirp-udp-" + secrets.token_hex(8)
    r = shell.run(profile.udp_echo_command(peer.host, peer.port, token))
    return Evidence("udp-echo", {"peer": str(peer), "sent": token, "received": r.output.strip(), "rc": r.rc})


def dns_lookup(shell, profile: GuestProfile, name: str, server: str) -> Evidence:
    r = shell.run(profile.dns_command(name, server))
    return Evidence(
        "dns",
        {
            "name": name,
            "server": server,
            "answers": profile.parse_dns(r.output) if r.ok else [],
            "rc": r.rc,
            "output": r.output[-400:],
        },
    )
