"""TCP: egress through slirp's NAT to a peer, intact in both directions."""

import pytest

from slirp_conformance import waits
from slirp_conformance.checks import tcp

pytestmark = [pytest.mark.slirp, pytest.mark.tcp]


def test_egress_echo(shell, profile, peers, record):
    ev = record(tcp.egress_echo(shell, profile, peers.tcp_echo))
    assert ev["received"] == ev["sent"], ev.explain("echo from the TCP peer", ev["sent"], ev["received"])


def test_egress_transfer_8mib_each_way(guest_ssh, profile, peers, record):
    """8 MiB to the echo peer and back; both sha256 must match. Over SSH only: the data path is
    the guest's, the channel only carries the command."""
    ev = record(tcp.transfer(guest_ssh, profile, peers.tcp_echo, int(waits.timeout("transfer"))))
    assert (ev["bytes_sent"] or 0) >= tcp.TRANSFER_BYTES, ev.explain(
        "bytes sent", f">= {tcp.TRANSFER_BYTES}", ev["bytes_sent"]
    )
    assert ev["bytes_received"] == ev["bytes_sent"], ev.explain(
        "bytes echoed back", ev["bytes_sent"], ev["bytes_received"]
    )
    assert ev["sha256_sent"] and ev["sha256_received"] == ev["sha256_sent"], ev.explain(
        "sha256 of what came back", ev["sha256_sent"], ev["sha256_received"]
    )
