"""What KubeVirt itself must show for a slirp VM (the CR, the launcher pod, QEMU's command line, the
VMI's conditions) and what it must refuse (a VM naming an unregistered binding; below v1.5, a VM
using a binding plugin while the feature gate is off).

The checks take a ``KubeVirtVM``: what a cluster target offers beyond ``Target``. The KubeVirt-only
suite gets one from the ``kubevirt_vm`` fixture (``fixtures/slirp_vm.py``), never a concrete target.
"""

from __future__ import annotations

import re
import secrets
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from slirp_conformance import waits
from slirp_conformance.cluster import kubevirt_config
from slirp_conformance.cluster.versions import KubeVirtVersion
from slirp_conformance.evidence import Evidence
from slirp_conformance.kubevirt import launcher_probes, vmi_start
from slirp_conformance.target import Contract
from slirp_conformance.vmspec import VMSpec

if TYPE_CHECKING:  # the client is imported where it is used: --target=qemu collects this module too,
    # and importing the client costs a third of a second before the VM can start
    from kubernetes import client

BINDING_NOT_FOUND = re.compile(r"couldn't find configuration for network bindi(?:ni)?ng: (\S+)")


class KubeVirtVM(Protocol):
    """The conformance VM as KubeVirt runs it (``kubevirt_target.KubeVirtTarget``; stand-ins in the
    self-tests)."""

    @property
    def spec(self) -> VMSpec: ...

    @property
    def contract(self) -> Contract: ...

    @property
    def version(self) -> KubeVirtVersion:
        """The KubeVirt release under test (the cluster's)."""
        ...

    @property
    def sidecar_image(self) -> str:
        """The slirp sidecar image the run registered."""
        ...

    def kubevirt_cr(self) -> dict: ...

    def launcher_pod_object(self) -> client.V1Pod: ...

    def vmi_object(self) -> dict: ...

    def exec_in_launcher(self, argv: list[str]) -> tuple[int, str]: ...

    def create_vm(self, name: str, *, binding: str | None = None, bootable: bool = False) -> None:
        """Create a copy of the VM named ``name`` (``binding``: another binding name) whose disk is
        never pulled, or with the conformance VM's disk when ``bootable``; ``client.ApiException``
        when admission refuses it."""
        ...

    def binding_registered_as(self, name: str, sidecar_image: str) -> AbstractContextManager[Any]:
        """A second binding ``name`` -> ``sidecar_image`` in the KubeVirt CR for the ``with`` block
        (yields a ``kubevirt_config.Registration``); the configuration is put back on exit."""
        ...

    def launcher_pod_of(self, vmi: dict) -> client.V1Pod: ...

    def quota_namespace(self, hard: dict[str, str]) -> AbstractContextManager[QuotaNamespace]:
        """A namespace of the run with a ResourceQuota ``hard``, deleted (and waited for) on exit."""
        ...

    def sidecar_resources_set(self, resources: dict) -> AbstractContextManager[str]:
        """KubeVirt's supportContainerResources ``sidecar`` entry set to ``resources`` for the ``with``
        block (yields the propagation state); the configuration is put back on exit."""
        ...

    def exec_in_pod(self, pod: str, argv: list[str]) -> tuple[int, str]:
        """argv in the compute container of launcher pod ``pod`` of the run."""
        ...

    def delete_vm(self, name: str) -> None:
        """Delete a VM of the run and wait until it is gone."""
        ...

    def read_vmi(self, name: str) -> dict:
        """A VMI of the run (``client.ApiException`` 404 while there is none)."""
        ...

    def event_messages(self, involved: str, reason: str) -> list[str]: ...

    def feature_gate_off(self) -> AbstractContextManager[str]:
        """NetworkBindingPlugins removed for the ``with`` block; yields the propagation state."""
        ...


