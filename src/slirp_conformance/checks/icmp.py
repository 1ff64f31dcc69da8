"""ICMP echo from the guest: what slirp answers itself, and what it cannot forward.

"No reply" proves something only when the echo requests really left the guest towards slirp.
A guest without a route (``restrict=on`` leases no router) fails its ping locally with
``Network is unreachable`` and gets no reply either: that must not pass. So every probe reads
the guest's own counters around the ping: ``OutEchos`` of /proc/net/snmp (the kernel counts an
echo request only once it has routed and built it) and the slirp NIC's ``tx_packets``, plus the
route the kernel picks for the peer. ``premise_problems`` says what is missing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar

from slirp_conformance import guest_batch, waits
from slirp_conformance.console import GuestShell, Result
from slirp_conformance.evidence import Evidence
from slirp_conformance.guest_profiles import GuestProfile

_LOCAL_ERROR = re.compile(r"^ping: .*$", re.M)  # ping's own complaints; replies and ICMP errors start otherwise


@dataclass
class Ping:
    """One ``ping`` from the guest, with the guest's own counters around it."""

    host: str
    requested: int
    transmitted: int | None  # as ping reported it
    replies: int  # reply lines from ``host``
    rc: int
    output: str
    stderr: str
    route: str  # the route the guest's kernel picks for ``host``
    local_errors: list[str]  # ping's own complaints (e.g. sendto: Network is unreachable)
    echo_requests_out: int | None  # OutEchos of /proc/net/snmp rose by this (None: unreadable)
    nic_tx_packets: int | None  # the slirp NIC's tx_packets rose by this
    # InDestUnreachs rose by this: the requests slirp answered with an ICMP error (no ping socket:
    # it tried the host's UDP port 7 instead); an answered request gets no reply (ping_command)
    destination_unreachable_in: int | None = None


@dataclass
class IcmpEvidence(Evidence):
    check: ClassVar[str] = "icmp"
    to_peer: Ping | None = None
    to_gateway: Ping | None = None
    peer_direct_ping: dict[str, Any] | None = None  # the peer pinged from beside the VM (the pod)
    pod: dict[str, Any] | None = None  # ping_group_range, QEMU's uid/gid/capabilities
    premise: str | list[str] | None = None  # "proven", or why the check proves nothing


def parse_counters(text: str) -> dict[str, int] | None:
    """``icmp_counters_command`` output -> {"tx_packets": n, "OutEchos": n, ...}; None when unreadable."""
    lines = [line.split() for line in text.splitlines() if line.strip()]
    icmp = [line[1:] for line in lines if line[0] == "Icmp:"]
    tx = [line[0] for line in lines if len(line) == 1 and line[0].isdigit()]
    if len(icmp) != 2 or len(icmp[0]) != len(icmp[1]) or not tx:
        return None
    try:
        counters = {k: int(v) for k, v in zip(*icmp, strict=True)}
    except ValueError:
        return None
    counters["tx_packets"] = int(tx[0])
    return counters


def ping(shell: GuestShell, profile: GuestProfile, host: str, count: int = 3, budget: float | None = None) -> Ping:
    """Counts replies by their lines, so a ping killed by ``timeout`` still counts right; reads the
    guest's counters before and after, so the result says how many requests really went out.
    One guest command (``guest_batch``): the counters, the route, the ping, the counters again.
    ``budget``: the ping command's deadline instead of the suite's (``hack/ssh-stall.sh --ping-timeout``)."""
    return pings(shell, profile, [(host, count)], budget)[0]


