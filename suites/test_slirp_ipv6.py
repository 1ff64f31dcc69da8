"""IPv6 through slirp, reported under its own heading: QEMU's user network has IPv6 on unless told
otherwise and the sidecar never tells it (domain.go ``generateBackendDeviceQemuArg``). Asserted:
what follows from that source (IPv6 left on; slirp's prefix fec0::/64 and router fe80::2 reach a
guest that does SLAAC; the virtual host fec0::2 is the pod's ::1). Recorded: the guest's resolver,
slirp's IPv6 DNS relay at fec0::3 and whether the pod itself has IPv6 (the egress question)."""

import pytest

from slirp_conformance.checks import ipv6, isolation
from slirp_conformance.checks.ipv6 import SLIRP_HOST6, SLIRP_PREFIX6, SLIRP_ROUTER6, Ipv6Evidence
from slirp_conformance.checks.isolation import POD_LOOPBACK_PORT, PodLoopbackEvidence
from slirp_conformance.evidence import Record, VoidCheck, contains, expect, matches
from slirp_conformance.target import NotOnThisTarget, Target

pytestmark = [pytest.mark.slirp, pytest.mark.ipv6]


@pytest.fixture(scope="module")
def ipv6_facts(slirp_target: Target) -> Ipv6Evidence:
    """Read once over the console: the addresses and routes do not change within a run."""
    netdev = next((a for a in (slirp_target.sidecar_args() or []) if a.startswith("user,")), "")
    ev = ipv6.observe(slirp_target.console(), slirp_target.profile, netdev, slirp_target.peers.dns_name)
    ev.pod_global_ipv6 = slirp_target.pod_global_ipv6()
    return ev


@pytest.fixture
def ipv6_observed(ipv6_facts: Ipv6Evidence, record: Record) -> Ipv6Evidence:
    return record(ipv6_facts)


def test_the_sidecar_leaves_ipv6_on(ipv6_observed: Ipv6Evidence) -> None:
    if not ipv6_observed.netdev:
        pytest.skip("this target does not know the sidecar's -netdev argument")
    expect(ipv6_observed, "netdev", matches(r"^(?!.*\bipv6=off\b)(?!.*\bipv6-)"))


def test_guest_gets_an_address_in_slirps_prefix(ipv6_observed: Ipv6Evidence) -> None:
    expect(ipv6_observed, "prefixes", [SLIRP_PREFIX6])


def test_guest_default_route_is_slirps_router(ipv6_observed: Ipv6Evidence) -> None:
    expect(ipv6_observed, "default_routes", contains(SLIRP_ROUTER6))


@pytest.fixture(scope="module")
def pod_loopback6_token(slirp_target: Target) -> str:
    try:
        return isolation.pod_loopback_service(slirp_target, "::1")
    except NotOnThisTarget as e:
        pytest.skip(str(e))


@pytest.fixture
def pod_loopback6(
    slirp_target: Target, ipv6_facts: Ipv6Evidence, pod_loopback6_token: str, record: Record
) -> PodLoopbackEvidence:
    """Void unless the guest has an address in slirp's prefix (else it cannot dial fec0::2) and the
    pod's service is loopback-only (refused to a client at the pod address)."""
    ev = record(
        PodLoopbackEvidence(
            pod_listener=f"[::1]:{POD_LOOPBACK_PORT} in the pod's network namespace",
            guest_dials=f"[{SLIRP_HOST6}]:{POD_LOOPBACK_PORT}",
            token=pod_loopback6_token,
            from_cluster=isolation.from_cluster(slirp_target.dial_guest_port, POD_LOOPBACK_PORT),
        )
    )
    problems = []
    if SLIRP_PREFIX6 not in ipv6_facts.prefixes:
        problems.append(f"the guest has no address in {SLIRP_PREFIX6}: {ipv6_facts.addresses}")
    if ev.from_cluster != "refused":
        problems.append(f"a client in the cluster got '{ev.from_cluster}' at the pod address: not loopback-only")
    if problems:
        raise VoidCheck(ev, problems)
    return ev


def test_guest_reaches_the_pods_ipv6_loopback(slirp_target: Target, pod_loopback6: PodLoopbackEvidence) -> None:
    """The guest connects to slirp's virtual host over IPv6 ([fec0::2]) at a port the pod keeps on
    [::1], listed nowhere, and reads the pod's token: the pod's IPv6 loopback is the guest's too."""
    isolation.guest_reads(slirp_target.console(), slirp_target.profile, pod_loopback6, SLIRP_HOST6, POD_LOOPBACK_PORT)
    pod_loopback6.pod_saw_clients = slirp_target.pod_loopback_clients("::1", POD_LOOPBACK_PORT)
    expect(pod_loopback6, "guest_got", pod_loopback6.token)