class QuotaNamespace(Protocol):
    """A second namespace of the run, with a ResourceQuota (``KubeVirtVM.quota_namespace``)."""

    @property
    def name(self) -> str: ...

    def quota(self) -> dict:
        """The ResourceQuota: ``hard`` (its spec, what admission enforces) and ``status`` (hard, used)."""
        ...

    def create_vm(self, name: str, resources: dict) -> None:
        """A bootable copy of the conformance VM with ``domain.resources`` = ``resources``."""
        ...

    def read_vmi(self, name: str) -> dict: ...

    def event_messages(self, involved: str, reason: str) -> list[str]: ...

    def launcher_pod_of(self, vmi: dict) -> client.V1Pod: ...

    def delete_vm(self, name: str) -> None: ...


@dataclass
class KubeVirtCrEvidence(Evidence):
    check: ClassVar[str] = "kubevirt-cr"
    feature_gates: list[str]  # spec.configuration.developerConfiguration.featureGates
    binding: dict[str, Any] | None  # spec.configuration.network.binding.slirp
    kubevirt_version: str | None  # status.observedKubeVirtVersion


@dataclass
class LauncherPodEvidence(Evidence):
    check: ClassVar[str] = "launcher-pod"
    pod: str
    containers: dict[str, str | None]  # container name -> image
    sidecar_images: list[str]  # the images of the containers but compute's
    compute_ports: list[tuple[int, str]] | None  # (containerPort, protocol) of the compute container


@dataclass
class QemuCommandLineEvidence(Evidence):
    check: ClassVar[str] = "qemu-command-line"
    rc: int
    argv: list[str]  # of the QEMU process with a -netdev in the compute container


@dataclass
class VmiConditionsEvidence(Evidence):
    check: ClassVar[str] = "vmi-conditions"
    conditions: dict[str, dict[str, Any]]  # type -> status, reason, message


@dataclass
class UnregisteredBindingEvidence(Evidence):
    check: ClassVar[str] = "unregistered-binding"
    vm: str
    binding: str  # the unregistered binding the VM's interface names
    message: str | None  # KubeVirt's refusal (or what the wait for it saw)
    binding_in_reason: str | None  # the binding KubeVirt's reason says it has no configuration for
    where: str | None = None  # "admission" or "controller"; absent: no reason came


@dataclass
class RenamedBindingEvidence(Evidence):
    check: ClassVar[str] = "binding-renamed"
    vm: str
    binding: str  # the other name the plugin was registered under, the VM's interface names it
    registered: dict[str, Any] | None  # spec.configuration.network.binding.<binding> while the VM was tried
    propagation: str  # whether that registration reached the components
    started: bool  # the VMI reached Running
    phase: str | None  # the VMI's last phase
    reason: str | None  # KubeVirt's reason why it did not start (or what the wait saw)
    sidecar_env: dict[str, str | None]  # NETWORK_BINDING_PLUGIN_NAME of each hook sidecar container of its pod
    plugin_names: list[str]  # the names those sidecars were told to serve (None: not told, so `slirp`)
    argv: list[str]  # QEMU's command line in its launcher pod (empty when none ran)
    refused_as_unregistered: bool | None = None  # the reason is the unregistered-binding one (premise broken)


@dataclass
class QuotaVmEvidence(Evidence):
    """A VM started in a namespace with a ResourceQuota on cpu and memory requests and limits."""

    check: ClassVar[str] = "resource-quota"
    namespace: str
    quota: dict[str, Any]  # the ResourceQuota before the VM: hard (spec) and status
    sidecar_configured: Any  # supportContainerResources' `sidecar` entry while the VM was tried (None: none)
    vm: str
    vm_resources: dict[str, Any]  # the VM's domain.resources
    started: bool = False  # the VMI reached Running
    phase: str | None = None
    reason: str | None = None  # KubeVirt's reason why it did not start (the FailedCreate event), or what the wait saw
    sidecar_resources: dict[str, Any] | None = None  # the hook sidecar container's resources in the launcher pod
    propagation: str | None = None  # whether the configuration reached the components


@dataclass
class FeatureGateOffEvidence(Evidence):
    check: ClassVar[str] = "feature-gate-off"
    vm: str
    propagation: str  # whether the gate's removal reached the components
    admitted: bool
    status: int | None = None  # HTTP status of the refusal
    message: str | None = None  # admission's refusal


