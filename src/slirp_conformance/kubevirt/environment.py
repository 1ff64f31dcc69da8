"""The KubeVirt environment a cluster target's VM runs in: the cluster, its KubeVirt, and the slirp
binding registered for the run. Apart from the VM (``kubevirt_target.py``), so it can be brought up
and checked on its own (the self-tests do, on clusters that boot no VM).

Order, each step undone in reverse on exit (also on failure and Ctrl-C): the cluster (kind creates
or reuses it; or a kubeconfig) -> KubeVirt (installed only when absent and allowed; the version
under test is the cluster's own) -> the slirp binding merged into the KubeVirt CR for that version
(its sidecar image, the feature gate only below v1.5), the CR put back exactly on exit.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from kubernetes import client, config

from slirp_conformance import progress, redaction
from slirp_conformance.cluster import kubevirt_config, kubevirt_cr, versions
from slirp_conformance.cluster.kubevirt_config import Registration
from slirp_conformance.cluster.kubevirt_install import KubeVirtInstallation

if TYPE_CHECKING:
    from slirp_conformance.kubevirt_images.build import KubeVirtImages


@dataclass
class ClusterOptions:
    target: str  # "kind" or "cluster"
    kubevirt_version: str | None = None  # None: the cluster's (or, to install, KUBEVIRT_DEFAULT_VERSION)
    kubeconfig: str | None = None
    context: str | None = None
    install_kubevirt: bool = False
    kubevirt_manifests: str | None = None
    sidecar_image: str | None = None
    vm_image: str | None = None
    peer_image: str | None = None  # None: peers.DEFAULT_IMAGE, or the busybox built here (--images-from-source)
    guest_profile: str = "auto"
    kind_cluster_name: str = "slirp-conformance"
    keep_cluster: bool = False
    preload_images: list[str] = field(default_factory=list)
    images_from_source: bool = False  # kind: the node image and KubeVirt's images built here
    kind_nodes: int = 1
    namespace_suffix: str = ""

    def __post_init__(self) -> None:
        # An unparsable --kubevirt-version stops the run here, before anything starts. A parsable one
        # must match the cluster: the version under test is always the cluster's own
        # (status.observedKubeVirtVersion), known once KubeVirt is found or installed.
        if self.kubevirt_version:
            versions.parse_kubevirt_version(self.kubevirt_version)

    @property
    def requested_version(self) -> versions.KubeVirtVersion | None:
        """An explicit --kubevirt-version, which must match the cluster (SetupError when unparsable)."""
        return versions.parse_kubevirt_version(self.kubevirt_version) if self.kubevirt_version else None


@dataclass(frozen=True)
class ClusterAccess:
    """How to reach the cluster, and what is known of it before any API call."""

    kubeconfig: str
    context: str | None
    kvm: bool  # a usable /dev/kvm went into the node (kind only; an existing cluster's nodes are not probed)
    facts: dict[str, str]  # for reports: the kind release, node image, whether the run created it
    kubevirt_images: KubeVirtImages | None = None  # built here and loaded into the nodes (--images-from-source)


@contextlib.contextmanager
def cluster(opts: ClusterOptions, workdir: Path) -> Iterator[ClusterAccess]:
    """``--target=cluster``: the kubeconfig's (--kubeconfig, else $KUBECONFIG, else ~/.kube/config).
    ``--target=kind``: the kind cluster, created (and deleted on exit) or reused."""
    if opts.target == "cluster":
        from slirp_conformance.cluster.preflight import check_kubeconfig

        yield ClusterAccess(check_kubeconfig(opts.kubeconfig), opts.context, kvm=False, facts={})
        return
    from slirp_conformance import docker_daemon
    from slirp_conformance.cluster import kind_source
    from slirp_conformance.cluster.kind import KindCluster

    pins = versions.pins_for(opts.requested_version or versions.default_version())
    with contextlib.ExitStack() as stack:
        # The Docker engine kind runs on: the environment's, else the project's dockerd, which stays
        # up for a kept cluster (hack/cluster-down.sh releases it) and stops with this run otherwise.
        if opts.keep_cluster:
            engine = docker_daemon.acquire(f"kind-cluster:{opts.kind_cluster_name}", persistent=True)
            if engine.host:
                os.environ["DOCKER_HOST"] = engine.host
        else:
            engine = stack.enter_context(docker_daemon.engine("kind-target"))
        docker_daemon.check_privileged(engine)
        kind = stack.enter_context(
            KindCluster(
                pins=pins,
                workdir=workdir,
                name=opts.kind_cluster_name,
                preload_images=opts.preload_images,
                keep=opts.keep_cluster,
                nodes=opts.kind_nodes,
                **kind_source.node_settings(pins, engine, opts.images_from_source),
            )
        )
        built = _load_kubevirt_images(str(pins.kubevirt), opts.kind_cluster_name) if opts.images_from_source else None
        yield ClusterAccess(
            str(kind.kubeconfig_path),
            opts.context,
            kvm=bool(kind.kvm),
            facts={
                "kind": pins.kind,
                "kind_node_image": kind.reused_node_image or kind.node_image or pins.node_image,
                "kind_cluster_created": str(kind.created),
            },
            kubevirt_images=built,
        )


def _load_kubevirt_images(version: str, cluster_name: str) -> KubeVirtImages:
    """KubeVirt's images and release manifests of ``version`` built here (cached), loaded into every
    node of the kind cluster; the install then uses those manifests (unless --kubevirt-manifests
    names others), the VM its containerDisk and the peers its busybox."""
    from slirp_conformance.kubevirt_images import build, kind_load

    with progress.phase(f"KubeVirt {version}: its images and manifests built here (cached by version)"):
        built = build.build(version)
    with progress.phase(f"KubeVirt {version}: loading its images into kind cluster {cluster_name}"):
        kind_load.load(built, cluster_name)
    return built


class KubeVirtEnvironment:
    """KubeVirt on a reachable cluster with the slirp binding registered, as a context manager.

    The constructor makes the API clients (no call yet); ``with`` finds (or installs) KubeVirt,
    reads the version under test from it and registers the binding for that version; exit puts
    the KubeVirt CR back exactly as found and uninstalls what it installed.
    """

    def __init__(self, access: ClusterAccess, opts: ClusterOptions) -> None:
        self.access = access
        self.opts = opts
        self.requested = opts.requested_version
        self.api = self.new_api_client()
        self.core = client.CoreV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)
        self._version: versions.KubeVirtVersion | None = None
        self._registration: Registration | None = None
        self._stack = contextlib.ExitStack()

    def new_api_client(self) -> client.ApiClient:
        """A fresh ApiClient for one stream (the client's stream helpers are not thread-safe)."""
        cfg = client.Configuration()
        config.load_kube_config(
            config_file=self.access.kubeconfig, context=self.access.context, client_configuration=cfg
        )
        return client.ApiClient(cfg)

    # -- lifecycle --------------------------------------------------------------------------------
    def __enter__(self) -> KubeVirtEnvironment:
        try:
            self._bring_up()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stack.close()

    def _bring_up(self) -> None:
        # kind: emulate exactly when no usable /dev/kvm went into the node. An existing cluster's
        # nodes cannot be probed from here: emulation is the choice that always boots.
        with progress.phase(
            "KubeVirt: reading the installed release (installing it when absent and allowed), waiting until Available"
        ):
            installation = self._stack.enter_context(
                KubeVirtInstallation(
                    self.api,
                    self.requested or versions.default_version(),
                    use_emulation=not self.access.kvm,
                    manifests_dir=self.opts.kubevirt_manifests
                    or (self.access.kubevirt_images.manifests_dir if self.access.kubevirt_images else None),
                    expect_version=self.requested is not None,
                    install=self.opts.target == "kind" or self.opts.install_kubevirt,
                    # a kept kind cluster keeps the KubeVirt the suite installed in it: the next run
                    # finds it (its CR is then restored as found, like any existing one)
                    keep=self.opts.target == "kind" and self.opts.keep_cluster,
                )
            )
        if installation.version is None:  # entering found one or installed one, else raised
            raise RuntimeError("KubeVirtInstallation entered without a version")
        self._version = versions.parse_kubevirt_version(installation.version)
        image = self.opts.sidecar_image or versions.slirp_sidecar_image(self._version)
        self._registration = self._stack.enter_context(
            kubevirt_config.slirp_binding_registered(
                self.api, image, enable_feature_gate=versions.needs_feature_gate(self._version)
            )
        )

    # -- what the run found and did -----------------------------------------------------------------
    @property
    def version(self) -> versions.KubeVirtVersion:
        """The KubeVirt release under test: the cluster's (``status.observedKubeVirtVersion``)."""
        if self._version is None:
            raise RuntimeError("KubeVirt environment not entered: its version is read in `with`")
        return self._version

    @property
    def registration(self) -> Registration:
        if self._registration is None:
            raise RuntimeError("KubeVirt environment not entered: the binding is registered in `with`")
        return self._registration

    @property
    def registered(self) -> bool:
        return self._registration is not None

    def kubevirt_cr(self) -> dict:
        return kubevirt_cr.get_kubevirt(kubevirt_cr.as_api(self.api), self.registration.ref)

    def feature_gate_off(self) -> contextlib.AbstractContextManager[str]:
        """NetworkBindingPlugins removed for the ``with`` block (yields the propagation state)."""
        return kubevirt_config.feature_gate_off(self.api, self.registration.ref)

    def binding_registered_as(self, name: str, sidecar_image: str) -> contextlib.AbstractContextManager[Registration]:
        """A second binding ``name`` -> ``sidecar_image`` merged into the CR beside the run's own for
        the ``with`` block; exit puts back the configuration as it was at entry (the run's registration
        stays) and waits for the components to load it."""
        return kubevirt_config.slirp_binding_registered(
            self.api, sidecar_image, binding_name=name, enable_feature_gate=False
        )

    def sidecar_resources_set(self, resources: dict) -> contextlib.AbstractContextManager[str]:
        """supportContainerResources ``sidecar`` set to ``resources`` for the ``with`` block."""
        return kubevirt_config.sidecar_resources_set(self.api, self.registration.ref, resources)

    def node_versions(self) -> dict[str, str]:
        """Container runtime and kubelet versions: the ICMP outcome depends on the runtime."""
        infos = [n.status.node_info for n in self.core.list_node().items if n.status and n.status.node_info]
        return {
            "container_runtime": ",".join(sorted({i.container_runtime_version for i in infos})) or "unknown",
            "kubelet": ",".join(sorted({i.kubelet_version for i in infos})) or "unknown",
        }

    def describe(self) -> dict[str, str]:
        return {
            "kubevirt_version": str(self._version),
            "sidecar_image": self._registration.sidecar_image if self._registration else "",
            **self.access.facts,
        }


@contextlib.contextmanager
def kubevirt_environment(opts: ClusterOptions, workdir: Path) -> Iterator[KubeVirtEnvironment]:
    """The cluster, then KubeVirt with the binding registered (``KubeVirtEnvironment``)."""
    with contextlib.ExitStack() as stack:
        with progress.phase(
            "creating or reusing the kind cluster" if opts.target == "kind" else "checking the cluster"
        ):
            access = stack.enter_context(cluster(opts, workdir))
        redaction.register_kubeconfig(access.kubeconfig)
        yield stack.enter_context(KubeVirtEnvironment(access, opts))
