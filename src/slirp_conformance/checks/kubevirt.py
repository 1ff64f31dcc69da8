"""What KubeVirt itself must show for a slirp VM: the CR, the launcher pod, QEMU's command line."""

from __future__ import annotations

import re

from slirp_conformance.evidence import Evidence

BINDING_NOT_FOUND = re.compile(r"couldn't find configuration for network bindi(?:ni)?ng: (\S+)")


def kubevirt_cr(target) -> Evidence:
    cr = target.kubevirt_cr()
    conf = cr.get("spec", {}).get("configuration") or {}
    return Evidence(
        "kubevirt-cr",
        {
            "feature_gates": (conf.get("developerConfiguration") or {}).get("featureGates") or [],
            "binding": ((conf.get("network") or {}).get("binding") or {}).get("slirp"),
            "kubevirt_version": cr.get("status", {}).get("observedKubeVirtVersion"),
        },
    )


def launcher_pod(target) -> Evidence:
    pod = target.launcher_pod_object()
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


def qemu_command_line(target) -> Evidence:
    """The QEMU process in the compute container, found by its ``-netdev user``."""
    script = (
        "for d in /proc/[0-9]*; do if tr '\\0' '\\n' < $d/cmdline 2>/dev/null | grep -qx -- '-netdev'; then "
        "tr '\\0' '\\n' < $d/cmdline; exit 0; fi; done; exit 1"
    )
    rc, out = target.exec_in_launcher(["sh", "-c", script])
    return Evidence("qemu-command-line", {"rc": rc, "argv": out.splitlines()})


def vmi_conditions(target) -> Evidence:
    vmi = target.vmi_object()
    return Evidence(
        "vmi-conditions",
        {
            c["type"]: {k: c.get(k) for k in ("status", "reason", "message")}
            for c in vmi.get("status", {}).get("conditions") or []
        },
    )
