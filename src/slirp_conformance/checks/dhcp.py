"""What the guest's DHCP client got from slirp's built-in server, and how it applied it."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import ClassVar

from slirp_conformance import ahead, guest_batch
from slirp_conformance.console import GuestShell
from slirp_conformance.evidence import Evidence
from slirp_conformance.guest_profiles import GuestProfile


@dataclass
class LeaseFacts:
    address: str | None
    prefix: int | None
    router: str | None
    dns: list[str]
    search: list[str]
    lease_seconds: int | None
    server_id: str | None


@dataclass
class DhcpEvidence(Evidence):
    check: ClassVar[str] = "dhcp"
    lease_source: str  # the command that read the lease
    lease: LeaseFacts | None  # None: the guest recorded no lease
    addresses: list[str] = field(default_factory=list)  # IPv4 address/prefix on the interface
    default_routes: list[str] = field(default_factory=list)
    resolver_config_source: str = ""  # where the guest keeps the servers it asks
    resolv_nameservers: list[str] = field(default_factory=list)
    resolv_search: list[str] = field(default_factory=list)
    mac: str = ""
    nic_driver: str = ""
    client_log: str | None = None  # the DHCP client's last words, read when the guest holds no lease


def observe(shell: GuestShell, profile: GuestProfile) -> DhcpEvidence:
    """One guest command (``guest_batch``) for all of it: the lease, the interface's address,
    the default route, the resolver's configuration, the MAC and the NIC's driver."""
    got = guest_batch.run(
        shell,
        {
            "lease": profile.lease_command,
            "address": profile.address_command(),
            "route": profile.route_command(),
            "resolver": profile.resolver_config_command,
            "mac": profile.mac_command(),
            "driver": profile.nic_driver_command(),
        },
    )
    lease = profile.parse_lease(got["lease"].output) if got["lease"].ok else None
    ev = DhcpEvidence(
        lease_source=profile.lease_command,
        lease=None
        if lease is None
        else LeaseFacts(
            address=lease.address,
            prefix=lease.prefix,
            router=lease.router,
            dns=list(lease.dns),
            search=list(lease.search),
            lease_seconds=lease.lease_seconds,
            server_id=lease.server_id,
        ),
    )
    ev.addresses = re.findall(r"inet (\d+\.\d+\.\d+\.\d+/\d+)", got["address"].output)
    ev.default_routes = re.findall(r"default via (\d+\.\d+\.\d+\.\d+)", got["route"].output)
    # Where the guest keeps the servers it really asks (systemd-resolved: not /etc/resolv.conf).
    ev.resolver_config_source = profile.resolver_config_command
    resolv = got["resolver"].output
    ev.resolv_nameservers = re.findall(r"^nameserver\s+(\S+)", resolv, re.M)
    ev.resolv_search = next((line.split()[1:] for line in resolv.splitlines() if line.startswith("search")), [])
    ev.mac = got["mac"].output.strip() if got["mac"].ok else ""
    ev.nic_driver = got["driver"].output.strip() if got["driver"].ok else ""
    if ev.lease is None and profile.dhcp_client_log_command:
        # Why not: seen once on a loaded host (2026-12-07, busybox guest: no lease and no address
        # right after the login, both there a second later), with nothing to tell why.
        log = shell.run(profile.dhcp_client_log_command)
        ev.client_log = (log.output + log.stderr).strip()[-1500:]
    return ev


@ahead.probe("dhcp", once=True)  # read once per channel: the lease does not change within a run
def observe_probe(target, shell: GuestShell) -> DhcpEvidence:
    """``observe`` with the target's guest profile (a probe: it may run ahead, ahead.py)."""
    return observe(shell, target.profile)
