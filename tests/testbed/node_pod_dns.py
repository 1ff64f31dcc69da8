"""A pod's DNS as kubelet and cluster DNS give it, for a reference VM's lab: the search list of a
ClusterFirst pod's resolv.conf, and the names a lab's DNS answers for the namespace's peer pods.

The search list is ``<ns>.svc.<cluster domain>``, ``svc.<cluster domain>``, ``<cluster domain>``,
then the node's own search domains, duplicates dropped (kubelet's pkg/kubelet/network/dns/dns.go
generateSearchesForDNSClusterFirst; its length limits are not emulated). kind copies the host's
search domains into the node unless its config says ``networking.dnsSearch: []``.
"""

from __future__ import annotations

PEER_LABEL = (
    "app.kubernetes.io/component",
    "slirp-peer",
)  # the suite's peer pods (src/slirp_conformance/kubevirt/peers.py)


def pod_search_list(namespace: str, cluster_domain: str, node_search: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The search list kubelet writes into a ClusterFirst pod's resolv.conf."""
    if not cluster_domain:
        return tuple(node_search)
    composed = [f"{namespace}.svc.{cluster_domain}", f"svc.{cluster_domain}", cluster_domain, *node_search]
    return tuple(dict.fromkeys(composed))


def is_peer(pod: dict) -> bool:
    return (pod["metadata"].get("labels") or {}).get(PEER_LABEL[0]) == PEER_LABEL[1]


def peer_dns_records(
    namespace: str, cluster_domain: str, peer_ip: str, pods: list[dict], services: list[dict]
) -> dict[str, str]:
    """What a lab's DNS answers, as cluster DNS would for ``namespace``: the suite's peer name, and
    every Service of the namespace that selects one of its peer pods, all at the lab's peer address."""
    records = {f"peer-echo.{namespace}.svc.{cluster_domain}": peer_ip}
    peers = [p for p in pods if p["metadata"].get("namespace") == namespace and is_peer(p)]
    for svc in services:
        if svc["metadata"].get("namespace") != namespace:
            continue
        sel = (svc.get("spec") or {}).get("selector") or {}
        if sel and any(all((p["metadata"].get("labels") or {}).get(k) == v for k, v in sel.items()) for p in peers):
            records[f"{svc['metadata']['name']}.{namespace}.svc.{cluster_domain}"] = peer_ip
    return records
