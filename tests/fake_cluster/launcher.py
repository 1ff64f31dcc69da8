"""What virt-controller renders for a VMI: the binding check, the virt-launcher pod, and (for the
fake's backing VM) the VMSpec the slirp sidecar would read from the VMI.

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

import base64
import random
import string

import yaml

from fixtures.reference.cidata import NoCloud
from fixtures.vmspec import Interface, PodNetwork, Port, VMSpec

from .versions import at_least


class RenderError(Exception):
    pass


def interfaces(vmi_spec: dict) -> list[dict]:
    return ((vmi_spec.get("domain") or {}).get("devices") or {}).get("interfaces") or []


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


def vm_spec(vmi: dict) -> VMSpec:
    """The slirp-bound interface on the pod network, as the sidecar reads it. Raises ValueError."""
    spec = vmi.get("spec") or {}
    pod_nets = {n["name"]: n for n in spec.get("networks") or [] if "pod" in n}
    for iface in interfaces(spec):
        if iface.get("binding") and iface["name"] in pod_nets:
            ports = tuple(Port(int(p["port"]), (p.get("protocol") or "TCP").upper(), p.get("name"))
                          for p in iface.get("ports") or [])
            net = pod_nets[iface["name"]]
            memory = (((spec.get("domain") or {}).get("resources") or {}).get("requests") or {}).get("memory")
            return VMSpec(name=vmi["metadata"]["name"], **({"memory": memory} if memory else {}),
                          interface=Interface(name=iface["name"], binding=iface["binding"]["name"], ports=ports,
                                              mac=iface.get("macAddress"), model=iface.get("model")),
                          network=PodNetwork(name=net["name"],
                                             vm_network_cidr=(net.get("pod") or {}).get("vmNetworkCIDR")))
    raise ValueError("the fake cluster only emulates VMIs whose pod-network interface uses a binding plugin "
                     "(slirp); this VMI has none")


def _volume_text(src: dict, field: str) -> str | None:
    """``<field>`` or ``<field>Base64`` of a cloud-init volume, as virt-launcher writes it to the disk."""
    if src.get(field) is not None:
        return src[field]
    if src.get(field + "Base64"):
        return base64.b64decode(src[field + "Base64"]).decode(errors="replace")
    if src.get(field + "SecretRef"):
        raise ValueError(f"the fake cluster reads cloud-init {field} and {field}Base64, not {field}SecretRef")
    return None


def nocloud(vmi: dict) -> NoCloud:
    """The VMI's ``cloudInitNoCloud`` user data and network data, exactly as given. Raises ValueError."""
    for vol in (vmi.get("spec") or {}).get("volumes") or []:
        if "cloudInitNoCloud" in vol:
            src = vol["cloudInitNoCloud"] or {}
            user_data = _volume_text(src, "userData")
            if user_data is None:
                raise ValueError(f"volume {vol.get('name')!r}: cloudInitNoCloud without userData")
            return NoCloud(user_data, _volume_text(src, "networkData"))
    raise ValueError("a Fedora-like guest boots from a cloudInitNoCloud volume; this VMI has none")


def cloud_init(vmi: dict) -> tuple[str, str]:
    """(first ssh_authorized_keys entry, password) from the NoCloud/ConfigDrive user data."""
    key, password = "", "fedora"
    for vol in (vmi.get("spec") or {}).get("volumes") or []:
        src = vol.get("cloudInitNoCloud") or vol.get("cloudInitConfigDrive")
        if not src:
            continue
        try:
            data = yaml.safe_load(_volume_text(src, "userData") or "") or {}
        except (ValueError, yaml.YAMLError):
            continue
        if not isinstance(data, dict):
            continue
        keys = data.get("ssh_authorized_keys") or []
        for user in data.get("users") or []:
            if isinstance(user, dict):
                keys += user.get("ssh_authorized_keys") or user.get("ssh-authorized-keys") or []
        if keys:
            key = str(keys[0])
        if data.get("password"):
            password = str(data["password"])
    return key, password
