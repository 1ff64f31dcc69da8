"""KubeVirt's side of the contract: the plugin is registered and wired into the launcher pod,
QEMU gets slirp exactly as the sidecar renders it, and what KubeVirt must refuse is refused."""

from dataclasses import replace

import pytest

from slirp_conformance.checks import kubevirt
from slirp_conformance.checks.kubevirt import KubeVirtVM
from slirp_conformance.cluster import versions
from slirp_conformance.evidence import Record, contains, contains_run, expect, matches, void_unless_proven
from slirp_conformance.vmspec import RENAMED_BINDING, slirp_qemu_args

pytestmark = [pytest.mark.slirp, pytest.mark.kubevirt]


def test_feature_gate_present_where_needed(kubevirt_vm: KubeVirtVM, record: Record) -> None:
    ev = record(kubevirt.kubevirt_cr(kubevirt_vm))
    if not versions.needs_feature_gate(kubevirt_vm.version):
        pytest.skip(f"{kubevirt_vm.version}: the binding plugins feature is GA, no gate needed")
    expect(ev, "feature_gates", contains(versions.FEATURE_GATE))


def test_binding_registered_with_the_sidecar_image(kubevirt_vm: KubeVirtVM, record: Record) -> None:
    ev = record(kubevirt.kubevirt_cr(kubevirt_vm))
    expect(ev, "binding", {"sidecarImage": kubevirt_vm.sidecar_image})


def test_launcher_pod_runs_the_sidecar(kubevirt_vm: KubeVirtVM, record: Record) -> None:
    ev = record(kubevirt.launcher_pod(kubevirt_vm))
    expect(ev, "sidecar_images", contains(kubevirt_vm.sidecar_image))


def test_compute_container_declares_the_listed_ports(kubevirt_vm: KubeVirtVM, record: Record) -> None:
    ev = record(kubevirt.launcher_pod(kubevirt_vm))
    expect(ev, "compute_ports", sorted((p.port, p.protocol) for p in kubevirt_vm.spec.interface.ports))


def test_qemu_command_line_carries_slirp_as_the_sidecar_renders_it(kubevirt_vm: KubeVirtVM, record: Record) -> None:
    ev = record(kubevirt.qemu_command_line(kubevirt_vm))
    expect(ev, "argv", contains_run(slirp_qemu_args(kubevirt_vm.spec, kubevirt_vm.contract.search_domains)))


def test_vmi_is_not_live_migratable(kubevirt_vm: KubeVirtVM, record: Record) -> None:
    """KubeVirt's reason for a slirp interface (api core/v1 types.go, InterfaceNotLiveMigratable): any other
    reason means the VMI is not migratable for something else, which says nothing about slirp."""
    ev = record(kubevirt.vmi_conditions(kubevirt_vm))
    expect(ev, "conditions.LiveMigratable.status", "False")
    expect(ev, "conditions.LiveMigratable.reason", "InterfaceNotLiveMigratable")


def test_unregistered_binding_fails_with_the_controllers_reason(kubevirt_vm: KubeVirtVM, record: Record) -> None:
    """KubeVirt's reason: "couldn't find configuration for network binding: <name>" (netbinding.go)."""
    ev = record(kubevirt.unregistered_binding(kubevirt_vm, "slirp-unregistered"))
    expect(ev, "binding_in_reason", "slirp-unregistered")


def test_binding_plugin_refused_while_the_feature_gate_is_off(kubevirt_vm: KubeVirtVM, record: Record) -> None:
    if not versions.needs_feature_gate(kubevirt_vm.version):
        pytest.skip(f"{kubevirt_vm.version}: binding plugins are GA, there is no gate to turn off")
    ev = record(kubevirt.feature_gate_off(kubevirt_vm))
    expect(ev, "admitted", False)
    expect(ev, "message", contains("Binding plugins feature gate is not enabled"))


