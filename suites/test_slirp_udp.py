"""UDP: datagrams through slirp's NAT, and DNS through slirp's relay at the DHCP nameserver."""

import pytest

from slirp_conformance.checks import udp

pytestmark = [pytest.mark.slirp, pytest.mark.udp]


def test_udp_echo(shell, profile, peers, record):
    ev = record(udp.echo(shell, profile, peers.udp_echo))
    assert ev["received"] == ev["sent"], ev.explain("echo from the UDP peer", ev["sent"], ev["received"])


def test_dns_through_slirp_relay(shell, profile, peers, contract, record):
    ev = record(udp.dns_lookup(shell, profile, peers.dns_name, contract.nameserver))
    assert ev["answers"] == [peers.dns_address], ev.explain(
        f"A records of {peers.dns_name} via {contract.nameserver}", [peers.dns_address], ev["answers"]
    )
