"""virt-operator and virt-api: the KubeVirt CR lifecycle, config propagation, admission, healthz.

- A KubeVirt CR created without status goes phase Deploying (Progressing=True) at once and
  becomes Available after ``available_delay`` seconds
  (status.phase Deployed, conditions Available=True/Progressing=False/Degraded=False,
  observed/targetKubeVirtVersion). The version is ``--kubevirt-version``, or the tag of a
  ``virt-operator`` Deployment's image when the release operator manifest was applied.
- Components: once Available, the CR's namespace holds Running pods labelled
  ``kubevirt.io=virt-api`` (2), ``virt-controller`` (2) and ``virt-handler`` (1); virt-operator
  deletes them (then its finalizer) when the CR is deleted.
- Propagation: each component acts on the CR as it saw it a while after each change
  (virt-api and virt-controller ``propagation_delay`` s, virt-handler 1.5x that), not on the
  stored one: admission uses virt-api's view, pod rendering virt-controller's. What each saw is
  reported like KubeVirt's health endpoints do, as
  ``{"apiserver": "ok", "config-resource-version": "<CR resourceVersion seen>"}`` at
  ``GET /api/v1/namespaces/<ns>/pods/https:<pod>:8443/proxy/healthz`` (the pod proxy) for each
  component pod, and for virt-api at ``GET /apis/subresources.kubevirt.io/v1/healthz``.
- Admission (the VM/VMI validating webhooks): below v1.5 an interface with ``binding`` needs
  the ``NetworkBindingPlugins`` feature gate; otherwise HTTP 422 Invalid,
  ``admission webhook "<webhook>" denied the request: Binding plugins feature gate is not enabled``
  with the cause's field pointing at the interface's ``binding``.
"""

from __future__ import annotations

import asyncio
import copy
import secrets

from aiohttp import web

from slirp_conformance.version import Version
from slirp_conformance.version import parse as parse_version
from tests.kube_api import errors
from tests.kube_api.conditions import now

from .discovery import BY_PATH, Resource
from .store import Store

KUBEVIRT = BY_PATH[("kubevirt.io", "v1", "kubevirts")]
DEPLOYMENTS = BY_PATH[("apps", "v1", "deployments")]
NAMESPACES = BY_PATH[("", "v1", "namespaces")]
PODS = BY_PATH[("", "v1", "pods")]
FEATURE_GATE = "NetworkBindingPlugins"
GATE_GA = Version(1, 5, 0)  # from this release virt-api admits binding plugins without the gate
# component -> (replicas, propagation delay multiplier)
COMPONENTS = {"virt-api": (2, 1.0), "virt-controller": (2, 1.0), "virt-handler": (1, 1.5)}
WEBHOOKS = {
    "VirtualMachine": "virtualmachine-validator.kubevirt.io",
    "VirtualMachineInstance": "virtualmachineinstances-create-validator.kubevirt.io",
}


def available_status(version: str, generation: int) -> dict:
    t = now()
    return {
        "phase": "Deployed",
        "observedKubeVirtVersion": version,
        "targetKubeVirtVersion": version,
        "observedKubeVirtRegistry": "quay.io/kubevirt",
        "targetKubeVirtRegistry": "quay.io/kubevirt",
        "operatorVersion": version,
        "observedGeneration": generation,
        "defaultArchitecture": "amd64",
        "conditions": [
            {
                "type": "Available",
                "status": "True",
                "reason": "AllComponentsReady",
                "message": "All components are ready.",
                "lastProbeTime": t,
                "lastTransitionTime": t,
            },
            {
                "type": "Progressing",
                "status": "False",
                "reason": "AllComponentsReady",
                "message": "All components are ready.",
                "lastProbeTime": t,
                "lastTransitionTime": t,
            },
            {
                "type": "Degraded",
                "status": "False",
                "reason": "AllComponentsReady",
                "message": "All components are ready.",
                "lastProbeTime": t,
                "lastTransitionTime": t,
            },
        ],
    }


