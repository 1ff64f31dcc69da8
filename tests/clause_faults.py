"""Faults for a child suite run (``-p tests.clause_faults`` with ``SLIRP_CLAUSE_FAULT=<name>``), each
a plausible defect of the stack under test that exactly one clause of issue 20 guards. The sidecar
faults rewrite the QEMU arguments KubeVirt's own sidecar code rendered (``--sidecar-render go``)
before the reference VM starts, as a sidecar with that bug would have rendered them."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re

from slirp_conformance.errors import SetupError
from slirp_conformance.reference import sidecar_render

FAULT_ENV = "SLIRP_CLAUSE_FAULT"


def _udp_as_tcp(spec, args: list[str]) -> list[str]:
    """A sidecar that forwards every listed port as TCP, whatever its protocol."""
    return [args[0], args[1].replace("hostfwd=udp::", "hostfwd=tcp::"), *args[2:]]


def _forward_unlisted_udp(spec, args: list[str]) -> list[str]:
    """A sidecar that forwards a UDP port the VM does not list (8083, the suite's unlisted one)."""
    if not any(p.protocol == "UDP" for p in spec.interface.ports):
        return args
    return [args[0], args[1] + ",hostfwd=udp::8083-:8083", *args[2:]]


def _device_driver(args: list[str], driver: str) -> list[str]:
    i = args.index("-device") + 1
    return [*args[:i], re.sub(r'"driver":"[^"]*"', f'"driver":"{driver}"', args[i]), *args[i + 1 :]]


def _virtio_as_rtl8139(spec, args: list[str]) -> list[str]:
    """A sidecar that falls back to rtl8139 (not e1000) for a model slirp cannot serve."""
    return _device_driver(args, "rtl8139") if spec.interface.model == "virtio" else args


def _rtl8139_ignored(spec, args: list[str]) -> list[str]:
    """A sidecar that forces e1000 whatever the VM asks for."""
    return _device_driver(args, "e1000") if spec.interface.model == "rtl8139" else args


def _cidr_ignored(spec, args: list[str]) -> list[str]:
    """A sidecar that always renders the default network, whatever vmNetworkCIDR says."""
    if not spec.network.vm_network_cidr:
        return args
    return [args[0], re.sub(r",net=[^,]*", ",net=10.0.2.0/24", args[1]), *args[2:]]


def _ipv6_off(spec, args: list[str]) -> list[str]:
    """A sidecar that turns QEMU's IPv6 off."""
    return [args[0], args[1] + ",ipv6=off", *args[2:]]


ARG_FAULTS = {
    "udp-as-tcp": _udp_as_tcp,
    "forward-unlisted-udp": _forward_unlisted_udp,
    "virtio-as-rtl8139": _virtio_as_rtl8139,
    "rtl8139-ignored": _rtl8139_ignored,
    "cidr-ignored": _cidr_ignored,
    "ipv6-off": _ipv6_off,
}
# A sidecar that does not validate vmNetworkCIDR and falls back to the default network for one it
# cannot parse: the VM starts where it must be refused.
RENDER_FAULTS = {"invalid-cidr-accepted"}


# A pod that shields its loopback from QEMU: new TCP connections QEMU (uid 107, as virt-launcher's)
# opens on the pod's loopback are reset. Replies to connections made TO QEMU (the SSH port-forward)
# are not new connections, and QEMU's egress leaves by eth0.
_SHIELD_RULE = [
    "OUTPUT",
    "-o",
    "lo",
    "-p",
    "tcp",
    "--syn",
    "-m",
    "owner",
    "--uid-owner",
    "107",
    "-j",
    "REJECT",
    "--reject-with",
    "tcp-reset",
]
POD_FAULTS = {
    "pod-loopback-shielded": [["iptables", "-I", *_SHIELD_RULE]],
    "pod-loopback6-shielded": [["ip6tables", "-I", *_SHIELD_RULE]],
}


def _install_pod_fault(commands: list[list[str]]) -> None:
    from slirp_conformance.reference.qemu_target import QemuTarget

    start = QemuTarget._start

    def faulty_start(self) -> None:
        start(self)
        for argv in commands:
            rc, out, err = self.vm.exec_in_pod(argv, timeout=20)
            if rc != 0:
                raise RuntimeError(f"fault: {' '.join(argv)} failed in the pod: {err or out}")

    QemuTarget._start = faulty_start  # type: ignore[method-assign]


# Faults of the cluster's side for the cluster-only clauses (--target=kind/cluster). Several may be
# named at once, comma-separated: each turns a different clause red, and they share one VM boot.
def _service_selects_nothing() -> None:
    """A launcher pod without its VMI's ``kubevirt.io/created-by`` label: the Service in front of
    the VM selects no pod."""
    from slirp_conformance.kubevirt import guest_service

    def selector(vmi_uid: str) -> dict[str, str]:
        return {"kubevirt.io/created-by": f"not-{vmi_uid}"}

    guest_service.selector = selector


def _renamed_sidecar_serves_slirp_only() -> None:
    """The other name is served by a sidecar that knows only ``slirp``, whatever it is told: KubeVirt
    v1.1.0's (domain.go SlirpPluginName), built here (cached) and loaded into the kind cluster."""
    from slirp_conformance.kubevirt.kubevirt_target import KubeVirtTarget
    from slirp_conformance.kubevirt_images import build, kind_load

    register = KubeVirtTarget.binding_registered_as

    def old_sidecar(self, name: str, sidecar_image: str):
        old = build.build("v1.1.0")
        only = dataclasses.replace(old, archives={old.sidecar_image: old.archives[old.sidecar_image]})
        kind_load.load(only, self.opts.kind_cluster_name)
        return register(self, name, old.sidecar_image)

    KubeVirtTarget.binding_registered_as = old_sidecar  # type: ignore[method-assign]


def _sidecar_resources_never_set() -> None:
    """KubeVirt's supportContainerResources is left as found: the quota VM that should have sidecar
    resources meets the quota with a sidecar that states none, like the first one."""
    from slirp_conformance.kubevirt.kubevirt_target import KubeVirtTarget

    @contextlib.contextmanager
    def left_as_found(self, resources: dict):
        yield "fault: supportContainerResources left as found"

    KubeVirtTarget.sidecar_resources_set = left_as_found  # type: ignore[method-assign,assignment]


def _bare_quota_vm_guaranteed() -> None:
    """The quota VM tried without sidecar resources asks for guaranteed QoS (requests = limits):
    KubeVirt then gives its sidecar fixed limits of its own (renderresources.go sidecarResources,
    WantsToHaveQOSGuaranteed), so its launcher pod passes the quota. The premise (a quota on cpu
    and memory, no sidecar resources configured) still holds."""
    from slirp_conformance.checks import kubevirt

    quota_vm = kubevirt._quota_vm

    def guaranteed(vm, ns, name: str, resources: dict):
        if name.startswith("vm-quota-bare"):
            # limits down to the requests, not the other way: a whole cpu more does not fit the node
            # beside the conformance VM, and an unschedulable pod says nothing for minutes
            resources = {"requests": dict(resources["requests"]), "limits": dict(resources["requests"])}
        return quota_vm(vm, ns, name, resources)

    kubevirt._quota_vm = guaranteed


CLUSTER_FAULTS = {
    "service-selects-nothing": _service_selects_nothing,
    "renamed-sidecar-serves-slirp-only": _renamed_sidecar_serves_slirp_only,
    "sidecar-resources-never-set": _sidecar_resources_never_set,
    "bare-quota-vm-guaranteed": _bare_quota_vm_guaranteed,
}


def pytest_configure(config) -> None:
    """Installs the fault named by ``SLIRP_CLAUSE_FAULT`` (only where this module is a plugin)."""
    fault = os.environ.get(FAULT_ENV, "")
    cluster = [f for f in fault.split(",") if f in CLUSTER_FAULTS]
    if cluster and len(cluster) == len(fault.split(",")):
        for name in cluster:
            CLUSTER_FAULTS[name]()
        return
    if fault in POD_FAULTS:
        _install_pod_fault(POD_FAULTS[fault])
        return
    if fault not in ARG_FAULTS and fault not in RENDER_FAULTS:
        names = sorted([*ARG_FAULTS, *POD_FAULTS, *RENDER_FAULTS, *CLUSTER_FAULTS])
        raise RuntimeError(f"{FAULT_ENV}={fault!r}: choose one of {', '.join(names)}")
    render = sidecar_render.qemu_network_args

    def faulty_render(spec, search_domains, mode, kubevirt_version):
        if fault in RENDER_FAULTS:
            try:
                return render(spec, search_domains, mode, kubevirt_version)
            except SetupError as e:
                if "invalid network CIDR" not in str(e):
                    raise
                fallback = dataclasses.replace(spec, network=dataclasses.replace(spec.network, vm_network_cidr=None))
                args, source = render(fallback, search_domains, mode, kubevirt_version)
                return args, {**source, "clause_fault": fault}
        args, source = render(spec, search_domains, mode, kubevirt_version)
        changed = ARG_FAULTS[fault](spec, list(args))
        if not re.match(r"user,", changed[1]):
            raise RuntimeError(f"fault {fault} broke the -netdev argument: {changed}")
        # A fault that does not apply to a VM (no UDP port listed, another model) leaves it alone.
        return changed, ({**source, "clause_fault": fault} if changed != args else source)

    sidecar_render.qemu_network_args = faulty_render
