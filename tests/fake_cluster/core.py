"""kube-apiserver defaulting, apiextensions and the kubelet for everything that is not a VM.

- Defaulting at create: pods get restartPolicy/dnsPolicy/schedulerName/serviceAccountName and
  ``status.phase: Pending``; Services get ``type: ClusterIP`` and a cluster IP from 10.96.0.0/16
  (not for headless ``clusterIP: None``), ports default to TCP and targetPort=port.
- CRDs: NamesAccepted and Established turn True shortly after creation (no schema is enforced).
- Pods are scheduled on ``fake-node`` and Running after ~0.3 s with an address of 10.244.1.0/24,
  all containers ready; their commands are not run.
"""

from __future__ import annotations

import asyncio
import copy
import uuid

from tests.kube_api.conditions import cond, now

from .discovery import BY_PATH, Resource
from .store import Store

PODS = BY_PATH[("", "v1", "pods")]
SERVICES = BY_PATH[("", "v1", "services")]
CRDS = BY_PATH[("apiextensions.k8s.io", "v1", "customresourcedefinitions")]
NODE = "fake-node"
HOST_IP = "172.18.0.2"


def running_pod_status(pod: dict, ip: str) -> dict:
    t = now()
    containers = pod.get("spec", {}).get("containers") or []
    return {
        "phase": "Running",
        "hostIP": HOST_IP,
        "hostIPs": [{"ip": HOST_IP}],
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "startTime": pod["metadata"].get("creationTimestamp", t),
        "qosClass": "BestEffort",
        "conditions": [cond(c, "True") for c in ("Initialized", "Ready", "ContainersReady", "PodScheduled")],
        "containerStatuses": [
            {
                "name": c["name"],
                "image": c.get("image", ""),
                "imageID": "",
                "ready": True,
                "started": True,
                "restartCount": 0,
                "containerID": f"containerd://{uuid.uuid4().hex}",
                "state": {"running": {"startedAt": t}},
            }
            for c in containers
        ],
    }


class CoreControllers:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._next_ip = 10
        self._next_pod_ip = 1
        store.listeners.append(self._on_event)

    def _on_event(self, kind: str, res: Resource, obj: dict) -> None:
        md = obj["metadata"]
        if res is CRDS and kind == "ADDED":
            asyncio.get_running_loop().call_later(0.3, self._establish_crd, md["name"], md["uid"])
        elif res is PODS and kind != "DELETED":
            self._sync_pod(md.get("namespace", ""), md["name"])

    def _establish_crd(self, name: str, uid: str) -> None:
        """apiextensions-apiserver: names accepted, then Established (no schema is enforced here)."""

        def fn(o: dict) -> None:
            if o["metadata"]["uid"] != uid:
                return
            o["status"] = {
                "acceptedNames": copy.deepcopy((o.get("spec") or {}).get("names") or {}),
                "storedVersions": [v["name"] for v in (o.get("spec") or {}).get("versions") or [] if v.get("storage")],
                "conditions": [
                    cond("NamesAccepted", "True", "NoConflicts", "no conflicts found"),
                    cond("Established", "True", "InitialNamesAccepted", "the initial names have been accepted"),
                ],
            }

        self.store.mutate(CRDS, None, name, fn, status_only=True)

    # -- defaulting ------------------------------------------------------------------------------------
    def default(self, op: str, res: Resource, obj: dict, old: dict | None) -> None:
        if op != "CREATE":
            return
        if res is PODS:
            spec = obj.setdefault("spec", {})
            for k, v in (
                ("restartPolicy", "Always"),
                ("dnsPolicy", "ClusterFirst"),
                ("schedulerName", "default-scheduler"),
                ("terminationGracePeriodSeconds", 30),
                ("serviceAccountName", "default"),
            ):
                spec.setdefault(k, v)
            obj["status"] = {"phase": "Pending", "qosClass": "BestEffort"}
        elif res is SERVICES:
            spec = obj.setdefault("spec", {})
            spec.setdefault("type", "ClusterIP")
            if spec.get("clusterIP") != "None":
                self._next_ip += 1
                spec["clusterIP"] = f"10.96.{self._next_ip // 250}.{self._next_ip % 250 + 1}"
                spec["clusterIPs"] = [spec["clusterIP"]]
            for p in spec.get("ports") or []:
                p.setdefault("protocol", "TCP")
                p.setdefault("targetPort", p.get("port"))

    # -- pods (the kubelet) ----------------------------------------------------------------------------
    def _sync_pod(self, ns: str, name: str) -> None:
        pod = self.store.find(PODS, ns, name)
        if pod is None or pod["metadata"].get("deletionTimestamp"):
            return
        if (pod.get("status") or {}).get("phase") in (None, "Pending"):
            self._next_pod_ip += 1
            ip = f"10.244.1.{self._next_pod_ip % 254 + 1}"
            asyncio.get_running_loop().call_later(0.3, self._start_pod, ns, name, pod["metadata"]["uid"], ip)

    def _start_pod(self, ns: str, name: str, uid: str, ip: str) -> None:
        pod = self.store.find(PODS, ns, name)
        if pod is None or pod["metadata"]["uid"] != uid or (pod.get("status") or {}).get("phase") == "Running":
            return

        def fn(o: dict) -> None:
            o["spec"]["nodeName"] = NODE
            o["status"] = running_pod_status(o, ip)

        self.store.mutate(PODS, ns, name, fn)
