"""The DNS search list the guest must get is the launcher pod's own (issue 7, item 1), never assumed.

The slirp sidecar passes every ``search`` entry of its /etc/resolv.conf to QEMU as ``dnssearch=``
(kubevirt cmd/sidecars/network-slirp-binding/dns/resolvconf.go -> pkg/network/dns/resolveconf.go
ParseSearchDomains). kubelet writes that file: the cluster's three entries for the namespace and
cluster domain, then the node's own search domains. On the real stack
(tests/test_kind_kubevirt.py) that file is the real kubelet's, and the whole run checks the guest's
list against it (``test_search_list_passed_through``) and QEMU's ``dnssearch=`` against the sidecar's
rendering of it (``test_qemu_command_line_carries_slirp_as_the_sidecar_renders_it``). The test bed's
run on another cluster domain (``k8s.test``) with a node search domain went with the bed: its node
agent wrote the pod's resolv.conf itself, and on kind the cluster domain is kubeadm's and CoreDNS's
to serve, so another one would need another cluster; the reading of such a file is checked below.
"""

from __future__ import annotations

import re

import pytest

from slirp_conformance.errors import SetupError


@pytest.mark.parametrize(
    ("resolv_conf", "expected"),
    [
        (
            "search ns.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n",
            ("ns.svc.cluster.local", "svc.cluster.local", "cluster.local"),
        ),
        # every search line counts (unlike glibc, where the last wins), lower-cased, order kept
        ("search A.svc.K8S.test\nnameserver 1.1.1.1\nsearch corp.Example\n", ("a.svc.k8s.test", "corp.example")),
        ("nameserver 10.96.0.10\n", ("cluster.local",)),  # none: KubeVirt's default search domain
    ],
)
def test_search_list_is_read_as_the_sidecar_reads_it(resolv_conf, expected):
    from slirp_conformance.kubevirt import launcher_dns

    assert launcher_dns.sidecar_search_domains(resolv_conf) == expected


def test_cluster_domain_comes_from_the_namespaces_entry():
    from slirp_conformance.kubevirt import launcher_dns

    assert (
        launcher_dns.cluster_domain(("ns1.svc.k8s.test", "svc.k8s.test", "k8s.test", "corp.example"), "ns1")
        == "k8s.test"
    )
    with pytest.raises(SetupError, match=re.escape("ns1.svc.<cluster domain>")):
        launcher_dns.cluster_domain(("corp.example",), "ns1")
