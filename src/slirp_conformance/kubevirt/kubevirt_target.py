"""The ``kind`` and ``cluster`` targets: the conformance VM on KubeVirt with the slirp plugin.

Order of the product flow, each step undone in reverse on exit (also on failure and Ctrl-C):
cluster (kind creates or reuses; or a kubeconfig) -> KubeVirt (installed only when absent and
allowed) -> slirp binding registered (merged into the KubeVirt CR, restored exactly after) ->
a namespace of the run -> peer and client pods -> the VM -> VMI Running and AgentConnected ->
console (websocket) login -> SSH through a port-forward to the launcher pod.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import socket
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml
from kubernetes import client, config, watch

from slirp_conformance import progress, redaction, waits
from slirp_conformance.cluster import kubevirt_config, kubevirt_cr, versions
from slirp_conformance.cluster.kubevirt_install import KubeVirtInstallation
from slirp_conformance.console import Credentials
from slirp_conformance.errors import SetupError
from slirp_conformance.evidence import Evidence
from slirp_conformance.guest_profiles import FEDORA, PROFILES, profile_for_os_release
from slirp_conformance.kubevirt import launcher_dns, pod_streams
from slirp_conformance.kubevirt import peers as peer_pods
from slirp_conformance.kubevirt.console_websocket import ConsoleBridge
from slirp_conformance.kubevirt.vm_manifest import PART_OF, render_vm
from slirp_conformance.ssh_client import generate_keypair
from slirp_conformance.target import Contract, Target
from slirp_conformance.vmspec import VMSpec

log = logging.getLogger("slirp.kubevirt")


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
    peer_image: str | None = None  # None: peers.DEFAULT_IMAGE, or the one built here (--images-from-source)
    guest_profile: str = "auto"
    kind_cluster_name: str = "slirp-conformance"
    keep_cluster: bool = False
    preload_images: list[str] = field(default_factory=list)
    images_from_source: bool = False  # kind: kind, kubectl and the node image built here (cluster/kind_source.py)
    kind_nodes: int = 1
    namespace_suffix: str = ""


class KubeVirtTarget(Target):
    def __init__(self, spec: VMSpec, opts: ClusterOptions) -> None:
        self.name = opts.target
        self.opts = opts
        # An explicit --kubevirt-version must match the cluster; the version under test is always the
        # cluster's own (status.observedKubeVirtVersion), known once KubeVirt is found or installed.
        self.requested = versions.parse_kubevirt_version(opts.kubevirt_version) if opts.kubevirt_version else None
        self.version: versions.KubeVirtVersion | None = None
        if opts.guest_profile != "auto" and opts.guest_profile not in PROFILES:
            raise SetupError(f"--guest-profile {opts.guest_profile!r}: choose auto or one of {', '.join(PROFILES)}")
        # The login is the Fedora test image's (fedora, then sudo -i), with a per-run password
        # given through cloud-init; the profile is then read from the guest's /etc/os-release.
        self._credentials = Credentials("fedora", secrets.token_urlsafe(12), become_root="sudo -i")
        redaction.register(self._credentials.password)
        self.profile = replace(
            PROFILES.get(opts.guest_profile, FEDORA), credentials=self._credentials, ssh_user="fedora"
        )
        self.spec = spec  # 512Mi, as KubeVirt's own Fedora test VMs (src/slirp_conformance/vmspec.conformance_vm)
        self.namespace = f"slirp-conformance-{secrets.token_hex(3)}{opts.namespace_suffix}"
        # The search list is the launcher pod's (read once it runs, ``_read_pod_dns``); until then, none.
        self.contract = Contract.from_spec(self.spec, ())
        self._key = generate_keypair()
        self._stack = contextlib.ExitStack()
        self._bridge: ConsoleBridge | None = None
        self._kvm = False
        self._kind_facts: dict = {}
        self._kubevirt_images = None  # kubevirt_images.build.KubeVirtImages with --images-from-source
        self.launcher_pod: str | None = None
        self._nodes: dict = {}
        self._pod_dns: dict = {}
        self.registration = None
        self._workdir = Path(tempfile.mkdtemp(prefix="slirp-conformance-cluster-"))
        self._stack.callback(shutil.rmtree, self._workdir, ignore_errors=True)

    # -- clients ----------------------------------------------------------------------------------
    def new_api_client(self) -> client.ApiClient:
        """A fresh ApiClient for one stream (the client's stream helpers are not thread-safe)."""
        cfg = client.Configuration()
        config.load_kube_config(config_file=self._kubeconfig, context=self.opts.context, client_configuration=cfg)
        return client.ApiClient(cfg)

    # -- lifecycle --------------------------------------------------------------------------------
    def _start(self) -> None:
        self.register_binding()
        self._namespace()
        self.peers = peer_pods.deploy(self.core, self.namespace, self._peer_image())
        self._nodes = self._node_versions()
        with progress.phase(f"VM {self.spec.name}: until Running with its guest agent connected"):
            self._vm()
        self._console_login()

    def register_binding(self) -> None:
        """The first steps of ``_start``: the cluster, its KubeVirt (the version under test is the
        cluster's) and the slirp binding registered for that version (its sidecar image, the
        feature gate only below v1.5). ``close()`` restores the CR. Self-tests call it alone to
        check these decisions on clusters that boot no VM."""
        with progress.phase(
            "creating or reusing the kind cluster" if self.opts.target == "kind" else "checking the cluster"
        ):
            self._kubeconfig = self._cluster()
        redaction.register_kubeconfig(self._kubeconfig)
        self.api = self.new_api_client()
        self.core = client.CoreV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)
        # kind: emulate exactly when no usable /dev/kvm went into the node. An existing cluster's
        # nodes cannot be probed from here: emulation is the choice that always boots.
        with progress.phase(
            "KubeVirt: reading the installed release (installing it when absent and allowed), waiting until Available"
        ):
            installation = self._stack.enter_context(
                KubeVirtInstallation(
                    self.api,
                    self.requested or versions.default_version(),
                    use_emulation=not self._kvm,
                    manifests_dir=self.opts.kubevirt_manifests
                    or (self._kubevirt_images.manifests_dir if self._kubevirt_images else None),
                    expect_version=self.requested is not None,
                    install=self.opts.target == "kind" or self.opts.install_kubevirt,
                    # a kept kind cluster keeps the KubeVirt the suite installed in it: the next run
                    # finds it (its CR is then restored as found, like any existing one)
                    keep=self.opts.target == "kind" and self.opts.keep_cluster,
                )
            )
        self.version = versions.parse_kubevirt_version(installation.version)
        image = self.opts.sidecar_image or versions.slirp_sidecar_image(self.version)
        self.registration = self._stack.enter_context(
            kubevirt_config.slirp_binding_registered(
                self.api, image, enable_feature_gate=versions.needs_feature_gate(self.version)
            )
        )

    def _peer_image(self) -> str:
        if self.opts.peer_image:
            return self.opts.peer_image
        return self._kubevirt_images.peer_image if self._kubevirt_images else peer_pods.DEFAULT_IMAGE

    def _node_versions(self) -> dict:
        """Container runtime and kubelet versions: the ICMP outcome depends on the runtime."""
        infos = [n.status.node_info for n in self.core.list_node().items if n.status and n.status.node_info]
        return {
            "container_runtime": ",".join(sorted({i.container_runtime_version for i in infos})) or "unknown",
            "kubelet": ",".join(sorted({i.kubelet_version for i in infos})) or "unknown",
        }

    def _cluster(self) -> str:
        if self.opts.target == "cluster":
            from slirp_conformance.cluster.preflight import check_kubeconfig

            return check_kubeconfig(self.opts.kubeconfig)  # --kubeconfig, else $KUBECONFIG, else ~/.kube/config
        from slirp_conformance import docker_daemon
        from slirp_conformance.cluster.kind import KindCluster

        pins = versions.pins_for(self.requested or versions.default_version())
        # The Docker engine kind runs on: the environment's, else the project's dockerd, which stays up
        # for a kept cluster (hack/cluster-down.sh releases it) and stops with this run otherwise.
        if self.opts.keep_cluster:
            engine = docker_daemon.acquire(f"kind-cluster:{self.opts.kind_cluster_name}", persistent=True)
            if engine.host:
                os.environ["DOCKER_HOST"] = engine.host
        else:
            engine = self._stack.enter_context(docker_daemon.engine("kind-target"))
        docker_daemon.check_privileged(engine)
        node_image = None
        if self.opts.images_from_source:
            from slirp_conformance.cluster import kind_source

            node_image = kind_source.prepare(pins, engine).tag
        from slirp_conformance.cluster import kind_network

        kind = self._stack.enter_context(
            KindCluster(
                pins=pins,
                workdir=self._workdir,
                name=self.opts.kind_cluster_name,
                preload_images=self.opts.preload_images,
                keep=self.opts.keep_cluster,
                node_image=node_image,
                nodes=self.opts.kind_nodes,
                own_cni=self.opts.images_from_source,
                network=kind_network.NAME if self.opts.images_from_source or engine.project_started else None,
            )
        )
        self._kvm = bool(kind.kvm)
        if self.opts.images_from_source:
            self._kubevirt_images = self._load_kubevirt_images(str(pins.kubevirt))
        self._kind_facts = {
            "kind": pins.kind,
            "kind_node_image": kind.reused_node_image or kind.node_image,
            "kind_cluster_created": str(kind.created),
        }
        return str(kind.kubeconfig_path)

    def _load_kubevirt_images(self, version: str):
        """KubeVirt's images and release manifests of ``version`` built here (cached), loaded into
        every node; the install then uses those manifests (unless --kubevirt-manifests names others)."""
        from slirp_conformance.kubevirt_images import build, kind_load

        with progress.phase(f"KubeVirt {version}: its images and manifests built here (cached by version)"):
            built = build.build(version)
        with progress.phase(f"KubeVirt {version}: loading its images into kind cluster {self.opts.kind_cluster_name}"):
            kind_load.load(built, self.opts.kind_cluster_name)
        return built

    def _namespace(self) -> None:
        self.core.create_namespace(
            client.V1Namespace(metadata=client.V1ObjectMeta(name=self.namespace, labels=dict(PART_OF)))
        )
        self._stack.callback(self._delete_namespace)

    def _delete_namespace(self) -> None:
        try:
            self.core.delete_namespace(self.namespace)
        except client.ApiException as e:
            if e.status != 404:
                raise
        waits.wait_for(
            f"namespace {self.namespace} to be gone",
            lambda: _is_gone(lambda: self.core.read_namespace(self.namespace)),
            waits.timeout("resource-deleted"),
        )

    def _vm(self) -> None:
        manifest = render_vm(
            self.spec,
            namespace=self.namespace,
            image=self.opts.vm_image or f"quay.io/kubevirt/fedora-with-test-tooling-container-disk:{self.version}",
            authorized_key=self._key.public_openssh,
            password=self.profile.credentials.password,
        )
        create = lambda: self.custom.create_namespaced_custom_object(  # noqa: E731
            "kubevirt.io", "v1", self.namespace, "virtualmachines", manifest
        )
        if self.registration.propagation_verified:
            create()
        else:
            kubevirt_config.retry_while_config_stale(create)
        vmi = self._wait_vmi(
            lambda v: v.get("status", {}).get("phase") == "Running" and _condition(v, "AgentConnected"),
            "VMI Running and AgentConnected",
            waits.timeout("vmi-agent-connected"),
        )
        pods = self.core.list_namespaced_pod(
            self.namespace, label_selector=f"kubevirt.io/created-by={vmi['metadata']['uid']}"
        )
        if not pods.items:
            raise SetupError(f"no virt-launcher pod for VMI {self.spec.name} (label kubevirt.io/created-by)")
        self.launcher_pod = pods.items[0].metadata.name
        self.vmi = vmi
        self._read_pod_dns()

    def _read_pod_dns(self) -> None:
        """The guest's search list is what the sidecar read from the launcher pod's resolv.conf; the
        peer's DNS name is in the cluster domain that list names."""
        rc, out = self.exec_in_launcher(["cat", "/etc/resolv.conf"])
        if rc != 0:
            raise SetupError(
                f"cannot read /etc/resolv.conf in launcher pod {self.namespace}/{self.launcher_pod} "
                f"(exit {rc}: {out.strip()[:200]}); the expected DNS search list comes from there"
            )
        search = launcher_dns.sidecar_search_domains(out)
        self.contract = Contract.from_spec(self.spec, search)
        self.peers = replace(
            self.peers, dns_name=peer_pods.dns_name(self.namespace, launcher_dns.cluster_domain(search, self.namespace))
        )
        self._pod_dns = {"pod_dns_search": " ".join(search)}

    def _wait_vmi(self, done, what: str, budget: float) -> dict:
        """Watch the VMI until ``done(vmi)``; the timeout names the last phase and conditions."""
        last: dict = {}
        w = watch.Watch()
        try:
            for event in w.stream(
                self.custom.list_namespaced_custom_object,
                "kubevirt.io",
                "v1",
                self.namespace,
                "virtualmachineinstances",
                field_selector=f"metadata.name={self.spec.name}",
                timeout_seconds=int(budget),
            ):
                last = event["object"]
                if done(last):
                    return last
        finally:
            w.stop()
        status = last.get("status", {})
        raise waits.WaitTimeout(
            f"waited {budget:.0f} s for {what} of {self.namespace}/{self.spec.name}; last "
            f"phase {status.get('phase')!r}, conditions {status.get('conditions')}"
        )

    def _console_login(self) -> None:
        self._bridge = ConsoleBridge(self.new_api_client(), self.namespace, self.spec.name)
        self._open_console(
            self._bridge.sock, self._workdir / "console-transcript.log", f"{self.namespace}/{self.spec.name} console"
        )

    def _on_login(self) -> None:
        if self.opts.guest_profile == "auto":
            os_release = self._console.run("cat /etc/os-release").output
            found = profile_for_os_release(os_release)
            if found is None:
                raise SetupError(f"unknown guest OS ({os_release.splitlines()[:2]}): pass --guest-profile")
            self.profile = replace(found, credentials=self._credentials, ssh_user="fedora")

    # -- Target API -------------------------------------------------------------------------------
    def port_forward(self, port: int, timeout: float = 5) -> socket.socket:
        return pod_streams.port_forward(self.new_api_client, self.namespace, self.launcher_pod, port)

    def dial_guest_port(self, port: int, timeout: float = 5) -> socket.socket:
        pod_ip = self.core.read_namespaced_pod(self.launcher_pod, self.namespace).status.pod_ip
        return pod_streams.dial_from_pod(self.new_api_client, self.namespace, peer_pods.CLIENT_POD, pod_ip, port)

    def ping_peer_directly(self) -> dict:
        rc, out = pod_streams.exec_in_pod(
            self.new_api_client,
            self.namespace,
            peer_pods.CLIENT_POD,
            ["ping", "-c", "2", "-W", "2", self.peers.icmp_host],
        )
        return {"ok": rc == 0, "from": f"pod {peer_pods.CLIENT_POD}", "output": out.strip()}

    def icmp_evidence(self) -> dict:
        script = (
            "cat /proc/sys/net/ipv4/ping_group_range; for d in /proc/[0-9]*; do "
            "if tr '\\0' ' ' < $d/cmdline 2>/dev/null | grep -q -- '-netdev user'; then "
            "grep -E '^(Uid|Gid|CapEff|CapBnd):' $d/status; fi; done"
        )
        rc, out = pod_streams.exec_in_pod(
            self.new_api_client, self.namespace, self.launcher_pod, ["sh", "-c", script], container="compute"
        )
        lines = out.strip().splitlines()
        fields = {line.split(":")[0]: line.split(":", 1)[1].split() for line in lines[1:] if ":" in line}
        return {
            "ping_group_range": " ".join(lines[0].split()) if lines else None,
            "qemu_uid": int(fields["Uid"][1]) if "Uid" in fields else None,
            "qemu_gid": int(fields["Gid"][1]) if "Gid" in fields else None,
            "qemu_cap_eff": fields.get("CapEff", [None])[0],
            "qemu_cap_bnd": fields.get("CapBnd", [None])[0],
        }

    # -- KubeVirt-only views -----------------------------------------------------------------------
    @property
    def sidecar_image(self) -> str:
        return self.registration.sidecar_image

    def kubevirt_cr(self) -> dict:
        return kubevirt_cr.get_kubevirt(kubevirt_cr.as_api(self.api), self.registration.ref)

    def launcher_pod_object(self):
        return self.core.read_namespaced_pod(self.launcher_pod, self.namespace)

    def vmi_object(self) -> dict:
        return self.custom.get_namespaced_custom_object(
            "kubevirt.io", "v1", self.namespace, "virtualmachineinstances", self.spec.name
        )

    def exec_in_launcher(self, argv: list[str]) -> tuple[int, str]:
        return pod_streams.exec_in_pod(
            self.new_api_client, self.namespace, self.launcher_pod, argv, container="compute"
        )

    def try_unregistered_binding(self, binding: str) -> Evidence:
        """Create a VM whose interface names an unregistered binding; return why KubeVirt failed it
        (VMI condition or event message), then delete it and wait until it is gone."""
        name = f"vm-unregistered-{secrets.token_hex(2)}"
        manifest = render_vm(
            replace(self.spec, name=name),
            namespace=self.namespace,
            image="unused:never-pulled",
            authorized_key=self._key.public_openssh,
            password="unused",
            binding=binding,
        )
        ev = Evidence("unregistered-binding", {"vm": name, "binding": binding})
        try:
            self.custom.create_namespaced_custom_object(
                "kubevirt.io", "v1", self.namespace, "virtualmachines", manifest
            )
        except client.ApiException as e:  # refused at admission is a refusal too
            ev["message"], ev["where"] = e.body, "admission"
            return ev

        def reason() -> str | None:
            for event in self.core.list_namespaced_event(self.namespace).items:
                if event.involved_object.name == name and event.reason == "FailedCreate":
                    return event.message
            try:
                vmi = self.custom.get_namespaced_custom_object(
                    "kubevirt.io", "v1", self.namespace, "virtualmachineinstances", name
                )
            except client.ApiException:
                return None
            return next(
                (
                    c.get("message")
                    for c in vmi.get("status", {}).get("conditions") or []
                    if c.get("type") == "Synchronized" and c.get("status") == "False"
                ),
                None,
            )

        try:
            ev["message"] = waits.wait_for(
                f"KubeVirt to report why VM {name} cannot start", reason, waits.timeout("vmi-running")
            )
            ev["where"] = "controller"
        except waits.WaitTimeout as e:
            ev["message"] = str(e)
        finally:
            self._delete_vm(name)
        return ev

    def try_with_feature_gate_off(self) -> Evidence:
        """With NetworkBindingPlugins removed, a VM using a binding plugin must be refused."""
        name = f"vm-gate-off-{secrets.token_hex(2)}"
        manifest = render_vm(
            replace(self.spec, name=name),
            namespace=self.namespace,
            image="unused:never-pulled",
            authorized_key=self._key.public_openssh,
            password="unused",
        )
        ev = Evidence("feature-gate-off", {"vm": name})
        with kubevirt_config.feature_gate_off(self.api, self.registration.ref) as propagation:
            ev["propagation"] = propagation
            try:
                self.custom.create_namespaced_custom_object(
                    "kubevirt.io", "v1", self.namespace, "virtualmachines", manifest
                )
                ev["admitted"] = True
            except client.ApiException as e:
                ev["admitted"], ev["status"], ev["message"] = False, e.status, e.body
        if ev["admitted"]:
            self._delete_vm(name)
        return ev

    def _delete_vm(self, name: str) -> None:
        """Delete a VM of this run and wait until it is gone."""
        self.custom.delete_namespaced_custom_object("kubevirt.io", "v1", self.namespace, "virtualmachines", name)
        waits.wait_for(
            f"VM {name} to be deleted",
            lambda: _is_gone(
                lambda: self.custom.get_namespaced_custom_object(
                    "kubevirt.io", "v1", self.namespace, "virtualmachines", name
                )
            ),
            waits.timeout("resource-deleted"),
        )

    def describe(self) -> dict:
        return {
            "target": self.name,
            "kubevirt_version": str(self.version),
            "namespace": self.namespace,
            "sidecar_image": self.registration.sidecar_image if self.registration else "",
            "guest_profile": self.profile.name,
            **self._nodes,
            **self._kind_facts,
            **self._pod_dns,
        }

    def collect_artifacts(self, into: Path) -> None:
        """VM/VMI/pod YAML, events, compute and sidecar logs, the KubeVirt CR and the console
        transcript. Each piece is best effort: a failing API call is noted, not raised."""
        super().collect_artifacts(into)
        if not hasattr(self, "core"):
            return
        sanitize = self.api.sanitize_for_serialization
        pieces = {
            "kubevirt-cr.yaml": lambda: self.kubevirt_cr() if self.registration else None,
            "vm.yaml": lambda: self.custom.get_namespaced_custom_object(
                "kubevirt.io", "v1", self.namespace, "virtualmachines", self.spec.name
            ),
            "vmi.yaml": lambda: self.custom.get_namespaced_custom_object(
                "kubevirt.io", "v1", self.namespace, "virtualmachineinstances", self.spec.name
            ),
            "pods.yaml": lambda: sanitize(self.core.list_namespaced_pod(self.namespace)),
            "events.yaml": lambda: sanitize(self.core.list_namespaced_event(self.namespace)),
        }
        for name, read in pieces.items():
            try:
                into.joinpath(name).write_text(yaml.safe_dump(read(), sort_keys=False))
            except (client.ApiException, OSError, ValueError) as e:
                into.joinpath(name).write_text(f"# not collected: {type(e).__name__}: {e}\n")
        if self.launcher_pod:
            try:
                containers = [c.name for c in self.launcher_pod_object().spec.containers]
            except client.ApiException:
                containers = ["compute"]
            for container in containers:
                try:
                    log_text = self.core.read_namespaced_pod_log(
                        self.launcher_pod, self.namespace, container=container, tail_lines=2000
                    )
                except client.ApiException as e:
                    log_text = f"not collected: {e.status} {e.reason}"
                into.joinpath(f"{self.launcher_pod}-{container}.log").write_text(log_text)

    def _teardown(self) -> None:
        if self._bridge is not None:
            self._bridge.close()
            self._bridge = None
        self._stack.close()


def _is_gone(read) -> bool:
    """True when ``read()`` answers 404."""
    try:
        read()
        return False
    except client.ApiException as e:
        if e.status == 404:
            return True
        raise


def _condition(obj: dict, kind: str) -> bool:
    return any(
        c.get("type") == kind and c.get("status") == "True" for c in obj.get("status", {}).get("conditions") or []
    )
