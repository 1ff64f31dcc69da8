"""Ports: only the ports listed on the interface reach the guest from outside (slirp hostfwd)."""

import pytest

from slirp_conformance.checks import ports, tcp
from slirp_conformance.evidence import Evidence, VoidCheck

pytestmark = [pytest.mark.slirp, pytest.mark.ports]


@pytest.fixture(scope="module")
def guest_services(slirp_target, contract):
    """A guest HTTP server on a listed test port and on the unlisted one, each proven from inside."""
    console, profile = slirp_target.console(), slirp_target.profile
    listed = next(p for p in contract.listed_tcp_ports if p != 22)
    started = {}
    try:
        for port in (listed, contract.unlisted_tcp_port):
            started[port] = ports.start(console, profile, port)
        yield started
    finally:
        for port in started:
            ports.stop(console, port)


def test_listed_port_reaches_guest_service(slirp_target, guest_services, contract, record):
    service = next(s for p, s in guest_services.items() if p in contract.listed_tcp_ports)
    ev = record(
        Evidence(
            "ingress-listed", {"port": service.port, "token": service.token, "guest_local_body": service.local_body}
        )
    )
    try:
        with slirp_target.dial_guest_port(service.port) as sock:
            ev["body"] = tcp.http_get(sock, "/token")
    except (ConnectionError, TimeoutError) as e:
        ev["error"] = f"{type(e).__name__}: {e}"
    assert ev.get("body") == service.token, ev.explain(
        f"body from listed port {service.port} at the pod address", service.token, ev.get("body", ev.get("error"))
    )


@pytest.fixture
def unlisted_attempt(slirp_target, guest_services, contract, record):
    """A client's connection to the unlisted port at the pod address. Void (an error) unless the
    guest's service is up (its own request got the token) and the attempt demonstrably reached
    the pod: refused by it (RST, no hostfwd there) or accepted. No answer at all proves nothing."""
    service = guest_services[contract.unlisted_tcp_port]
    ev = record(
        Evidence(
            "ingress-unlisted", {"port": service.port, "token": service.token, "guest_local_body": service.local_body}
        )
    )
    problems = []
    if service.local_body != service.token:
        problems.append(f"the guest's own request to its service on port {service.port} did not get its token")
    try:
        with slirp_target.dial_guest_port(service.port) as sock:
            ev["outcome"] = "connected"
            try:
                ev["body"] = tcp.http_get(sock, "/token")
            except (ConnectionError, TimeoutError) as e:
                ev["body_error"] = f"{type(e).__name__}: {e}"
    except ConnectionRefusedError as e:
        ev["outcome"], ev["error"] = "refused", f"{type(e).__name__}: {e}"
    except (ConnectionError, TimeoutError) as e:
        ev["outcome"], ev["error"] = "no answer", f"{type(e).__name__}: {e}"
        problems.append(
            f"the connection attempt to port {service.port} at the pod address got no answer "
            f"({ev['error']}): it may never have reached the pod"
        )
    if problems:
        raise VoidCheck(ev, problems)
    return ev


def test_unlisted_port_is_not_reachable(unlisted_attempt):
    ev = unlisted_attempt
    assert ev["outcome"] == "refused", ev.explain(
        f"a client's connection to unlisted port {ev['port']} at the pod address", "refused", ev["outcome"]
    )


def test_ssh_reaches_guest_through_listed_port_22(guest_ssh, contract, record):
    assert 22 in contract.listed_tcp_ports
    r = guest_ssh.run("cat /proc/sys/kernel/hostname")
    ev = record(Evidence("ingress-ssh", {"rc": r.rc, "hostname": r.output.strip()}))
    assert r.ok and ev["hostname"], ev.explain("a command over SSH via port 22", "rc 0 and a hostname", r.rc)
