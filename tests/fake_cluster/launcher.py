"""What virt-controller renders for a VMI: the binding check and the virt-launcher pod (what the
fake's backing VM is made from: tests/node_side/vmi_guest.py).

Facts used (kubevirt/kubevirt, pkg/network netbinding + VMI controller): an interface whose
``binding.name`` has no entry in ``spec.configuration.network.binding`` makes the render fail with
``couldn't find configuration for network bindining: <name>`` (the typo is in v1.1.0 through
v1.6.6 and fixed in v1.7.0: pkg/network/netbinding/netbinding.go at those tags); the
controller turns that into the VMI condition ``Synchronized=False`` reason ``FailedCreate``
message ``failed to render launch manifest: <err>`` and a Warning event of the same reason.
Each registered binding with a ``sidecarImage`` adds one hook sidecar container
(``hook-sidecar-<i>``).
"""

from __future__ import annotations

import random
import string

from tests.node_side.vmi_guest import interfaces

from .versions import at_least


class RenderError(Exception):
    pass


def binding_config(kv_config: dict) -> dict:
    return ((kv_config.get("network") or {}).get("binding")) or {}


def sidecar_images(vmi_spec: dict, kv_config: dict, version: str) -> list[str]:
    """The render step for binding plugins: raises RenderError for an unregistered name."""
    registered = binding_config(kv_config)
    used: dict[str, dict] = {}
    for iface in interfaces(vmi_spec):
        name = (iface.get("binding") or {}).get("name")
        if name is None:
            continue
        if name not in registered:
            word = "binding" if at_least(version, "v1.7") else "bindining"
            raise RenderError(f"couldn't find configuration for network {word}: {name}")
        used[name] = registered[name] or {}
    return [cfg["sidecarImage"] for cfg in used.values() if cfg.get("sidecarImage")]


def launcher_pod(vmi: dict, version: str, sidecars: list[str], image_pull_policy: str) -> dict:
    md, spec = vmi["metadata"], vmi.get("spec") or {}
    suffix = "".join(random.choices(string.ascii_lowercase + string.digits, k=5))
    ports = []
    for iface in interfaces(spec):
        for p in iface.get("ports") or []:
            entry = {"containerPort": p["port"], "protocol": p.get("protocol", "TCP")}
            if p.get("name"):
                entry["name"] = p["name"]
            ports.append(entry)
    compute = {"name": "compute", "image": f"quay.io/kubevirt/virt-launcher:{version}",
               "imagePullPolicy": image_pull_policy, "command": ["/usr/bin/virt-launcher-monitor"],
               "resources": {}}
    if ports:
        compute["ports"] = ports
    containers = [compute] + [
        {"name": f"hook-sidecar-{i}", "image": image, "imagePullPolicy": image_pull_policy, "resources": {}}
        for i, image in enumerate(sidecars)]
    labels = {**(md.get("labels") or {}), "kubevirt.io": "virt-launcher", "kubevirt.io/created-by": md["uid"],
              "vm.kubevirt.io/name": md["name"]}
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": f"virt-launcher-{md['name']}-{suffix}", "namespace": md["namespace"], "labels": labels,
                     "annotations": {"kubevirt.io/domain": md["name"], "kubectl.kubernetes.io/default-container":
                                     "compute"},
                     "ownerReferences": [{"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
                                          "name": md["name"], "uid": md["uid"], "controller": True,
                                          "blockOwnerDeletion": True}]},
        "spec": {"containers": containers, "restartPolicy": "Never", "hostname": md["name"],
                 "dnsPolicy": "ClusterFirst", "terminationGracePeriodSeconds": 30},
        "status": {"phase": "Pending"},
    }
