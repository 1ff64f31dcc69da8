"""virt-controller and virt-handler: VMs start VMIs, VMIs get a virt-launcher pod backed by a
real ReferenceVM (QEMU + libslirp in a pod-like lab); the kubelet's part for that pod.

The guest behind a VMI is the busybox reference guest.

VMI phases go Pending -> Scheduling (pod created) -> Scheduled (node chosen, lab starting) ->
Running (QEMU runs). Ready and AgentConnected turn True together once the guest's serial log
shows a login prompt (the reference guest has no agent: emulated). LiveMigratable is False with
reason InterfaceNotLiveMigratable (slirp is not migratable). ``status.interfaces`` carries what
the guest agent would report for slirp: the guest's first lease (``.15`` of the slirp CIDR).
The VM copies the VMI's conditions and gets printableStatus Starting/Running/Stopping/Stopped/
Terminating/CrashLoopBackOff (a failed VMI of an ``Always`` VM is restarted with backoff).
Containers of other pods (see ``core``) reach the lab of a VM in their namespace: exec and
port-forward land in its peer namespace (``lab_for_pod``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import copy
import ipaddress
import logging
import uuid
from dataclasses import dataclass, field

from fixtures.reference.reference_vm import PEER_IP, POD_IP, QemuOptions, ReferenceVM

from tests.node_side import errors, vmi_guest
from tests.node_side.conditions import cond, now
from tests.node_side.pod_dns import peer_dns_records, pod_search_list

from . import launcher
from .core import HOST_IP, NODE, running_pod_status, set_cond
from .discovery import BY_PATH, Resource
from .kubevirt import KubeVirtOperator
from .store import Store

log = logging.getLogger("fake_cluster.controllers")
VMS = BY_PATH[("kubevirt.io", "v1", "virtualmachines")]
VMIS = BY_PATH[("kubevirt.io", "v1", "virtualmachineinstances")]
PODS = BY_PATH[("", "v1", "pods")]
SERVICES = BY_PATH[("", "v1", "services")]
EVENTS = BY_PATH[("", "v1", "events")]
CLUSTER_DOMAIN = "cluster.local"  # the fake kubelet's --cluster-domain; the node has no search domains
NOT_MIGRATABLE = ("cannot migrate VMI which does not use masquerade, bridge with "
                  "kubevirt.io/allow-pod-bridge-network-live-migration VM annotation or a migratable plugin "
                  "to connect to the pod network")


@dataclass
class Runtime:
    """One VMI's backing: its launcher pod and the ReferenceVM once started."""

    uid: str
    namespace: str
    name: str
    pod: str
    vm: ReferenceVM | None = None
    task: asyncio.Task | None = None
    closed: bool = False
    console: object | None = None  # the live console session (virt_api.py)
    extra: dict = field(default_factory=dict)


