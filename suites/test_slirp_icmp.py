"""ICMP: echo to a peer fails behind slirp (QEMU has no ping socket or raw socket in the pod).

Void unless two controls hold: the peer answers pings sent to it directly, and the guest's
ping works at all (slirp answers echo to its gateway itself). The pod's ping_group_range and
QEMU's uid/gid decide the outcome and are recorded with the result.
"""

import pytest

from fixtures.checks import icmp

pytestmark = [pytest.mark.slirp, pytest.mark.icmp, pytest.mark.gating]


@pytest.fixture(scope="session")
def peer_answers_icmp(slirp_target):
    direct = slirp_target.ping_peer_directly()
    if not direct["ok"]:
        pytest.fail(f"control failed: {slirp_target.peers.icmp_host} does not answer ICMP even when pinged "
                    f"directly, so a guest's failed ping would prove nothing:\n{direct['output']}")
    return direct


def test_icmp_echo_to_peer_gets_no_reply(shell, profile, peers, contract, slirp_target, peer_answers_icmp, record):
    ev = record(icmp.observe(shell, profile, peers.icmp_host, contract.gateway))
    ev["peer_direct_ping"] = peer_answers_icmp
    ev["pod"] = slirp_target.icmp_evidence()
    gateway = ev["to_gateway"]
    assert gateway["replies"] > 0, ev.explain(
        "control: replies from slirp's own gateway (the guest's ping must work at all)", ">0", gateway["replies"])
    assert ev["to_peer"]["replies"] == 0, ev.explain(
        f"replies from {peers.icmp_host} through slirp (ICMP must fail)", 0, ev["to_peer"]["replies"])
