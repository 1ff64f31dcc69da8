"""The kind path for real: hack/cluster-up.sh --images-from-source makes a kind cluster on this machine
from images built here, and hack/cluster-down.sh leaves nothing (marker ``kind``).

One cluster of one node and one of two nodes, each from the real entry points (KubeVirt on a
third: tests/test_kind_kubevirt.py); the checks go
through the real kubelet (exec, logs, port-forward) and the node's containerd (the ICMP pin).
Negative controls: the ICMP check sees an open range once containerd's pin is flipped, and the
leak check sees a container and a network left behind.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.request

import pytest

from slirp_conformance import checkout, docker_daemon
from slirp_conformance.cluster import kind
from tests import kind_probes, suite_runner
from tests.kind_probes import kubectl

pytestmark = pytest.mark.kind
REPO = checkout.REPO
KUBEVIRT, KUBERNETES, RUN = kind_probes.KUBEVIRT, kind_probes.KUBERNETES, kind_probes.RUN

Cluster = kind_probes.Cluster
_down = kind_probes.down


def _up(name: str, tmp_path_factory, *extra: str) -> Cluster:
    return kind_probes.up(name, tmp_path_factory.mktemp(name), "--kubevirt-version", KUBEVIRT, *extra)


@pytest.fixture(scope="module")
def one_node(tmp_path_factory):
    cluster = _up(f"slirp-selftest-one-{RUN}", tmp_path_factory)
    yield cluster
    _down(cluster)  # a test failed before test_cluster_down_leaves_nothing: still delete it


def test_node_is_ready_with_the_pinned_kubelet_and_kube_system_runs(one_node):
    nodes = json.loads(kubectl(one_node.kubeconfig, "get", "nodes", "-o", "json").stdout)["items"]
    assert [n["metadata"]["name"] for n in nodes] == [f"{one_node.name}-control-plane"]
    info = nodes[0]["status"]["nodeInfo"]
    ready = next(c["status"] for c in nodes[0]["status"]["conditions"] if c["type"] == "Ready")
    assert (ready, info["kubeletVersion"]) == ("True", KUBERNETES), info
    assert info["containerRuntimeVersion"].startswith("containerd://1.6."), info  # Debian's containerd
    pods = json.loads(kubectl(one_node.kubeconfig, "get", "pods", "-n", "kube-system", "-o", "json").stdout)["items"]
    phases = {p["metadata"]["name"]: p["status"]["phase"] for p in pods}
    assert set(phases.values()) == {"Running"}, phases
    for component in (
        "etcd-",
        "kube-apiserver-",
        "kube-controller-manager-",
        "kube-scheduler-",
        "kube-proxy-",
        "coredns-",
    ):
        assert any(name.startswith(component) for name in phases), (component, phases)
    # every image came from the node's preload: none was pulled (there is no registry to pull from)
    images = {c["image"] for p in pods for c in p["spec"]["containers"]}
    assert all(i.startswith("registry.k8s.io/") for i in images), images
    node = f"{one_node.name}-control-plane"
    events = kubectl(one_node.kubeconfig, "get", "events", "-A", "-o", "json").stdout
    assert '"reason": "Pulling"' not in events and '"Failed"' not in events.replace('"FailedScheduling"', ""), [
        e["message"] for e in json.loads(events)["items"] if e["reason"] in ("Pulling", "Failed")
    ]
    crictl = one_node.docker("exec", node, "crictl", "images", "-o", "json").stdout
    assert "registry.k8s.io/pause" in crictl


def test_a_pod_from_an_image_built_here_answers_exec_logs_and_port_forward(one_node, tmp_path):
    archive = kind_probes.busybox_archive(tmp_path)
    subprocess.run(
        [kind_probes.tool("kind"), "load", "image-archive", str(archive), "--name", one_node.name],
        check=True,
        capture_output=True,
        timeout=300,
        env={**os.environ, **({"DOCKER_HOST": one_node.docker_host} if one_node.docker_host else {})},
    )
    pod = kind_probes.run_pod(one_node.kubeconfig, "probe")
    assert pod["spec"]["nodeName"] == f"{one_node.name}-control-plane"
    exec_out = kubectl(one_node.kubeconfig, "exec", "probe", "--", "cat", "/www/hello").stdout
    assert exec_out == "hello through the kubelet\n"
    assert "started-probe" in kubectl(one_node.kubeconfig, "logs", "probe").stdout
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    forward = subprocess.Popen(
        [kind_probes.tool("kubectl"), "--kubeconfig", one_node.kubeconfig, "port-forward", "pod/probe", f"{port}:8080"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert forward.stdout is not None
        line = forward.stdout.readline()  # "Forwarding from 127.0.0.1:PORT -> 8080"
        assert "Forwarding from" in line, line
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/hello", timeout=30) as response:
            assert response.read() == b"hello through the kubelet\n"
    finally:
        forward.terminate()
        forward.wait(timeout=30)


def test_pods_get_the_closed_ping_group_range_and_containerd_shows_the_pin(one_node):
    kind_probes.run_pod(one_node.kubeconfig, "icmp-pinned", "exec sleep 3600")
    assert kind_probes.ping_group_range(one_node.kubeconfig, "icmp-pinned") == "1 0"
    settings = kind.effective_containerd_settings(
        f"{one_node.name}-control-plane", run=kind_probes.node_runner(one_node.docker_host)
    )
    assert settings == kind.PINNED_CONTAINERD_SETTINGS


def test_the_icmp_check_sees_an_open_range_once_the_pin_is_flipped(one_node):
    """Negative control: containerd 1.6 defaults to the closed range, so removing the pin proves
    nothing; turning it on must make the same check report the open range."""
    node = f"{one_node.name}-control-plane"
    config = "/etc/containerd/config.toml"
    flip = (
        f"cp {config} {config}.pinned && sed -i 's/enable_unprivileged_icmp = false/"
        f"enable_unprivileged_icmp = true/' {config} && systemctl restart containerd"
    )
    one_node.docker("exec", node, "sh", "-c", flip)
    try:
        kind_probes.run_pod(one_node.kubeconfig, "icmp-open", "exec sleep 3600")
        assert kind_probes.ping_group_range(one_node.kubeconfig, "icmp-open") == "0 2147483647"
    finally:
        one_node.docker("exec", node, "sh", "-c", f"mv {config}.pinned {config} && systemctl restart containerd")
        kubectl(one_node.kubeconfig, "delete", "pod", "icmp-open", "--wait=false", check=False)
    assert (
        kind.effective_containerd_settings(node, run=kind_probes.node_runner(one_node.docker_host))
        == kind.PINNED_CONTAINERD_SETTINGS
    )


def test_cluster_down_leaves_nothing(one_node):
    r = _down(one_node)
    assert r is not None and r.returncode == 0, r.stderr[-3000:] if r else "already down"
    assert kind_probes.wait_no_leaks(one_node.before).leaked_since(one_node.before) == {}
    assert not (one_node.workdir / "state.json").exists()


def test_two_nodes_pods_on_each_reach_each_other(tmp_path_factory):
    cluster = _up(f"slirp-selftest-two-{RUN}", tmp_path_factory, "--nodes", "2")
    try:
        nodes = json.loads(kubectl(cluster.kubeconfig, "get", "nodes", "-o", "json").stdout)["items"]
        names = sorted(n["metadata"]["name"] for n in nodes)
        assert names == [f"{cluster.name}-control-plane", f"{cluster.name}-worker"]
        assert {n["status"]["nodeInfo"]["kubeletVersion"] for n in nodes} == {KUBERNETES}
        archive = kind_probes.busybox_archive(tmp_path_factory.mktemp("busybox"))
        env = {**os.environ, **({"DOCKER_HOST": cluster.docker_host} if cluster.docker_host else {})}
        subprocess.run(
            [kind_probes.tool("kind"), "load", "image-archive", str(archive), "--name", cluster.name],
            check=True,
            capture_output=True,
            timeout=300,
            env=env,
        )
        pods = {
            node: kind_probes.run_pod(cluster.kubeconfig, f"peer-{node.rsplit('-', 1)[1]}", node=node) for node in names
        }
        ips = {node: pod["status"]["podIP"] for node, pod in pods.items()}
        assert len({ip.rsplit(".", 1)[0] for ip in ips.values()}) == 2, ips  # one pod CIDR per node
        for here, there in ((names[0], names[1]), (names[1], names[0])):
            out = kind_probes.http_get(cluster.kubeconfig, pods[here]["metadata"]["name"], ips[there])
            assert out == "hello through the kubelet\n", (here, there, out)
        # and a ClusterIP service across nodes (kube-proxy's rules with this CNI), found through CoreDNS
        kubectl(
            cluster.kubeconfig,
            "expose",
            "pod",
            pods[names[1]]["metadata"]["name"],
            "--name",
            "peer",
            "--port",
            "80",
            "--target-port",
            "8080",
        )
        client = pods[names[0]]["metadata"]["name"]
        lookup = kubectl(cluster.kubeconfig, "exec", client, "--", "nslookup", "peer.default.svc.cluster.local").stdout
        service_ip = json.loads(kubectl(cluster.kubeconfig, "get", "service", "peer", "-o", "json").stdout)["spec"][
            "clusterIP"
        ]
        assert f"Address: {service_ip}" in lookup, lookup
        out = kind_probes.http_get_through_new_service(cluster.kubeconfig, client, service_ip, 80)
        assert out == "hello through the kubelet\n", out
    finally:
        r = _down(cluster)
    assert r is not None and r.returncode == 0, r.stderr[-3000:] if r else ""
    assert kind_probes.wait_no_leaks(cluster.before).leaked_since(cluster.before) == {}


@pytest.mark.docker
def test_the_leak_check_sees_a_container_and_a_network_left_behind(tmp_path):
    with docker_daemon.engine("selftest-leaks") as engine:
        before = kind_probes.snapshot()
        archive = kind_probes.busybox_archive(tmp_path)
        subprocess.run(engine.docker("load", "-i", str(archive)), check=True, capture_output=True, timeout=120)
        name = f"slirp-selftest-leak-{RUN}-{int(time.time())}"
        subprocess.run(engine.docker("network", "create", name), check=True, capture_output=True, timeout=60)
        subprocess.run(
            engine.docker("run", "-d", "--name", name, "--network", name, kind_probes.BUSYBOX_IMAGE, "sleep", "600"),
            check=True,
            capture_output=True,
            timeout=60,
        )
        try:
            leaked = kind_probes.snapshot().leaked_since(before)
            assert leaked.get("containers") and leaked.get("networks"), leaked
        finally:
            subprocess.run(engine.docker("rm", "-f", name), capture_output=True, timeout=60)
            subprocess.run(engine.docker("network", "rm", name), capture_output=True, timeout=60)
        assert kind_probes.wait_no_leaks(before).leaked_since(before) == {}


def test_the_pytest_option_creates_its_cluster_the_same_way_and_ctrl_c_leaves_nothing(tmp_path):
    """``--target=kind --images-from-source`` finds the same node image and creates its own cluster
    (its node container appears) (the whole run on a real cluster: tests/test_kind_kubevirt.py, which reuses one);
    Ctrl-C once that cluster's node exists takes down everything the run made, dockerd included."""
    before = kind_probes.snapshot()
    name = f"slirp-selftest-opt-{RUN}"

    def node_exists(_pid: int) -> bool:
        return any(c.startswith(name) for c in kind_probes.snapshot().containers)

    code, output = suite_runner.interrupt_suite(
        tmp_path,
        *kind_probes.kind_run_args(name),
        "suites/test_slirp_dhcp.py",
        when=f"the run's kind cluster {name} to have a node",
        ready=node_exists,
        timeout=900,
    )
    # (no progress lines to read: interrupt_suite runs the child with -q, which silences them)
    assert code == 2, f"expected exit 2 (interrupted), got {code}:\n{output[-3000:]}"
    assert kind_probes.wait_no_leaks(before, 180).leaked_since(before) == {}
