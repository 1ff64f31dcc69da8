"""A kind cluster built from a config this suite owns: created or reused, deleted only if created.

The config pins the containerd settings that decide whether QEMU's unprivileged ICMP socket
works in the pod (``net.ipv4.ping_group_range``), so "ping through slirp" means the same thing
on every kind release: containerd 1.x defaults them to false, containerd >= 2.0 (kind >= v0.27)
to true. The kubeconfig goes to a file the suite owns (mode 0600) and is never printed.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import yaml

from slirp_conformance import progress, waits
from slirp_conformance.cluster import kind_network, runner
from slirp_conformance.cluster.versions import Pins
from slirp_conformance.errors import SetupError

log = logging.getLogger("slirp.cluster.kind")

KVM_DEVICE = "/dev/kvm"
_KVM_GET_API_VERSION = 0xAE00
_KVM_CREATE_VM = 0xAE01
_KVM_API_VERSION = 12

# Every kind node image up to v0.32 ships /etc/containerd/config.toml as `version = 2`, which
# containerd 1.x reads natively and containerd 2.x migrates (the keys of
# [plugins."io.containerd.grpc.v1.cri"] move to [plugins."io.containerd.cri.v1.runtime"]).
# So the v2 section name works on both; a v3 section in a v2 file would be overwritten by the
# migration. `effective_containerd_settings` checks the result on the node after creation.
CONTAINERD_PIN = """\
[plugins."io.containerd.grpc.v1.cri"]
  enable_unprivileged_icmp = false
  enable_unprivileged_ports = false
