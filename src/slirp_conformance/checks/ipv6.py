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

from slirp_conformance import guest_batch, waits
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
    dns6_datagrams_sent: int | None = None  # the guest's Udp6OutDatagrams rose by this during the query
    dns6_unreachables: int | None = None  # ICMPv6 destination unreachable the guest received meanwhile
    dns6_ended: str = ""  # "by itself", or why the suite ended it early (every query refused)
    pod_global_ipv6: list[str] | None = None  # the pod's own global IPv6 addresses (None: not known)


def _routable(text: str) -> list[str]:
    """Addresses beyond the link: scope global, or site (the kernel files fec0::/10, deprecated
    site-local space, under scope site)."""
    return re.findall(r"inet6 (\S+) scope (?:global|site)", text)


def observe(shell: GuestShell, profile: GuestProfile, netdev: str, dns_name: str) -> Ipv6Evidence:
    ev = Ipv6Evidence(netdev=netdev)
    readings = {
        "addresses": profile.address6_command(),
        "routes": profile.route6_command(),
        "resolver": profile.resolver_config_command,
    }
    # Router advertisements come a few seconds after link up: the readings again until the
    # interface has an address beyond the link (one guest command each time, ``guest_batch``).
    try:
        got = waits.wait_for(
            "an IPv6 address beyond the link on the guest's interface (SLAAC from slirp's router advertisement)",
            lambda: guest_batch.run(shell, readings),
            waits.scaled(15),
            accept=lambda b: bool(_routable(b["addresses"].output)),
            describe=lambda b: b["addresses"].output[-300:],
        )
    except waits.WaitTimeout:
        got = guest_batch.run(shell, readings)  # recorded as it is: no global address
    text = got["addresses"].output
    ev.addresses = [f"{a} {s}" for a, s in re.findall(r"inet6 (\S+) scope (\w+)", text)]
    ev.prefixes = sorted({str(ipaddress.IPv6Interface(a).network) for a in _routable(text)})
    routes = got["routes"].output if got["routes"].ok else ""
    ev.routes = [" ".join(line.split()) for line in routes.splitlines() if line.strip()]
    ev.default_routes = re.findall(r"^default via (\S+)", routes, re.M)
    resolv = got["resolver"].output
    ev.resolver_nameservers6 = [s for s in re.findall(r"^nameserver\s+(\S+)", resolv, re.M) if ":" in s]
    _ask_dns6(shell, profile, dns_name, ev)
    return ev


def parse_udp6_counters(text: str) -> dict[str, int]:
    """``udp6_counters_command`` output -> {"Udp6OutDatagrams": n, "Icmp6InDestUnreachs": n} (what it printed)."""
    return {k: int(v) for k, v in re.findall(r"^(Udp6OutDatagrams|Icmp6InDestUnreachs)\s+(\d+)\s*$", text, re.M)}


_DNS6_OUT = "/tmp/slirp-dns6.out"
_DNS6_RC = "/tmp/slirp-dns6.rc"  # written when the query has ended: its exit code


