"""UDP: datagrams through slirp's NAT, and DNS through slirp's relay at the DHCP nameserver."""

import pytest

from slirp_conformance import ahead
from slirp_conformance.checks import udp
from slirp_conformance.console import GuestShell
from slirp_conformance.evidence import Record, expect
from slirp_conformance.target import Peers

pytestmark = [pytest.mark.slirp, pytest.mark.udp]


@pytest.mark.probe(udp.echo_probe)
def test_udp_echo(shell: GuestShell, record: Record, probed: ahead.Probed) -> None:
    ev = record(probed(udp.echo_probe, shell))
    expect(ev, "received", ev.sent)


@pytest.mark.probe(udp.dns_probe)
def test_dns_through_slirp_relay(shell: GuestShell, peers: Peers, record: Record, probed: ahead.Probed) -> None:
    ev = record(probed(udp.dns_probe, shell))
    expect(ev, "answers", [peers.dns_address])
