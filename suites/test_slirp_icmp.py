"""ICMP: echo to a peer fails behind slirp (QEMU has no ping socket or raw socket in the pod).

"No reply" is evidence only when the probe demonstrably went out, so the check is VOID (an
error, never a pass) unless: the peer answers pings sent to it directly (from the pod), the
guest's ping works at all (slirp answers echo to its gateway itself), and the guest's own
counters show the echo requests to the peer left its IP stack and its slirp NIC, routed via
that NIC, with no local error. The pod's ping_group_range and QEMU's uid/gid decide the
outcome and are recorded with the result.
"""

from typing import Any

import pytest

from slirp_conformance import ahead
from slirp_conformance.checks import icmp
from slirp_conformance.checks.icmp import IcmpEvidence
from slirp_conformance.console import GuestShell
from slirp_conformance.evidence import Record, VoidCheck, expect, void_unless_proven
from slirp_conformance.guest_profiles import GuestProfile
from slirp_conformance.target import Contract, Target

pytestmark = [pytest.mark.slirp, pytest.mark.icmp]


@pytest.fixture(scope="session")
def peer_answers_icmp(slirp_target: Target) -> dict[str, Any]:
    direct = slirp_target.ping_peer_directly()
    if not direct["ok"]:
        raise VoidCheck(
            IcmpEvidence(peer_direct_ping=direct),
            [f"{slirp_target.peers.icmp_host} does not answer ICMP even when pinged directly from the pod"],
        )
    return direct


# Exclusive: its premise is the guest's own ICMP and NIC counters, so the lane runs nothing while it
# runs. Not ahead itself: in the lane it would overlap the traffic of the session's other checks.
@ahead.probe("icmp", exclusive=True, runs_ahead=False)
def guest_pings(target: Target, shell: GuestShell) -> IcmpEvidence:
    return icmp.observe(shell, target.profile, target.peers.icmp_host, target.contract.gateway)


@pytest.fixture
def icmp_probe(
    shell: GuestShell,
    profile: GuestProfile,
    contract: Contract,
    slirp_target: Target,
    peer_answers_icmp: dict[str, Any],
    record: Record,
    probed: ahead.Probed,
) -> IcmpEvidence:
    """The guest's pings, with the proof that they went out; void when that proof is missing."""
    ev = record(probed(guest_pings, shell))
    ev.peer_direct_ping = peer_answers_icmp
    ev.pod = slirp_target.icmp_evidence()
    problems = icmp.premise_problems(ev.to_peer, profile.interface)
    if ev.to_gateway is None or ev.to_gateway.replies < 1:
        problems.append(
            f"slirp's own gateway {contract.gateway} did not answer the guest's ping "
            f"(the guest's ping must work at all): {ev.to_gateway.output[-200:] if ev.to_gateway else None!r}"
        )
    ev.premise = problems if problems else "proven"
    return void_unless_proven(ev, problems)


@pytest.mark.probe(guest_pings)
def test_icmp_echo_to_peer_gets_no_reply(icmp_probe: IcmpEvidence) -> None:
    """No reply through slirp to echo requests that demonstrably left the guest (ICMP must fail)."""
    expect(icmp_probe, "to_peer.replies", 0)
