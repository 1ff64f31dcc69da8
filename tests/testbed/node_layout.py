"""Where the bed's node-side parts meet on disk: the node agent (which runs each VMI's reference VM)
publishes a VMI's serial console here, and the virt-handler console endpoint that virt-api dials
streams from it. Both are local processes of one bed, under its state directory."""

from __future__ import annotations

from pathlib import Path

# A VMI with this annotation set to "skip" is left alone by the node agent: no VM, no status. The
# console self-tests play such a VMI's VM themselves, with a stand-in serial console.
AGENT_SKIP_ANNOTATION = "testbed.slirp-conformance.kubevirt.io/node-agent"


def vmi_dir(state_dir: Path, namespace: str, name: str) -> Path:
    return Path(state_dir) / "node-agent" / "vmis" / namespace / name


def console_socket(state_dir: Path, namespace: str, name: str) -> Path:
    """A symlink to the running VM's serial console (a QEMU unix socket server); absent while the
    VMI has no running VM."""
    return vmi_dir(state_dir, namespace, name) / "console.sock"


def pod_sysctls_file(state_dir: Path) -> Path:
    """JSON ``{"net.…": "value"}``: network sysctls the node agent sets in the pod namespace of each VM
    it boots from then on (absent: the defaults). A self-test's way to break the contract on purpose,
    as ``--qemu-sysctl`` does on ``--target=qemu``: e.g. an open ``net.ipv4.ping_group_range``."""
    return Path(state_dir) / "node-agent" / "pod-sysctls.json"


def kubelet_dns_file(state_dir: Path) -> Path:
    """JSON ``{"cluster_domain": "...", "node_search": ["...", ...]}``: the kubelet's ``--cluster-domain``
    and the node's own resolv.conf search domains, which kubelet appends to a ClusterFirst pod's
    (k8s.io/kubernetes pkg/kubelet/network/dns/dns.go). The node agent writes the launcher pod's
    resolv.conf from them for each VM it boots from then on (absent: ``cluster.local``, none). A
    self-test's way to give the bed another cluster domain and a node search domain, as kind gives
    when the host has one."""
    return Path(state_dir) / "node-agent" / "kubelet-dns.json"
