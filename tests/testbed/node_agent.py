"""The test bed's node agent: the part of a node that only the project can play.

virt-handler (which needs cgo, libvirt and a container runtime) and the container runtime of the
virt-launcher pod are replaced by one local process, ``python -m tests.testbed.node_agent CONFIG``,
started by ``hack/testbed.sh up`` after virt-controller and stopped by ``down`` like every other
component. It authenticates as KubeVirt's handler service account user (``kubevirt.
service_account_kubeconfig``) and, on the real API server:

- watches VMIs and pods; when virt-controller has handed a VMI to this node (phase Scheduled,
  ``status.nodeName`` = the kwok node, its virt-launcher pod Running there) it boots the
  reference VM (``ReferenceVM``, the pod-like lab) with the QEMU network arguments of the REAL
  slirp sidecar run on the REAL VMI as virt-api and virt-controller produced it, and the launcher
  pod's resolv.conf (``sidecar_render.render_vmis``). The lab's addresses are the pods' own:
  the launcher pod's IP in the pod namespace, the peer pod's IP on the cluster side. The guest
  is the busybox reference guest, or (``up --reference-guest fedora``) the Fedora-like flavour
  that stands for the bed's KubeVirt version's test image (``fedora_like.flavour_for``), booted
  from a cidata disk of exactly the VMI's own ``cloudInitNoCloud`` volume, as virt-launcher
  writes it. It boots slower (20-60 s to ``login:`` under TCG); no wait of the agent's spans
  the boot, the login prompt only turns AgentConnected True on a later pass;
- publishes the VM's serial console at ``node_layout.console_socket`` (a symlink) for the
  virt-handler console endpoint;
- reports VMI status as virt-handler v1.1.0 does (pkg/virt-handler/vm.go): phase Running once
  QEMU runs, LiveMigratable=False reason InterfaceNotLiveMigratable with its v1.1.0 message
  (checkNetworkInterfacesForMigration), migrationMethod BlockMigration (its container and
  cloud-init disks are local: checkVolumesForMigration), the machine type; Ready comes from
  virt-controller (syncReadyConditionFromPod). The reference guest has no guest agent:
  AgentConnected turns True, and ``status.interfaces`` gets what the agent would report (the
  guest's slirp lease, the MAC), once the guest prints its login prompt;
- stops the VM when the VMI is deleted (phase Succeeded, as a shut-down domain) or its pod goes
  (phase Failed); virt-controller then removes its finalizers, so deletion completes;
- serves the kubelet's exec and port-forward for the launcher pod and the other pods of that
  namespace (``node_kubelet``); everything else goes on to kwok;
- writes virt-handler's heartbeat on the node (``kubevirt.io/heartbeat``, ``kubevirt.io/
  schedulable=true``), so virt-controller treats a node whose agent died as virt-handler's.

The labs die with the agent (parent-death signal, PID namespaces): ``down`` leaves no QEMU or
namespace behind even when it has to SIGKILL the agent.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ipaddress
import json
import logging
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from kubernetes import client, config, watch

from slirp_conformance import waits
from slirp_conformance.errors import SetupError
from slirp_conformance.reference import sidecar_render
from slirp_conformance.reference.fedora_like import Flavour, flavour_for
from slirp_conformance.reference.reference_vm import QemuOptions, ReferenceVM, pod_resolv_conf
from tests.kube_api.conditions import cond, now
from tests.testbed import node_layout
from tests.testbed import node_vmi_guest as launcher
from tests.testbed.node_pod_dns import is_peer, peer_dns_records, pod_search_list

log = logging.getLogger("slirp.testbed.node_agent")

CLUSTER_DOMAIN = "cluster.local"  # the bed's kubelet --cluster-domain, unless node_layout.kubelet_dns_file says
LAB_PREFIX = 16  # the bed's pod CIDR (bed.POD_CIDR): every pod address is on the lab's veth
# The cluster side of a lab with no peer pod in its namespace: far beyond the addresses kwok
# hands out from the start of the pod CIDR.
LONE_PEER_IP = "10.244.255.254"
FINAL_PHASES = ("Succeeded", "Failed")
# v1.1.0 checkNetworkInterfacesForMigration (pkg/virt-handler/vm.go)
NOT_MIGRATABLE = (
    "cannot migrate VMI which does not use masquerade to connect to the pod network or bridge with "
    "kubevirt.io/allow-pod-bridge-network-live-migration VM annotation"
)
RESYNC_SECONDS = 2.0  # a level-triggered pass also runs this often (watches wake it at once)
# virt-handler's heartbeat (pkg/virt-handler/heartbeat/heartbeat.go, v1.1.0: every minute, jittered):
# virt-controller fails the VMIs of a node whose heartbeat is older than 5 minutes (watch/node.go).
HEARTBEAT_SECONDS = 60.0
HEARTBEAT_ANNOTATION = "kubevirt.io/heartbeat"
SCHEDULABLE_LABEL = "kubevirt.io/schedulable"
REFERENCE_GUESTS = ("busybox", "fedora")  # what `up --reference-guest` boots behind each VMI


@dataclass
class AgentConfig:
    kubeconfig: str
    state_dir: str
    node_name: str
    kubevirt_version: str
    kubelet_port: int
    kwok_address: str  # host:port of kwok's own kubelet server (requests the agent does not serve)
    serving_cert: str
    serving_key: str
    ca_file: str
    kubelet_client_cert: str  # what the API server presents; the agent presents it to kwok
    kubelet_client_key: str
    kubelet_client_cn: str
    exec_namespace: str  # kwok's ClusterExec namespace: always forwarded to kwok
    timeout_scale: float = 1.0
    reference_guest: str = "busybox"  # one of REFERENCE_GUESTS

    @classmethod
    def load(cls, path: Path) -> AgentConfig:
        return cls(**json.loads(path.read_text()))


@dataclass
class Runtime:
    """One VMI's VM on this node."""

    uid: str
    namespace: str
    name: str
    vm: ReferenceVM | None = None
    closed: bool = False
    failed: str = ""
    agent_reported: bool = False


