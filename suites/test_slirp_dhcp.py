"""DHCP: the guest takes its address, route, DNS and search list from slirp's DHCP server."""

import pytest

from slirp_conformance.checks import dhcp

pytestmark = [pytest.mark.slirp, pytest.mark.dhcp]


@pytest.fixture(scope="module")
def dhcp_facts(shell, profile):
    """Read once per channel: the lease does not change within a run."""
    return dhcp.observe(shell, profile)


@pytest.fixture
def observed(dhcp_facts, record):
    return record(dhcp_facts)


def test_address_came_from_slirp_dhcp(observed, contract):
    lease = observed["lease"]
    assert lease is not None, observed.explain("a DHCP lease recorded by the guest", "a lease", None)
    assert lease["server_id"] == contract.gateway, observed.explain("DHCP server", contract.gateway, lease["server_id"])
    assert lease["address"] == contract.guest_ip, observed.explain(
        "leased address", contract.guest_ip, lease["address"]
    )


def test_interface_has_exactly_the_leased_address(observed, contract):
    expected = [f"{contract.guest_ip}/{contract.prefix}"]
    assert observed["addresses"] == expected, observed.explain(
        "IPv4 addresses on the interface", expected, observed["addresses"]
    )


def test_default_route_via_slirp_gateway(observed, contract):
    lease = observed["lease"] or {}
    assert lease.get("router") == contract.gateway, observed.explain(
        "DHCP router", contract.gateway, lease.get("router")
    )
    assert observed["default_routes"] == [contract.gateway], observed.explain(
        "default routes", [contract.gateway], observed["default_routes"]
    )


def test_nameserver_is_slirp_dns(observed, contract):
    lease = observed["lease"] or {}
    assert lease.get("dns") == [contract.nameserver], observed.explain(
        "DHCP DNS servers", [contract.nameserver], lease.get("dns")
    )
    assert contract.nameserver in observed["resolv_nameservers"], observed.explain(
        "resolv.conf nameservers", contract.nameserver, observed["resolv_nameservers"]
    )


def test_search_list_passed_through(observed, contract):
    lease = observed["lease"] or {}
    expected = list(contract.search_domains)
    assert lease.get("search") == expected, observed.explain(
        "DHCP domain search (option 119)", expected, lease.get("search")
    )


def test_lease_time(observed, contract):
    lease = observed["lease"] or {}
    assert lease.get("lease_seconds") == contract.lease_seconds, observed.explain(
        "lease time (s)", contract.lease_seconds, lease.get("lease_seconds")
    )


def test_mac_address_from_spec(observed, contract):
    if contract.mac is None:
        pytest.skip("the VM spec sets no MAC")
    assert observed["mac"] == contract.mac, observed.explain("interface MAC", contract.mac, observed["mac"])


def test_nic_model(observed, contract):
    assert observed["nic_driver"] == contract.nic_model, observed.explain(
        "NIC driver", contract.nic_model, observed["nic_driver"]
    )
