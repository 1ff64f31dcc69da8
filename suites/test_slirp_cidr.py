"""A custom vmNetworkCIDR moves the guest's whole slirp network: the sidecar renders it as
``net=<cidr>`` (domain.go ``networkCIDR``), and libslirp puts the lease at .15, the gateway at
.2 and the DNS relay at .3 of it, with its prefix; egress still works. An invalid CIDR does not
start, with the sidecar's own reason. The VM is the ``virtio`` variant (``vmspec.variant_vm``)."""

import re
from collections.abc import Callable

import pytest

from slirp_conformance import ahead
from slirp_conformance.checks import dhcp, netdev, tcp, udp
from slirp_conformance.checks.cidr import CustomCidrEvidence, InvalidCidrEvidence
from slirp_conformance.console import GuestShell
from slirp_conformance.evidence import Record, contains, expect, matches
from slirp_conformance.target import Target, VariantVMs
from slirp_conformance.vmspec import INVALID_CIDR, VMSpec, invalid_cidr_vm

pytestmark = [pytest.mark.slirp, pytest.mark.cidr, pytest.mark.variant_vm("virtio")]


@pytest.fixture(scope="module")
def cidr_vm(variant_targets: VariantVMs) -> Target:
    return variant_targets.get("virtio")


@ahead.probe("custom-cidr", once=True)  # read once: the lease does not change within a run
def cidr_facts(target: Target, shell: GuestShell) -> CustomCidrEvidence:
    return CustomCidrEvidence(
        vm=target.spec.name,
        vm_network_cidr=str(target.spec.network.vm_network_cidr),
        netdev=netdev.of(target),
        dhcp=dhcp.observe(shell, target.profile),
    )


@pytest.fixture
def cidr_observed(cidr_vm: Target, record: Record, probed: ahead.Probed) -> CustomCidrEvidence:
    return record(probed(cidr_facts, cidr_vm.console(), cidr_vm))


@pytest.mark.probe(cidr_facts)
def test_the_sidecar_renders_the_cidr(cidr_observed: CustomCidrEvidence) -> None:
    netdev.expect_rendered(cidr_observed, rf",net={re.escape(cidr_observed.vm_network_cidr)}(,|$)")


@pytest.mark.probe(cidr_facts)
def test_address_and_prefix_follow_the_cidr(cidr_observed: CustomCidrEvidence, cidr_vm: Target) -> None:
    c = cidr_vm.contract
    expect(cidr_observed, "dhcp.lease.address", c.guest_ip)
    expect(cidr_observed, "dhcp.lease.prefix", c.prefix)
    expect(cidr_observed, "dhcp.addresses", [f"{c.guest_ip}/{c.prefix}"])


@pytest.mark.probe(cidr_facts)
def test_gateway_follows_the_cidr(cidr_observed: CustomCidrEvidence, cidr_vm: Target) -> None:
    c = cidr_vm.contract
    expect(cidr_observed, "dhcp.lease.server_id", c.gateway)
    expect(cidr_observed, "dhcp.lease.router", c.gateway)
    expect(cidr_observed, "dhcp.default_routes", [c.gateway])


@pytest.mark.probe(cidr_facts)
def test_nameserver_follows_the_cidr(cidr_observed: CustomCidrEvidence, cidr_vm: Target) -> None:
    c = cidr_vm.contract
    expect(cidr_observed, "dhcp.lease.dns", [c.nameserver])
    expect(cidr_observed, "dhcp.resolv_nameservers", contains(c.nameserver))


@pytest.mark.probe(udp.dns_probe)
def test_dns_relay_answers_at_the_cidrs_nameserver(cidr_vm: Target, record: Record, probed: ahead.Probed) -> None:
    ev = record(probed(udp.dns_probe, cidr_vm.console(), cidr_vm))
    expect(ev, "answers", [cidr_vm.peers.dns_address])


@pytest.mark.probe(tcp.egress_echo_probe)
def test_egress_from_the_cidr(cidr_vm: Target, record: Record, probed: ahead.Probed) -> None:
    ev = record(probed(tcp.egress_echo_probe, cidr_vm.console(), cidr_vm))
    expect(ev, "received", ev.sent)


def test_invalid_cidr_fails_with_the_sidecars_reason(
    slirp_target: Target, start_attempt: Callable[[VMSpec], str | None], record: Record
) -> None:
    """A VM whose vmNetworkCIDR is not a CIDR does not start; the reason is the sidecar's
    (``invalid network CIDR "<cidr>": ...``), not QEMU's or the suite's."""
    described = slirp_target.describe()
    if described.get("sidecar_render") == "python":
        first_run = described.get("sidecar_render_mode") == "auto"  # KubeVirt's code is built after this verdict
        pytest.skip(
            "the reason is the sidecar's own and this run renders with the suite's model: "
            + ("the next run checks it with KubeVirt's code" if first_run else "run with --sidecar-render go")
        )
    spec = invalid_cidr_vm(slirp_target.spec.name)
    reason = start_attempt(spec)
    ev = record(
        InvalidCidrEvidence(
            vm=spec.name,
            vm_network_cidr=INVALID_CIDR,
            outcome="started" if reason is None else "refused",
            reason=reason or "",
        )
    )
    expect(ev, "outcome", "refused")
    # On a cluster the sidecar's words reach the VMI's SyncFailed event inside KubeVirt's own quoting
    # (`command SyncVMI failed: "rpc error: ... invalid network CIDR \\"10.0.2.0/33\\": ..."`).
    expect(ev, "reason", matches(rf'invalid network CIDR \\*"{re.escape(INVALID_CIDR)}\\*"'))
