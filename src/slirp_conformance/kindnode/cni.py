"""The pod network of clusters on node images built here: ptp + host-local, written per node.

kind's default CNI, kindnetd, is a module the Go proxy does not serve, so these clusters are
created with ``disableDefaultCNI: true`` and get the smallest CNI that still spans nodes: the
containernetworking plugins the node image carries (``ptp`` with ``host-local`` IPAM,
``portmap``, ``loopback``; built from their module), configured the way kindnetd configures
them, by the suite itself instead of a DaemonSet:

* each node's conflist names its own ``spec.podCIDR`` (allocated by kube-controller-manager);
* each node routes every other node's pod CIDR via that node's InternalIP (all nodes share
  kind's Docker network, so the next hop is on-link);
* traffic from pods to anything outside the cluster's pod subnet is masqueraded (the Docker
  network's gateway and beyond do not know pod addresses).

containerd watches ``/etc/cni/net.d`` and reports the network ready as soon as the file is there.
A node added later, or a node container restarted, needs ``install`` again (routes are not kept).
"""

from __future__ import annotations

import ipaddress
import json
import shlex
from dataclasses import dataclass

from slirp_conformance import waits
from slirp_conformance.cluster import runner

CONFLIST = "/etc/cni/net.d/10-slirp-conformance.conflist"
NETWORK_NAME = "slirp-conformance"


@dataclass(frozen=True)
class Node:
    name: str  # the Kubernetes node name = the kind node container's name
    address: str  # InternalIP
    pod_cidr: str


def conflist(pod_cidr: str) -> str:
    return (
        json.dumps(
            {
                "cniVersion": "0.4.0",
                "name": NETWORK_NAME,
                "plugins": [
                    {
                        "type": "ptp",
                        "ipMasq": False,
                        "mtu": 1500,
                        "ipam": {
                            "type": "host-local",
                            "dataDir": "/run/cni-ipam-state",
                            "routes": [{"dst": "0.0.0.0/0"}],
                            "ranges": [[{"subnet": pod_cidr}]],
                        },
                    },
                    {"type": "portmap", "capabilities": {"portMappings": True}},
                ],
            },
            indent=2,
        )
        + "\n"
    )


def node_script(node: Node, others: list[Node], pod_subnet: str) -> str:
    """Shell run in one node container: its conflist, routes to the other nodes' pods, masquerade."""
    lines = [
        "set -e",
        f"mkdir -p {shlex.quote(CONFLIST.rsplit('/', 1)[0])}",
        f"cat > {CONFLIST}.tmp <<'EOF'\n{conflist(node.pod_cidr)}EOF",
        f"mv {CONFLIST}.tmp {CONFLIST}",
    ]
    for other in others:
        lines.append(f"ip route replace {other.pod_cidr} via {other.address}")
    rule = f"-s {pod_subnet} ! -d {pod_subnet} -m comment --comment slirp-conformance-cni -j MASQUERADE"
    lines.append(f"iptables -t nat -C POSTROUTING {rule} 2>/dev/null || iptables -t nat -A POSTROUTING {rule}")
    return "\n".join(lines) + "\n"


def read_nodes(kubeconfig: str, count: int, run=runner.run) -> list[Node]:
    """Every node with its InternalIP and pod CIDR: waits until ``count`` nodes are registered and
    kube-controller-manager gave each one a pod CIDR. ``kind create cluster`` can return before a
    worker's kubelet has registered its Node; a node missing here would never get its conflist and
    stay NotReady (a CI run's two-node cluster did, 300 s)."""

    def probe() -> list[dict]:
        out = run(
            ["kubectl", "--kubeconfig", kubeconfig, "get", "nodes", "-o", "json"],
            quiet=True,
            timeout=runner.budget("tool-probe") * 3,
            fix="is the kind cluster's API server up?",
        ).stdout
        return json.loads(out)["items"]

    items = waits.wait_for(
        f"all {count} kind node(s) registered, each with a pod CIDR (kube-controller-manager allocates them)",
        probe,
        waits.timeout("nodes-ready"),
        accept=lambda ns: len(ns) >= count and all(n["spec"].get("podCIDR") for n in ns),
        retry_on=(runner.CommandFailed, ValueError),
        describe=lambda ns: ", ".join(f"{n['metadata']['name']}={n['spec'].get('podCIDR')}" for n in ns) or "no nodes",
    )
    nodes = []
    for item in items:
        address = next(a["address"] for a in item["status"]["addresses"] if a["type"] == "InternalIP")
        nodes.append(Node(item["metadata"]["name"], address, item["spec"]["podCIDR"]))
    return nodes


def install(kubeconfig: str, pod_subnet: str, count: int, run=runner.run) -> list[Node]:
    """Write the CNI config, routes and masquerade rule into every node container of the cluster
    (``count`` nodes)."""
    ipaddress.ip_network(pod_subnet)  # validates
    nodes = read_nodes(kubeconfig, count, run)
    for node in nodes:
        others = [n for n in nodes if n != node]
        run(
            ["docker", "exec", "-i", node.name, "sh", "-c", "sh"],
            input=node_script(node, others, pod_subnet),
            timeout=runner.budget("tool-probe") * 3,
            fix=f"is the kind node container {node.name} running?",
        )
    return nodes