"""
PINNED_CONTAINERD_SETTINGS = {"enable_unprivileged_icmp": False, "enable_unprivileged_ports": False}

DEFAULT_CLUSTER_NAME = "slirp-conformance"
POD_SUBNET = "10.244.0.0/16"  # kind's default (pkg/apis/config/v1alpha4/default.go)
LIB_MODULES = Path("/lib/modules")  # kind bind-mounts it; Docker makes it (empty) where the host has none

Run = Callable[..., runner.Result]


def kvm_usable(device: str = KVM_DEVICE) -> bool:
    """True when ``device`` opens read-write, speaks KVM API 12, can create a VM and (for the host's
    /dev/kvm) really runs a guest: on this project's machines /dev/kvm creates VMs but aborts every
    guest (nested "PVM"), and a KubeVirt told it has KVM then asks for devices.kubevirt.io/vhost-net
    that no node offers and never schedules the VM (``reference_vm.kvm_runs_guests``)."""
    if not _kvm_ioctls_work(device):
        return False
    if device != KVM_DEVICE:
        return True
    from slirp_conformance.reference import reference_vm

    try:
        return reference_vm.kvm_runs_guests()
    except SetupError as e:  # no guest to probe with: emulation, which always boots, and say why
        log.warning("cannot probe whether %s runs guests (%s): taking it as unusable", device, e)
        return False


def _kvm_ioctls_work(device: str) -> bool:
    try:
        fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        if fcntl.ioctl(fd, _KVM_GET_API_VERSION, 0) != _KVM_API_VERSION:
            return False
        vm_fd = fcntl.ioctl(fd, _KVM_CREATE_VM, 0)
        os.close(vm_fd)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def render_config(name: str, node_image: str, *, kvm: bool, nodes: int = 1, own_cni: bool = False) -> str:
    """The kind cluster config (YAML): a control-plane node (and ``nodes - 1`` workers), containerd
    pinned, /dev/kvm if usable. ``own_cni``: no kindnetd (``disableDefaultCNI``; the suite installs
    its own, ``slirp_conformance.kindnode.cni``) on kind's default pod subnet, named so the CNI knows it."""
    if nodes < 1:
        raise SetupError(f"--nodes {nodes}: a cluster needs at least its control-plane node")
    members: list[dict] = []
    for role in ["control-plane"] + ["worker"] * (nodes - 1):
        node: dict = {"role": role, "image": node_image}
        if kvm:
            node["extraMounts"] = [{"hostPath": KVM_DEVICE, "containerPath": KVM_DEVICE}]
        members.append(node)
    # kind copies the host's search domains into the node (and kubelet appends the node's to every
    # ClusterFirst pod, so the sidecar passes them to the guest) unless this is set: empty keeps
    # the pods' search list the cluster's own. kind pkg/apis/config/v1alpha4/types.go, Networking.DNSSearch.
    networking: dict = {"dnsSearch": []}
    if own_cni:
        networking |= {"disableDefaultCNI": True, "podSubnet": POD_SUBNET}
    config = {
        "kind": "Cluster",
        "apiVersion": "kind.x-k8s.io/v1alpha4",
        "name": name,
        "nodes": members,
        "networking": networking,
        "containerdConfigPatches": [CONTAINERD_PIN],
    }
    return "# Rendered by slirp-conformance (src/slirp_conformance/cluster/kind.py); do not edit.\n" + yaml.dump(
        config, Dumper=_BlockDumper, sort_keys=False, default_flow_style=False
    )


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings (the TOML patch) as readable ``|`` blocks."""


_BlockDumper.add_representer(
    str,
    lambda dumper, value: dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None),
)


def _same_image(found: str, pinned: str) -> bool:
    """Same digest when both carry one, else the same ``repo:tag``."""
    if "@" in found and "@" in pinned:
        return found.split("@", 1)[1] == pinned.split("@", 1)[1]
    return found.split("@", 1)[0] == pinned.split("@", 1)[0]


def existing_clusters(run: Run = runner.run) -> list[str]:
    result = run(
        ["kind", "get", "clusters"],
        timeout=runner.budget("tool-probe"),
        fix="check that `kind` works (hack/install-tools.sh) and docker answers",
    )
    return [line.strip() for line in result.stdout.splitlines() if line.strip()]


@dataclass
class KindCluster:
    """``with KindCluster(...) as cluster:`` creates or reuses the cluster; exit deletes only what it created.

    ``workdir`` receives ``kind-config.yaml`` and ``kubeconfig`` (0600). ``kvm=None`` probes
    /dev/kvm. ``keep=True`` never deletes (debugging). ``node_image`` replaces the pinned one (a
    node image built here); ``own_cni`` then creates the cluster without kindnetd and installs the
    suite's CNI, waiting until every node is Ready and every kube-system pod Running. ``network``:
    the Docker network to put the nodes on, created (and removed again) when absent.
    """

    pins: Pins
    workdir: Path
    name: str = DEFAULT_CLUSTER_NAME
    kvm: bool | None = None
    preload_images: Iterable[str] = ()
    keep: bool = False
    run: Run = runner.run
    node_image: str | None = None
    nodes: int = 1
    own_cni: bool = False
    network: str | None = None
    created: bool = field(default=False, init=False)
    created_network: bool = field(default=False, init=False)
    created_lib_modules: bool = field(default=False, init=False)
    reused_node_image: str | None = field(default=None, init=False)
    kubeconfig_path: Path = field(init=False)
    config_path: Path = field(init=False)

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", self.name):
            raise SetupError(f"kind cluster name {self.name!r} is invalid; use lowercase letters, digits and '-'")
        self.workdir = Path(self.workdir)
        self.kubeconfig_path = self.workdir / "kubeconfig"
        self.config_path = self.workdir / "kind-config.yaml"
        if self.kvm is None:
            self.kvm = kvm_usable()
        self.node_image = self.node_image or self.pins.node_image

    def __enter__(self) -> Self:
        try:
            self.up()
        except BaseException:
            self.down()  # a half-created cluster (failed create, Ctrl-C) is ours: do not leak it
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.down()

    def up(self) -> KindCluster:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.name in existing_clusters(self.run):
            log.info("reusing kind cluster %s (it will be kept at the end)", self.name)
            self.reused_node_image = self._node_image()
            if self.reused_node_image and self.node_image and not _same_image(self.reused_node_image, self.node_image):
                log.warning(
                    "the reused kind cluster %s runs %s, not the pinned %s for KubeVirt %s; delete it "
                    "(kind delete cluster --name %s) to test on the pinned Kubernetes",
                    self.name,
                    self.reused_node_image,
                    self.node_image,
                    self.pins.kubevirt,
                    self.name,
                )
        else:
            self._create()
        self._export_kubeconfig()
        if self.preload_images:
            self.load_images(self.preload_images)
        return self

    def _create(self) -> None:
        assert self.node_image is not None
        self.config_path.write_text(
            render_config(self.name, self.node_image, kvm=bool(self.kvm), nodes=self.nodes, own_cni=self.own_cni)
        )
        budget = waits.timeout("kind-cluster")
        log.info(
            "creating kind cluster %s from %s (kind %s, %s, %d node(s), kvm=%s; budget %.0f s)",
            self.name,
            self.node_image,
            self.pins.kind,
            self.config_path.name,
            self.nodes,
            self.kvm,
            budget,
        )
        env = None
        if self.network:
            self.created_network = kind_network.ensure(self.network, run=self.run) or self.created_network
            env = {**os.environ, kind_network.ENV: self.network}
        if not LIB_MODULES.exists():
            self.created_lib_modules = True
        # Marked created before the call: a half-created cluster (timeout, Ctrl-C) is ours to delete.
        self.created = True
        # With the suite's own CNI no node is Ready before it is installed: kind must not wait for that.
        wait = [] if self.own_cni else ["--wait", f"{int(budget * 0.9)}s"]
        argv = ["kind", "create", "cluster", "--name", self.name, "--config", str(self.config_path)]
        argv += ["--kubeconfig", str(self.kubeconfig_path), *wait]
        output = self.workdir / "kind-create.log"  # kind's progress and errors (stderr; stdout is not kept)
        with progress.phase(f"kind create cluster {self.name} ({self.nodes} node(s), {self.node_image})"):
            result = self.run(argv, timeout=budget, env=env, check=False)
            output.write_text(runner.redact(result.stderr))
            if result.returncode != 0:
                tail = runner.redact("\n".join(result.stderr.strip().splitlines()[-15:]))
                raise runner.CommandFailed(
                    f"`{' '.join(argv)}` exited with {result.returncode}: {tail}; kind's whole output: {output}; "
                    f"`kind delete cluster --name {self.name}` cleans up a partial cluster",
                    returncode=result.returncode,
                    stderr_tail=tail,
                )
        if self.own_cni:
            from slirp_conformance.kindnode import cni

            with progress.phase(f"the suite's CNI (ptp, host-local) on every node of {self.name}"):
                cni.install(str(self.kubeconfig_path), POD_SUBNET, self.nodes, run=self.run)
            with progress.phase("waiting for every node Ready and every kube-system pod Running"):
                wait_ready(str(self.kubeconfig_path), self.nodes, run=self.run)

    def _export_kubeconfig(self) -> None:
        # Written by kind itself so the credentials never pass through this process's output.
        self.run(
            ["kind", "export", "kubeconfig", "--name", self.name, "--kubeconfig", str(self.kubeconfig_path)],
            timeout=runner.budget("tool-probe"),
            fix=f"does `kind get clusters` list {self.name}?",
        )
        os.chmod(self.kubeconfig_path, 0o600)

    def load_images(self, images: Iterable[str]) -> None:
        """``kind load docker-image`` each image (for --preload-images: no registry pulls in the node)."""
        for image in images:
            self.run(
                ["kind", "load", "docker-image", image, "--name", self.name],
                timeout=runner.budget("kind-load"),
                fix=f"pull it first (`docker pull {image}`) or drop it from --preload-images",
            )

    def down(self) -> None:
        if not self.created:
            log.info("kind cluster %s was not created by this run; leaving it", self.name)
            return
        if self.keep:
            log.warning("keeping kind cluster %s (delete it with: kind delete cluster --name %s)", self.name, self.name)
            return
        with progress.phase(f"kind delete cluster {self.name}"):
            self.run(
                ["kind", "delete", "cluster", "--name", self.name, "--kubeconfig", str(self.kubeconfig_path)],
                timeout=waits.timeout("resource-deleted"),
                fix=f"delete it by hand: kind delete cluster --name {self.name}",
            )
        self.created = False
        remove_stray_nodes(self.name, run=self.run)
        remove_leftovers(self.network if self.created_network else None, self.created_lib_modules, run=self.run)
        self.created_network = self.created_lib_modules = False

    def _node_image(self) -> str | None:
        try:
            result = self.run(
                ["docker", "inspect", "--format", "{{.Config.Image}}", self.node_container()],
                timeout=runner.budget("tool-probe"),
            )
        except runner.CommandFailed as e:
            log.warning("cannot read the node image of kind cluster %s: %s", self.name, e)
            return None
        return result.stdout.strip() or None

    def node_container(self) -> str:
        return f"{self.name}-control-plane"


def effective_containerd_settings(node_container: str, run: Run = runner.run) -> dict[str, bool | None]:
    """The unprivileged ICMP/ports settings containerd actually runs with on a node (evidence).

    Reads ``containerd config dump`` in the node container; None for a key it does not show.
    """
    result = run(
        ["docker", "exec", node_container, "containerd", "config", "dump"],
        timeout=runner.budget("tool-probe"),
        fix="is the kind node container running?",
    )
    settings: dict[str, bool | None] = {}
    for key in PINNED_CONTAINERD_SETTINGS:
        values = re.findall(rf"^\s*{key}\s*=\s*(true|false)\s*$", result.stdout, flags=re.MULTILINE)
        settings[key] = (values[-1] == "true") if values else None
    return settings


CLUSTER_LABEL = "io.x-k8s.kind.cluster"  # kind's label on every node container of a cluster


def remove_stray_nodes(name: str, run: Run = runner.run) -> list[str]:
    """Node containers of cluster ``name`` that ``kind delete`` did not see: a `kind create` stopped by
    Ctrl-C while its `docker run` of a node was under way leaves dockerd finishing that container after
    the delete listed the cluster's (seen once: a node left in state Created). Removed until none shows
    twice in a row, bounded; returns the ids removed."""
    removed: list[str] = []

    def sweep() -> bool:
        found = run(
            ["docker", "ps", "-aq", "--filter", f"label={CLUSTER_LABEL}={name}"],
            timeout=runner.budget("tool-probe"),
            quiet=True,
        ).stdout.split()
        if found:
            run(["docker", "rm", "-f", "-v", *found], timeout=runner.budget("tool-probe") * 6, check=False)
            removed.extend(found)
        return not found

    quiet_sweeps: list[bool] = []

    def settled() -> bool:
        quiet_sweeps.append(sweep())
        return quiet_sweeps[-2:] == [True, True]

    waits.wait_for(
        f"no node container of kind cluster {name} left (docker ps -a --filter label={CLUSTER_LABEL}={name})",
        settled,
        waits.scaled(30),
        describe=lambda _: f"removed so far: {removed}",
        max_interval=1.0,
    )
    return removed


def remove_leftovers(network: str | None, lib_modules: bool, run: Run = runner.run) -> None:
    """What creating a cluster added beside it: the Docker network the suite created (once no container
    is on it), and the empty /lib/modules Docker made for kind's bind mount on a host without one."""
    if network:
        kind_network.remove_if_unused(network, run=run)
    if lib_modules and LIB_MODULES.is_dir() and not any(LIB_MODULES.iterdir()):
        LIB_MODULES.rmdir()


