"""Ports: only the ports listed on the interface reach the guest from outside (slirp hostfwd)."""

from collections.abc import Iterator

import pytest

from slirp_conformance.checks import ports
from slirp_conformance.checks.ports import GuestService, ListedPortEvidence, SshIngressEvidence, UnlistedPortEvidence
from slirp_conformance.evidence import Record, VoidCheck, contains, expect, matches
from slirp_conformance.ssh_client import SSHClient
from slirp_conformance.target import Contract, Target

pytestmark = [pytest.mark.slirp, pytest.mark.ports]


@pytest.fixture(scope="module")
def guest_services(slirp_target: Target, contract: Contract) -> Iterator[dict[int, GuestService]]:
    """A guest HTTP server on a listed test port and on the unlisted one, each proven from inside."""
    console, profile = slirp_target.console(), slirp_target.profile
    listed = next(p for p in contract.listed_tcp_ports if p != 22)
    started: dict[int, GuestService] = {}
    try:
        for port in (listed, contract.unlisted_tcp_port):
            started[port] = ports.start(console, profile, port)
        yield started
    finally:
        for port in started:
            ports.stop(console, port)


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
    if problems:
        raise VoidCheck(ev, problems)
    return ev


def test_unlisted_port_is_not_reachable(unlisted_attempt: UnlistedPortEvidence) -> None:
    """A client's connection to the unlisted port at the pod address is refused."""
    expect(unlisted_attempt, "outcome", "refused")


def test_ssh_reaches_guest_through_listed_port_22(guest_ssh: SSHClient, contract: Contract, record: Record) -> None:
    r = guest_ssh.run("cat /proc/sys/kernel/hostname")
    ev = record(SshIngressEvidence(listed_ports=list(contract.listed_tcp_ports), rc=r.rc, hostname=r.output.strip()))
    expect(ev, "listed_ports", contains(22))
    expect(ev, "rc", 0)
    expect(ev, "hostname", matches(r"\S"))
