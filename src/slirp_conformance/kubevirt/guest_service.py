"""The ClusterIP Service in front of the conformance VM (issue 20's Service clause): made once per
run namespace, selecting the launcher pod; its ready endpoints read again at every look."""

from __future__ import annotations

import logging
from dataclasses import replace

from kubernetes import client

from slirp_conformance import waits
from slirp_conformance.kubevirt import suite_objects
from slirp_conformance.target import ClusterService

log = logging.getLogger("slirp.kubevirt")

NAME = "slirp-guest"


def selector(vmi_uid: str) -> dict[str, str]:
    """The launcher pod's label that names its VMI, ``kubevirt.io/created-by=<VMI uid>`` (podLabels in
    pkg/virt-controller/services/template.go at v1.1.0 and v1.9.0)."""
    return {"kubevirt.io/created-by": vmi_uid}


def create(
    core: client.CoreV1Api,
    namespace: str,
    *,
    vmi_uid: str,
    ports: tuple[int, ...],
    cluster_domain: str,
    launcher_pod_ip: str | None,
) -> ClusterService:
    """Service ``NAME`` on the TCP ``ports`` (port = targetPort) in front of the VMI's launcher pod;
    no endpoints read yet."""
    chosen = selector(vmi_uid)
    created = suite_objects.create_service(
        core,
        namespace,
        NAME,
        [client.V1ServicePort(name=f"tcp-{p}", port=p, target_port=p, protocol="TCP") for p in ports],
        type="ClusterIP",
        selector=chosen,
    )
    return ClusterService(
        name=NAME,
        cluster_ip=created.spec.cluster_ip if created.spec else None,
        dns_name=f"{NAME}.{namespace}.svc.{cluster_domain}",
        selector=chosen,
        ports=ports,
        launcher_pod_ip=launcher_pod_ip,
        endpoints=(),
    )


def ready_addresses(api: client.ApiClient, namespace: str, service: str) -> tuple[str, ...]:
    slices = client.DiscoveryV1Api(api).list_namespaced_endpoint_slice(
        namespace, label_selector=f"kubernetes.io/service-name={service}"
    )
    return tuple(
        sorted(
            address
            for s in slices.items
            for e in s.endpoints or []
            if e.conditions is None or e.conditions.ready is not False
            for address in e.addresses or []
        )
    )


def with_endpoints(api: client.ApiClient, namespace: str, service: ClusterService, *, wait: bool) -> ClusterService:
    """``service`` with its ready endpoints now; with ``wait``, first wait (bounded, never fatal) for
    one: a Service with nothing behind it is what the clause must show red."""
    if not wait:
        return replace(service, endpoints=ready_addresses(api, namespace, service.name))
    try:
        endpoints = waits.wait_for(
            f"Service {namespace}/{service.name} to have a ready endpoint",
            lambda: ready_addresses(api, namespace, service.name),
            waits.scaled(20),
            accept=bool,
            describe=lambda found: f"ready addresses {list(found)}",
        )
    except waits.WaitTimeout as e:
        log.warning("%s", e)
        endpoints = ready_addresses(api, namespace, service.name)
    return replace(service, endpoints=endpoints)
