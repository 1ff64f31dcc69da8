"""The VM spec renders to exactly what the slirp sidecar adds, and the contract follows from it."""

import pytest

from slirp_conformance.target import Contract
from slirp_conformance.vmspec import Interface, PodNetwork, Port, VMSpec, conformance_vm, slirp_qemu_args


def test_conformance_vm_renders_like_the_sidecar():
    args = slirp_qemu_args(conformance_vm(), ("ns.svc.cluster.local", "cluster.local"))
    assert args == [
        "-netdev",
        "user,id=default,net=10.0.2.0/24,dnssearch=ns.svc.cluster.local,dnssearch=cluster.local,"
        "hostfwd=tcp::22-:22,hostfwd=tcp::8080-:8080,hostfwd=udp::8082-:8082",
        "-device",
        '{"driver":"e1000","netdev":"default","id":"default","mac":"02:5c:1a:00:00:01"}',
    ]


def test_duplicate_ports_are_rendered_once_and_protocols_lowercased():
    spec = VMSpec("v", Interface(ports=(Port(80), Port(80), Port(53, "UDP"), Port(53, "TCP"))))
    netdev = slirp_qemu_args(spec)[1]
    assert netdev.endswith(",hostfwd=tcp::80-:80,hostfwd=udp::53-:53,hostfwd=tcp::53-:53")


@pytest.mark.parametrize(
    "model, driver", [(None, "e1000"), ("virtio", "e1000"), ("rtl8139", "rtl8139"), ("e1000", "e1000")]
)
def test_nic_model_is_forced_to_what_slirp_supports(model, driver):
    spec = VMSpec("v", Interface(model=model))
    assert f'"driver":"{driver}"' in slirp_qemu_args(spec)[3]
    assert '"mac"' not in slirp_qemu_args(spec)[3]


def test_custom_cidr_moves_every_address_of_the_contract():
    spec = VMSpec("v", Interface(), PodNetwork(vm_network_cidr="10.1.0.0/24"))
    assert "net=10.1.0.0/24" in slirp_qemu_args(spec)[1]
    c = Contract.from_spec(spec, ())
    assert (c.guest_ip, c.gateway, c.nameserver, c.prefix) == ("10.1.0.15", "10.1.0.2", "10.1.0.3", 24)


@pytest.mark.parametrize(
    ("cidr", "wanted"),
    [
        # QEMU's net_slirp_init: network | (0x020f, 0x0202, 0x0203) within the host bits (measured on
        # the reference VM: net=172.30.8.0/22 leased 172.30.10.15 from 172.30.10.2, DNS 172.30.10.3)
        ("172.30.8.0/22", ("172.30.10.15", "172.30.10.2", "172.30.10.3", 22)),
        ("172.16.0.0/16", ("172.16.2.15", "172.16.2.2", "172.16.2.3", 16)),
        ("10.1.0.5/24", ("10.1.0.15", "10.1.0.2", "10.1.0.3", 24)),  # host bits of the CIDR are dropped
        ("192.168.7.0/28", ("192.168.7.15", "192.168.7.2", "192.168.7.3", 28)),
    ],
)
def test_slirp_places_its_addresses_like_qemu(cidr, wanted):
    c = Contract.from_spec(VMSpec("v", Interface(), PodNetwork(vm_network_cidr=cidr)), ())
    assert (c.guest_ip, c.gateway, c.nameserver, c.prefix) == wanted


def test_contract_of_the_conformance_vm():
    c = Contract.from_spec(conformance_vm(), ("a.test",))
    assert (c.guest_ip, c.gateway, c.nameserver, c.lease_seconds) == ("10.0.2.15", "10.0.2.2", "10.0.2.3", 86400)
    assert c.listed_tcp_ports == (22, 8080) and c.unlisted_tcp_port == 8081
    assert c.listed_udp_ports == (8082,) and c.unlisted_udp_port == 8083
    assert c.mac == "02:5c:1a:00:00:01" and c.nic_model == "e1000" and c.search_domains == ("a.test",)


@pytest.mark.parametrize(
    "bad",
    [
        lambda: Port(0),
        lambda: Port(70000),
        lambda: Port(22, "SCTP"),
        lambda: Interface(mac="02:5C:1A:00:00:01"),
        lambda: VMSpec("v", Interface(name="a"), PodNetwork(name="b")),
    ],
)
def test_invalid_specs_are_refused(bad):
    with pytest.raises(ValueError):
        bad()


def test_listing_the_unlisted_test_port_is_refused():
    spec = VMSpec("v", Interface(ports=(Port(8081),)))
    with pytest.raises(ValueError, match="must stay unlisted"):
        Contract.from_spec(spec, ())


def test_search_list_is_lower_cased_and_defaults_to_cluster_local_like_the_sidecar():
    assert (
        "dnssearch=ns.example.org,dnssearch=example.org"
        in slirp_qemu_args(VMSpec("v"), ("NS.Example.org", "Example.ORG"))[1]
    )
    assert slirp_qemu_args(VMSpec("v"))[1] == "user,id=default,net=10.0.2.0/24,dnssearch=cluster.local"