def wait_ready(kubeconfig: str, nodes: int, run: Run = runner.run) -> None:
    """Every node Ready, then every kube-system pod Running with its containers ready (bounded, named)."""
    kubectl = ["kubectl", "--kubeconfig", kubeconfig]

    def node_states() -> dict[str, str]:
        out = run([*kubectl, "get", "nodes", "-o", "json"], timeout=runner.budget("tool-probe") * 3, quiet=True).stdout
        items = json.loads(out)["items"]
        return {
            n["metadata"]["name"]: next(
                (c["status"] for c in n["status"].get("conditions", []) if c["type"] == "Ready"), "Unknown"
            )
            for n in items
        }

    waits.wait_for(
        f"{nodes} kind node(s) Ready",
        node_states,
        waits.timeout("nodes-ready"),
        accept=lambda s: len(s) == nodes and all(v == "True" for v in s.values()),
        retry_on=(runner.CommandFailed, ValueError),
    )

    def pod_states() -> dict[str, str]:
        out = run(
            [*kubectl, "get", "pods", "-n", "kube-system", "-o", "json"],
            timeout=runner.budget("tool-probe") * 3,
            quiet=True,
        ).stdout
        return {
            p["metadata"]["name"]: p["status"].get("phase", "?")
            + (
                ""
                if all(c.get("ready") for c in p["status"].get("containerStatuses", []))
                and p["status"].get("containerStatuses")
                else "/not-ready"
            )
            for p in json.loads(out)["items"]
        }

    # kube-proxy and CoreDNS come after the control plane: at least one of each must be there too.
    waits.wait_for(
        "every kube-system pod Running and ready",
        pod_states,
        waits.timeout("kube-system-running"),
        accept=lambda s: (
            all(v == "Running" for v in s.values())
            and any(n.startswith("coredns-") for n in s)
            and any(n.startswith("kube-proxy-") for n in s)
        ),
        retry_on=(runner.CommandFailed, ValueError),
    )