class KubeVirtOperator:
    def __init__(
        self, store: Store, version: str, available_delay: float = 2.0, propagation_delay: float = 1.0
    ) -> None:
        self.store = store
        self.version = version
        self.available_delay = available_delay
        self.propagation_delay = propagation_delay
        self.seen_by: dict[str, dict | None] = {c: None for c in COMPONENTS}  # the CR as each component saw it
        store.listeners.append(self._on_event)

    # -- what the components see (virt-controller's view unless told) -----------------------------------
    @property
    def seen(self) -> dict | None:
        return self.seen_by["virt-controller"]

    def config(self, component: str = "virt-controller") -> dict:
        return copy.deepcopy(((self.seen_by[component] or {}).get("spec") or {}).get("configuration") or {})

    @property
    def image_pull_policy(self) -> str:
        return ((self.seen or {}).get("spec") or {}).get("imagePullPolicy") or "IfNotPresent"

    def deployed_version(self, component: str = "virt-controller") -> str:
        return ((self.seen_by[component] or {}).get("status") or {}).get("observedKubeVirtVersion") or self.version

    @property
    def installed(self) -> bool:
        return self.seen is not None

    def seen_rv(self, component: str) -> str | None:
        seen = self.seen_by[component]
        return None if seen is None else seen["metadata"]["resourceVersion"]

    def preinstall(self, version: str) -> None:
        """Namespace ``kubevirt`` and CR ``kubevirt``, already Available (a release install)."""
        self.version = version
        if self.store.find(NAMESPACES, None, "kubevirt") is None:
            self.store.create(NAMESPACES, None, {"metadata": {"name": "kubevirt"}, "status": {"phase": "Active"}})
        cr = self.store.create(
            KUBEVIRT,
            "kubevirt",
            {
                "apiVersion": "kubevirt.io/v1",
                "kind": "KubeVirt",
                "metadata": {"name": "kubevirt", "namespace": "kubevirt", "finalizers": ["foregroundDeleteKubeVirt"]},
                "spec": {
                    "certificateRotateStrategy": {},
                    "imagePullPolicy": "IfNotPresent",
                    "workloadUpdateStrategy": {},
                    "configuration": {"developerConfiguration": {"featureGates": []}},
                },
                "status": available_status(version, 1),
            },
        )
        self.seen_by = {c: cr for c in COMPONENTS}
        self._deploy_components("kubevirt", version)

    # -- reactions ------------------------------------------------------------------------------------
    def _on_event(self, kind: str, res: Resource, obj: dict) -> None:
        if res.key != KUBEVIRT.key:
            return
        loop = asyncio.get_running_loop()
        snapshot = None if kind == "DELETED" else obj
        for component, (_, factor) in COMPONENTS.items():
            loop.call_later(
                self.propagation_delay * factor,
                self._propagate,
                component,
                snapshot,
                obj["metadata"]["resourceVersion"],
            )
        md = obj["metadata"]
        if kind == "ADDED" and not (obj.get("status") or {}).get("conditions"):
            loop.call_later(min(0.5, self.available_delay / 2), self._deploying, md["namespace"], md["name"], md["uid"])
            loop.call_later(self.available_delay, self._make_available, md["namespace"], md["name"], md["uid"])
        if kind == "MODIFIED" and md.get("deletionTimestamp") and md.get("finalizers"):
            # virt-operator removes its components, then its finalizer.
            loop.call_later(1.0, self._finalize, md["namespace"], md["name"])

    def _propagate(self, component: str, snapshot: dict | None, rv: str) -> None:
        seen = self.seen_by[component]
        if snapshot is None:
            if seen is not None and int(seen["metadata"]["resourceVersion"]) <= int(rv):
                self.seen_by[component] = None
            return
        if seen is None or int(seen["metadata"]["resourceVersion"]) < int(rv):
            self.seen_by[component] = snapshot

    def _deploy_components(self, ns: str, version: str) -> None:
        t = now()
        n = 0
        for component, (replicas, _) in COMPONENTS.items():
            rs = secrets.token_hex(5)
            for _ in range(replicas):
                n += 1
                name = (
                    f"{component}-{secrets.token_hex(2)}{secrets.choice('bcdfghjklmnpqrstvwxz')}"
                    if component == "virt-handler"
                    else f"{component}-{rs}-{secrets.token_hex(2)}x"
                )
                ip = f"10.244.0.{10 + n}"
                try:
                    self.store.create(
                        PODS,
                        ns,
                        {
                            "metadata": {
                                "name": name,
                                "labels": {
                                    "kubevirt.io": component,
                                    "app.kubernetes.io/managed-by": "virt-operator",
                                    "app.kubernetes.io/component": "kubevirt",
                                },
                            },
                            "spec": {
                                "nodeName": "fake-node",
                                "containers": [
                                    {
                                        "name": component,
                                        "image": f"quay.io/kubevirt/{component}:{version}",
                                        "ports": [{"containerPort": 8443, "name": "metrics", "protocol": "TCP"}],
                                    }
                                ],
                            },
                            "status": {
                                "phase": "Running",
                                "podIP": ip,
                                "podIPs": [{"ip": ip}],
                                "hostIP": "172.18.0.2",
                                "startTime": t,
                                "conditions": [
                                    {"type": c, "status": "True", "lastTransitionTime": t}
                                    for c in ("Initialized", "Ready", "ContainersReady", "PodScheduled")
                                ],
                                "containerStatuses": [
                                    {
                                        "name": component,
                                        "ready": True,
                                        "started": True,
                                        "restartCount": 0,
                                        "image": f"quay.io/kubevirt/{component}:{version}",
                                        "imageID": "",
                                        "state": {"running": {"startedAt": t}},
                                    }
                                ],
                            },
                        },
                    )
                except errors.ApiError:  # the namespace is going away
                    return

    def _component_pods(self, ns: str) -> list[dict]:
        return [
            p for p in self.store.list(PODS, ns) if (p["metadata"].get("labels") or {}).get("kubevirt.io") in COMPONENTS
        ]

    async def pod_proxy(self, request: web.Request, res: Resource, ns: str, name: str, sub: str) -> web.Response:
        """The API server's pod proxy, enough for KubeVirt's component ``/healthz``."""
        scheme, _, rest = name.partition(":") if name.count(":") >= 1 else ("http", "", name)
        pod_name, _, port = rest.partition(":")
        if scheme not in ("http", "https"):
            scheme, pod_name, port = "http", name.split(":")[0], name.split(":")[-1]
        pod = self.store.find(PODS, ns, pod_name)
        if pod is None:
            raise errors.not_found("", "pods", pod_name)
        component = (pod["metadata"].get("labels") or {}).get("kubevirt.io")
        path = sub.partition("/")[2]
        if component in COMPONENTS and port in ("8443", "") and scheme == "https" and path == "healthz":
            body = {"apiserver": "ok"}
            if self.seen_rv(component) is not None:
                body["config-resource-version"] = self.seen_rv(component)
            return web.json_response(body)
        ip = (pod.get("status") or {}).get("podIP", "")
        raise errors.ApiError(
            503,
            "ServiceUnavailable",
            f"error trying to reach service: dial tcp {ip}:{port or 80}: connect: connection refused",
        )

    def _operator_version(self) -> str:
        for dep in self.store.list(DEPLOYMENTS, None):
            if dep["metadata"]["name"] != "virt-operator":
                continue
            for c in dep.get("spec", {}).get("template", {}).get("spec", {}).get("containers") or []:
                image = c.get("image", "")
                if "virt-operator:" in image:
                    return image.rsplit(":", 1)[1]
        return self.version

    def _deploying(self, ns: str, name: str, uid: str) -> None:
        cur = self.store.find(KUBEVIRT, ns, name)
        if cur is None or cur["metadata"]["uid"] != uid or (cur.get("status") or {}).get("phase"):
            return
        version, t = self._operator_version(), now()

        def fn(o: dict) -> None:
            o["metadata"].setdefault("finalizers", ["foregroundDeleteKubeVirt"])
            o["status"] = {
                "phase": "Deploying",
                "targetKubeVirtVersion": version,
                "targetKubeVirtRegistry": "quay.io/kubevirt",
                "operatorVersion": version,
                "conditions": [
                    {
                        "type": "Available",
                        "status": "False",
                        "reason": "DeploymentInProgress",
                        "message": "Deploying version " + version,
                        "lastProbeTime": t,
                        "lastTransitionTime": t,
                    },
                    {
                        "type": "Progressing",
                        "status": "True",
                        "reason": "DeploymentInProgress",
                        "message": "Deploying version " + version,
                        "lastProbeTime": t,
                        "lastTransitionTime": t,
                    },
                    {
                        "type": "Degraded",
                        "status": "False",
                        "reason": "DeploymentInProgress",
                        "message": "Deploying version " + version,
                        "lastProbeTime": t,
                        "lastTransitionTime": t,
                    },
                ],
            }

        self.store.mutate(KUBEVIRT, ns, name, fn)

    def _make_available(self, ns: str, name: str, uid: str) -> None:
        cur = self.store.find(KUBEVIRT, ns, name)
        if cur is None or cur["metadata"]["uid"] != uid or cur["metadata"].get("deletionTimestamp"):
            return
        version = self._operator_version()
        self._deploy_components(ns, version)

        def fn(o: dict) -> None:
            o["status"] = available_status(version, o["metadata"].get("generation", 1))
            o["metadata"].setdefault("finalizers", ["foregroundDeleteKubeVirt"])

        self.store.mutate(KUBEVIRT, ns, name, fn)

    def _finalize(self, ns: str, name: str) -> None:
        for pod in self._component_pods(ns):
            if not pod["metadata"].get("deletionTimestamp"):
                self.store.delete(PODS, ns, pod["metadata"]["name"])

        def fn(o: dict) -> None:
            o["metadata"]["finalizers"] = [
                f for f in o["metadata"].get("finalizers") or [] if f != "foregroundDeleteKubeVirt"
            ]

        self.store.mutate(KUBEVIRT, ns, name, fn)

    # -- virt-api --------------------------------------------------------------------------------------
    def admit(self, op: str, res: Resource, obj: dict, old: dict | None) -> None:
        if res.kind not in WEBHOOKS or self.seen_by["virt-api"] is None:
            return
        if parse_version(self.deployed_version("virt-api")) >= GATE_GA:
            return
        gates = (self.config("virt-api").get("developerConfiguration") or {}).get("featureGates") or []
        if FEATURE_GATE in gates:
            return
        if res.kind == "VirtualMachine":
            spec, path = ((obj.get("spec") or {}).get("template") or {}).get("spec") or {}, "spec.template.spec"
        else:
            spec, path = obj.get("spec") or {}, "spec"
        ifaces = ((spec.get("domain") or {}).get("devices") or {}).get("interfaces") or []
        causes = [
            {
                "reason": "FieldValueInvalid",
                "message": "Binding plugins feature gate is not enabled",
                "field": f"{path}.domain.devices.interfaces[{i}].binding",
            }
            for i, iface in enumerate(ifaces)
            if iface.get("binding")
        ]
        if causes:
            raise errors.invalid(
                res.kind,
                obj.get("metadata", {}).get("name", ""),
                f'admission webhook "{WEBHOOKS[res.kind]}" denied the request: '
                + ", ".join(c["message"] for c in causes),
                causes,
                group="kubevirt.io",
            )

    def healthz(self) -> web.Response:
        body = {"apiserver": "ok"}
        if self.seen_rv("virt-api") is not None:
            body["config-resource-version"] = self.seen_rv("virt-api")
        return web.json_response(body)

    def version_info(self) -> web.Response:
        return web.json_response(
            {
                "gitVersion": self.deployed_version("virt-api"),
                "gitCommit": "fake",
                "gitTreeState": "clean",
                "buildDate": "2023-11-06T00:00:00Z",
                "goVersion": "go1.20.8",
                "compiler": "gc",
                "platform": "linux/amd64",
            }
        )