def _set_cond(status: dict, new: dict) -> None:
    old = next((c for c in status.get("conditions") or [] if c["type"] == new["type"]), None)
    if old is not None and all(old.get(k) == new.get(k) for k in ("status", "reason", "message")):
        return
    status["conditions"] = [c for c in status.get("conditions") or [] if c["type"] != new["type"]] + [new]


def _phase(status: dict, phase: str) -> None:
    if status.get("phase") != phase:
        status["phase"] = phase
        status.setdefault("phaseTransitionTimestamps", []).append({"phase": phase, "phaseTransitionTimestamp": now()})


def reference_guest_flavour(reference_guest: str, kubevirt_version: str) -> Flavour | None:
    """The Fedora-like flavour standing for ``kubevirt_version``'s test image, or None for the
    busybox guest. SetupError (one line) for a name not in REFERENCE_GUESTS or a version no
    flavour stands for."""
    if reference_guest not in REFERENCE_GUESTS:
        raise SetupError(f"--reference-guest {reference_guest!r} is not one of {', '.join(REFERENCE_GUESTS)}")
    return flavour_for(kubevirt_version) if reference_guest == "fedora" else None


def lab_addresses(launcher_pod: dict, pods: list[dict]) -> tuple[str, str, int]:
    """(pod IP, cluster-side IP, prefix): the launcher pod's IP, and the first Running peer pod's
    of its namespace (the lab's peer services answer there, as the peer pod would)."""
    ns = launcher_pod["metadata"]["namespace"]
    peers = sorted(
        (
            p
            for p in pods
            if p["metadata"].get("namespace") == ns and is_peer(p) and (p.get("status") or {}).get("podIP")
        ),
        key=lambda p: p["metadata"]["name"],
    )
    peer_ip = peers[0]["status"]["podIP"] if peers else LONE_PEER_IP
    return launcher_pod["status"]["podIP"], peer_ip, LAB_PREFIX