def pings(
    shell: GuestShell, profile: GuestProfile, hosts: list[tuple[str, int]], budget: float | None = None
) -> list[Ping]:
    """``ping`` of each (host, count), one after the other in one guest command: the counters, then
    per host its route, its ping and the counters again (those after one ping are those before
    the next)."""
    # The same allowance for the guest's own work around the command (session, shell start-up,
    # teardown) as every other command has, on top of the guest-side bound of the pings themselves.
    # It was 26 s in all (less than half the other commands' 60 s): on a loaded host the ping was
    # the first command of a run to miss its deadline, which was read as an SSH stall.
    if budget is None:
        budget = waits.timeout("console-command") + sum(profile.ping_guest_bound(count) for _, count in hosts)
    names = [re.sub(r"[^A-Za-z0-9]+", "-", host) for host, _ in hosts]  # a batch's part names: [A-Za-z0-9_-]
    if len(set(names)) != len(names):
        raise ValueError(f"one ping per host in a batch: {hosts}")
    parts = {"before": profile.icmp_counters_command()}
    for name, (host, count) in zip(names, hosts, strict=True):
        parts |= {
            f"route-{name}": profile.route_get_command(host),
            f"ping-{name}": profile.ping_command(host, count),
            f"after-{name}": profile.icmp_counters_command(),
        }
    batch = guest_batch.run(shell, parts, timeout=budget)
    counters = ["before", *(f"after-{name}" for name in names)]
    return [
        _ping(
            host,
            count,
            batch[counters[i]],
            batch[f"route-{name}"],
            batch[f"ping-{name}"],
            batch[counters[i + 1]],
            batch.stderr,
        )
        for i, (name, (host, count)) in enumerate(zip(names, hosts, strict=True))
    ]


def _ping(host: str, count: int, before_r: Result, route: Result, r: Result, after_r: Result, stderr: str) -> Ping:
    before, after = parse_counters(before_r.output), parse_counters(after_r.output)
    sent = re.search(r"(\d+) packets transmitted", r.output)
    out_echos: int | None = None
    tx_packets: int | None = None
    unreachables: int | None = None
    if before is not None and after is not None:
        out_echos = after.get("OutEchos", 0) - before.get("OutEchos", 0)
        tx_packets = after["tx_packets"] - before["tx_packets"]
        unreachables = after.get("InDestUnreachs", 0) - before.get("InDestUnreachs", 0)
    return Ping(
        host=host,
        requested=count,
        transmitted=int(sent.group(1)) if sent else None,
        replies=len(re.findall(rf"bytes from {re.escape(host)}", r.output)),
        rc=r.rc,
        output=r.output.strip()[-400:],
        stderr=f"{r.stderr}\n{stderr}".strip()[-400:],
        route=route.output.strip() if route.ok else f"rc={route.rc}: {route.output.strip()[-200:]}",
        local_errors=_LOCAL_ERROR.findall(r.output),
        echo_requests_out=out_echos,
        nic_tx_packets=tx_packets,
        destination_unreachable_in=unreachables,
    )


def premise_problems(probe: Ping | None, interface: str) -> list[str]:
    """Why this probe proves nothing about slirp, or [] when its requests demonstrably left the
    guest through the slirp NIC with nothing local refusing them."""
    if probe is None:
        return ["the guest did not ping"]
    problems = []
    if not re.search(rf"\bdev {re.escape(interface)}\b", probe.route):
        problems.append(f"the guest routes {probe.host} not via {interface}: {probe.route!r}")
    if probe.local_errors:
        problems.append(f"ping failed inside the guest: {probe.local_errors}")
    if probe.echo_requests_out is None or probe.nic_tx_packets is None:
        problems.append("the guest's ICMP/NIC counters could not be read")
    else:
        if probe.echo_requests_out < 1:
            problems.append(f"no echo request left the guest's IP stack (OutEchos +{probe.echo_requests_out})")
        if probe.nic_tx_packets < probe.echo_requests_out:
            problems.append(
                f"{interface} sent {probe.nic_tx_packets} frames for {probe.echo_requests_out} echo requests"
            )
    return problems


def observe(shell: GuestShell, profile: GuestProfile, peer: str, gateway: str) -> IcmpEvidence:
    """The peer's pings, then the gateway's (one guest command: a round trip less for each channel)."""
    to_peer, to_gateway = pings(shell, profile, [(peer, 3), (gateway, 1)])
    return IcmpEvidence(to_peer=to_peer, to_gateway=to_gateway)
