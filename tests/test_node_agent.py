"""The test bed's node agent without a bed: request routing, lab addresses, cluster DNS, status.

The agent end to end (a VMI booted from the real sidecar's rendering, exec, port-forward,
deletion) is in tests/test_testbed.py, which needs the bed.
"""

from __future__ import annotations

import json

from tests.testbed import node_agent
from tests.testbed.node_kubelet import rewrite
from tests.testbed.node_pod_dns import peer_dns_records


def _pod(ns: str, name: str, ip: str | None = None, labels: dict | None = None) -> dict:
    return {
        "metadata": {"namespace": ns, "name": name, "labels": labels or {}},
        "status": {"phase": "Running", **({"podIP": ip} if ip else {})},
    }


def test_kubelet_exec_path_becomes_the_api_path_with_its_container():
    ns, pod, line = rewrite(
        "POST /exec/ns1/virt-launcher-a/compute?command=cat&command=%2Fetc%2Fresolv.conf&output=1 HTTP/1.1"
    )
    assert (ns, pod) == ("ns1", "virt-launcher-a")
    assert line == (
        "POST /api/v1/namespaces/ns1/pods/virt-launcher-a/exec?command=cat&command=%2Fetc%2F"
        "resolv.conf&stdout=1&container=compute HTTP/1.1"
    )
    # the kubelet's names of the streams (streamParams) become the API's, which the handlers read
    assert (
        "exec?command=nc&stdin=1&stdout=1&stderr=1&tty=1&container=c "
        in rewrite("POST /exec/ns1/p/c?command=nc&input=1&output=1&error=1&tty=1 HTTP/1.1")[2]
    )
    # the form with the pod's UID before the container
    assert rewrite("GET /exec/ns1/p/0d4a-uid/sidecar?command=true HTTP/1.1")[2].endswith(
        "exec?command=true&container=sidecar HTTP/1.1"
    )


def test_kubelet_port_forward_path_and_its_port_parameters():
    # The API server writes /portForward/ and one `port` per port (PortForwardLocation).
    assert (
        rewrite("GET /portForward/ns1/p?port=22&port=8080 HTTP/1.1")[2]
        == "GET /api/v1/namespaces/ns1/pods/p/portforward?ports=22&ports=8080 HTTP/1.1"
    )
    assert rewrite("POST /portforward/ns1/p HTTP/1.1")[2] == "POST /api/v1/namespaces/ns1/pods/p/portforward HTTP/1.1"


def test_other_kubelet_paths_are_not_the_agents():
    for line in (
        "GET /containerLogs/ns1/p/compute HTTP/1.1",
        "GET /healthz HTTP/1.1",
        "POST /exec/ns1/p HTTP/1.1",
        "POST /attach/ns1/p/compute HTTP/1.1",
    ):
        assert rewrite(line) is None, line


def test_lab_addresses_are_the_launcher_pods_and_its_namespaces_peer_pods():
    launcher = _pod("ns1", "virt-launcher-a", "10.244.0.3")
    pods = [
        launcher,
        _pod("ns2", "slirp-peer", "10.244.0.9", {"app.kubernetes.io/component": "slirp-peer"}),
        _pod("ns1", "slirp-client", "10.244.0.2", {"app.kubernetes.io/component": "slirp-client"}),
        _pod("ns1", "slirp-peer", "10.244.0.1", {"app.kubernetes.io/component": "slirp-peer"}),
    ]
    assert node_agent.lab_addresses(launcher, pods) == ("10.244.0.3", "10.244.0.1", node_agent.LAB_PREFIX)
    # no peer pod in its namespace: a cluster-side address kwok does not hand out
    assert node_agent.lab_addresses(launcher, pods[:3]) == (
        "10.244.0.3",
        node_agent.LONE_PEER_IP,
        node_agent.LAB_PREFIX,
    )


def test_cluster_dns_answers_the_peer_name_and_services_selecting_the_peer():
    peer = _pod("ns1", "slirp-peer", "10.244.0.1", {"app.kubernetes.io/component": "slirp-peer", "app": "echo"})
    services = [
        {"metadata": {"namespace": "ns1", "name": "echo"}, "spec": {"selector": {"app": "echo"}}},
        {"metadata": {"namespace": "ns1", "name": "other"}, "spec": {"selector": {"app": "web"}}},
        {"metadata": {"namespace": "ns2", "name": "echo"}, "spec": {"selector": {"app": "echo"}}},
    ]
    assert peer_dns_records("ns1", node_agent.CLUSTER_DOMAIN, "10.244.0.1", [peer], services) == {
        "peer-echo.ns1.svc.cluster.local": "10.244.0.1",
        "echo.ns1.svc.cluster.local": "10.244.0.1",
    }


def _vmi(cidr: str | None = None, mac: str | None = None) -> dict:
    iface = {"name": "default", "binding": {"name": "slirp"}, **({"macAddress": mac} if mac else {})}
    return {
        "metadata": {"name": "vm1", "namespace": "ns1"},
        "spec": {
            "domain": {"devices": {"interfaces": [iface]}},
            "networks": [{"name": "default", "pod": {"vmNetworkCIDR": cidr} if cidr else {}}],
        },
    }


def test_guest_interface_is_the_slirp_lease_and_the_nics_mac():
    device = json.dumps({"driver": "e1000", "netdev": "default", "id": "default", "mac": "02:00:00:00:00:07"})
    iface = node_agent.guest_interface(_vmi("10.1.0.0/24", "02:00:00:00:00:07"), ["-netdev", "user", "-device", device])
    assert (iface["name"], iface["ipAddress"], iface["mac"]) == ("default", "10.1.0.15", "02:00:00:00:00:07")
    # no MAC in the sidecar's -device: QEMU's default NIC address
    default = node_agent.guest_interface(_vmi(), ["-device", json.dumps({"driver": "e1000"})])
    assert (default["ipAddress"], default["mac"]) == ("10.0.2.15", "52:54:00:12:34:56")


def test_conditions_keep_their_transition_time_until_they_change():
    status: dict = {}
    node_agent._set_cond(
        status, {"type": "LiveMigratable", "status": "False", "reason": "R", "lastTransitionTime": "t1"}
    )
    node_agent._set_cond(
        status, {"type": "LiveMigratable", "status": "False", "reason": "R", "lastTransitionTime": "t2"}
    )
    assert [c["lastTransitionTime"] for c in status["conditions"]] == ["t1"]
    node_agent._set_cond(status, {"type": "LiveMigratable", "status": "True", "lastTransitionTime": "t3"})
    assert [(c["status"], c["lastTransitionTime"]) for c in status["conditions"]] == [("True", "t3")]
    node_agent._phase(status, "Running")
    node_agent._phase(status, "Running")
    assert [t["phase"] for t in status["phaseTransitionTimestamps"]] == ["Running"]