def guest_interface(vmi: dict, network_args: list[str]) -> dict:
    """``status.interfaces[0]`` as the guest agent reports a slirp NIC: the guest's first lease
    (.15 of the slirp network) and the MAC QEMU gives the NIC (the sidecar's ``mac``, else QEMU's
    default)."""
    spec = launcher.vm_spec(vmi)
    guest_ip = str(ipaddress.IPv4Network(spec.network.cidr)[15])
    device = next((json.loads(a) for a in network_args if a.startswith("{")), {})
    return {
        "name": spec.interface.name,
        "interfaceName": "eth0",
        "ipAddress": guest_ip,
        "ipAddresses": [guest_ip],
        "mac": device.get("mac", "52:54:00:12:34:56"),
        "infoSource": "guest-agent",
        "queueCount": 1,
    }


class NodeAgent:
    def __init__(self, cfg: AgentConfig) -> None:
        self.cfg = cfg
        self.state_dir = Path(cfg.state_dir)
        api_config = client.Configuration()
        config.load_kube_config(config_file=cfg.kubeconfig, client_configuration=api_config)
        self.api = client.ApiClient(api_config)
        self.core = client.CoreV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)
        self.runtimes: dict[str, Runtime] = {}
        self.pods: dict[tuple[str, str], dict] = {}  # pods of this node, for the kubelet endpoints
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="vm")
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.lock = threading.Lock()

    # -- API helpers ---------------------------------------------------------------------------
    def _list(self) -> tuple[list[dict], list[dict], list[dict]]:
        pods = json.loads(
            self.core.list_pod_for_all_namespaces(
                field_selector=f"spec.nodeName={self.cfg.node_name}",
                _preload_content=False,
                _request_timeout=waits.timeout("api-probe") * 6,
            ).data
        )["items"]
        services = json.loads(
            self.core.list_service_for_all_namespaces(
                _preload_content=False, _request_timeout=waits.timeout("api-probe") * 6
            ).data
        )["items"]
        vmis = self.custom.list_cluster_custom_object(
            "kubevirt.io", "v1", "virtualmachineinstances", _request_timeout=waits.timeout("api-probe") * 6
        )["items"]
        return vmis, pods, services

    def update_vmi_status(self, namespace: str, name: str, uid: str, change) -> None:
        """Read, ``change(status)``, write back (PUT with the read resourceVersion), as virt-handler's
        Update does; a conflict is retried on the object as it is then."""
        for _ in range(5):
            try:
                vmi = self.custom.get_namespaced_custom_object(
                    "kubevirt.io", "v1", namespace, "virtualmachineinstances", name
                )
            except client.ApiException as e:
                if e.status == 404:
                    return
                raise
            if vmi["metadata"]["uid"] != uid:
                return
            before = json.dumps(vmi.get("status") or {}, sort_keys=True)
            status = vmi.setdefault("status", {})
            change(status)
            if json.dumps(status, sort_keys=True) == before:
                return
            try:
                self.custom.replace_namespaced_custom_object(
                    "kubevirt.io", "v1", namespace, "virtualmachineinstances", name, vmi
                )
                return
            except client.ApiException as e:
                if e.status not in (409, 404):
                    raise
                if e.status == 404:
                    return
        log.warning("VMI %s/%s: status update kept conflicting; the next pass retries", namespace, name)

    # -- the loop ------------------------------------------------------------------------------
    def _watch(self, what: str, lister, *args) -> None:
        """Wake the reconcile loop on every event (a watch that ends is restarted)."""
        while not self.stopping.is_set():
            w = watch.Watch()
            try:
                for _ in w.stream(lister, *args, timeout_seconds=60):
                    self.wake.set()
                    if self.stopping.is_set():
                        break
            except Exception as e:  # noqa: BLE001 - a broken watch is restarted; the resync covers the gap
                log.info("watch of %s ended (%s); restarting", what, e)
                self.stopping.wait(1)
            finally:
                w.stop()

    def run_reconciler(self) -> None:
        for what, lister, args in (
            ("VMIs", self.custom.list_cluster_custom_object, ("kubevirt.io", "v1", "virtualmachineinstances")),
            ("pods", self.core.list_pod_for_all_namespaces, ()),
        ):
            threading.Thread(target=self._watch, args=(what, lister, *args), daemon=True, name=f"watch-{what}").start()
        last_heartbeat = 0.0
        while not self.stopping.is_set():
            self.wake.wait(RESYNC_SECONDS)
            self.wake.clear()
            if self.stopping.is_set():
                break
            try:
                if time.monotonic() - last_heartbeat >= HEARTBEAT_SECONDS:
                    self.heartbeat()
                    last_heartbeat = time.monotonic()
                self.reconcile(*self._list())
            except Exception:
                log.exception("reconcile pass failed; the next one retries")

    def heartbeat(self) -> None:
        """What virt-handler writes on its node: schedulable, and the time it last said so."""
        self.core.patch_node(
            self.cfg.node_name,
            {"metadata": {"labels": {SCHEDULABLE_LABEL: "true"}, "annotations": {HEARTBEAT_ANNOTATION: now()}}},
            _request_timeout=waits.timeout("api-probe") * 6,
        )

    def reconcile(self, vmis: list[dict], pods: list[dict], services: list[dict]) -> None:
        self.pods = {(p["metadata"]["namespace"], p["metadata"]["name"]): p for p in pods}
        seen = set()
        for vmi in vmis:
            status = vmi.get("status") or {}
            if status.get("nodeName") != self.cfg.node_name:
                continue
            md = vmi["metadata"]
            if (md.get("annotations") or {}).get(node_layout.AGENT_SKIP_ANNOTATION) == "skip":
                continue
            uid, ns, name = md["uid"], md["namespace"], md["name"]
            seen.add(uid)
            rt = self.runtimes.get(uid)
            pod = next(
                (p for p in pods if (p["metadata"].get("labels") or {}).get("kubevirt.io/created-by") == uid), None
            )
            pod_up = (
                pod is not None
                and not pod["metadata"].get("deletionTimestamp")
                and (pod.get("status") or {}).get("phase") == "Running"
                and pod["status"].get("podIP")
            )
            phase = status.get("phase")
            if phase in FINAL_PHASES:
                if rt is not None and not rt.closed:
                    self._stop(rt)
                continue
            if md.get("deletionTimestamp"):
                # virt-handler shuts the domain down; a domain shut off on request is Succeeded.
                if rt is not None:
                    self._stop(rt)
                self.update_vmi_status(
                    ns,
                    name,
                    uid,
                    lambda s: (_phase(s, "Succeeded"), _set_cond(s, cond("Ready", "False", "PodTerminating"))),
                )
                continue
            if not pod_up:
                if rt is not None and phase in ("Scheduled", "Running"):
                    # The launcher went away under a started VM: virt-handler finds no domain (or an
                    # unresponsive launcher) -> Failed.
                    self._stop(rt)
                    self.update_vmi_status(ns, name, uid, lambda s: _phase(s, "Failed"))
                continue
            if rt is None and phase == "Scheduled":
                rt = self.runtimes[uid] = Runtime(uid, ns, name)
                self.pool.submit(self._boot, rt, vmi, pod, pods, services)
            elif rt is not None and rt.vm is not None and not rt.agent_reported and phase == "Running":
                self._report_guest_agent(rt)
        for uid, rt in list(self.runtimes.items()):
            if uid not in seen:
                self._stop(rt)
                self.runtimes.pop(uid, None)

    # -- one VM --------------------------------------------------------------------------------
    def _pod_sysctls(self) -> dict[str, str]:
        path = node_layout.pod_sysctls_file(self.state_dir)
        return dict(json.loads(path.read_text())) if path.exists() else {}

    def _kubelet_dns(self) -> tuple[str, tuple[str, ...]]:
        """(cluster domain, the node's search domains) for a launcher pod's resolv.conf."""
        path = node_layout.kubelet_dns_file(self.state_dir)
        dns = json.loads(path.read_text()) if path.exists() else {}
        return dns.get("cluster_domain", CLUSTER_DOMAIN), tuple(dns.get("node_search", ()))

    def _boot(self, rt: Runtime, vmi: dict, pod: dict, pods: list[dict], services: list[dict]) -> None:
        ns, name = rt.namespace, rt.name
        try:
            addresses = lab_addresses(pod, pods)
            cluster_domain, node_search = self._kubelet_dns()
            search = pod_search_list(ns, cluster_domain, node_search)
            resolv = pod_resolv_conf(search, addresses[1])
            (rendering,) = sidecar_render.render_vmis(self.cfg.kubevirt_version, [(vmi, resolv)])
            if isinstance(rendering, sidecar_render.SidecarRejected):
                raise RuntimeError(
                    f"the slirp sidecar of KubeVirt {self.cfg.kubevirt_version} rejects the VMI: {rendering}"
                )
            key, password = launcher.cloud_init(vmi)
            flavour = reference_guest_flavour(self.cfg.reference_guest, self.cfg.kubevirt_version)
            log.info(
                "VMI %s/%s: booting the %s",
                ns,
                name,
                f"Fedora-like reference guest {flavour}" if flavour else "busybox reference guest",
            )
            vm = ReferenceVM(
                launcher.vm_spec(vmi),
                QemuOptions(sysctls=self._pod_sysctls()),
                authorized_key=key,
                password=password,
                fedora_like=flavour,
                # the VMI's own cloudInitNoCloud, as virt-launcher writes its cidata disk
                nocloud=launcher.nocloud(vmi) if flavour else None,
                search_domains=search,
                dns_records=peer_dns_records(ns, cluster_domain, addresses[1], pods, services),
                addresses=addresses,
                network_args=(
                    rendering.args,
                    {
                        "sidecar_render": "go",
                        "sidecar_kubevirt_version": self.cfg.kubevirt_version,
                        "sidecar_input": "the cluster's VMI",
                    },
                ),
            )
            with self.lock:
                if rt.closed:
                    return
                rt.vm = vm
            vm.start()
        except Exception as e:
            log.exception("VMI %s/%s failed to start", ns, name)
            rt.failed = str(e)
            self._stop(rt)
            message = f"failed to start the VM: {e}"
            self.update_vmi_status(
                ns,
                name,
                rt.uid,
                lambda s: (
                    _phase(s, "Failed"),
                    _set_cond(s, cond("Synchronized", "False", "Synchronizing with the Domain failed.", message)),
                ),
            )
            return
        if rt.closed:
            vm.close()
            return
        link = node_layout.console_socket(self.state_dir, ns, name)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.unlink(missing_ok=True)
        link.symlink_to(vm.run_dir / "qemu" / "console.sock")
        machine = ((vmi["spec"].get("domain") or {}).get("machine") or {}).get("type") or "q35"

        def running(s: dict) -> None:
            _phase(s, "Running")
            s["migrationMethod"] = "BlockMigration"
            s["machine"] = {"type": machine}
            _set_cond(s, cond("LiveMigratable", "False", "InterfaceNotLiveMigratable", NOT_MIGRATABLE))

        self.update_vmi_status(ns, name, rt.uid, running)
        log.info("VMI %s/%s Running: QEMU %s", ns, name, " ".join(vm.network_args))
        self.wake.set()

    def _report_guest_agent(self, rt: Runtime) -> None:
        """The reference guest has no guest agent: its login prompt stands for the agent connecting."""
        vm = rt.vm
        try:
            booted = vm.run_dir is not None and b"login:" in (vm.run_dir / "qemu" / "console.log").read_bytes()
        except OSError:
            booted = False
        if not booted:
            return
        vmi = self.custom.get_namespaced_custom_object(
            "kubevirt.io", "v1", rt.namespace, "virtualmachineinstances", rt.name
        )
        iface = guest_interface(vmi, vm.network_args or [])

        def agent(s: dict) -> None:
            _set_cond(
                s, {"type": "AgentConnected", "status": "True", "lastProbeTime": now(), "lastTransitionTime": None}
            )
            s["interfaces"] = [iface]

        self.update_vmi_status(rt.namespace, rt.name, rt.uid, agent)
        rt.agent_reported = True

    def _stop(self, rt: Runtime) -> None:
        with self.lock:
            if rt.closed:
                return
            rt.closed = True
            vm = rt.vm
        shutil.rmtree(node_layout.vmi_dir(self.state_dir, rt.namespace, rt.name), ignore_errors=True)
        if vm is not None:
            self.pool.submit(vm.close)

    def lab_for_pod(self, pod: dict) -> tuple[ReferenceVM | None, str]:
        """Which side of which lab a container of ``pod`` lives in: the launcher pod's containers in
        the pod namespace of its VMI's lab, other pods of that namespace on its cluster side."""
        md = pod["metadata"]
        uid = (md.get("labels") or {}).get("kubevirt.io/created-by")
        if uid:
            rt = self.runtimes.get(uid)
            return (rt.vm if rt is not None and not rt.closed else None), "pod"
        for rt in list(self.runtimes.values()):
            if rt.namespace == md.get("namespace") and rt.vm is not None and not rt.closed and rt.vm.run_dir:
                return rt.vm, "peer"
        return None, "peer"

    def close_all(self) -> None:
        self.stopping.set()
        self.wake.set()
        for rt in list(self.runtimes.values()):
            with self.lock:
                rt.closed = True
            if rt.vm is not None:
                rt.vm.close()
        self.pool.shutdown(wait=True, cancel_futures=True)
        for rt in list(self.runtimes.values()):  # a start still running when the stop came
            if rt.vm is not None:
                rt.vm.close()
        shutil.rmtree(self.state_dir / "node-agent", ignore_errors=True)


