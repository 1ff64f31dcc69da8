"""The one place that knows KubeVirt's APIs: each resource's group, version and plural.

Every call the suite makes to a KubeVirt resource goes through a ``Resource`` here (the official
client's ``CustomObjectsApi`` takes group, version, [namespace,] plural as separate arguments; no
other module spells them). Checked against KubeVirt's ``staging/src/kubevirt.io/api/core/v1/``
(``register.go``: group ``kubevirt.io``, version ``v1``) and ``subresources/v1`` at v1.1.0..v1.9.0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

GROUP = "kubevirt.io"
VERSION = "v1"


@dataclass(frozen=True)
class Resource:
    """One custom resource of KubeVirt, with the CustomObjectsApi calls the suite makes on it."""

    group: str
    version: str
    plural: str
    kind: str

    @property
    def api_version(self) -> str:
        """``apiVersion`` of a manifest: ``kubevirt.io/v1``."""
        return f"{self.group}/{self.version}"

    @property
    def crd_name(self) -> str:
        """The CustomResourceDefinition's name: ``kubevirts.kubevirt.io``."""
        return f"{self.plural}.{self.group}"

    def namespaced(self, namespace: str) -> tuple[str, str, str, str]:
        """The positional arguments of a namespaced CustomObjectsApi call (e.g. for a watch)."""
        return (self.group, self.version, namespace, self.plural)

    def get(self, custom: Any, namespace: str, name: str, **kwargs: Any) -> dict:
        return custom.get_namespaced_custom_object(*self.namespaced(namespace), name, **kwargs)

    def create(self, custom: Any, namespace: str, body: dict) -> dict:
        return custom.create_namespaced_custom_object(*self.namespaced(namespace), body)

    def delete(self, custom: Any, namespace: str, name: str) -> dict:
        return custom.delete_namespaced_custom_object(*self.namespaced(namespace), name)

    def patch(self, custom: Any, namespace: str, name: str, body: Any, **kwargs: Any) -> dict:
        return custom.patch_namespaced_custom_object(*self.namespaced(namespace), name, body, **kwargs)

    def list_all(self, custom: Any, **kwargs: Any) -> dict:
        """Every object of the resource, in all namespaces."""
        return custom.list_cluster_custom_object(self.group, self.version, self.plural, **kwargs)


KUBEVIRT = Resource(GROUP, VERSION, "kubevirts", "KubeVirt")
VIRTUAL_MACHINE = Resource(GROUP, VERSION, "virtualmachines", "VirtualMachine")
VIRTUAL_MACHINE_INSTANCE = Resource(GROUP, VERSION, "virtualmachineinstances", "VirtualMachineInstance")

# virt-api's aggregated API (api subresources/v1): the console and its healthz.
SUBRESOURCES = f"/apis/subresources.{GROUP}/{VERSION}"
VIRT_API_HEALTHZ = f"{SUBRESOURCES}/healthz"


def vmi_console_path(namespace: str, vmi: str) -> str:
    """``GET`` (websocket upgrade) of a VMI's serial console."""
    return f"{SUBRESOURCES}/namespaces/{namespace}/{VIRTUAL_MACHINE_INSTANCE.plural}/{vmi}/console"
