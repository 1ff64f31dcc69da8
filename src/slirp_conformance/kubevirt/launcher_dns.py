"""The DNS search list the slirp sidecar hands to QEMU, read from the virt-launcher pod itself.

The sidecar passes every ``search`` entry of its own /etc/resolv.conf as ``dnssearch=``
(kubevirt cmd/sidecars/network-slirp-binding/dns/resolvconf.go, which calls
pkg/network/dns/resolveconf.go ParseSearchDomains: lines starting with ``search``, every such
line appended, entries lower-cased, ``cluster.local`` when there is none). kubelet writes one
resolv.conf per pod, so the compute container's is the sidecar's. Its list is the cluster's
(``<ns>.svc.<cluster domain>``, ``svc.<cluster domain>``, ``<cluster domain>``) plus the node's
own search domains, and the cluster domain need not be ``cluster.local``: never assume it.
"""

from __future__ import annotations

from slirp_conformance import vmspec
from slirp_conformance.errors import SetupError


def sidecar_search_domains(resolv_conf: str) -> tuple[str, ...]:
    """The search list as the sidecar reads it from ``resolv_conf`` (the file's text)."""
    entries: list[str] = []
    for line in resolv_conf.splitlines():
        if line.startswith("search"):
            entries += line[len("search") :].split()
    return vmspec.sidecar_search_domains(tuple(entries))


def cluster_domain(search_domains: tuple[str, ...], namespace: str) -> str:
    """The cluster domain, from the ``<namespace>.svc.<cluster domain>`` entry kubelet puts first."""
    prefix = f"{namespace}.svc."
    for domain in search_domains:
        if domain.startswith(prefix) and len(domain) > len(prefix):
            return domain[len(prefix) :]
    raise SetupError(
        f"the launcher pod's DNS search list {' '.join(search_domains)!r} has no "
        f"{namespace}.svc.<cluster domain> entry: is its dnsPolicy ClusterFirst? The suite needs "
        f"cluster DNS to name the peer"
    )
