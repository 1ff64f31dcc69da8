"""The DNS search list the guest must get is the launcher pod's own (issue 7, item 1), never assumed.

The slirp sidecar passes every ``search`` entry of its /etc/resolv.conf to QEMU as ``dnssearch=``
(kubevirt cmd/sidecars/network-slirp-binding/dns/resolvconf.go -> pkg/network/dns/resolveconf.go
ParseSearchDomains). kubelet writes that file: the cluster's three entries for the namespace and
cluster domain, then the node's own search domains. End to end on the cluster test bed, whose
node agent plays that part of kubelet for the launcher pod, given cluster domain ``k8s.test``
and a node search domain (``node_layout.kubelet_dns_file``), as kind gives when the host has one
and the config does not say ``networking.dnsSearch: []``; the QEMU arguments are the real slirp
sidecar's rendering from that resolv.conf.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from slirp_conformance.errors import SetupError
from tests.suite_runner import run_suite
from tests.testbed import node_layout
from tests.testbed.node_pod_dns import pod_search_list


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


def test_the_node_agents_kubelet_appends_the_nodes_search_domains():
    assert pod_search_list("ns", "k8s.test", ("corp.example", "k8s.test")) == (
        "ns.svc.k8s.test",
        "svc.k8s.test",
        "k8s.test",
        "corp.example",
    )


@pytest.mark.testbed
def test_guest_gets_the_pods_search_list_on_another_cluster_domain_and_host(shared_testbed, tmp_path):
    dns = node_layout.kubelet_dns_file(Path(shared_testbed.record.state_dir))
    dns.parent.mkdir(parents=True, exist_ok=True)
    dns.write_text(json.dumps({"cluster_domain": "k8s.test", "node_search": ["corp.example"]}))
    try:  # the shared bed's default DNS is back for the next test, whatever happens here
        run = run_suite(
            tmp_path,
            "--target=cluster",
            "--kubeconfig",
            str(shared_testbed.kubeconfig),
            "--guest-profile=reference-busybox",
            "--timeout-scale",
            "3",
            "suites/test_slirp_dhcp.py",
            "suites/test_slirp_udp.py",
            "suites/test_slirp_kubevirt.py",
            timeout=1200,
        )
    finally:
        dns.unlink()
    assert run.returncode == 0, run.output[-5000:]
    for check in (
        "test_slirp_dhcp::test_search_list_passed_through",
        "test_slirp_kubevirt::test_qemu_command_line_carries_slirp_as_the_sidecar_renders_it",
        "test_slirp_udp::test_dns_through_slirp_relay",
    ):
        ran = {k: v for k, v in run.outcomes.items() if k.split("[")[0] == check}
        assert ran and set(ran.values()) == {"passed"}, (check, run.outcomes)
    props = [
        p.get("value")
        for p in ET.parse(tmp_path / "junit.xml").getroot().iter("property")
        if p.get("name") == "evidence.qemu-command-line"
    ]
    assert props and "dnssearch=corp.example" in props[0] and "svc.k8s.test" in props[0], props