def kubevirt_cr(vm: KubeVirtVM) -> KubeVirtCrEvidence:
    cr = vm.kubevirt_cr()
    conf = cr.get("spec", {}).get("configuration") or {}
    return KubeVirtCrEvidence(
        feature_gates=(conf.get("developerConfiguration") or {}).get("featureGates") or [],
        binding=((conf.get("network") or {}).get("binding") or {}).get("slirp"),
        kubevirt_version=cr.get("status", {}).get("observedKubeVirtVersion"),
    )


def launcher_pod(vm: KubeVirtVM) -> LauncherPodEvidence:
    pod = vm.launcher_pod_object()
    containers = pod.spec.containers if pod.spec else []
    compute = next((c for c in containers if c.name == "compute"), None)
    images = {c.name: c.image for c in containers}
    return LauncherPodEvidence(
        pod=pod.metadata.name if pod.metadata and pod.metadata.name else "",
        containers=images,
        sidecar_images=sorted({i for i in images.values() if i} - {images.get("compute")}),
        compute_ports=sorted((p.container_port, p.protocol or "TCP") for p in (compute.ports or []))
        if compute
        else None,
    )


def qemu_command_line(vm: KubeVirtVM) -> QemuCommandLineEvidence:
    """The QEMU process in the compute container, found by its ``-netdev user``."""
    rc, out = vm.exec_in_launcher(["sh", "-c", launcher_probes.QEMU_ARGV_SCRIPT])
    return QemuCommandLineEvidence(rc=rc, argv=out.splitlines())


def vmi_conditions(vm: KubeVirtVM) -> VmiConditionsEvidence:
    vmi = vm.vmi_object()
    return VmiConditionsEvidence(
        conditions={
            c["type"]: {k: c.get(k) for k in ("status", "reason", "message")}
            for c in vmi.get("status", {}).get("conditions") or []
        }
    )


def unregistered_binding(vm: KubeVirtVM, binding: str) -> UnregisteredBindingEvidence:
    """Create a VM whose interface names an unregistered binding; record why KubeVirt failed it
    (refused at admission, or the controller's FailedCreate event / VMI Synchronized=False
    message) and which binding that reason names, then delete it and wait until it is gone."""
    name = f"vm-unregistered-{secrets.token_hex(2)}"
    message, where = _why_refused(vm, name, binding)
    found = BINDING_NOT_FOUND.search(message or "")
    return UnregisteredBindingEvidence(
        vm=name, binding=binding, message=message, binding_in_reason=found.group(1) if found else None, where=where
    )


def _why_refused(vm: KubeVirtVM, name: str, binding: str) -> tuple[str | None, str | None]:
    """(message, where) of KubeVirt's refusal of VM ``name``; where is None when none came in time."""
    from kubernetes import client  # in each function: see the imports

    try:
        vm.create_vm(name, binding=binding)
    except client.ApiException as e:  # refused at admission is a refusal too
        return e.body, "admission"

    try:
        state = waits.wait_for(
            f"KubeVirt to report why VM {name} cannot start",
            lambda: vmi_start.start_state(vm, name, events=("FailedCreate",)),
            waits.timeout("vmi-running"),
            accept=lambda s: s.why is not None,
            describe=vmi_start.StartState.describe,
        )
        return state.why, "controller"
    except waits.WaitTimeout as e:
        return str(e), None
    finally:
        vm.delete_vm(name)


# the launcher pod's hook sidecar containers (pkg/virt-controller/services/template.go: "hook-sidecar-%d")
HOOK_SIDECAR = re.compile(r"hook-sidecar-\d+")
PLUGIN_NAME_ENV = "NETWORK_BINDING_PLUGIN_NAME"  # pkg/hooks/hooks.go NetworkBindingPluginNameEnvVar (v1.9.0)
# The sidecar's refusal of an interface whose binding is not the name it serves (domain.go
# NewSlirpNetworkConfigurator), reported by virt-handler as the VMI's SyncFailed event.
NOT_SLIRP_BINDING = "is not set with slirp network binding plugin"