def _ask_dns6(shell: GuestShell, profile: GuestProfile, dns_name: str, ev: Ipv6Evidence) -> None:
    """The A query at slirp's IPv6 DNS relay, in the guest's background, watched through the
    guest's own counters. Where the relay has no upstream (no IPv6 nameserver in the pod: its [::1]
    then, where nothing listens), libslirp answers each query with ICMPv6 destination unreachable
    (socket.c ``sorecvfrom``); busybox nslookup and the Fedora profile's query ignore that on their
    unconnected sockets and wait out their own timeout (5 s, 9 s: measured). So the query ends as soon
    as every datagram it sent was refused, its outcome then proven, and otherwise when it ends itself
    (its exit code in a file: a process looked for too early is not there yet either). Its processes
    are stopped by their argument ``fec0::3``: no ``$!`` names them reliably through the guest's
    ``timeout`` (busybox's execs the query, and a forked watcher outlives it). Two guest commands:
    the start, then the watch (in the guest, every 20 ms) with its readings."""
    command = profile.dns_command(dns_name, SLIRP_DNS6)
    # One command: the counters, then the query's start. Not a ``guest_batch`` part: a shell keeps
    # a copy of a group's redirected stderr, and a subshell forked in the group (this job) inherits
    # it, so SSH (or a pipe) would see the output end only when the query does.
    began = shell.run(
        f"{profile.udp6_counters_command()}; rm -f {_DNS6_OUT} {_DNS6_RC}; "
        f"{profile.detached_job_command(f'{command}; echo $? >{_DNS6_RC}', _DNS6_OUT)}"
    )
    before = parse_udp6_counters(began.output)
    settle_s, stop_s = waits.scaled(20), waits.scaled(10)
    got = guest_batch.run(
        shell,
        {
            "watch": _watch_dns6(profile, before, settle_s, stop_s),
            "counters": profile.udp6_counters_command(),
            "rc": f"cat {_DNS6_RC}",
            "out": f"cat {_DNS6_OUT}; rm -f {_DNS6_OUT} {_DNS6_RC}",
        },
        timeout=waits.timeout("console-command") + settle_s + stop_s,
    )
    after = parse_udp6_counters(got["counters"].output)
    if len(after) == 2 and len(before) == 2:
        ev.dns6_datagrams_sent = after["Udp6OutDatagrams"] - before["Udp6OutDatagrams"]
        ev.dns6_unreachables = after["Icmp6InDestUnreachs"] - before["Icmp6InDestUnreachs"]
    how = re.search(r"^slirp-dns6 (\S+)$", got["watch"].output, re.M)
    ended = how.group(1) if how else f"unknown (the watch said {got['watch'].output[-200:]!r})"
    ev.dns6_ended = {
        "by-itself": "by itself",
        "refused": f"by the suite: all {ev.dns6_datagrams_sent} queries refused (ICMPv6 destination unreachable)",
        "bound": "by the suite: still running past its bound",
    }.get(ended, ended)
    rc = got["rc"].output.strip() if got["rc"].ok else ""
    if ended != "by-itself" and not rc:
        raise waits.WaitTimeout(
            f"waited {stop_s:.0f} s for the DNS query at {SLIRP_DNS6} to end once stopped ({ev.dns6_ended}): "
            f"rc={got['rc'].rc} {got['rc'].output[-200:]!r}"
        )
    out = got["out"].output
    ev.dns6_answers = profile.parse_dns(out) if rc == "0" else []  # as before: answers of a query that succeeded
    ev.dns6_output = out[-300:]


def _watch_dns6(profile: GuestProfile, before: dict[str, int], settle_s: float, stop_s: float) -> str:
    """The guest-side watch of ``_ask_dns6``'s query: every 20 ms until its exit code is in its file
    ("by-itself"), or every datagram it sent was refused ("refused": ``Icmp6InDestUnreachs`` has
    risen by at least ``Udp6OutDatagrams``, one sent at least), or ``settle_s`` ran out ("bound");
    a query still running then is killed, and its exit code waited for (``stop_s``). Prints
    ``slirp-dns6 <how>``. Without both counters before, only the query's own end is waited for."""
    refused = ""
    if len(before) == 2:
        s0, u0 = before["Udp6OutDatagrams"], before["Icmp6InDestUnreachs"]
        # the two counters of /proc/net/snmp6 (what ``udp6_counters_command`` prints), read by the
        # shell itself: no process per look, and nothing but the shell needed (ash and bash alike)
        read = (
            "while read slirp_k slirp_v; do case $slirp_k in Udp6OutDatagrams) slirp_s=$((slirp_v-"
            f"{s0}));; Icmp6InDestUnreachs) slirp_u=$((slirp_v-{u0}));; esac; done </proc/net/snmp6"
        )
        refused = f"{read}; [ $slirp_s -ge 1 ] && [ $slirp_u -ge $slirp_s ] && {{ slirp_how=refused; break; }}; "
    kill = (
        f"for f in $({profile.processes_with_argument_command(SLIRP_DNS6)}); do p=${{f#/proc/}}; "
        "kill ${p%/cmdline} 2>/dev/null; done"
    )
    return (
        f"slirp_how=by-itself; slirp_n=0; while [ ! -s {_DNS6_RC} ]; do "
        f"[ $slirp_n -ge {round(settle_s * 50)} ] && {{ slirp_how=bound; break; }}; {refused}"
        "sleep 0.02; slirp_n=$((slirp_n+1)); done; "
        f"if [ $slirp_how != by-itself ]; then {kill}; slirp_n=0; "
        f"while [ ! -s {_DNS6_RC} ] && [ $slirp_n -lt {round(stop_s * 50)} ]; do "
        "sleep 0.02; slirp_n=$((slirp_n+1)); done; fi; echo slirp-dns6 $slirp_how"
    )
