"""The far side of the NAT in a cluster: a peer pod (TCP and UDP echo, a DNS name through a
headless Service, an ICMP-answering pod IP) and a client pod (pings the peer directly, and
connects to the launcher pod's IP as traffic from another pod). busybox does all of it.

The peer's DNS name (``dns_name``) needs the cluster domain, which the target reads from the
launcher pod's resolv.conf: ``deploy`` leaves it empty and the target fills it in."""

from __future__ import annotations

from kubernetes import client

from slirp_conformance import waits
from slirp_conformance.kubevirt import pod_streams, suite_objects
from slirp_conformance.kubevirt.suite_objects import PART_OF
from slirp_conformance.target import Endpoint, Peers

DEFAULT_IMAGE = "docker.io/library/busybox:1.36"
ECHO_PORT = 9007  # not 7: libslirp falls back to UDP "pseudo-pings" to port 7
PEER_POD, CLIENT_POD, PEER_SERVICE = "slirp-peer", "slirp-client", "peer-echo"
PEER_LABELS = {"app.kubernetes.io/component": "slirp-peer", **PART_OF}


def dns_name(namespace: str, cluster_domain: str) -> str:
    """The peer Service's name in cluster DNS (the cluster domain is read from a pod, never assumed)."""
    return f"{PEER_SERVICE}.{namespace}.svc.{cluster_domain}"


def _pod(name: str, image: str, labels: dict, command: list[str]) -> client.V1Pod:
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name, labels=labels),
        spec=client.V1PodSpec(
            restart_policy="Never",
            termination_grace_period_seconds=1,
            containers=[client.V1Container(name=name, image=image, command=command)],
        ),
    )


def _running_ip(core: client.CoreV1Api, namespace: str, name: str) -> str:
    """Wait until the pod runs with an IP; its IP."""

    def read() -> tuple[str | None, str | None]:
        pod = core.read_namespaced_pod(name, namespace)
        return pod_streams.pod_phase(pod), pod_streams.pod_ip(pod)

    _, ip = waits.wait_for(
        f"pod {namespace}/{name} Running with an IP",
        read,
        waits.timeout("pod-ready"),
        accept=lambda found: found[0] == "Running" and bool(found[1]),
        describe=lambda found: f"phase {found[0]}, podIP {found[1]}",
    )
    return str(ip)


def deploy(core: client.CoreV1Api, namespace: str, image: str = DEFAULT_IMAGE) -> Peers:
    echo = f"tcpsvd 0 {ECHO_PORT} cat & udpsvd -E 0 {ECHO_PORT} cat & wait"
    core.create_namespaced_pod(namespace, _pod(PEER_POD, image, PEER_LABELS, ["sh", "-c", echo]))
    core.create_namespaced_pod(
        namespace,
        _pod(CLIENT_POD, image, {"app.kubernetes.io/component": "slirp-client", **PART_OF}, ["sleep", "86400"]),
    )
    suite_objects.create_service(
        core,
        namespace,
        PEER_SERVICE,
        [
            client.V1ServicePort(name="echo-tcp", port=ECHO_PORT, protocol="TCP"),
            client.V1ServicePort(name="echo-udp", port=ECHO_PORT, protocol="UDP"),
        ],
        cluster_ip="None",  # headless: the name resolves to the peer pod itself
        selector=PEER_LABELS,
    )
    peer_ip = _running_ip(core, namespace, PEER_POD)
    _running_ip(core, namespace, CLIENT_POD)  # the client must run too; its own IP is not needed
    return Peers(
        tcp_echo=Endpoint(peer_ip, ECHO_PORT),
        udp_echo=Endpoint(peer_ip, ECHO_PORT),
        dns_name="",
        dns_address=peer_ip,
        icmp_host=peer_ip,
    )  # dns_name: see the module docstring
