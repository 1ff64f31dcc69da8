"""Ports: only the ports listed on the interface reach the guest from outside (slirp hostfwd)."""

import contextlib
import dataclasses
import secrets
from collections.abc import Iterator

import pytest

from slirp_conformance import waits
from slirp_conformance.checks import ports
from slirp_conformance.checks.ports import (
    GuestService,
    GuestUdpService,
    ListedPortEvidence,
    ListedUdpPortEvidence,
    ServiceIngressEvidence,
    SshIngressEvidence,
    UnlistedPortEvidence,
    UnlistedUdpPortEvidence,
)
from slirp_conformance.evidence import Record, contains, expect, matches, void_unless_proven
from slirp_conformance.ssh_client import SSHClient
from slirp_conformance.target import Contract, NotOnThisTarget, Target

pytestmark = [pytest.mark.slirp, pytest.mark.ports]


@pytest.fixture(scope="module")
def started_services(slirp_target: Target) -> Iterator[ports.StartedServices]:
    """Every guest service this module started, stopped together when the module ends (set up
    before the fixtures that start them, so torn down after them)."""
    started = ports.StartedServices()
    yield started
    started.stop(slirp_target.console())


@pytest.fixture(scope="module")
def guest_services(
    slirp_target: Target, contract: Contract, started_services: ports.StartedServices
) -> dict[int, GuestService]:
    """A guest HTTP server on a listed test port and on the unlisted one, each proven from inside;
    started together (a failed start leaves none running) and stopped with the module's others."""
    listed = next(p for p in contract.listed_tcp_ports if p != 22)
    services = ports.start_all(slirp_target.console(), slirp_target.profile, (listed, contract.unlisted_tcp_port))
    started_services.tcp.extend(services)
    return services


def test_listed_port_reaches_guest_service(
    slirp_target: Target, guest_services: dict[int, GuestService], contract: Contract, record: Record
) -> None:
    service = next(s for p, s in guest_services.items() if p in contract.listed_tcp_ports)
    ev = record(ListedPortEvidence(port=service.port, token=service.token, guest_local_body=service.local_body))
    ports.request_from_cluster(slirp_target.dial_guest_port, service, ev)
    expect(ev, "body", service.token)


@pytest.fixture
def unlisted_attempt(
    slirp_target: Target, guest_services: dict[int, GuestService], contract: Contract, record: Record
) -> UnlistedPortEvidence:
    """A client's connection to the unlisted port at the pod address. Void (an error) unless the
    guest's service is up (its own request got the token) and the attempt demonstrably reached
    the pod: refused by it (RST, no hostfwd there) or accepted. No answer at all proves nothing."""
    service = guest_services[contract.unlisted_tcp_port]
    ev = record(UnlistedPortEvidence(port=service.port, token=service.token, guest_local_body=service.local_body))
    problems = []
    if service.local_body != service.token:
        problems.append(f"the guest's own request to its service on port {service.port} did not get its token")
    ev.outcome = ports.request_from_cluster(slirp_target.dial_guest_port, service, ev)
    if ev.outcome == "no answer":
        problems.append(
            f"the connection attempt to port {service.port} at the pod address got no answer "
            f"({ev.error}): it may never have reached the pod"
        )
    return void_unless_proven(ev, problems)


def test_unlisted_port_is_not_reachable(unlisted_attempt: UnlistedPortEvidence) -> None:
    """A client's connection to the unlisted port at the pod address is refused."""
    expect(unlisted_attempt, "outcome", "refused")


def test_ssh_reaches_guest_through_listed_port_22(guest_ssh: SSHClient, contract: Contract, record: Record) -> None:
    r = guest_ssh.run("cat /proc/sys/kernel/hostname")
    ev = record(SshIngressEvidence(listed_ports=list(contract.listed_tcp_ports), rc=r.rc, hostname=r.output.strip()))
    expect(ev, "listed_ports", contains(22))
    expect(ev, "rc", 0)
    expect(ev, "hostname", matches(r"\S"))


# -- a ClusterIP Service: how users of a cluster reach a VM ---------------------------------------
@pytest.mark.parametrize("via", ["cluster-ip", "dns-name"])
def test_cluster_ip_service_reaches_guest_service(
    slirp_target: Target, guest_services: dict[int, GuestService], contract: Contract, record: Record, via: str
) -> None:
    """A client's request through a ClusterIP Service on the listed port (port = targetPort, selecting
    the launcher pod by KubeVirt's ``kubevirt.io/created-by`` label) gets the guest service's token,
    dialled by the Service's cluster IP and by its DNS name. The Service forwards to the pod IP, where
    the sidecar's ``hostfwd=tcp::P-:P`` listens on every pod address (domain.go); cluster targets only."""
    try:
        service = slirp_target.guest_service()
    except NotOnThisTarget as e:
        pytest.skip(str(e))
    guest = next(s for p, s in guest_services.items() if p in contract.listed_tcp_ports)
    host = str(service.cluster_ip if via == "cluster-ip" else service.dns_name)
    tries: list[ServiceIngressEvidence] = []

    def request() -> ServiceIngressEvidence:
        ev = ServiceIngressEvidence(
            port=guest.port,
            token=guest.token,
            guest_local_body=guest.local_body,
            via=via,
            dialled=host,
            service=dataclasses.asdict(service),
            attempts=len(tries) + 1,
        )
        tries.append(ev)
        ports.request_from_cluster(lambda port: slirp_target.dial_from_cluster_client(host, port), guest, ev)
        return ev

    # kube-proxy programs a new Service asynchronously (measured on kind: the first request right
    # after the Service got its endpoint hung): a bounded retry, every attempt counted in the evidence.
    with contextlib.suppress(waits.WaitTimeout):
        waits.wait_for(
            f"the guest's token through Service {service.name} by {via} ({host}:{guest.port})",
            request,
            waits.scaled(30),
            accept=lambda ev: ev.body == guest.token,
            describe=lambda ev: f"body {ev.body!r}, error {ev.error or ev.body_error}",
        )
    ev = record(tries[-1])
    expect(ev, "body", guest.token)


