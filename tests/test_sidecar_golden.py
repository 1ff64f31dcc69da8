"""Golden: ``vmspec.slirp_qemu_args`` says byte for byte what KubeVirt's slirp sidecar adds.

The Go program ``hack/sidecar-render`` runs the converter and the sidecar's ``OnDefineDomain`` of
each nightly KubeVirt release (built through ``slirp_conformance.gobuild``, cold a few minutes per
release, then cached). Every row of the table is compared at every release; the negative
controls prove that one changed byte in any argument fails the comparison.
"""

from __future__ import annotations

import pytest

from slirp_conformance import vmspec
from slirp_conformance.checks import kubevirt as kubevirt_checks
from slirp_conformance.cluster import versions
from slirp_conformance.reference import sidecar_render
from slirp_conformance.vmspec import (
    INVALID_CIDR,
    Interface,
    PodNetwork,
    Port,
    VMSpec,
    conformance_vm,
    invalid_cidr_vm,
    renamed_binding_vm,
    variant_vm,
)

SEARCH = ("slirp-conformance.svc.cluster.local", "svc.cluster.local", "cluster.local")

ROWS: dict[str, tuple[VMSpec, tuple[str, ...]]] = {
    "conformance-vm": (conformance_vm(), SEARCH),
    # issue 20's second VM specs, as the suites boot them
    "variant-vm-virtio": (variant_vm("virtio"), SEARCH),
    "variant-vm-rtl8139": (variant_vm("rtl8139"), SEARCH),
    "no-ports": (VMSpec("v", Interface()), SEARCH),
    "tcp-and-udp-ports": (VMSpec("v", Interface(ports=(Port(22), Port(53, "UDP"), Port(8080, "TCP", "http")))), SEARCH),
    "duplicate-ports": (
        VMSpec(
            "v",
            Interface(ports=(Port(80), Port(80, "TCP", "again"), Port(53, "UDP"), Port(53, "TCP"), Port(53, "UDP"))),
        ),
        SEARCH,
    ),
    "low-and-high-ports": (VMSpec("v", Interface(ports=(Port(1), Port(65535, "UDP")))), SEARCH),
    "vm-network-cidr": (VMSpec("v", Interface(ports=(Port(22),)), PodNetwork(vm_network_cidr="10.1.0.0/24")), SEARCH),
    "vm-network-cidr-host-bits": (VMSpec("v", Interface(), PodNetwork(vm_network_cidr="10.1.0.5/24")), SEARCH),
    "vm-network-cidr-wide": (VMSpec("v", Interface(), PodNetwork(vm_network_cidr="172.16.0.0/16")), ()),
    "mac": (VMSpec("v", Interface(mac="02:00:00:aa:bb:cc")), SEARCH),
    "model-e1000": (VMSpec("v", Interface(model="e1000")), SEARCH),
    "model-rtl8139": (VMSpec("v", Interface(model="rtl8139", mac="02:00:00:00:00:02")), SEARCH),
    "model-virtio": (VMSpec("v", Interface(model="virtio")), SEARCH),
    "interface-name": (VMSpec("v", Interface(name="podnet", ports=(Port(22),)), PodNetwork(name="podnet")), SEARCH),
    "search-one": (VMSpec("v", Interface()), ("example.org",)),
    "search-none": (VMSpec("v", Interface()), ()),
    "search-mixed-case": (VMSpec("v", Interface()), ("NS.svc.Cluster.Local", "Example.ORG")),
}
VERSIONS = [str(v) for v in versions.nightly_versions()]


@pytest.fixture(scope="module", params=VERSIONS)
def sidecar(request) -> dict[str, sidecar_render.Rendering]:
    """The real sidecar's arguments for every row, at one KubeVirt release (one program run)."""
    results = sidecar_render.render_many(request.param, list(ROWS.values()))
    rejected = {row: r for row, r in zip(ROWS, results, strict=True) if isinstance(r, sidecar_render.SidecarRejected)}
    assert not rejected, f"the sidecar of {request.param} rejected rows: {rejected}"
    return dict(zip(ROWS, results, strict=True))


def mismatch(render, row: str, real: sidecar_render.Rendering) -> str | None:
    spec, search = ROWS[row]
    ours = render(spec, search)
    if ours == real.args:
        return None
    return f"{row}: slirp_qemu_args gives {ours}, the sidecar of KubeVirt {real.kubevirt_version} {real.args}"


@pytest.mark.parametrize("row", ROWS)
def test_slirp_qemu_args_matches_the_sidecar(sidecar, row):
    problem = mismatch(vmspec.slirp_qemu_args, row, sidecar[row])
    assert problem is None, problem