async def _serve(agent: NodeAgent, stop: asyncio.Event) -> None:
    from tests.testbed import node_kubelet

    server = await node_kubelet.serve(agent)
    loop = asyncio.get_running_loop()
    reconciler = loop.run_in_executor(None, agent.run_reconciler)
    print(json.dumps({"ready": True, "kubelet_port": agent.cfg.kubelet_port}), flush=True)
    try:
        await stop.wait()
    finally:
        agent.stopping.set()
        agent.wake.set()
        await server.close()
        await loop.run_in_executor(None, agent.close_all)
        await asyncio.wait_for(reconciler, waits.timeout("api-probe") * 6)


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    cfg = AgentConfig.load(Path(argv[0]))
    waits.set_timeout_scale(cfg.timeout_scale)
    agent = NodeAgent(cfg)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await _serve(agent, stop)

    asyncio.run(run())
    return 0


def start(testbed, kubevirt_version: str, reference_guest: str = "busybox") -> None:
    """Start the agent as a component of ``testbed`` (after virt-controller); ready once its
    kubelet endpoint listens. ``reference_guest``: one of REFERENCE_GUESTS, checked by the caller
    (``reference_guest_flavour``) before anything is built or started."""
    import os

    from tests.testbed import bed, kubevirt, processes

    cfg = AgentConfig(
        kubeconfig=str(kubevirt.service_account_kubeconfig(testbed, "node-agent", kubevirt.HANDLER_SERVICE_ACCOUNT)),
        state_dir=str(testbed.state),
        node_name=bed.NODE_NAME,
        kubevirt_version=kubevirt_version,
        kubelet_port=testbed.record.ports["node-kubelet"],
        kwok_address=f"{bed.LOOPBACK}:{testbed.record.ports['kwok']}",
        serving_cert=str(testbed.kwok_serving.cert),
        serving_key=str(testbed.kwok_serving.key),
        ca_file=str(testbed.ca.pair.cert),
        kubelet_client_cert=str(testbed.kubelet_client.cert),
        kubelet_client_key=str(testbed.kubelet_client.key),
        kubelet_client_cn=bed.KUBELET_CLIENT_CN,
        exec_namespace=bed.EXEC_NAMESPACE,
        timeout_scale=waits.timeout("api-probe") / waits.TIMEOUTS["api-probe"],
        reference_guest=reference_guest,
    )
    path = testbed.state / "node-agent.json"
    path.write_text(json.dumps(cfg.__dict__, indent=1))
    repo = Path(__file__).resolve().parents[2]
    proc = testbed.spawn(
        "node-agent",
        [sys.executable, "-m", "tests.testbed.node_agent", str(path)],
        env={**os.environ, "PYTHONPATH": str(repo)},
    )
    testbed.wait_ready(
        proc,
        f"the node agent's kubelet endpoint on port {cfg.kubelet_port}",
        lambda: processes.listening(cfg.kubelet_port),
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
