"""virt-operator and virt-api: the KubeVirt CR lifecycle, config propagation, admission, healthz.

- A KubeVirt CR created without status becomes Available after ``available_delay`` seconds
  (status.phase Deployed, conditions Available=True/Progressing=False/Degraded=False,
  observed/targetKubeVirtVersion). The version is ``--kubevirt-version``, or the tag of a
  ``virt-operator`` Deployment's image when the release operator manifest was applied.
- Propagation: the components (virt-api admission, virt-controller rendering) act on the CR
  as they saw it ``propagation_delay`` seconds after each change, not on the stored one.
  What they saw is reported like virt-api's health endpoint does:
  ``GET /apis/subresources.kubevirt.io/v1/healthz`` ->
  ``{"apiserver": "ok", "config-resource-version": "<CR resourceVersion seen>"}``.
- Admission (the VM/VMI validating webhooks): below v1.5 an interface with ``binding`` needs
  the ``NetworkBindingPlugins`` feature gate; otherwise HTTP 422 Invalid,
  ``admission webhook "<webhook>" denied the request: Binding plugins feature gate is not enabled``
  with the cause's field pointing at the interface's ``binding``.
"""

from __future__ import annotations

import asyncio
import copy

from aiohttp import web

from . import errors
from .discovery import BY_PATH, Resource
from .store import Store, now
from .versions import at_least

KUBEVIRT = BY_PATH[("kubevirt.io", "v1", "kubevirts")]
DEPLOYMENTS = BY_PATH[("apps", "v1", "deployments")]
NAMESPACES = BY_PATH[("", "v1", "namespaces")]
FEATURE_GATE = "NetworkBindingPlugins"
WEBHOOKS = {"VirtualMachine": "virtualmachine-validator.kubevirt.io",
            "VirtualMachineInstance": "virtualmachineinstances-create-validator.kubevirt.io"}


def available_status(version: str, generation: int) -> dict:
    t = now()
    return {
        "phase": "Deployed", "observedKubeVirtVersion": version, "targetKubeVirtVersion": version,
        "observedKubeVirtRegistry": "quay.io/kubevirt", "targetKubeVirtRegistry": "quay.io/kubevirt",
        "operatorVersion": version, "observedGeneration": generation, "defaultArchitecture": "amd64",
        "conditions": [
            {"type": "Available", "status": "True", "reason": "AllComponentsReady",
             "message": "All components are ready.", "lastProbeTime": t, "lastTransitionTime": t},
            {"type": "Progressing", "status": "False", "reason": "AllComponentsReady",
             "message": "All components are ready.", "lastProbeTime": t, "lastTransitionTime": t},
            {"type": "Degraded", "status": "False", "reason": "AllComponentsReady",
             "message": "All components are ready.", "lastProbeTime": t, "lastTransitionTime": t},
        ],
    }


