"""NIC model: the guest sees the NIC the sidecar renders for the model the VM asks for: rtl8139 is
honoured, anything else (virtio, or no model at all) becomes e1000 (the sidecar's domain.go,
``generateNetDeviceQemuArg``). "none" is the conformance VM; each other model is a second VM spec
(``vmspec.variant_vm``)."""

import pytest

from slirp_conformance import ahead
from slirp_conformance.checks import nic
from slirp_conformance.evidence import Record, contains, expect
from slirp_conformance.target import Target, VariantVMs

pytestmark = [pytest.mark.slirp, pytest.mark.nic]


@pytest.mark.parametrize(
    "requested", ["none", *(pytest.param(m, marks=pytest.mark.variant_vm(m)) for m in ("virtio", "rtl8139"))]
)
@pytest.mark.probe(nic.observe_probe)
def test_guest_sees_the_nic_the_sidecar_renders(
    requested: str, slirp_target: Target, variant_targets: VariantVMs, record: Record, probed: ahead.Probed
) -> None:
    vm = slirp_target if requested == "none" else variant_targets.get(requested)
    contract = vm.contract
    ev = record(probed(nic.observe_probe, vm.console(), vm))
    expect(ev, "requested_model", requested)
    if ev.rendered_device != nic.DEVICE_NOT_KNOWN:
        expect(ev, "rendered_device", contains(f'"driver":"{contract.nic_model}"'))
    expect(ev, "pci_ids", [contract.nic_pci_id])
