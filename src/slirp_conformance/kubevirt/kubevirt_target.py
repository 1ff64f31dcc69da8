"""The ``kind`` and ``cluster`` targets: the conformance VM on KubeVirt with the slirp plugin.

The VM only: the cluster, KubeVirt and the binding registration it runs in are the
``KubeVirtEnvironment`` (``environment.py``), opened first and closed last. Order of the product
flow, each step undone in reverse on exit (also on failure and Ctrl-C): the environment -> a
namespace of the run -> peer and client pods -> the VM -> VMI Running and AgentConnected ->
console (websocket) login -> SSH through a port-forward to the launcher pod.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import shutil
import socket
import tempfile
from dataclasses import replace
from pathlib import Path

import yaml
from kubernetes import client

from slirp_conformance import progress, redaction, waits
from slirp_conformance.cluster import kubevirt_config, versions
from slirp_conformance.cluster.kubevirt_config import Registration
from slirp_conformance.console import Credentials
from slirp_conformance.errors import SetupError
from slirp_conformance.guest_profiles import FEDORA, PROFILES, GuestProfile, profile_for_os_release
from slirp_conformance.kubevirt import guest_service, launcher_dns, launcher_probes, pod_streams, vmi_start
from slirp_conformance.kubevirt import peers as peer_pods
from slirp_conformance.kubevirt.console_websocket import ConsoleBridge
from slirp_conformance.kubevirt.environment import ClusterOptions, KubeVirtEnvironment, kubevirt_environment
from slirp_conformance.kubevirt.quota_namespace import QuotaNamespace, quota_namespace
from slirp_conformance.kubevirt.run_namespace import RunNamespace, condition_true
from slirp_conformance.kubevirt.vm_manifest import render_vm
from slirp_conformance.ssh_client import generate_keypair
from slirp_conformance.target import ClusterService, Contract, Target, UdpSend
from slirp_conformance.vmspec import VMSpec

log = logging.getLogger("slirp.kubevirt")

__all__ = ["ClusterOptions", "KubeVirtTarget"]


class KubeVirtTarget(Target):
    """The conformance VM in the run's namespace of a ``KubeVirtEnvironment``. Besides the guest
    access every target gives, it is what the KubeVirt-only checks read and try
    (``checks.kubevirt.KubeVirtVM``)."""

    def __init__(self, spec: VMSpec, opts: ClusterOptions, beside: KubeVirtTarget | None = None) -> None:
        """``beside``: a started target whose environment, namespace and peers this VM shares (a
        second VM of another spec, ``variant``); it deletes only its own VM."""
        self.name = opts.target
        self._beside = beside
        self.opts = opts
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
        self.namespace_name: str = (
            beside.namespace_name if beside else f"slirp-conformance-{secrets.token_hex(3)}{opts.namespace_suffix}"
        )
        # The search list is the launcher pod's (read once it runs, ``_read_pod_dns``); until then, none.
        self.contract = Contract.from_spec(self.spec, ())
        self._key = generate_keypair()
        self._stack = contextlib.ExitStack()
        self._bridge: ConsoleBridge | None = None
        self.env: KubeVirtEnvironment | None = None
        self.run_namespace: RunNamespace | None = None
        self.launcher_pod: str | None = None
        self._vmi_uid: str | None = None
        self._cluster_domain: str | None = None
        self._guest_service: ClusterService | None = None
        self._nodes: dict[str, str] = {}
        self._pod_dns: dict[str, str] = {}
        self._workdir = Path(tempfile.mkdtemp(prefix="slirp-conformance-cluster-"))
        self._stack.callback(shutil.rmtree, self._workdir, ignore_errors=True)

    # -- lifecycle --------------------------------------------------------------------------------
    def _start(self) -> None:
        if self._beside is not None:
            main = self._beside
            self.env, self.run_namespace, self.peers, self._nodes = (
                main._environment(),
                main._namespace(),
                main.peers,
                main._nodes,
            )
            self._stack.callback(self._delete_own_vm)
        else:
            self.env = self._stack.enter_context(kubevirt_environment(self.opts, self._workdir))
            self.run_namespace = self._stack.enter_context(
                RunNamespace(self.env.core, self.env.custom, self.namespace_name)
            )
            self.peers = peer_pods.deploy(self.env.core, self.namespace_name, self._peer_image())
            self._nodes = self.env.node_versions()
        with progress.phase(f"VM {self.spec.name}: until Running with its guest agent connected"):
            self._vm()
        self._console_login()

    def variant(self, spec: VMSpec) -> KubeVirtTarget:
        return KubeVirtTarget(spec, self.opts, beside=self)

    def attempt_start(self, spec: VMSpec) -> str | None:
        """Create a VM of ``spec`` beside this one with the conformance VM's disk, and wait until its
        VMI runs (None) or KubeVirt says why it does not: refused at admission, or words of why
        (``vmi_start.start_state``: virt-handler's ``SyncFailed``, where a hook sidecar's error
        lands, virt-controller's ``FailedCreate``, an ended VMI) that stood ``vmi_start.WHY_SETTLES`` s without
        the VMI running; every word seen is returned. The VM is deleted again either way."""
        ns = self._namespace()
        manifest = render_vm(
            spec,
            namespace=ns.name,
            image=self._vm_image(),
            authorized_key=self._key.public_openssh,
            password=self._credentials.password,
        )
        try:
            ns.create_vm(manifest)
        except client.ApiException as e:
            return f"refused at admission: {e.status} {e.body}"
        settled = vmi_start.Settled(waits.scaled(vmi_start.WHY_SETTLES))
        try:
            state = waits.wait_for(
                f"VM {spec.name} to run, or KubeVirt's word of why not to stand {settled.seconds:.0f} s",
                lambda: vmi_start.start_state(ns, spec.name),
                waits.timeout("vmi-running"),
                accept=settled,
                describe=vmi_start.StartState.describe,
                max_interval=5,
            )
        finally:
            ns.delete_vm(spec.name)
        return None if state.running else " | ".join(settled.seen) or state.describe()

    def _delete_own_vm(self) -> None:
        if self.run_namespace is None:
            return
        try:
            self.run_namespace.delete_vm(self.spec.name)
        except client.ApiException as e:
            if e.status != 404:
                raise

    def _vm_image(self) -> str:
        return (
            self.opts.vm_image
            or f"quay.io/kubevirt/fedora-with-test-tooling-container-disk:{self._environment().version}"
        )

    def _peer_image(self) -> str:
        """--peer-image, else the busybox built here with --images-from-source, else the default."""
        built = self._environment().access.kubevirt_images
        return self.opts.peer_image or (built.peer_image if built else peer_pods.DEFAULT_IMAGE)

    def _environment(self) -> KubeVirtEnvironment:
        if self.env is None:
            raise RuntimeError(f"{self.name} target not started: no KubeVirt environment yet")
        return self.env

    def _namespace(self) -> RunNamespace:
        if self.run_namespace is None:
            raise RuntimeError(f"{self.name} target not started: no namespace yet")
        return self.run_namespace

    def _launcher(self) -> str:
        if self.launcher_pod is None:
            raise RuntimeError(f"{self.name} target not started: no launcher pod yet")
        return self.launcher_pod

    def _vm(self) -> None:
        env, ns = self._environment(), self._namespace()
        manifest = render_vm(
            self.spec,
            namespace=ns.name,
            image=self._vm_image(),
            authorized_key=self._key.public_openssh,
            password=self._credentials.password,
        )
        if env.registration.propagation_verified:
            ns.create_vm(manifest)
        else:
            kubevirt_config.retry_while_config_stale(lambda: ns.create_vm(manifest))
        vmi = ns.wait_vmi(
            self.spec.name,
            lambda v: v.get("status", {}).get("phase") == "Running" and condition_true(v, "AgentConnected"),
            "VMI Running and AgentConnected",
            waits.timeout("vmi-agent-connected"),
        )
        self.launcher_pod = ns.launcher_pod(vmi)
        self._vmi_uid = vmi["metadata"]["uid"]
        self._read_pod_dns()

    def _read_pod_dns(self) -> None:
        """The guest's search list is what the sidecar read from the launcher pod's resolv.conf; the
        peer's DNS name is in the cluster domain that list names."""
        rc, out = self.exec_in_launcher(["cat", "/etc/resolv.conf"])
        if rc != 0:
            raise SetupError(
                f"cannot read /etc/resolv.conf in launcher pod {self.namespace_name}/{self.launcher_pod} "
                f"(exit {rc}: {out.strip()[:200]}); the expected DNS search list comes from there"
            )
        search = launcher_dns.sidecar_search_domains(out)
        self.contract = Contract.from_spec(self.spec, search)
        self._cluster_domain = launcher_dns.cluster_domain(search, self.namespace_name)
        self.peers = replace(self.peers, dns_name=peer_pods.dns_name(self.namespace_name, self._cluster_domain))
        self._pod_dns = {"pod_dns_search": " ".join(search)}

    def _console_login(self) -> None:
        self._bridge = ConsoleBridge(self._environment().new_api_client(), self.namespace_name, self.spec.name)
        self._open_console(
            self._bridge.sock,
            self._workdir / "console-transcript.log",
            f"{self.namespace_name}/{self.spec.name} console",
        )

    def _recognise_guest(self) -> GuestProfile:
        """--guest-profile auto: the profile of the guest's /etc/os-release, logged in as before."""
        if self.opts.guest_profile != "auto":
            return self.profile
        os_release = self.console().run("cat /etc/os-release").output
        found = profile_for_os_release(os_release)
        if found is None:
            raise SetupError(f"unknown guest OS ({os_release.splitlines()[:2]}): pass --guest-profile")
        return replace(found, credentials=self._credentials, ssh_user="fedora")

    # -- Target API -------------------------------------------------------------------------------
    def port_forward(self, port: int, timeout: float = 5) -> socket.socket:
        return pod_streams.port_forward(self._environment().new_api_client, self.namespace_name, self._launcher(), port)

    def dial_guest_port(self, port: int, timeout: float = 5) -> socket.socket:
        env = self._environment()
        pod_ip = pod_streams.pod_ip(env.core.read_namespaced_pod(self._launcher(), self.namespace_name))
        if pod_ip is None:
            raise ConnectionError(f"launcher pod {self.namespace_name}/{self.launcher_pod} has no IP")
        return pod_streams.dial_from_pod(env.new_api_client, self.namespace_name, peer_pods.CLIENT_POD, pod_ip, port)

    def send_udp_to_pod(self, port: int, payload: bytes, wait: float = 2) -> UdpSend:
        """From the client pod to the launcher pod's address (busybox ``nc -u``)."""
        env = self._environment()
        pod_ip = pod_streams.pod_ip(env.core.read_namespaced_pod(self._launcher(), self.namespace_name))
        if pod_ip is None:
            return UdpSend("error", f"launcher pod {self.namespace_name}/{self.launcher_pod} has no IP")
        script = launcher_probes.udp_send_script(pod_ip, port, payload.decode().rstrip("\n"), wait)
        rc, out = pod_streams.exec_in_pod(
            env.new_api_client, self.namespace_name, peer_pods.CLIENT_POD, ["sh", "-c", script], timeout=wait + 30
        )
        return launcher_probes.udp_send_result(out, rc, wait)

    def listen_on_pod_loopback(self, host: str, port: int, token: str) -> None:
        """ncat in the compute container (the pod's network namespace, beside QEMU), bound to the
        pod's loopback only; proven listening by its own log before this returns."""
        rc, out = self.exec_in_launcher(["sh", "-c", launcher_probes.loopback_listen_script(host, port, token)])
        if rc != 0 or "started" not in out:
            raise SetupError(f"could not start a service on the launcher pod's {host}:{port}: rc={rc} {out[-300:]}")
        waits.wait_for(
            f"ncat on the launcher pod's {host}:{port} to listen",
            lambda: self.exec_in_launcher(["cat", launcher_probes.loopback_log(host, port)]),
            waits.scaled(30),
            accept=lambda r: launcher_probes.loopback_listening(r[1], host, port),
            describe=lambda r: f"rc={r[0]} log={r[1][-300:]!r}",
        )

    def pod_loopback_clients(self, host: str, port: int) -> list[str]:
        rc, out = self.exec_in_launcher(["cat", launcher_probes.loopback_log(host, port)])
        return launcher_probes.loopback_clients(out) if rc == 0 else []

    def pod_global_ipv6(self) -> list[str] | None:
        rc, out = self.exec_in_launcher(["ip", "-6", "-o", "addr", "show", "scope", "global"])
        return [w for line in out.splitlines() for w in line.split()[3:4]] if rc == 0 else None

    def sidecar_args(self) -> list[str] | None:
        """Read from the QEMU that libvirt started in the compute container: what the sidecar's
        hook put in the domain, as QEMU got it."""
        rc, out = self.exec_in_launcher(["sh", "-c", launcher_probes.QEMU_ARGV_SCRIPT])
        return launcher_probes.netdev_args(out.splitlines()) if rc == 0 else None

    def guest_service(self) -> ClusterService:
        """The ClusterIP Service ``guest_service.NAME`` on the listed TCP ports in front of the launcher
        pod: made once; its endpoints are read again at each call (the clause records what the
        Service had behind it when it dialled), the first time after a bounded wait for one."""
        env = self._environment()
        if self._guest_service is None:
            if self._vmi_uid is None or self._cluster_domain is None:
                raise RuntimeError(f"{self.name} target not started: no VMI yet")
            self._guest_service = guest_service.create(
                env.core,
                self.namespace_name,
                vmi_uid=str(self._vmi_uid),
                ports=tuple(self.contract.listed_tcp_ports),
                cluster_domain=self._cluster_domain,
                launcher_pod_ip=pod_streams.pod_ip(self.launcher_pod_object()),
            )
            return guest_service.with_endpoints(env.api, self.namespace_name, self._guest_service, wait=True)
        return guest_service.with_endpoints(env.api, self.namespace_name, self._guest_service, wait=False)

    def dial_from_cluster_client(self, host: str, port: int) -> socket.socket:
        return pod_streams.dial_from_pod(
            self._environment().new_api_client, self.namespace_name, peer_pods.CLIENT_POD, host, port
        )

    def ping_peer_directly(self) -> dict:
        rc, out = pod_streams.exec_in_pod(
            self._environment().new_api_client,
            self.namespace_name,
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
        _, out = self.exec_in_launcher(["sh", "-c", script])
        lines = out.strip().splitlines()
        fields = {line.split(":")[0]: line.split(":", 1)[1].split() for line in lines[1:] if ":" in line}
        return {
            "ping_group_range": " ".join(lines[0].split()) if lines else None,
            "qemu_uid": int(fields["Uid"][1]) if "Uid" in fields else None,
            "qemu_gid": int(fields["Gid"][1]) if "Gid" in fields else None,
            "qemu_cap_eff": fields.get("CapEff", [None])[0],
            "qemu_cap_bnd": fields.get("CapBnd", [None])[0],
        }

    # -- what KubeVirt shows of the VM (checks.kubevirt.KubeVirtVM) --------------------------------
    @property
    def version(self) -> versions.KubeVirtVersion:
        return self._environment().version

    @property
    def sidecar_image(self) -> str:
        return self._environment().registration.sidecar_image

    def kubevirt_cr(self) -> dict:
        return self._environment().kubevirt_cr()

    def launcher_pod_object(self) -> client.V1Pod:
        return self._environment().core.read_namespaced_pod(self._launcher(), self.namespace_name)

    def vmi_object(self) -> dict:
        return self._namespace().read_vmi(self.spec.name)

    def exec_in_launcher(self, argv: list[str]) -> tuple[int, str]:
        return pod_streams.exec_in_pod(
            self._environment().new_api_client, self.namespace_name, self._launcher(), argv, container="compute"
        )

    def create_vm(self, name: str, *, binding: str | None = None, bootable: bool = False) -> None:
        """A VM like the conformance VM, named ``name``, in the run's namespace, whose disk image
        is never pulled unless ``bootable`` (then the conformance VM's: QEMU really starts;
        ``binding`` overrides the interface's binding name). A refusal at admission raises
        ``client.ApiException``."""
        self._namespace().create_vm(self._render_copy(name, self.namespace_name, binding=binding, bootable=bootable))

    def binding_registered_as(self, name: str, sidecar_image: str) -> contextlib.AbstractContextManager[Registration]:
        return self._environment().binding_registered_as(name, sidecar_image)

    def launcher_pod_of(self, vmi: dict) -> client.V1Pod:
        return self._environment().core.read_namespaced_pod(self._namespace().launcher_pod(vmi), self.namespace_name)

    def exec_in_pod(self, pod: str, argv: list[str]) -> tuple[int, str]:
        return pod_streams.exec_in_pod(
            self._environment().new_api_client, self.namespace_name, pod, argv, container="compute"
        )

    def quota_namespace(self, hard: dict[str, str]) -> contextlib.AbstractContextManager[QuotaNamespace]:
        env = self._environment()

        def render(name: str, namespace: str) -> dict:
            return self._render_copy(name, namespace, binding=None, bootable=True)

        return quota_namespace(env.core, env.custom, f"{self.namespace_name}-quota", hard, render)

    def sidecar_resources_set(self, resources: dict) -> contextlib.AbstractContextManager[str]:
        return self._environment().sidecar_resources_set(resources)

    def _render_copy(self, name: str, namespace: str, *, binding: str | None, bootable: bool) -> dict:
        return render_vm(
            replace(self.spec, name=name),
            namespace=namespace,
            image=self._vm_image() if bootable else "unused:never-pulled",
            authorized_key=self._key.public_openssh,
            password="unused",
            binding=binding,
        )

    def delete_vm(self, name: str) -> None:
        self._namespace().delete_vm(name)

    def read_vmi(self, name: str) -> dict:
        return self._namespace().read_vmi(name)

    def event_messages(self, involved: str, reason: str) -> list[str]:
        return self._namespace().event_messages(involved, reason)

    def feature_gate_off(self) -> contextlib.AbstractContextManager[str]:
        return self._environment().feature_gate_off()

    # -- reports ----------------------------------------------------------------------------------
    def describe(self) -> dict:
        env = self.env.describe() if self.env is not None else {}
        return {
            "target": self.name,
            "kubevirt_version": env.pop("kubevirt_version", "None"),
            "namespace": self.namespace_name,
            "sidecar_image": env.pop("sidecar_image", ""),
            "guest_profile": self.profile.name,
            **self._nodes,
            **env,  # the kind cluster's facts
            **self._pod_dns,
        }

    def collect_artifacts(self, into: Path) -> None:
        """VM/VMI/pod YAML, events, compute and sidecar logs, the KubeVirt CR and the console
        transcript. Each piece is best effort: a failing API call is noted, not raised."""
        super().collect_artifacts(into)
        if self.env is None:
            return
        env = self.env
        pieces = {
            "kubevirt-cr.yaml": lambda: env.kubevirt_cr() if env.registered else None,
            **RunNamespace(env.core, env.custom, self.namespace_name).artifact_readers(self.spec.name),
        }
        for name, read in pieces.items():
            try:
                into.joinpath(name).write_text(yaml.safe_dump(read(), sort_keys=False))
            except (client.ApiException, OSError, ValueError) as e:
                into.joinpath(name).write_text(f"# not collected: {type(e).__name__}: {e}\n")
        if self.launcher_pod:
            try:
                containers = pod_streams.container_names(self.launcher_pod_object())
            except client.ApiException:
                containers = ["compute"]
            for container in containers:
                try:
                    log_text = env.core.read_namespaced_pod_log(
                        self.launcher_pod, self.namespace_name, container=container, tail_lines=2000
                    )
                except client.ApiException as e:
                    log_text = f"not collected: {e.status} {e.reason}"
                into.joinpath(f"{self.launcher_pod}-{container}.log").write_text(log_text)

    def _teardown(self) -> None:
        if self._bridge is not None:
            self._bridge.close()
            self._bridge = None
        self._stack.close()
