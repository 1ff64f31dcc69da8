"""UDP: datagrams through slirp's NAT, and DNS through slirp's relay at the DHCP nameserver."""

import pytest

from slirp_conformance.checks import udp
from slirp_conformance.console import GuestShell
from slirp_conformance.evidence import Record, expect
from slirp_conformance.guest_profiles import GuestProfile
from slirp_conformance.target import Contract, Peers

pytestmark = [pytest.mark.slirp, pytest.mark.udp]


def test_udp_echo(shell: GuestShell, profile: GuestProfile, peers: Peers, record: Record) -> None:
    ev = record(udp.echo(shell, profile, peers.udp_echo))
    expect(ev, "received", ev.sent)


def test_dns_through_slirp_relay(
    shell: GuestShell, profile: GuestProfile, peers: Peers, contract: Contract, record: Record
) -> None:
    ev = record(udp.dns_lookup(shell, profile, peers.dns_name, contract.nameserver))
    expect(ev, "answers", [peers.dns_address])