def test_binding_under_another_name_works_from_v1_9_and_is_refused_before(
    kubevirt_vm: KubeVirtVM, record: Record
) -> None:
    """The run's sidecar image registered a second time as ``slirp-renamed`` and a VM whose interface
    names it. From v1.9.0 virt-controller gives the sidecar its binding's name
    (NETWORK_BINDING_PLUGIN_NAME, pkg/virt-controller/services/template.go) and the sidecar serves
    that binding (cmd/sidecars/network-slirp-binding/main.go): the VM runs with QEMU's slirp as the
    sidecar renders it. Up to v1.8 the sidecar serves only ``slirp`` (domain.go SlirpPluginName): the
    VM does not start, and KubeVirt's reason is the sidecar's. Premise of the refusal: the name was
    registered (it is not the unregistered-binding refusal)."""
    ev = record(kubevirt.renamed_binding(kubevirt_vm, RENAMED_BINDING))
    if versions.binding_name_configurable(kubevirt_vm.version):
        expect(ev, "started", True)
        expect(ev, "plugin_names", [RENAMED_BINDING])
        spec = replace(kubevirt_vm.spec, name=ev.vm)
        expect(ev, "argv", contains_run(slirp_qemu_args(spec, kubevirt_vm.contract.search_domains)))
        return
    problems = []
    if ev.registered != {"sidecarImage": kubevirt_vm.sidecar_image}:
        problems.append(f"the binding {RENAMED_BINDING} was not registered while the VM was tried: {ev.registered}")
    if ev.refused_as_unregistered:
        problems.append("KubeVirt refused the VM as an unregistered binding: the registration never reached it")
    void_unless_proven(ev, problems)
    expect(ev, "started", False)
    expect(ev, "reason", contains(kubevirt.NOT_SLIRP_BINDING))


@pytest.fixture(scope="module")
def quota_vms(kubevirt_vm: KubeVirtVM) -> tuple[kubevirt.QuotaVmEvidence, kubevirt.QuotaVmEvidence]:
    """A burstable VM in a namespace with a ResourceQuota on cpu and memory requests and limits, first
    with KubeVirt's configuration as found, then with sidecar resources configured (each deleted
    at once; the configuration put back)."""
    return kubevirt.quota_vms(kubevirt_vm)


def test_vm_under_a_resource_quota_starts_once_sidecar_resources_are_configured(
    quota_vms: tuple[kubevirt.QuotaVmEvidence, kubevirt.QuotaVmEvidence], record: Record
) -> None:
    """With supportContainerResources `sidecar` set, virt-controller gives the slirp sidecar those
    requests and limits (renderresources.go sidecarResources) and the launcher pod passes the quota."""
    ev = record(quota_vms[1])
    expect(ev, "started", True)
    expect(ev, "sidecar_resources", kubevirt.SIDECAR_RESOURCES)


def test_vm_under_a_resource_quota_without_sidecar_resources_fails_with_the_reason(
    quota_vms: tuple[kubevirt.QuotaVmEvidence, kubevirt.QuotaVmEvidence], record: Record
) -> None:
    """Without them the sidecar container states no requests or limits: the quota refuses the launcher
    pod and virt-controller reports it (FailedCreate) naming the sidecar. Premise: the quota covers
    cpu and memory requests and limits, and the cluster configured no sidecar resources then."""
    ev = record(quota_vms[0])
    problems = []
    if not set(kubevirt.QUOTA) <= set((ev.quota or {}).get("hard") or {}):
        problems.append(f"the namespace's ResourceQuota does not cover {sorted(kubevirt.QUOTA)}: {ev.quota}")
    if ev.sidecar_configured is not None:
        problems.append(f"the cluster already configures sidecar resources: {ev.sidecar_configured}")
    void_unless_proven(ev, problems)
    expect(ev, "started", False)
    expect(ev, "reason", contains(kubevirt.QUOTA_REFUSAL))
    expect(ev, "reason", matches(r"must specify [^;]*for: [^;]*hook-sidecar-0"))
