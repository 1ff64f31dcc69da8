"""The NIC model: what the guest finds on its PCI bus for the model the VM asked for."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from slirp_conformance import ahead
from slirp_conformance.console import GuestShell
from slirp_conformance.evidence import Evidence
from slirp_conformance.guest_profiles import GuestProfile


@dataclass
class NicModelEvidence(Evidence):
    check: ClassVar[str] = "nic-model"
    vm: str
    requested_model: str  # interfaces[].model of the VM spec ("none": not given)
    rendered_device: str  # the -device argument the sidecar rendered for it
    pci_ids: list[str] = field(default_factory=list)  # vendor:device of every Ethernet controller
    drivers: list[str] = field(default_factory=list)  # the driver bound to each ("-": none)


def observe(
    shell: GuestShell, profile: GuestProfile, vm: str, requested: str | None, rendered: str
) -> NicModelEvidence:
    ev = NicModelEvidence(vm=vm, requested_model=requested or "none", rendered_device=rendered)
    for line in shell.run(profile.nic_pci_command()).output.splitlines():
        words = line.split()
        if words and ":" in words[0]:
            ev.pci_ids.append(words[0])
            ev.drivers.append(words[1] if len(words) > 1 and words[1] else "-")
    return ev


DEVICE_NOT_KNOWN = "(not known on this target)"


@ahead.probe("nic")
def observe_probe(target, shell: GuestShell) -> NicModelEvidence:
    """``observe`` of the target's VM, with the ``-device`` its sidecar rendered (``DEVICE_NOT_KNOWN``
    where the target cannot tell); a probe: it may run ahead on a variant VM (ahead.py)."""
    args = target.sidecar_args() or []
    device = args[args.index("-device") + 1] if "-device" in args else DEVICE_NOT_KNOWN
    return observe(shell, target.profile, target.spec.name, target.contract.requested_nic_model, device)
