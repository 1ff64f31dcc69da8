"""The run's second namespace, with a ResourceQuota on cpu and memory (issue 20's quota clause): what
``checks.kubevirt.QuotaNamespace`` asks of it, on a real cluster."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from kubernetes import client

from slirp_conformance.kubevirt import suite_objects
from slirp_conformance.kubevirt.run_namespace import RunNamespace

QUOTA = "slirp-quota"

# (VM name, namespace) -> a bootable manifest of the conformance VM under that name
RenderVm = Callable[[str, str], dict]


class QuotaNamespace:
    def __init__(self, ns: RunNamespace, render: RenderVm) -> None:
        self.ns, self.name, self._render = ns, ns.name, render

    def quota(self) -> dict:
        read = self.ns.core.read_namespaced_resource_quota(QUOTA, self.name)
        status = self.ns.core.api_client.sanitize_for_serialization(read.status) or {}
        # spec.hard is what admission enforces; status (hard, used) follows once the quota controller ran
        return {"hard": dict(read.spec.hard or {}) if read.spec else {}, "status": status}

    def create_vm(self, name: str, resources: dict) -> None:
        manifest = self._render(name, self.name)
        manifest["spec"]["template"]["spec"]["domain"]["resources"] = resources
        self.ns.create_vm(manifest)

    def read_vmi(self, name: str) -> dict:
        return self.ns.read_vmi(name)

    def event_messages(self, involved: str, reason: str) -> list[str]:
        return self.ns.event_messages(involved, reason)

    def launcher_pod_of(self, vmi: dict) -> client.V1Pod:
        return self.ns.core.read_namespaced_pod(self.ns.launcher_pod(vmi), self.name)

    def delete_vm(self, name: str) -> None:
        self.ns.delete_vm(name)


@contextlib.contextmanager
def quota_namespace(
    core: client.CoreV1Api, custom: client.CustomObjectsApi, name: str, hard: dict[str, str], render: RenderVm
) -> Iterator[QuotaNamespace]:
    """Namespace ``name`` with ResourceQuota ``QUOTA`` of ``hard``; deleted (bounded) on the way out."""
    with RunNamespace(core, custom, name) as ns:
        core.create_namespaced_resource_quota(
            ns.name,
            client.V1ResourceQuota(
                metadata=suite_objects.metadata(QUOTA),
                spec=client.V1ResourceQuotaSpec(hard=hard),
            ),
        )
        yield QuotaNamespace(ns, render)
