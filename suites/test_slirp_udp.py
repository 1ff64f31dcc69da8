"""UDP: datagrams through slirp's NAT, and DNS through slirp's relay at the DHCP nameserver."""

import pytest

from slirp_conformance import ahead
from slirp_conformance.checks import udp
from slirp_conformance.checks.udp import DnsEvidence, UdpEchoEvidence
from slirp_conformance.console import GuestShell
from slirp_conformance.evidence import Record, expect
from slirp_conformance.target import Peers, Target

pytestmark = [pytest.mark.slirp, pytest.mark.udp]


@ahead.probe("udp-echo")
def udp_echo(target: Target, shell: GuestShell) -> UdpEchoEvidence:
    return udp.echo(shell, target.profile, target.peers.udp_echo)


@pytest.mark.probe(udp_echo)
def test_udp_echo(shell: GuestShell, record: Record, probed: ahead.Probed) -> None:
    ev = record(probed(udp_echo, shell))
    expect(ev, "received", ev.sent)


@ahead.probe("dns")
def dns_lookup(target: Target, shell: GuestShell) -> DnsEvidence:
    return udp.dns_lookup(shell, target.profile, target.peers.dns_name, target.contract.nameserver)


@pytest.mark.probe(dns_lookup)
def test_dns_through_slirp_relay(shell: GuestShell, peers: Peers, record: Record, probed: ahead.Probed) -> None:
    ev = record(probed(dns_lookup, shell))
    expect(ev, "answers", [peers.dns_address])