class KubeVirtOperator:
    def __init__(self, store: Store, version: str, available_delay: float = 2.0,
                 propagation_delay: float = 1.0) -> None:
        self.store = store
        self.version = version
        self.available_delay = available_delay
        self.propagation_delay = propagation_delay
        self.seen: dict | None = None  # the CR as the components last saw it
        store.listeners.append(self._on_event)

    # -- what the components see ----------------------------------------------------------------------
    @property
    def config(self) -> dict:
        return copy.deepcopy(((self.seen or {}).get("spec") or {}).get("configuration") or {})

    @property
    def image_pull_policy(self) -> str:
        return ((self.seen or {}).get("spec") or {}).get("imagePullPolicy") or "IfNotPresent"

    @property
    def deployed_version(self) -> str:
        return ((self.seen or {}).get("status") or {}).get("observedKubeVirtVersion") or self.version

    @property
    def installed(self) -> bool:
        return self.seen is not None

    def preinstall(self, version: str) -> None:
        """Namespace ``kubevirt`` and CR ``kubevirt``, already Available (a release install)."""
        self.version = version
        if self.store.find(NAMESPACES, None, "kubevirt") is None:
            self.store.create(NAMESPACES, None, {"metadata": {"name": "kubevirt"}, "status": {"phase": "Active"}})
        cr = self.store.create(KUBEVIRT, "kubevirt", {
            "apiVersion": "kubevirt.io/v1", "kind": "KubeVirt",
            "metadata": {"name": "kubevirt", "namespace": "kubevirt", "finalizers": ["foregroundDeleteKubeVirt"]},
            "spec": {"certificateRotateStrategy": {}, "imagePullPolicy": "IfNotPresent", "workloadUpdateStrategy": {},
                     "configuration": {"developerConfiguration": {"featureGates": []}}},
            "status": available_status(version, 1)})
        self.seen = cr

    # -- reactions ------------------------------------------------------------------------------------
    def _on_event(self, kind: str, res: Resource, obj: dict) -> None:
        if res.key != KUBEVIRT.key:
            return
        loop = asyncio.get_running_loop()
        snapshot = None if kind == "DELETED" else obj
        loop.call_later(self.propagation_delay, self._propagate, snapshot, obj["metadata"]["resourceVersion"])
        md = obj["metadata"]
        if kind == "ADDED" and not (obj.get("status") or {}).get("conditions"):
            loop.call_later(self.available_delay, self._make_available, md["namespace"], md["name"], md["uid"])
        if kind == "MODIFIED" and md.get("deletionTimestamp") and md.get("finalizers"):
            # virt-operator removes its components, then its finalizer.
            loop.call_later(1.0, self._finalize, md["namespace"], md["name"])

    def _propagate(self, snapshot: dict | None, rv: str) -> None:
        if snapshot is None:
            if self.seen is not None and int(self.seen["metadata"]["resourceVersion"]) <= int(rv):
                self.seen = None
            return
        if self.seen is None or int(self.seen["metadata"]["resourceVersion"]) < int(rv):
            self.seen = snapshot

    def _operator_version(self) -> str:
        for dep in self.store.list(DEPLOYMENTS, None):
            if dep["metadata"]["name"] != "virt-operator":
                continue
            for c in dep.get("spec", {}).get("template", {}).get("spec", {}).get("containers") or []:
                image = c.get("image", "")
                if "virt-operator:" in image:
                    return image.rsplit(":", 1)[1]
        return self.version

    def _make_available(self, ns: str, name: str, uid: str) -> None:
        cur = self.store.find(KUBEVIRT, ns, name)
        if cur is None or cur["metadata"]["uid"] != uid or cur["metadata"].get("deletionTimestamp"):
            return
        version = self._operator_version()

        def fn(o: dict) -> None:
            o["status"] = available_status(version, o["metadata"].get("generation", 1))
            o["metadata"].setdefault("finalizers", ["foregroundDeleteKubeVirt"])
        self.store.mutate(KUBEVIRT, ns, name, fn)

    def _finalize(self, ns: str, name: str) -> None:
        def fn(o: dict) -> None:
            o["metadata"]["finalizers"] = [f for f in o["metadata"].get("finalizers") or []
                                           if f != "foregroundDeleteKubeVirt"]
        self.store.mutate(KUBEVIRT, ns, name, fn)

    # -- virt-api --------------------------------------------------------------------------------------
    def admit(self, op: str, res: Resource, obj: dict, old: dict | None) -> None:
        if res.kind not in WEBHOOKS or self.seen is None:
            return
        if at_least(self.deployed_version, "v1.5"):
            return
        gates = (self.config.get("developerConfiguration") or {}).get("featureGates") or []
        if FEATURE_GATE in gates:
            return
        if res.kind == "VirtualMachine":
            spec, path = ((obj.get("spec") or {}).get("template") or {}).get("spec") or {}, "spec.template.spec"
        else:
            spec, path = obj.get("spec") or {}, "spec"
        ifaces = ((spec.get("domain") or {}).get("devices") or {}).get("interfaces") or []
        causes = [{"reason": "FieldValueInvalid", "message": "Binding plugins feature gate is not enabled",
                   "field": f"{path}.domain.devices.interfaces[{i}].binding"}
                  for i, iface in enumerate(ifaces) if iface.get("binding")]
        if causes:
            raise errors.invalid(res.kind, obj.get("metadata", {}).get("name", ""),
                                 f'admission webhook "{WEBHOOKS[res.kind]}" denied the request: '
                                 + ", ".join(c["message"] for c in causes), causes, group="kubevirt.io")

    def healthz(self) -> web.Response:
        body = {"apiserver": "ok"}
        if self.seen is not None:
            body["config-resource-version"] = self.seen["metadata"]["resourceVersion"]
        return web.json_response(body)

    def version_info(self) -> web.Response:
        return web.json_response({"gitVersion": self.deployed_version, "gitCommit": "fake", "gitTreeState": "clean",
                                  "buildDate": "2023-11-06T00:00:00Z", "goVersion": "go1.20.8", "compiler": "gc",
                                  "platform": "linux/amd64"})
