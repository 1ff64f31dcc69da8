"""Isolation finding: a service on the pod's own loopback (the launcher pod's, on a cluster) is
reachable from the guest through slirp's gateway address, as libslirp forwards its virtual host to
the host's loopback. Reported under its own heading in the conformance report: a property a
security reviewer needs stated for each release, not a defect of the plugin."""

import pytest

from slirp_conformance.checks import isolation
from slirp_conformance.checks.isolation import POD_LOOPBACK_PORT, PodLoopbackEvidence
from slirp_conformance.console import GuestShell
from slirp_conformance.evidence import Record, VoidCheck, expect
from slirp_conformance.target import Contract, NotOnThisTarget, Target

pytestmark = [pytest.mark.slirp, pytest.mark.isolation]


@pytest.fixture(scope="module")
def pod_loopback_token(slirp_target: Target) -> str:
    """A TCP service on 127.0.0.1 in the pod, answering a token; kept for the module."""
    try:
        return isolation.pod_loopback_service(slirp_target, "127.0.0.1")
    except NotOnThisTarget as e:
        pytest.skip(str(e))


@pytest.fixture
def pod_loopback(
    slirp_target: Target, contract: Contract, pod_loopback_token: str, record: Record
) -> PodLoopbackEvidence:
    """Void unless the pod's service is loopback-only: a client elsewhere in the cluster is refused
    at the pod address (else reaching it from the guest would show nothing about the loopback)."""
    ev = record(
        PodLoopbackEvidence(
            pod_listener=f"127.0.0.1:{POD_LOOPBACK_PORT} in the pod's network namespace",
            guest_dials=f"{contract.gateway}:{POD_LOOPBACK_PORT}",
            token=pod_loopback_token,
            from_cluster=isolation.from_cluster(slirp_target.dial_guest_port, POD_LOOPBACK_PORT),
        )
    )
    if ev.from_cluster != "refused":
        raise VoidCheck(
            ev,
            [f"a client in the cluster got '{ev.from_cluster}' at the pod address: the service is not loopback-only"],
        )
    return ev


def test_guest_reaches_the_pods_loopback_through_the_gateway(
    shell: GuestShell, slirp_target: Target, contract: Contract, pod_loopback: PodLoopbackEvidence
) -> None:
    """The guest connects to the slirp gateway (10.0.2.2 by default) at a port the pod keeps on its
    loopback, listed nowhere, and reads the pod's token: the guest sees the pod's loopback."""
    isolation.guest_reads(shell, slirp_target.profile, pod_loopback, contract.gateway, POD_LOOPBACK_PORT)
    pod_loopback.pod_saw_clients = slirp_target.pod_loopback_clients("127.0.0.1", POD_LOOPBACK_PORT)
    expect(pod_loopback, "guest_got", pod_loopback.token)
