"""The run's namespace on the cluster: what the run creates there (VMs, their VMIs and launcher pods,
the peer pods) and how it reads them. A context manager: exit deletes the namespace and waits
until it is gone, and everything in it with it.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Any

from kubernetes import client, watch

from slirp_conformance import waits
from slirp_conformance.errors import SetupError
from slirp_conformance.kubevirt import suite_objects
from slirp_conformance.kubevirt.apis import VIRTUAL_MACHINE, VIRTUAL_MACHINE_INSTANCE


class RunNamespace:
    def __init__(self, core: client.CoreV1Api, custom: client.CustomObjectsApi, name: str) -> None:
        self.core = core
        self.custom = custom
        self.name = name

    def __enter__(self) -> RunNamespace:
        self.core.create_namespace(client.V1Namespace(metadata=suite_objects.metadata(self.name)))
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            self.core.delete_namespace(self.name)
        except client.ApiException as e:
            if e.status != 404:
                raise
        waits.wait_for(
            f"namespace {self.name} to be gone",
            lambda: is_gone(lambda: self.core.read_namespace(self.name)),
            waits.timeout("resource-deleted"),
        )

    # -- VMs and VMIs -------------------------------------------------------------------------------
    def create_vm(self, manifest: dict) -> dict:
        """Create a VirtualMachine; a refusal at admission raises ``client.ApiException``."""
        return VIRTUAL_MACHINE.create(self.custom, self.name, manifest)

    def read_vm(self, name: str) -> dict:
        return VIRTUAL_MACHINE.get(self.custom, self.name, name)

    def delete_vm(self, name: str) -> None:
        """Delete a VM of this run and wait until it is gone."""
        VIRTUAL_MACHINE.delete(self.custom, self.name, name)
        waits.wait_for(
            f"VM {name} to be deleted",
            lambda: is_gone(lambda: self.read_vm(name)),
            waits.timeout("resource-deleted"),
        )

    def read_vmi(self, name: str) -> dict:
        """The VMI (``client.ApiException`` 404 while there is none)."""
        return VIRTUAL_MACHINE_INSTANCE.get(self.custom, self.name, name)

    def wait_vmi(self, name: str, done: Callable[[dict], bool], what: str, budget: float) -> dict:
        """Watch the VMI until ``done(vmi)``; the timeout names the last phase and conditions."""
        last: dict = {}
        w = watch.Watch()
        try:
            for event in w.stream(
                self.custom.list_namespaced_custom_object,
                *VIRTUAL_MACHINE_INSTANCE.namespaced(self.name),
                field_selector=f"metadata.name={name}",
                timeout_seconds=int(budget),
            ):
                last = event["object"]
                if done(last):
                    return last
        finally:
            w.stop()
        status = last.get("status", {})
        raise waits.WaitTimeout(
            f"waited {budget:.0f} s for {what} of {self.name}/{name}; last "
            f"phase {status.get('phase')!r}, conditions {status.get('conditions')}"
        )

    def launcher_pod(self, vmi: dict) -> str:
        """The name of the VMI's virt-launcher pod (label ``kubevirt.io/created-by``)."""
        created_by = f"kubevirt.io/created-by={vmi['metadata']['uid']}"
        pods = self.core.list_namespaced_pod(self.name, label_selector=created_by)
        if not pods.items:
            raise SetupError(f"no virt-launcher pod for VMI {vmi['metadata']['name']} (label kubevirt.io/created-by)")
        metadata = pods.items[0].metadata
        if metadata is None or not metadata.name:
            raise SetupError(f"the virt-launcher pod of VMI {vmi['metadata']['name']} has no name")
        return metadata.name

    def event_messages(self, involved: str, reason: str) -> list[str]:
        """Messages of the namespace's events about ``involved`` with ``reason`` (e.g. FailedCreate)."""
        return [
            e.message
            for e in self.core.list_namespaced_event(self.name).items
            if e.involved_object.name == involved and e.reason == reason and e.message
        ]

    # -- artifacts ----------------------------------------------------------------------------------
    def artifact_readers(self, vm: str) -> dict[str, Callable[[], Any]]:
        """``{file name: read}`` of the run's objects worth reading after a failure."""
        sanitize = self.core.api_client.sanitize_for_serialization
        return {
            "vm.yaml": lambda: self.read_vm(vm),
            "vmi.yaml": lambda: self.read_vmi(vm),
            "pods.yaml": lambda: sanitize(self.core.list_namespaced_pod(self.name)),
            "events.yaml": lambda: sanitize(self.core.list_namespaced_event(self.name)),
        }


def is_gone(read: Callable[[], object]) -> bool:
    """True when ``read()`` answers 404."""
    try:
        read()
        return False
    except client.ApiException as e:
        if e.status == 404:
            return True
        raise


def condition_true(obj: dict, kind: str) -> bool:
    return any(
        c.get("type") == kind and c.get("status") == "True" for c in obj.get("status", {}).get("conditions") or []
    )
