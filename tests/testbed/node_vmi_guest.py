"""What a VMI says its reference VM is: the slirp-bound interface on the pod network (a VMSpec,
as the slirp sidecar reads it), the SSH key and password of its cloud-init user data, and its
NoCloud data exactly as given. The test bed's node agent boots its VMs from these.
"""

from __future__ import annotations

import base64

import yaml

from slirp_conformance.reference.cidata import NoCloud
from slirp_conformance.vmspec import Interface, PodNetwork, Port, VMSpec


def interfaces(vmi_spec: dict) -> list[dict]:
    return ((vmi_spec.get("domain") or {}).get("devices") or {}).get("interfaces") or []


def vm_spec(vmi: dict) -> VMSpec:
    """The slirp-bound interface on the pod network, as the sidecar reads it. Raises ValueError."""
    spec = vmi.get("spec") or {}
    pod_nets = {n["name"]: n for n in spec.get("networks") or [] if "pod" in n}
    for iface in interfaces(spec):
        if iface.get("binding") and iface["name"] in pod_nets:
            ports = tuple(
                Port(int(p["port"]), (p.get("protocol") or "TCP").upper(), p.get("name"))
                for p in iface.get("ports") or []
            )
            net = pod_nets[iface["name"]]
            memory = (((spec.get("domain") or {}).get("resources") or {}).get("requests") or {}).get("memory")
            return VMSpec(
                name=vmi["metadata"]["name"],
                **({"memory": memory} if memory else {}),
                interface=Interface(
                    name=iface["name"],
                    binding=iface["binding"]["name"],
                    ports=ports,
                    mac=iface.get("macAddress"),
                    model=iface.get("model"),
                ),
                network=PodNetwork(name=net["name"], vm_network_cidr=(net.get("pod") or {}).get("vmNetworkCIDR")),
            )
    raise ValueError(
        "a reference VM backs only VMIs whose pod-network interface uses a binding plugin (slirp); this VMI has none"
    )


def _volume_text(src: dict, field: str) -> str | None:
    """``<field>`` or ``<field>Base64`` of a cloud-init volume, as virt-launcher writes it to the disk."""
    if src.get(field) is not None:
        return src[field]
    if src.get(field + "Base64"):
        return base64.b64decode(src[field + "Base64"]).decode(errors="replace")
    if src.get(field + "SecretRef"):
        raise ValueError(f"a reference VM reads cloud-init {field} and {field}Base64, not {field}SecretRef")
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