def renamed_binding(vm: KubeVirtVM, binding: str) -> RenamedBindingEvidence:
    """Register the run's sidecar image under ``binding`` too, start a VM like the conformance VM whose
    interface names ``binding`` (its disk pulled, so QEMU really starts), and record whether its VMI
    reached Running, KubeVirt's reason when not, the env its sidecar got and QEMU's command line.
    The VM is deleted and the registration undone before this returns."""
    name = f"vm-renamed-{secrets.token_hex(2)}"
    with vm.binding_registered_as(binding, vm.sidecar_image) as registration:
        conf = vm.kubevirt_cr().get("spec", {}).get("configuration") or {}
        registered = ((conf.get("network") or {}).get("binding") or {}).get(binding)
        ev = RenamedBindingEvidence(
            vm=name,
            binding=binding,
            registered=registered,
            propagation=registration.propagation,
            started=False,
            phase=None,
            reason=None,
            sidecar_env={},
            plugin_names=[],
            argv=[],
        )
        try:
            _try_start(vm, ev)
        finally:
            vm.delete_vm(name)
    if ev.reason is not None:
        ev.refused_as_unregistered = BINDING_NOT_FOUND.search(ev.reason) is not None
    return ev


def _try_start(vm: KubeVirtVM, ev: RenamedBindingEvidence) -> None:
    from kubernetes import client

    def create() -> None:
        vm.create_vm(ev.vm, binding=ev.binding, bootable=True)

    try:
        if ev.propagation.startswith("verified"):
            create()
        else:
            kubevirt_config.retry_while_config_stale(create)
    except client.ApiException as e:
        ev.reason = f"refused at admission: {e.body}"
        return

    def refusal(state: vmi_start.StartState) -> str | None:
        """The one of the two refusals this clause tells apart, if KubeVirt said it: virt-handler may
        report a passing sync error while the pod is still starting, which must not end the wait."""
        return next((w for w in state.whys if NOT_SLIRP_BINDING in w or BINDING_NOT_FOUND.search(w)), None)

    try:
        state = waits.wait_for(
            f"VM {ev.vm} (binding {ev.binding}) to reach Running, or KubeVirt to say why not",
            lambda: vmi_start.start_state(vm, ev.vm),
            waits.timeout("vmi-running"),
            accept=lambda s: s.ended or refusal(s) is not None,
            describe=vmi_start.StartState.describe,
        )
    except waits.WaitTimeout as e:
        ev.reason = str(e)
        return
    ev.phase, ev.reason = state.phase, refusal(state) or state.why
    ev.started = ev.phase == "Running"
    if not ev.started:
        return
    vmi = vm.read_vmi(ev.vm)
    pod = vm.launcher_pod_of(vmi)
    ev.sidecar_env = {
        c.name: next((e.value for e in c.env or [] if e.name == PLUGIN_NAME_ENV), None)
        for c in (pod.spec.containers if pod.spec else [])
        if HOOK_SIDECAR.fullmatch(c.name or "")
    }
    ev.plugin_names = sorted({str(v) for v in ev.sidecar_env.values()})
    rc, out = vm.exec_in_pod(
        str(pod.metadata.name if pod.metadata else ""), ["sh", "-c", launcher_probes.QEMU_ARGV_SCRIPT]
    )
    ev.argv = out.splitlines() if rc == 0 else []


# A ResourceQuota on cpu and memory, requests and limits: every container of a pod must then state all
# four (Kubernetes' quota admission: "must specify limits.cpu for: <container>"). The VM is burstable
# (requests below limits): KubeVirt then gives a hook sidecar no resources of its own unless
# supportContainerResources has a `sidecar` entry (renderresources.go sidecarResources, v1.1.0 L538,
# v1.9.0 L535; a VM with guaranteed QoS gets fixed 200m/64M limits instead).
QUOTA = {"requests.cpu": "2", "requests.memory": "4Gi", "limits.cpu": "4", "limits.memory": "8Gi"}
QUOTA_VM_CPU = {"requests": "100m", "limits": "1"}
SIDECAR_RESOURCES = {"requests": {"cpu": "20m", "memory": "64Mi"}, "limits": {"cpu": "200m", "memory": "128Mi"}}
QUOTA_REFUSAL = "failed quota"  # kube-apiserver's quota admission, in virt-controller's FailedCreate event