class Controllers:
    def __init__(self, store: Store, operator: KubeVirtOperator, qemu: QemuOptions, ready_timeout: float = 300) -> None:
        self.store = store
        self.operator = operator
        self.qemu = qemu
        self.ready_timeout = ready_timeout
        self.runtimes: dict[str, Runtime] = {}
        self.all_labs: list[ReferenceVM] = []  # closed again at shutdown, whatever state they were in
        self.failed_render: set[str] = set()
        self.crashes: dict[str, tuple[int, float]] = {}  # VM uid -> (restarts so far, next restart time or 0)
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="lab")
        self._pending: set[tuple[str, str, str]] = set()
        store.listeners.append(self._on_event)

    # -- event plumbing --------------------------------------------------------------------------------
    def _later(self, delay: float, kind: str, ns: str, name: str) -> None:
        asyncio.get_running_loop().call_later(delay, self._sync, kind, ns, name)

    def _queue(self, kind: str, ns: str, name: str) -> None:
        key = (kind, ns, name)
        if key not in self._pending:
            self._pending.add(key)
            asyncio.get_running_loop().call_soon(self._sync, kind, ns, name)

    def _sync(self, kind: str, ns: str, name: str) -> None:
        self._pending.discard((kind, ns, name))
        try:
            {"vm": self._sync_vm, "vmi": self._sync_vmi}[kind](ns, name)
        except Exception:
            log.exception("sync %s %s/%s failed", kind, ns, name)

    def _on_event(self, kind: str, res: Resource, obj: dict) -> None:
        md = obj["metadata"]
        ns, name = md.get("namespace", ""), md["name"]
        if res is VMS:
            self._queue("vm", ns, name)
        elif res is VMIS:
            self._queue("vmi", ns, name)
            for ref in md.get("ownerReferences") or []:
                if ref.get("kind") == "VirtualMachine":
                    self._queue("vm", ns, ref["name"])
            if kind == "DELETED":
                self._teardown(md["uid"])
        elif res is PODS:
            uid = (md.get("labels") or {}).get("kubevirt.io/created-by")
            if uid and kind in ("DELETED", "MODIFIED") and (kind == "DELETED" or md.get("deletionTimestamp")):
                self._launcher_gone(uid)

    def event(self, obj: dict, type_: str, reason: str, message: str, component: str = "virtualmachine-controller") -> None:
        md = obj["metadata"]
        try:
            self.store.create(EVENTS, md["namespace"], {
                "metadata": {"name": f"{md['name']}.{uuid.uuid4().hex[:16]}", "namespace": md["namespace"]},
                "involvedObject": {"kind": obj["kind"], "namespace": md["namespace"], "name": md["name"],
                                   "uid": md["uid"], "apiVersion": obj["apiVersion"],
                                   "resourceVersion": md.get("resourceVersion")},
                "reason": reason, "message": message, "type": type_, "count": 1,
                "source": {"component": component}, "reportingComponent": component, "reportingInstance": "",
                "firstTimestamp": now(), "lastTimestamp": now()})
        except errors.ApiError as exc:  # the namespace may be terminating: events are best effort, as in Kubernetes
            log.debug("event %s on %s/%s dropped: %s", reason, md["namespace"], md["name"], exc.message)

    # -- VirtualMachine ---------------------------------------------------------------------------------
    def _sync_vm(self, ns: str, name: str) -> None:
        vm = self.store.find(VMS, ns, name)
        vmi = self.store.find(VMIS, ns, name)
        if vm is None:
            if vmi is not None and self._owned_by(vmi, None):
                self.store.delete(VMIS, ns, name)
            return
        spec = vm.get("spec") or {}
        strategy = spec.get("runStrategy") or ("Always" if spec.get("running") else "Halted")
        deleting = bool(vm["metadata"].get("deletionTimestamp"))
        vmi_ours = vmi is not None and self._owned_by(vmi, vm["metadata"]["uid"])
        if deleting or strategy == "Halted":
            if vmi_ours and not vmi["metadata"].get("deletionTimestamp"):
                self.store.delete(VMIS, ns, name)
        elif strategy in ("Always", "RerunOnFailure") and vmi is None:
            self.store.create(VMIS, ns, self._vmi_from(vm))
            vmi = self.store.find(VMIS, ns, name)
            vmi_ours = True
        elif vmi_ours and (vmi.get("status") or {}).get("phase") in ("Failed", "Succeeded") and strategy == "Always":
            # Restart with an exponential backoff (printableStatus CrashLoopBackOff meanwhile).
            uid = vm["metadata"]["uid"]
            failures, retry_at = self.crashes.get(uid, (0, 0.0))
            loop = asyncio.get_running_loop()
            if retry_at == 0.0:
                retry_at = loop.time() + min(2 ** failures, 60)
                self.crashes[uid] = (failures, retry_at)
                loop.call_at(retry_at + 0.01, self._queue, "vm", ns, name)
            elif loop.time() >= retry_at and not vmi["metadata"].get("deletionTimestamp"):
                self.crashes[uid] = (failures + 1, 0.0)
                self.store.delete(VMIS, ns, name)
        self._vm_status(vm, vmi if vmi_ours else None, deleting, strategy)

    @staticmethod
    def _owned_by(vmi: dict, uid: str | None) -> bool:
        return any(r.get("kind") == "VirtualMachine" and (uid is None or r.get("uid") == uid)
                   for r in vmi["metadata"].get("ownerReferences") or [])

    @staticmethod
    def _vmi_from(vm: dict) -> dict:
        tmpl = copy.deepcopy((vm.get("spec") or {}).get("template") or {})
        md = tmpl.get("metadata") or {}
        return {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
                "metadata": {"name": vm["metadata"]["name"], "labels": md.get("labels") or {},
                             "annotations": md.get("annotations") or {},
                             "ownerReferences": [{"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
                                                  "name": vm["metadata"]["name"], "uid": vm["metadata"]["uid"],
                                                  "controller": True, "blockOwnerDeletion": True}]},
                "spec": tmpl.get("spec") or {}}

    def _vm_status(self, vm: dict, vmi: dict | None, deleting: bool, strategy: str) -> None:
        vstatus = (vmi or {}).get("status") or {}
        phase = vstatus.get("phase")
        ready = any(c["type"] == "Ready" and c["status"] == "True" for c in vstatus.get("conditions") or [])
        if deleting:
            printable = "Terminating"
        elif vmi is None:
            printable = "Stopped"
        elif vmi["metadata"].get("deletionTimestamp"):
            printable = "Stopping"
        elif phase == "Running":
            printable = "Running"
        elif phase == "Failed":
            printable = "Stopped" if strategy == "Halted" else "CrashLoopBackOff"
        else:
            printable = "Starting"
        status: dict = {"printableStatus": printable, "runStrategy": strategy,
                        "volumeSnapshotStatuses": [], "desiredGeneration": vm["metadata"].get("generation", 1),
                        "observedGeneration": vm["metadata"].get("generation", 1)}
        if vmi is not None:
            status["created"] = True
            status["conditions"] = copy.deepcopy(vstatus.get("conditions") or [])
        else:
            status["conditions"] = [cond("Ready", "False", "VMINotExists", "VMI does not exist")]
        if ready:
            status["ready"] = True
        old = copy.deepcopy(vm.get("status") or {})
        if _strip_times(old) != _strip_times(status):
            self.store.mutate(VMS, vm["metadata"]["namespace"], vm["metadata"]["name"],
                              lambda o: o.__setitem__("status", status), status_only=True)

    # -- VirtualMachineInstance -------------------------------------------------------------------------
    def _sync_vmi(self, ns: str, name: str) -> None:
        vmi = self.store.find(VMIS, ns, name)
        if vmi is None:
            return
        uid = vmi["metadata"]["uid"]
        rt = self.runtimes.get(uid)
        if vmi["metadata"].get("deletionTimestamp"):
            if rt is not None and self.store.find(PODS, ns, rt.pod):
                self.store.delete(PODS, ns, rt.pod)
            return
        if rt is not None or (vmi.get("status") or {}).get("phase") in ("Failed", "Succeeded"):
            return
        if not (vmi.get("status") or {}).get("phase"):
            self._vmi_status(ns, name, lambda s: s.update(phase="Pending", guestOSInfo={}, qosClass="Burstable",
                                                          activePods={}, currentCPUTopology={}))
        if not self.operator.installed:
            self._later(2, "vmi", ns, name)
            return
        version = self.operator.deployed_version()
        try:
            sidecars = launcher.sidecar_images(vmi["spec"], self.operator.config(), version)
        except launcher.RenderError as exc:
            msg = f"failed to render launch manifest: {exc}"
            self._vmi_status(ns, name, lambda s: set_cond(s, cond("Synchronized", "False", "FailedCreate", msg)))
            if uid not in self.failed_render:
                self.failed_render.add(uid)
                self.event(vmi, "Warning", "FailedCreate", msg)
            self._later(2, "vmi", ns, name)  # the controller retries; a later registration lets it start
            return
        self.failed_render.discard(uid)
        pod = launcher.launcher_pod(vmi, version, sidecars, self.operator.image_pull_policy)
        pod = self.store.create(PODS, ns, pod)
        rt = self.runtimes[uid] = Runtime(uid, ns, name, pod["metadata"]["name"])
        self.event(vmi, "Normal", "SuccessfulCreate", f"Created virtual machine pod {rt.pod}")

        def scheduling(s: dict) -> None:
            s["phase"] = "Scheduling"
            s["activePods"] = {pod["metadata"]["uid"]: ""}
            s["conditions"] = [c for c in s.get("conditions") or [] if c["type"] != "Synchronized"]
            set_cond(s, cond("Ready", "False", "PodNotExists", "virt-launcher pod has not yet been scheduled"))
        self._vmi_status(ns, name, scheduling)
        rt.task = asyncio.get_running_loop().create_task(self._boot(rt, vmi, version))

    def _vmi_status(self, ns: str, name: str, fn) -> dict | None:
        def apply(o: dict) -> None:
            o.setdefault("status", {})
            fn(o["status"])
        return self.store.mutate(VMIS, ns, name, apply, status_only=True)

    def _pod_status(self, ns: str, name: str, fn) -> dict | None:
        return self.store.mutate(PODS, ns, name, fn)

    async def _boot(self, rt: Runtime, vmi: dict, version: str) -> None:
        ns, name = rt.namespace, rt.name
        loop = asyncio.get_running_loop()
        await asyncio.sleep(0.3)
        if rt.closed:
            return
        self._pod_status(ns, rt.pod, lambda o: (o["spec"].__setitem__("nodeName", NODE),
                                                o["status"].update(phase="Pending", hostIP=HOST_IP,
                                                                   conditions=[cond("PodScheduled", "True")])))
        self._vmi_status(ns, name, lambda s: s.update(phase="Scheduled", nodeName=NODE,
                                                      activePods={k: NODE for k in s.get("activePods") or {}}))
        try:
            spec = vmi_guest.vm_spec(vmi)
            key, password = vmi_guest.cloud_init(vmi)
            ref = ReferenceVM(spec, self.qemu, authorized_key=key, password=password,
                              # the launcher pod's resolv.conf, which the sidecar passes on as dnssearch
                              search_domains=pod_search_list(ns, CLUSTER_DOMAIN),
                              dns_records=self._dns_records(ns))
            log.info("VMI %s/%s: booting the busybox reference guest", ns, name)
            rt.vm = ref
            self.all_labs.append(ref)
            await loop.run_in_executor(self.pool, ref.start)
        except Exception as exc:
            log.exception("VMI %s/%s failed to start", ns, name)
            rt.vm = None
            message = str(exc)
            self._vmi_status(ns, name, lambda s: (s.update(phase="Failed", reason="FailedStart"),
                                                  set_cond(s, cond("Ready", "False", "FailedStart", message))))
            self._pod_status(ns, rt.pod, lambda o: o["status"].update(phase="Failed", message=message))
            self.event(vmi, "Warning", "SyncFailed", f"server error. command SyncVMI failed: {message}", "virt-handler")
            return
        if rt.closed:
            await loop.run_in_executor(self.pool, ref.close)
            return
        self._pod_status(ns, rt.pod, lambda o: o.__setitem__("status", running_pod_status(o, POD_IP)))
        guest_ip = str(ipaddress.IPv4Network(spec.network.cidr)[15])
        mac = spec.interface.mac

        def running(s: dict) -> None:
            s.update(phase="Running", launcherContainerImageVersion=f"quay.io/kubevirt/virt-launcher:{version}",
                     migrationMethod="BlockMigration", migrationTransport="Unix",
                     selinuxContext="none", machine={"type": "q35"})
            set_cond(s, cond("LiveMigratable", "False", "InterfaceNotLiveMigratable", NOT_MIGRATABLE))
            set_cond(s, cond("Ready", "False", "GuestNotReady", "the guest is booting"))
        self._vmi_status(ns, name, running)
        self.event(vmi, "Normal", "Started", "VirtualMachineInstance started.", "virt-handler")
        console_log = ref.run_dir / "qemu" / "console.log"
        deadline = loop.time() + self.ready_timeout
        while loop.time() < deadline and not rt.closed:
            try:
                if b"login:" in console_log.read_bytes():
                    break
            except OSError:
                pass
            await asyncio.sleep(0.5)
        else:
            return

        def ready(s: dict) -> None:
            set_cond(s, cond("Ready", "True"))
            set_cond(s, cond("AgentConnected", "True"))
            iface = {"name": spec.interface.name, "interfaceName": "eth0", "ipAddress": guest_ip,
                     "ipAddresses": [guest_ip], "infoSource": "domain, guest-agent", "queueCount": 1}
            if mac:
                iface["mac"] = mac
            s["interfaces"] = [iface]
            s["guestOSInfo"] = {"id": "fedora", "name": "Fedora Linux", "prettyName": "busybox reference guest"}
        self._vmi_status(ns, name, ready)

    def _dns_records(self, ns: str) -> dict[str, str]:
        return peer_dns_records(ns, CLUSTER_DOMAIN, PEER_IP, self.store.list(PODS, ns),
                                self.store.list(SERVICES, ns))

    def _launcher_gone(self, uid: str) -> None:
        rt = self.runtimes.get(uid)
        if rt is None:
            return
        vmi = self.store.find(VMIS, rt.namespace, rt.name)
        if vmi is not None and vmi["metadata"]["uid"] == uid and not vmi["metadata"].get("deletionTimestamp"):
            self._vmi_status(rt.namespace, rt.name, lambda s: (s.update(phase="Failed", reason="PodTerminating"),
                                                                set_cond(s, cond("Ready", "False", "PodTerminating"))))
        self._teardown(uid, forget=False)

    def _teardown(self, uid: str, forget: bool = True) -> None:
        rt = self.runtimes.pop(uid, None) if forget else self.runtimes.get(uid)
        if rt is None or rt.closed:
            return
        rt.closed = True
        if rt.console is not None:
            asyncio.get_running_loop().create_task(rt.console.close())
        if rt.vm is not None:
            asyncio.get_running_loop().run_in_executor(self.pool, rt.vm.close)

    def runtime_for_vmi(self, ns: str, name: str) -> Runtime | None:
        vmi = self.store.find(VMIS, ns, name)
        return None if vmi is None else self.runtimes.get(vmi["metadata"]["uid"])

    def lab_for_pod(self, pod: dict) -> tuple[ReferenceVM | None, str]:
        """Which lab namespace a container of ``pod`` lives in: (vm, "pod") or (vm, "peer")."""
        md = pod["metadata"]
        uid = (md.get("labels") or {}).get("kubevirt.io/created-by")
        if uid:
            rt = self.runtimes.get(uid)
            return (rt.vm if rt and not rt.closed else None), "pod"
        for rt in self.runtimes.values():
            if rt.namespace == md.get("namespace") and rt.vm is not None and not rt.closed and rt.vm.run_dir:
                return rt.vm, "peer"
        return None, "peer"

    # -- shutdown --------------------------------------------------------------------------------------
    def close_all(self) -> None:
        """Blocking: close every lab (called once the loop stops serving)."""
        for rt in list(self.runtimes.values()):
            rt.closed = True
            if rt.task is not None:
                rt.task.cancel()
            if rt.vm is not None:
                rt.vm.close()
        self.runtimes.clear()
        self.pool.shutdown(wait=True, cancel_futures=True)
        for ref in self.all_labs:  # a start that was still running when the first close came
            ref.close()


def _strip_times(status: dict) -> dict:
    s = copy.deepcopy(status)
    for c in s.get("conditions") or []:
        c.pop("lastTransitionTime", None)
        c.pop("lastProbeTime", None)
    return s
