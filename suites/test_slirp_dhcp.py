"""DHCP: the guest takes its address, route, DNS and search list from slirp's DHCP server."""

import pytest

from slirp_conformance import ahead
from slirp_conformance.checks import dhcp
from slirp_conformance.checks.dhcp import DhcpEvidence
from slirp_conformance.console import GuestShell
from slirp_conformance.evidence import Record, contains, expect
from slirp_conformance.target import Contract

pytestmark = [pytest.mark.slirp, pytest.mark.dhcp, pytest.mark.probe(dhcp.observe_probe)]


@pytest.fixture
def observed(shell: GuestShell, record: Record, probed: ahead.Probed) -> DhcpEvidence:
    """Read once per channel (the probe is ``once``): the lease does not change within a run."""
    return record(probed(dhcp.observe_probe, shell))


def test_address_came_from_slirp_dhcp(observed: DhcpEvidence, contract: Contract) -> None:
    expect(observed, "lease.server_id", contract.gateway)
    expect(observed, "lease.address", contract.guest_ip)


def test_interface_has_exactly_the_leased_address(observed: DhcpEvidence, contract: Contract) -> None:
    expect(observed, "addresses", [f"{contract.guest_ip}/{contract.prefix}"])


def test_default_route_via_slirp_gateway(observed: DhcpEvidence, contract: Contract) -> None:
    expect(observed, "lease.router", contract.gateway)
    expect(observed, "default_routes", [contract.gateway])


def test_nameserver_is_slirp_dns(observed: DhcpEvidence, contract: Contract) -> None:
    expect(observed, "lease.dns", [contract.nameserver])
    expect(observed, "resolv_nameservers", contains(contract.nameserver))


def test_search_list_passed_through(observed: DhcpEvidence, contract: Contract) -> None:
    expect(observed, "lease.search", list(contract.search_domains))


def test_lease_time(observed: DhcpEvidence, contract: Contract) -> None:
    expect(observed, "lease.lease_seconds", contract.lease_seconds)


def test_mac_address_from_spec(observed: DhcpEvidence, contract: Contract) -> None:
    if contract.mac is None:
        pytest.skip("the VM spec sets no MAC")
    expect(observed, "mac", contract.mac)


def test_nic_model(observed: DhcpEvidence, contract: Contract) -> None:
    expect(observed, "nic_driver", contract.nic_model)
