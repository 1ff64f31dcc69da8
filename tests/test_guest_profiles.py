"""The guest profiles' parsers read what real DHCP clients and tools print."""

from slirp_conformance.guest_profiles import FEDORA, REFERENCE, parse_nmcli_dhcp4, parse_nslookup, parse_udhcpc_lease

UDHCPC = """event=bound
ip=10.0.2.15
mask=24
router=10.0.2.2
dns=10.0.2.3
search=ns.svc.cluster.local svc.cluster.local cluster.local
domain=
lease=86400
serverid=10.0.2.2
mtu=
"""

NMCLI = """DHCP4.OPTION[1]:broadcast_address = 10.0.2.255
DHCP4.OPTION[2]:dhcp_lease_time = 86400
DHCP4.OPTION[3]:dhcp_server_identifier = 10.0.2.2
DHCP4.OPTION[4]:domain_name_servers = 10.0.2.3
DHCP4.OPTION[5]:domain_search = ns.svc.cluster.local svc.cluster.local cluster.local
DHCP4.OPTION[6]:ip_address = 10.0.2.15
DHCP4.OPTION[7]:routers = 10.0.2.2
DHCP4.OPTION[8]:subnet_mask = 255.255.255.0
"""


def test_udhcpc_and_nmcli_leases_read_the_same():
    a, b = parse_udhcpc_lease(UDHCPC), parse_nmcli_dhcp4(NMCLI)
    for lease in (a, b):
        assert (lease.address, lease.prefix, lease.router, lease.dns, lease.lease_seconds, lease.server_id) == (
            "10.0.2.15",
            24,
            "10.0.2.2",
            ("10.0.2.3",),
            86400,
            "10.0.2.2",
        )
        assert lease.search == ("ns.svc.cluster.local", "svc.cluster.local", "cluster.local")


def test_no_lease_reads_as_none():
    assert parse_udhcpc_lease("") is None
    assert parse_nmcli_dhcp4("GENERAL.DEVICE:eth0\n") is None


def test_restricted_lease_has_no_router_and_no_dns():
    lease = parse_udhcpc_lease(UDHCPC.replace("router=10.0.2.2", "router=").replace("dns=10.0.2.3", "dns="))
    assert lease.router is None and lease.dns == ()


def test_busybox_nslookup_answers_only():
    out = "Server:\t\t10.0.2.3\nAddress:\t10.0.2.3:53\n\nName:\tpeer.ns.svc.cluster.local\nAddress: 198.18.0.1\n"
    assert parse_nslookup(out) == ["198.18.0.1"]
    assert parse_nslookup("Server: 10.0.2.3\nAddress: 10.0.2.3:53\n\n** server can't find x: NXDOMAIN\n") == []


def test_reference_speaks_netcat_fedora_python3_and_pings_are_bound():
    assert "| timeout 15 busybox nc 198.18.0.1 9007" in REFERENCE.tcp_echo_command("198.18.0.1", 9007, "x")
    assert " nc.openbsd -N " in REFERENCE.transfer_command("198.18.0.1", 9007, 1 << 23, 60)
    assert " nc.openbsd -u " in REFERENCE.udp_echo_command("198.18.0.1", 9007, "x")
    for command in (
        FEDORA.tcp_echo_command("10.96.0.5", 9007, "x"),
        FEDORA.udp_echo_command("10.96.0.5", 9007, "x"),
        FEDORA.dns_command("peer", "10.0.2.3"),
        FEDORA.transfer_command("10.96.0.5", 9007, 1, 9),
    ):
        assert " python3 -c " in command and " nc " not in command
    assert FEDORA.ping_command("198.18.0.1").startswith("timeout ")
    # busybox's ping is bound by the guest loop that watches it, then SIGINT (test_ping_early_end.py)
    assert f"[ $n -lt {REFERENCE.ping_guest_bound(3) * 50} ]" in REFERENCE.ping_command("198.18.0.1")


def test_python_dns_answers_ignore_boot_messages_on_the_console():
    out = (
        "[   90.987130] cloud-init[421]: Cloud-init v. 22.4.2 running 'modules:final'. Up 89.72 seconds.\n"
        "198.18.0.1\n10.96.0.10\n"
    )
    assert FEDORA.parse_dns(out) == ["198.18.0.1", "10.96.0.10"]
