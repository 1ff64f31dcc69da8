"""A non-loopback address on this host for virt-api, which lives exactly as long as one process.

The aggregator reaches an APIService through its Service's EndpointSlice, and EndpointSlices refuse
loopback addresses. So virt-api listens on an address of a documentation range (RFC 5737, never
routed on the internet) that no route of this host covers (CI machines may well use one of them
for their own network: then the next), as a /32 on the host end of a veth pair whose other end
lives in the network namespace of a holder process (``unshare --net sleep infinity``), started and
recorded like every other component of the bed. When that process ends, for whatever reason (``down``, a failed ``up``,
SIGKILL), the kernel destroys its namespace, the veth pair with it, and so the address: nothing to
clean up by hand and nothing that can outlive the bed.
"""

from __future__ import annotations

import ipaddress
import os
import random
import subprocess

from slirp_conformance import waits
from slirp_conformance.errors import SetupError

CANDIDATE_NETWORKS = tuple(ipaddress.ip_network(n) for n in ("198.51.100.0/24", "203.0.113.0/24", "192.0.2.0/24"))
INTERFACE_PREFIX = "tbapi"  # + the holder's pid: one interface per bed, 15 characters at most


def _ip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=waits.timeout("api-probe") * 2)


def addresses_in_use() -> dict[str, int]:
    """Every IPv4 address on this host's interfaces, with how many interfaces hold it."""
    held: dict[str, int] = {}
    for line in _ip("-o", "-4", "addr", "show").stdout.splitlines():
        fields = line.split()
        if "inet" in fields:
            address = fields[fields.index("inet") + 1].split("/")[0]
            held[address] = held.get(address, 0) + 1
    return held


def routed_networks() -> list[ipaddress.IPv4Network]:
    """The destinations of this host's routes (main table), the default route left out."""
    networks = []
    for line in _ip("-o", "-4", "route", "show", "table", "main").stdout.splitlines():
        destination = line.split()[0] if line.split() else "default"
        if destination != "default":
            networks.append(ipaddress.ip_network(destination, strict=False))
    return networks


def unrouted_network() -> ipaddress.IPv4Network:
    """The first candidate network that none of this host's routes touches."""
    routed = routed_networks()
    for network in CANDIDATE_NETWORKS:
        if not any(network.overlaps(r) for r in routed):
            return network
    raise SetupError(
        f"every candidate network for virt-api's address ({', '.join(map(str, CANDIDATE_NETWORKS))}) "
        f"is routed on this host: {', '.join(map(str, routed))}"
    )


def _own_namespace(pid: int) -> bool:
    """The holder has left our network namespace (``unshare`` has run and exec'd ``sleep``)."""
    return os.readlink(f"/proc/{pid}/ns/net") != os.readlink("/proc/self/ns/net")


NEEDS_ROOT = (
    "the test bed's console path needs root (a veth pair gives virt-api a non-loopback address for its APIService)"
)


def hold(testbed, name: str = "virt-api-address") -> str:
    """Start the holder (recorded in the bed, so ``down`` stops it) and return the address it holds."""
    if os.geteuid() != 0:
        raise SetupError(f"{NEEDS_ROOT}: run hack/testbed.sh as root")
    proc = testbed.spawn(name, ["unshare", "--net", "--", "sleep", "infinity"])
    testbed.wait_ready(proc, f"{name} (pid {proc.pid}) in its own network namespace", lambda: _own_namespace(proc.pid))
    interface = f"{INTERFACE_PREFIX}{proc.pid}"
    made = _ip("link", "add", interface, "type", "veth", "peer", "name", "eth0", "netns", str(proc.pid))
    if made.returncode != 0:
        raise SetupError(f"`ip link add {interface} type veth ...` failed: {made.stderr.strip()}")
    network = unrouted_network()
    hosts = [str(h) for h in network.hosts()]
    random.shuffle(hosts)
    for address in hosts:
        if address in addresses_in_use():
            continue
        added = _ip("addr", "add", f"{address}/32", "dev", interface)
        if added.returncode != 0:
            raise SetupError(f"`ip addr add {address}/32 dev {interface}` failed: {added.stderr.strip()}")
        if addresses_in_use().get(address, 0) == 1:  # another bed took the same one meanwhile: next
            break
        _ip("addr", "del", f"{address}/32", "dev", interface)
    else:
        raise SetupError(f"no free address left in {network} for virt-api: stop other test beds")
    up = _ip("link", "set", interface, "up")
    if up.returncode != 0:
        raise SetupError(f"`ip link set {interface} up` failed: {up.stderr.strip()}")
    return address
