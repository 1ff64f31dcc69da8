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
from typing import Protocol

from kubernetes import client

from slirp_conformance import waits
from slirp_conformance.cluster.versions import KubeVirtVersion
from slirp_conformance.evidence import Evidence
from slirp_conformance.target import Contract
from slirp_conformance.vmspec import VMSpec

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

    def create_vm(self, name: str, *, binding: str | None = None) -> None:
        """Create a never-booted copy of the VM named ``name`` (``binding``: another binding name);
        ``client.ApiException`` when admission refuses it."""
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


def kubevirt_cr(vm: KubeVirtVM) -> Evidence:
    cr = vm.kubevirt_cr()
    conf = cr.get("spec", {}).get("configuration") or {}
    return Evidence(
        "kubevirt-cr",
        {
            "feature_gates": (conf.get("developerConfiguration") or {}).get("featureGates") or [],
            "binding": ((conf.get("network") or {}).get("binding") or {}).get("slirp"),
            "kubevirt_version": cr.get("status", {}).get("observedKubeVirtVersion"),
        },
    )


def launcher_pod(vm: KubeVirtVM) -> Evidence:
    pod = vm.launcher_pod_object()
    containers = pod.spec.containers
    compute = next((c for c in containers if c.name == "compute"), None)
    return Evidence(
        "launcher-pod",
        {
            "pod": pod.metadata.name,
            "containers": {c.name: c.image for c in containers},
            "compute_ports": sorted((p.container_port, p.protocol or "TCP") for p in (compute.ports or []))
            if compute
            else None,
        },
    )


def qemu_command_line(vm: KubeVirtVM) -> Evidence:
    """The QEMU process in the compute container, found by its ``-netdev user``."""
    script = (
        "for d in /proc/[0-9]*; do if tr '\\0' '\\n' < $d/cmdline 2>/dev/null | grep -qx -- '-netdev'; then "
        "tr '\\0' '\\n' < $d/cmdline; exit 0; fi; done; exit 1"
    )
    rc, out = vm.exec_in_launcher(["sh", "-c", script])
    return Evidence("qemu-command-line", {"rc": rc, "argv": out.splitlines()})


def vmi_conditions(vm: KubeVirtVM) -> Evidence:
    vmi = vm.vmi_object()
    return Evidence(
        "vmi-conditions",
        {
            c["type"]: {k: c.get(k) for k in ("status", "reason", "message")}
            for c in vmi.get("status", {}).get("conditions") or []
        },
    )


def unregistered_binding(vm: KubeVirtVM, binding: str) -> Evidence:
    """Create a VM whose interface names an unregistered binding; record why KubeVirt failed it
    (refused at admission, or the controller's FailedCreate event / VMI Synchronized=False
    message), then delete it and wait until it is gone."""
    name = f"vm-unregistered-{secrets.token_hex(2)}"
    ev = Evidence("unregistered-binding", {"vm": name, "binding": binding})
    try:
        vm.create_vm(name, binding=binding)
    except client.ApiException as e:  # refused at admission is a refusal too
        ev["message"], ev["where"] = e.body, "admission"
        return ev

    def reason() -> str | None:
        for message in vm.event_messages(name, "FailedCreate"):
            return message
        try:
            vmi = vm.read_vmi(name)
        except client.ApiException:
            return None
        return next(
            (
                c.get("message")
                for c in vmi.get("status", {}).get("conditions") or []
                if c.get("type") == "Synchronized" and c.get("status") == "False"
            ),
            None,
        )

    try:
        ev["message"] = waits.wait_for(
            f"KubeVirt to report why VM {name} cannot start", reason, waits.timeout("vmi-running")
        )
        ev["where"] = "controller"
    except waits.WaitTimeout as e:
        ev["message"] = str(e)
    finally:
        vm.delete_vm(name)
    return ev


def feature_gate_off(vm: KubeVirtVM) -> Evidence:
    """With NetworkBindingPlugins removed, try to create a VM using a binding plugin; record
    whether admission let it in (then delete it) and its message."""
    name = f"vm-gate-off-{secrets.token_hex(2)}"
    ev = Evidence("feature-gate-off", {"vm": name})
    with vm.feature_gate_off() as propagation:
        ev["propagation"] = propagation
        try:
            vm.create_vm(name)
            ev["admitted"] = True
        except client.ApiException as e:
            ev["admitted"], ev["status"], ev["message"] = False, e.status, e.body
    if ev["admitted"]:
        vm.delete_vm(name)
    return ev
