"""IPv6 through slirp. The sidecar renders no ``ipv6=`` option (domain.go
``generateBackendDeviceQemuArg`` writes only id, net, dnssearch and hostfwd), so QEMU's defaults
apply (net/slirp.c): IPv6 on, prefix fec0::/64, the virtual host at fec0::2 and the DNS relay at
fec0::3; libslirp advertises the prefix by router advertisements from fe80::2. What the guest
makes of it is the guest's: recorded here, asserted where the release's source decides it."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import ClassVar

from slirp_conformance import waits
from slirp_conformance.console import GuestShell
from slirp_conformance.evidence import Evidence
from slirp_conformance.guest_profiles import GuestProfile

SLIRP_PREFIX6 = "fec0::/64"  # QEMU's default ipv6-prefix and ipv6-prefixlen
SLIRP_ROUTER6 = "fe80::2"  # libslirp's link-local address, the source of its router advertisements
SLIRP_HOST6 = "fec0::2"  # the virtual host: the pod's own ::1
SLIRP_DNS6 = "fec0::3"  # the DNS relay: the pod's IPv6 nameserver, or its ::1 when it has none


@dataclass
class Ipv6Evidence(Evidence):
    check: ClassVar[str] = "ipv6"
    netdev: str  # the -netdev argument the sidecar rendered ("" where the target does not know it)
    addresses: list[str] = field(default_factory=list)  # "addr/prefix scope" on the interface
    prefixes: list[str] = field(default_factory=list)  # networks of its addresses beyond the link
    routes: list[str] = field(default_factory=list)  # `ip -6 route` lines
    default_routes: list[str] = field(default_factory=list)  # next hops of the default route
    resolver_nameservers6: list[str] = field(default_factory=list)  # IPv6 servers the guest's resolver asks
    dns6_server: str = SLIRP_DNS6
    dns6_answers: list[str] = field(default_factory=list)  # A records for the peer's name asked at fec0::3
    dns6_output: str = ""
    pod_global_ipv6: list[str] | None = None  # the pod's own global IPv6 addresses (None: not known)


def _routable(text: str) -> list[str]:
    """Addresses beyond the link: scope global, or site (the kernel files fec0::/10, deprecated
    site-local space, under scope site)."""
    return re.findall(r"inet6 (\S+) scope (?:global|site)", text)


def observe(shell: GuestShell, profile: GuestProfile, netdev: str, dns_name: str) -> Ipv6Evidence:
    ev = Ipv6Evidence(netdev=netdev)
    try:  # router advertisements come a few seconds after link up: wait for a global address
        waits.wait_for(
            "an IPv6 address beyond the link on the guest's interface (SLAAC from slirp's router advertisement)",
            lambda: shell.run(profile.address6_command()),
            waits.scaled(15),
            accept=lambda r: bool(_routable(r.output)),
            describe=lambda r: r.output[-300:],
        )
    except waits.WaitTimeout:
        pass  # recorded as it is: no global address
    text = shell.run(profile.address6_command()).output
    ev.addresses = [f"{a} {s}" for a, s in re.findall(r"inet6 (\S+) scope (\w+)", text)]
    ev.prefixes = sorted({str(ipaddress.IPv6Interface(a).network) for a in _routable(text)})
    routes = shell.run(profile.route6_command()).output
    ev.routes = [" ".join(line.split()) for line in routes.splitlines() if line.strip()]
    ev.default_routes = re.findall(r"^default via (\S+)", routes, re.M)
    resolv = shell.run(profile.resolver_config_command).output
    ev.resolver_nameservers6 = [s for s in re.findall(r"^nameserver\s+(\S+)", resolv, re.M) if ":" in s]
    r = shell.run(profile.dns_command(dns_name, SLIRP_DNS6))
    ev.dns6_answers = profile.parse_dns(r.output) if r.ok else []
    ev.dns6_output = r.output[-300:]
    return ev
