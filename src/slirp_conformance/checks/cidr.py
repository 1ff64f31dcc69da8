"""A custom ``vmNetworkCIDR``: the sidecar passes it as ``net=<cidr>``, and libslirp places its
whole network there (the first lease at .15, the gateway at .2, the DNS relay at .3, the prefix
of the CIDR). An invalid CIDR is refused by the sidecar with its own reason."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from slirp_conformance.checks.dhcp import DhcpEvidence
from slirp_conformance.evidence import Evidence


@dataclass
class CustomCidrEvidence(Evidence):
    """What the guest of a VM with a custom ``vmNetworkCIDR`` got from slirp's DHCP server."""

    check: ClassVar[str] = "custom-cidr"
    vm: str
    vm_network_cidr: str
    netdev: str  # the -netdev argument the sidecar rendered ("" where the target does not know it)
    dhcp: DhcpEvidence


@dataclass
class InvalidCidrEvidence(Evidence):
    """A VM whose ``vmNetworkCIDR`` is not a CIDR, and how its start ended."""

    check: ClassVar[str] = "invalid-cidr"
    vm: str
    vm_network_cidr: str
    outcome: str  # "refused" (the VM did not start, with ``reason``) or "started"
    reason: str