# -- UDP: every listed port is forwarded with its protocol (the sidecar's hostfwd=udp::P-:P) --------
@pytest.fixture(scope="module")
def guest_udp_services(
    slirp_target: Target, contract: Contract, started_services: ports.StartedServices
) -> dict[int, GuestUdpService]:
    """A guest UDP service on the listed UDP port and on the unlisted one, each proven up from inside
    (a datagram the guest sends itself arrives); stopped with the module's others."""
    if not contract.listed_udp_ports:
        pytest.skip("the VM spec lists no UDP port")
    services = ports.start_udp_all(
        slirp_target.console(), slirp_target.profile, (contract.listed_udp_ports[0], contract.unlisted_udp_port)
    )
    started_services.udp.extend(services)
    return services


def _udp_attempt(
    slirp_target: Target,
    service: GuestUdpService,
    ev: ListedUdpPortEvidence | UnlistedUdpPortEvidence,
    sender_wait: float = 2,
):
    """``sender_wait``: how long the client waits for a reply or the pod's ICMP error."""
    try:
        ports.send_from_cluster(
            lambda port, payload: slirp_target.send_udp_to_pod(port, payload, sender_wait),
            slirp_target.console(),
            service,
            ev,
        )
    except NotOnThisTarget as e:
        pytest.skip(str(e))


def _udp_evidence(cls, service: GuestUdpService, token: str):
    return cls(
        port=service.port,
        token=token,
        guest_local_control=service.local_token,
        guest_local_received=service.local_received,
    )


def test_listed_udp_port_reaches_guest_service(
    slirp_target: Target, guest_udp_services: dict[int, GuestUdpService], contract: Contract, record: Record
) -> None:
    """A client's datagram to the listed UDP port at the pod address reaches the guest's service.
    Its arrival is read where it lands, so the client waits only briefly for a reply nobody sends:
    the pod's ICMP error for a port slirp does not forward comes from the pod's own kernel within
    milliseconds (the unlisted port's refusal, datagram to error, takes under 10 ms on the
    reference target), and a late one changes nothing (the token is then missing from the guest's
    file either way). 0.1 s, not 0.5: the warm busybox run waited out the difference."""
    service = guest_udp_services[contract.listed_udp_ports[0]]
    ev = record(_udp_evidence(ListedUdpPortEvidence, service, f"slirp-udp-in-{service.port}-{secrets.token_hex(6)}"))
    _udp_attempt(slirp_target, service, ev, sender_wait=waits.scaled(0.1))
    ev.token_reached_guest = ev.token in ev.guest_received
    expect(ev, "token_reached_guest", True)


@pytest.fixture
def unlisted_udp_attempt(
    slirp_target: Target, guest_udp_services: dict[int, GuestUdpService], contract: Contract, record: Record
) -> UnlistedUdpPortEvidence:
    """A client's datagram to the unlisted UDP port at the pod address. Void (an error) unless the
    guest's service was up (its own datagram arrived) and the client's datagram demonstrably
    reached the pod: answered by the pod's ICMP port unreachable (no hostfwd socket there), or
    received by the guest. Silence proves nothing: the datagram may never have arrived."""
    service = guest_udp_services[contract.unlisted_udp_port]
    ev = record(_udp_evidence(UnlistedUdpPortEvidence, service, f"slirp-udp-in-{service.port}-{secrets.token_hex(6)}"))
    problems = []
    if service.local_token not in service.local_received:
        problems.append(f"the guest's own datagram to its UDP service on port {service.port} did not arrive")
    _udp_attempt(slirp_target, service, ev)
    if ev.token in ev.guest_received:
        ev.outcome = "reached the guest"
    elif ev.sender == "refused":
        ev.outcome = "refused"
    else:
        ev.outcome = "no answer"
        problems.append(
            f"the client's datagram to port {service.port} at the pod address got no ICMP error and did not "
            f"reach the guest ({ev.sender}: {ev.sender_detail}): it may never have reached the pod"
        )
    return void_unless_proven(ev, problems)


def test_unlisted_udp_port_is_not_reachable(unlisted_udp_attempt: UnlistedUdpPortEvidence) -> None:
    """A client's datagram to the unlisted UDP port at the pod address is refused by the pod (ICMP
    port unreachable: slirp binds nothing there) and never reaches the guest's service."""
    expect(unlisted_udp_attempt, "outcome", "refused")
