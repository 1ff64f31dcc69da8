"""Isolation finding: a service on the pod's own loopback (the launcher pod's, on a cluster) is
reachable from the guest through slirp's gateway address, as libslirp forwards its virtual host to
the host's loopback. Reported under its own heading in the conformance report: a property a
security reviewer needs stated for each release, not a defect of the plugin."""

import pytest

from slirp_conformance.checks import isolation
from slirp_conformance.checks.isolation import PodLoopbackEvidence, PodLoopbackSeen
from slirp_conformance.console import GuestShell
from slirp_conformance.evidence import expect
from slirp_conformance.target import Contract, Target

pytestmark = [pytest.mark.slirp, pytest.mark.isolation]


@pytest.fixture
def pod_loopback(pod_loopback_seen: PodLoopbackSeen, contract: Contract) -> PodLoopbackEvidence:
    """A TCP service on 127.0.0.1 in the pod, answering a token. Void unless it is loopback-only: a
    client elsewhere in the cluster is refused at the pod address (else reaching it from the guest
    would show nothing about the loopback)."""
    return pod_loopback_seen("127.0.0.1", contract.gateway)


def test_guest_reaches_the_pods_loopback_through_the_gateway(
    shell: GuestShell, slirp_target: Target, contract: Contract, pod_loopback: PodLoopbackEvidence
) -> None:
    """The guest connects to the slirp gateway (10.0.2.2 by default) at a port the pod keeps on its
    loopback, listed nowhere, and reads the pod's token: the guest sees the pod's loopback."""
    isolation.guest_dials(shell, slirp_target, pod_loopback, "127.0.0.1", contract.gateway)
    expect(pod_loopback, "guest_got", pod_loopback.token)
