"""KubeVirt's side of the contract: the plugin is registered and wired into the launcher pod,
QEMU gets slirp exactly as the sidecar renders it, and what KubeVirt must refuse is refused."""

import pytest

from slirp_conformance.checks import kubevirt
from slirp_conformance.cluster import versions
from slirp_conformance.vmspec import slirp_qemu_args

pytestmark = [pytest.mark.slirp, pytest.mark.kubevirt]


def test_feature_gate_present_where_needed(kubevirt_vm, record):
    ev = record(kubevirt.kubevirt_cr(kubevirt_vm))
    if versions.needs_feature_gate(kubevirt_vm.version):
        assert versions.FEATURE_GATE in ev["feature_gates"], ev.explain(
            f"{versions.FEATURE_GATE} in featureGates below v1.5", versions.FEATURE_GATE, ev["feature_gates"]
        )
    else:
        pytest.skip(f"{kubevirt_vm.version}: the binding plugins feature is GA, no gate needed")


def test_binding_registered_with_the_sidecar_image(kubevirt_vm, record):
    ev = record(kubevirt.kubevirt_cr(kubevirt_vm))
    expected = {"sidecarImage": kubevirt_vm.sidecar_image}
    assert ev["binding"] == expected, ev.explain("spec.configuration.network.binding.slirp", expected, ev["binding"])


def test_launcher_pod_runs_the_sidecar(kubevirt_vm, record):
    ev = record(kubevirt.launcher_pod(kubevirt_vm))
    images = set(ev["containers"].values()) - {ev["containers"].get("compute")}
    assert kubevirt_vm.sidecar_image in images, ev.explain(
        "a sidecar container with the plugin image", kubevirt_vm.sidecar_image, ev["containers"]
    )


def test_compute_container_declares_the_listed_ports(kubevirt_vm, record):
    ev = record(kubevirt.launcher_pod(kubevirt_vm))
    expected = sorted((p.port, p.protocol) for p in kubevirt_vm.spec.interface.ports)
    assert ev["compute_ports"] == [list(p) for p in expected] or ev["compute_ports"] == expected, ev.explain(
        "compute container ports", expected, ev["compute_ports"]
    )


def test_qemu_command_line_carries_slirp_as_the_sidecar_renders_it(kubevirt_vm, record):
    ev = record(kubevirt.qemu_command_line(kubevirt_vm))
    expected = slirp_qemu_args(kubevirt_vm.spec, kubevirt_vm.contract.search_domains)
    argv = ev["argv"]
    found = any(argv[i : i + 4] == expected for i in range(len(argv)))
    assert found, ev.explain(
        "QEMU arguments -netdev user,... -device {e1000...}",
        expected,
        [a for a in argv if "user," in a or "driver" in a],
    )


def test_vmi_is_not_live_migratable(kubevirt_vm, record):
    """KubeVirt's reason for a slirp interface (api core/v1 types.go, InterfaceNotLiveMigratable): any other
    reason means the VMI is not migratable for something else, which says nothing about slirp."""
    ev = record(kubevirt.vmi_conditions(kubevirt_vm))
    found = ev.get("LiveMigratable") or {}
    expected = {"status": "False", "reason": "InterfaceNotLiveMigratable"}
    assert {k: found.get(k) for k in expected} == expected, ev.explain("LiveMigratable condition", expected, found)


def test_unregistered_binding_fails_with_the_controllers_reason(kubevirt_vm, record):
    ev = record(kubevirt.unregistered_binding(kubevirt_vm, "slirp-unregistered"))
    match = kubevirt.BINDING_NOT_FOUND.search(ev.get("message") or "")
    assert match and match.group(1) == "slirp-unregistered", ev.explain(
        "the controller's reason",
        "couldn't find configuration for network binding: slirp-unregistered",
        ev.get("message"),
    )


def test_binding_plugin_refused_while_the_feature_gate_is_off(kubevirt_vm, record):
    if not versions.needs_feature_gate(kubevirt_vm.version):
        pytest.skip(f"{kubevirt_vm.version}: binding plugins are GA, there is no gate to turn off")
    ev = record(kubevirt.feature_gate_off(kubevirt_vm))
    assert not ev["admitted"], ev.explain("the VM refused at admission", "refused", "admitted")
    assert "Binding plugins feature gate is not enabled" in (ev.get("message") or ""), ev.explain(
        "admission message", "Binding plugins feature gate is not enabled", ev.get("message")
    )