def _flip_byte(args: list[str], index: int, at: int) -> list[str]:
    changed = list(args)
    s = changed[index]
    changed[index] = s[:at] + chr(ord(s[at]) ^ 0x01) + s[at + 1 :]
    return changed


def test_one_changed_byte_anywhere_fails_the_golden(sidecar):
    """Negative control: every argument, first/middle/last byte, flipped in a wrapped
    slirp_qemu_args, is reported as a mismatch for every row."""
    missed = []
    for row, real in sidecar.items():
        for index, arg in enumerate(real.args):
            for at in sorted({0, len(arg) // 2, len(arg) - 1}):

                def changed(spec, search, index=index, at=at):
                    return _flip_byte(vmspec.slirp_qemu_args(spec, search), index, at)

                if mismatch(changed, row, real) is None:
                    missed.append((row, index, at))
    assert not missed, f"byte changes the golden did not notice: {missed}"


def test_a_dropped_or_extra_argument_fails_the_golden(sidecar):
    for row, real in sidecar.items():
        assert mismatch(lambda s, d: vmspec.slirp_qemu_args(s, d)[:-1], row, real), row
        assert mismatch(lambda s, d: [*vmspec.slirp_qemu_args(s, d), "-S"], row, real), row


def test_the_program_answers_for_the_release_it_was_built_from(sidecar):
    versions_seen = {r.kubevirt_version for r in sidecar.values()}
    assert len(versions_seen) == 1 and versions_seen <= set(VERSIONS), versions_seen


def test_the_sidecar_refuses_an_interface_without_the_slirp_binding():
    """Premise of the rows: the program really runs the sidecar, which rejects a VMI whose pod
    interface is bound to another plugin than the one it serves (domain.NewSlirpNetworkConfigurator)."""
    version = VERSIONS[-1]
    vmi = sidecar_render.vmi_json(VMSpec("v", Interface(binding="passt")))
    (result,) = sidecar_render.render_vmis(version, [(vmi, sidecar_render.resolv_conf(SEARCH))], told_name="slirp")
    assert isinstance(result, sidecar_render.SidecarRejected), result
    assert "is not set with slirp network binding plugin" in str(result), result


@pytest.mark.parametrize("version", VERSIONS)
def test_the_sidecar_refuses_the_invalid_cidr_vm_with_its_reason(version):
    """issue 20's invalid-CIDR VM (``vmspec.invalid_cidr_vm``) at every release: the sidecar's own
    reason (domain.go networkCIDR), which the cidr suite expects in the VM's failure."""
    (result,) = sidecar_render.render_many(version, [(invalid_cidr_vm(), SEARCH)])
    assert isinstance(result, sidecar_render.SidecarRejected), result
    assert f'invalid network CIDR "{INVALID_CIDR}"' in str(result), result


@pytest.mark.parametrize("version", VERSIONS)
def test_the_renamed_binding_is_served_from_v1_9_and_refused_before(version):
    """issue 20's renamed-binding VM (``vmspec.renamed_binding_vm``), its sidecar told the binding's
    name as virt-controller tells it: from v1.9.0 the sidecar serves that binding and adds exactly
    what ``slirp_qemu_args`` says; before, it knows only ``slirp`` and refuses the interface with the
    reason the kubevirt suite expects in the VM's failure."""
    spec = renamed_binding_vm()
    (result,) = sidecar_render.render_many(version, [(spec, SEARCH)])
    if versions.binding_name_configurable(version):
        assert isinstance(result, sidecar_render.Rendering), result
        assert result.args == vmspec.slirp_qemu_args(spec, SEARCH), result.args
    else:
        assert isinstance(result, sidecar_render.SidecarRejected), result
        assert kubevirt_checks.NOT_SLIRP_BINDING in str(result), result


def test_the_renamed_binding_premise_the_name_reaches_the_sidecar():
    """Control of the row above: the same VM at v1.9.0 with its sidecar told ``slirp`` (the name not
    passed on) is refused, so the rendering above really came from the name the program passed."""
    version = next(v for v in VERSIONS if versions.binding_name_configurable(v))
    vmi = sidecar_render.vmi_json(renamed_binding_vm())
    (result,) = sidecar_render.render_vmis(version, [(vmi, sidecar_render.resolv_conf(SEARCH))], told_name="slirp")
    assert isinstance(result, sidecar_render.SidecarRejected), result
    assert kubevirt_checks.NOT_SLIRP_BINDING in str(result), result
