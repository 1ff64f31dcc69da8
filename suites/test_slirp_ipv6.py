"""IPv6 through slirp, reported under its own heading: QEMU's user network has IPv6 on unless told
otherwise and the sidecar never tells it (domain.go ``generateBackendDeviceQemuArg``). Asserted:
what follows from that source (IPv6 left on; slirp's prefix fec0::/64 and router fe80::2 reach a
guest that does SLAAC; the virtual host fec0::2 is the pod's ::1). Recorded: the guest's resolver,
slirp's IPv6 DNS relay at fec0::3 and whether the pod itself has IPv6 (the egress question)."""

import pytest

from slirp_conformance.checks import ipv6, isolation, netdev
from slirp_conformance.checks.ipv6 import SLIRP_HOST6, SLIRP_PREFIX6, SLIRP_ROUTER6, Ipv6Evidence
from slirp_conformance.checks.isolation import PodLoopbackEvidence, PodLoopbackSeen
from slirp_conformance.evidence import Record, contains, expect
from slirp_conformance.target import Target

pytestmark = [pytest.mark.slirp, pytest.mark.ipv6]


@pytest.fixture(scope="module")
def ipv6_facts(slirp_target: Target) -> Ipv6Evidence:
    """Read once over the console: the addresses and routes do not change within a run."""
    ev = ipv6.observe(
        slirp_target.console(), slirp_target.profile, netdev.of(slirp_target), slirp_target.peers.dns_name
    )
    ev.pod_global_ipv6 = slirp_target.pod_global_ipv6()
    return ev


@pytest.fixture
def ipv6_observed(ipv6_facts: Ipv6Evidence, record: Record) -> Ipv6Evidence:
    return record(ipv6_facts)


def test_the_sidecar_leaves_ipv6_on(ipv6_observed: Ipv6Evidence) -> None:
    netdev.expect_rendered(ipv6_observed, r"^(?!.*\bipv6=off\b)(?!.*\bipv6-)")


def test_guest_gets_an_address_in_slirps_prefix(ipv6_observed: Ipv6Evidence) -> None:
    expect(ipv6_observed, "prefixes", [SLIRP_PREFIX6])


def test_guest_default_route_is_slirps_router(ipv6_observed: Ipv6Evidence) -> None:
    expect(ipv6_observed, "default_routes", contains(SLIRP_ROUTER6))


@pytest.fixture
def pod_loopback6(pod_loopback_seen: PodLoopbackSeen, ipv6_facts: Ipv6Evidence) -> PodLoopbackEvidence:
    """A TCP service on [::1] in the pod. Void unless the guest has an address in slirp's prefix
    (else it cannot dial fec0::2) and the pod's service is loopback-only (refused to a client at the
    pod address)."""
    no_address = (
        []
        if SLIRP_PREFIX6 in ipv6_facts.prefixes
        else [f"the guest has no address in {SLIRP_PREFIX6}: {ipv6_facts.addresses}"]
    )
    return pod_loopback_seen("::1", SLIRP_HOST6, no_address)


def test_guest_reaches_the_pods_ipv6_loopback(slirp_target: Target, pod_loopback6: PodLoopbackEvidence) -> None:
    """The guest connects to slirp's virtual host over IPv6 ([fec0::2]) at a port the pod keeps on
    [::1], listed nowhere, and reads the pod's token: the pod's IPv6 loopback is the guest's too."""
    isolation.guest_dials(slirp_target.console(), slirp_target, pod_loopback6, "::1", SLIRP_HOST6)
    expect(pod_loopback6, "guest_got", pod_loopback6.token)
