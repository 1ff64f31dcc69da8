"""ICMP: echo to a peer fails behind slirp (QEMU has no ping socket or raw socket in the pod).

"No reply" is evidence only when the probe demonstrably went out, so the check is VOID (an
error, never a pass) unless: the peer answers pings sent to it directly (from the pod), the
guest's ping works at all (slirp answers echo to its gateway itself), and the guest's own
counters show the echo requests to the peer left its IP stack and its slirp NIC, routed via
that NIC, with no local error. The pod's ping_group_range and QEMU's uid/gid decide the
outcome and are recorded with the result.
"""

import pytest

from slirp_conformance.checks import icmp
from slirp_conformance.evidence import Evidence, VoidCheck

pytestmark = [pytest.mark.slirp, pytest.mark.icmp]


@pytest.fixture(scope="session")
def peer_answers_icmp(slirp_target):
    direct = slirp_target.ping_peer_directly()
    if not direct["ok"]:
        raise VoidCheck(
            Evidence("icmp", {"peer_direct_ping": direct}),
            [f"{slirp_target.peers.icmp_host} does not answer ICMP even when pinged directly from the pod"],
        )
    return direct


@pytest.fixture
def icmp_probe(shell, profile, peers, contract, slirp_target, peer_answers_icmp, record):
    """The guest's pings, with the proof that they went out; void when that proof is missing."""
    ev = record(icmp.observe(shell, profile, peers.icmp_host, contract.gateway))
    ev["peer_direct_ping"] = peer_answers_icmp
    ev["pod"] = slirp_target.icmp_evidence()
    problems = icmp.premise_problems(ev["to_peer"], profile.interface)
    if ev["to_gateway"]["replies"] < 1:
        problems.append(
            f"slirp's own gateway {contract.gateway} did not answer the guest's ping "
            f"(the guest's ping must work at all): {ev['to_gateway']['output'][-200:]!r}"
        )
    ev["premise"] = "proven" if not problems else problems
    if problems:
        raise VoidCheck(ev, problems)
    return ev


def test_icmp_echo_to_peer_gets_no_reply(icmp_probe, peers):
    ev = icmp_probe
    assert ev["to_peer"]["replies"] == 0, ev.explain(
        f"replies from {peers.icmp_host} through slirp to {ev['to_peer']['echo_requests_out']} echo requests "
        "that left the guest (ICMP must fail)",
        0,
        ev["to_peer"]["replies"],
    )