def quota_vms(vm: KubeVirtVM) -> tuple[QuotaVmEvidence, QuotaVmEvidence]:
    """In a namespace with ``QUOTA``: a burstable VM while the cluster configures no sidecar resources
    (as found), then one while supportContainerResources `sidecar` is ``SIDECAR_RESOURCES``; each
    deleted as soon as it ran or KubeVirt said why not. Returns (without, with)."""
    resources = {
        "requests": {"memory": vm.spec.memory, "cpu": QUOTA_VM_CPU["requests"]},
        "limits": {"memory": _twice(vm.spec.memory), "cpu": QUOTA_VM_CPU["limits"]},
    }
    with vm.quota_namespace(QUOTA) as ns:
        without = _quota_vm(vm, ns, f"vm-quota-bare-{secrets.token_hex(2)}", resources)
        with vm.sidecar_resources_set(SIDECAR_RESOURCES) as propagation:
            with_resources = _quota_vm(vm, ns, f"vm-quota-sidecar-{secrets.token_hex(2)}", resources)
            with_resources.propagation = propagation
    return without, with_resources


def _twice(quantity: str) -> str:
    m = re.fullmatch(r"(\d+)(\D*)", quantity)
    return f"{int(m.group(1)) * 2}{m.group(2)}" if m else quantity


def _quota_vm(vm: KubeVirtVM, ns: QuotaNamespace, name: str, resources: dict) -> QuotaVmEvidence:
    from kubernetes import client

    conf = vm.kubevirt_cr().get("spec", {}).get("configuration") or {}
    ev = QuotaVmEvidence(
        namespace=ns.name,
        quota=ns.quota(),
        sidecar_configured=next(
            (e for e in conf.get("supportContainerResources") or [] if e.get("type") == "sidecar"), None
        ),
        vm=name,
        vm_resources=resources,
    )
    ns.create_vm(name, resources)
    try:
        # quota admission's refusal is final at once; any other word ends the wait once it stood
        settled = vmi_start.Settled(waits.scaled(vmi_start.WHY_SETTLES))
        try:
            state = waits.wait_for(
                f"VM {ns.name}/{name} to reach Running, or KubeVirt to say why its pod was not created",
                lambda: vmi_start.start_state(ns, name, events=("FailedCreate",)),
                waits.timeout("vmi-running"),
                accept=lambda s: settled(s) or any(QUOTA_REFUSAL in w for w in s.whys),
                describe=vmi_start.StartState.describe,
            )
            ev.phase = state.phase
            ev.reason = next((w for w in state.whys if QUOTA_REFUSAL in w), state.why)
        except waits.WaitTimeout as e:
            ev.reason = str(e)
        ev.started = ev.phase == "Running"
        if ev.started:
            pod = ns.launcher_pod_of(ns.read_vmi(name))
            ev.sidecar_resources = next(
                (
                    client.ApiClient().sanitize_for_serialization(c.resources) or {}
                    for c in (pod.spec.containers if pod.spec else [])
                    if HOOK_SIDECAR.fullmatch(c.name or "")
                ),
                None,
            )
    finally:
        ns.delete_vm(name)
    return ev


def feature_gate_off(vm: KubeVirtVM) -> FeatureGateOffEvidence:
    """With NetworkBindingPlugins removed, try to create a VM using a binding plugin; record
    whether admission let it in (then delete it) and its message."""
    from kubernetes import client

    name = f"vm-gate-off-{secrets.token_hex(2)}"
    with vm.feature_gate_off() as propagation:
        try:
            vm.create_vm(name)
        except client.ApiException as e:
            return FeatureGateOffEvidence(
                vm=name, propagation=propagation, admitted=False, status=e.status, message=e.body
            )
    vm.delete_vm(name)
    return FeatureGateOffEvidence(vm=name, propagation=propagation, admitted=True)
