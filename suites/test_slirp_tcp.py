"""TCP: egress through slirp's NAT to a peer, intact in both directions."""

import pytest

from slirp_conformance import ahead, waits
from slirp_conformance.checks import tcp
from slirp_conformance.checks.tcp import TransferEvidence
from slirp_conformance.console import GuestShell
from slirp_conformance.evidence import Record, at_least, expect, matches
from slirp_conformance.ssh_client import SSHClient
from slirp_conformance.target import Target

pytestmark = [pytest.mark.slirp, pytest.mark.tcp]


@pytest.mark.probe(tcp.egress_echo_probe)
def test_egress_echo(shell: GuestShell, record: Record, probed: ahead.Probed) -> None:
    ev = record(probed(tcp.egress_echo_probe, shell))
    expect(ev, "received", ev.sent)


@ahead.probe("transfer")  # ahead: in the lane (never beside an ICMP probe, which is exclusive)
def transfer_8mib(target: Target, shell: GuestShell) -> TransferEvidence:
    return tcp.transfer(shell, target.profile, target.peers.tcp_echo, int(waits.timeout("transfer")))


@pytest.mark.probe(transfer_8mib)
def test_egress_transfer_8mib_each_way(guest_ssh: SSHClient, record: Record, probed: ahead.Probed) -> None:
    """8 MiB to the echo peer and back; both MD5 sums must match. Over SSH only: the data path is
    the guest's, the channel only carries the command."""
    ev = record(probed(transfer_8mib, guest_ssh))
    expect(ev, "bytes_sent", at_least(tcp.TRANSFER_BYTES))
    expect(ev, "bytes_received", ev.bytes_sent)
    expect(ev, "md5_sent", matches(r"^[0-9a-f]{32}$"))
    expect(ev, "md5_received", ev.md5_sent)
