"""What marks an object in the cluster as the suite's: the ``part-of`` label on every namespace,
VM, pod and Service a run creates, and the metadata and Services made with it."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where used: the reference target renders VMs with PART_OF and no client
    from kubernetes import client

PART_OF = {"app.kubernetes.io/part-of": "slirp-conformance"}


def metadata(name: str) -> client.V1ObjectMeta:
    """``name``, labelled as the suite's."""
    from kubernetes import client

    return client.V1ObjectMeta(name=name, labels=dict(PART_OF))


def create_service(
    core: client.CoreV1Api, namespace: str, name: str, ports: list[client.V1ServicePort], **spec
) -> client.V1Service:
    """The suite's Service ``name`` on ``ports``; ``spec``: the rest of its V1ServiceSpec (selector, type...)."""
    from kubernetes import client

    return core.create_namespaced_service(
        namespace, client.V1Service(metadata=metadata(name), spec=client.V1ServiceSpec(ports=ports, **spec))
    )
