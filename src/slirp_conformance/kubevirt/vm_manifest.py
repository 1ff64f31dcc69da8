"""The conformance VM as a KubeVirt VirtualMachine, rendered from the one VMSpec.

Follows the user guide's slirp example with its naming bug fixed (the VM is
``vm-net-binding-slirp``, not ``...-passt``): binding ``slirp`` on the pod network, virtio disks,
a containerDisk, and cloud-init with ``dhcp4: true`` and the run's SSH key.
"""

from __future__ import annotations

import json

from slirp_conformance.kubevirt.apis import VIRTUAL_MACHINE
from slirp_conformance.kubevirt.suite_objects import PART_OF
from slirp_conformance.vmspec import VMSpec


def user_data(authorized_key: str, password: str) -> str:
    """The VM's cloud-init user data; the reference target's cidata ISO carries the same text."""
    # JSON is valid YAML: no hand-built YAML, no quoting surprises.
    config = {"password": password, "chpasswd": {"expire": False}, "ssh_authorized_keys": [authorized_key]}
    return "#cloud-config\n" + json.dumps(config) + "\n"


# The VM's cloud-init network config (NoCloud ``network-config``), also on the reference cidata ISO.
NETWORK_DATA = json.dumps({"version": 2, "ethernets": {"eth0": {"dhcp4": True}}}) + "\n"


def render_vm(
    spec: VMSpec, *, namespace: str, image: str, authorized_key: str, password: str, binding: str | None = None
) -> dict:
    """``binding`` overrides the interface's binding name (negative tests use an unregistered one)."""
    iface = spec.interface
    interface: dict = {"name": iface.name, "binding": {"name": binding or iface.binding}}
    if iface.ports:
        interface["ports"] = [
            {k: v for k, v in (("name", p.name), ("port", p.port), ("protocol", p.protocol)) if v} for p in iface.ports
        ]
    if iface.mac:
        interface["macAddress"] = iface.mac
    if iface.model:
        interface["model"] = iface.model
    pod: dict = {}
    if spec.network.vm_network_cidr:
        pod["vmNetworkCIDR"] = spec.network.vm_network_cidr
    return {
        "apiVersion": VIRTUAL_MACHINE.api_version,
        "kind": VIRTUAL_MACHINE.kind,
        "metadata": {"name": spec.name, "namespace": namespace, "labels": dict(PART_OF)},
        "spec": {
            "runStrategy": "Always",
            "template": {
                "metadata": {"labels": {"kubevirt.io/vm": spec.name, **PART_OF}},
                "spec": {
                    "domain": {
                        "devices": {
                            "disks": [
                                {"name": "containerdisk", "disk": {"bus": "virtio"}},
                                {"name": "cloudinitdisk", "disk": {"bus": "virtio"}},
                            ],
                            "interfaces": [interface],
                        },
                        "resources": {"requests": {"memory": spec.memory}},
                    },
                    "networks": [{"name": spec.network.name, "pod": pod}],
                    # As the user guide's slirp VM (docs/network/net_binding_plugins/slirp.md): deletes
                    # at the end of a run do not wait for a guest shutdown.
                    "terminationGracePeriodSeconds": 0,
                    "volumes": [
                        {"name": "containerdisk", "containerDisk": {"image": image}},
                        {
                            "name": "cloudinitdisk",
                            "cloudInitNoCloud": {
                                "networkData": NETWORK_DATA,
                                "userData": user_data(authorized_key, password),
                            },
                        },
                    ],
                },
            },
        },
    }
