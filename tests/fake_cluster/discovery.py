"""The resource types the fake serves and the legacy discovery documents built from them.

Only legacy discovery is offered (plain ``application/json``): clients that ask for aggregated
discovery (``apidiscovery.k8s.io/v2``) fall back to it, as they do against older servers.
``/openapi/v3`` is 404 and ``/openapi/v2`` (protobuf only) is a document without schemas: kubectl
get/describe/patch/delete need neither, and ``kubectl apply`` then validates nothing client-side
and patches with JSON merge patches, as it does for CRDs.
"""

from __future__ import annotations

from dataclasses import dataclass

ALL_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
SERVER_VERSION = {
    "major": "1",
    "minor": "27",
    "gitVersion": "v1.27.1",
    "gitCommit": "fake",
    "gitTreeState": "clean",
    "buildDate": "2023-04-14T00:00:00Z",
    "goVersion": "go1.20.3",
    "compiler": "gc",
    "platform": "linux/amd64",
}


@dataclass(frozen=True)
class Resource:
    group: str  # "" for core
    version: str
    plural: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()
    singular: str = ""

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> str:
        return f"{self.group}/{self.plural}"


def _r(group, version, plural, kind, namespaced, short=(), sub=()) -> Resource:
    return Resource(group, version, plural, kind, namespaced, tuple(short), tuple(sub), kind.lower())


RESOURCES: list[Resource] = [
    _r("", "v1", "namespaces", "Namespace", False, ["ns"], ["status"]),
    _r("", "v1", "pods", "Pod", True, ["po"], ["status", "proxy"]),
    _r("", "v1", "services", "Service", True, ["svc"], ["status"]),
    _r("", "v1", "events", "Event", True, ["ev"]),
    _r("", "v1", "configmaps", "ConfigMap", True, ["cm"]),
    _r("", "v1", "secrets", "Secret", True),
    _r("", "v1", "serviceaccounts", "ServiceAccount", True, ["sa"]),
    _r("", "v1", "nodes", "Node", False, ["no"], ["status"]),
    _r("kubevirt.io", "v1", "kubevirts", "KubeVirt", True, ["kv", "kvs"], ["status"]),
    _r("kubevirt.io", "v1", "virtualmachines", "VirtualMachine", True, ["vm", "vms"], ["status"]),
    _r("kubevirt.io", "v1", "virtualmachineinstances", "VirtualMachineInstance", True, ["vmi", "vmis"], ["status"]),
    # Kinds of the release operator manifest: stored generically, no behaviour.
    _r(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        False,
        ["crd", "crds"],
        ["status"],
    ),
    _r("apps", "v1", "deployments", "Deployment", True, ["deploy"], ["status", "scale"]),
    _r("apps", "v1", "daemonsets", "DaemonSet", True, ["ds"], ["status"]),
    _r("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", False),
    _r("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", False),
    _r("rbac.authorization.k8s.io", "v1", "roles", "Role", True),
    _r("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", True),
    _r("scheduling.k8s.io", "v1", "priorityclasses", "PriorityClass", False, ["pc"]),
    _r(
        "admissionregistration.k8s.io", "v1", "validatingwebhookconfigurations", "ValidatingWebhookConfiguration", False
    ),
    _r("admissionregistration.k8s.io", "v1", "mutatingwebhookconfigurations", "MutatingWebhookConfiguration", False),
    _r("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", True, ["pdb"], ["status"]),
]

# kubevirt's aggregated API: healthz and version only (virt_api.py), no VMI subresource.
SUBRESOURCES_GROUP = "subresources.kubevirt.io"
SUBRESOURCES_LIST: list[dict] = []

BY_PATH: dict[tuple[str, str, str], Resource] = {(r.group, r.version, r.plural): r for r in RESOURCES}
BY_KIND: dict[tuple[str, str], Resource] = {(r.group_version, r.kind): r for r in RESOURCES}


def groups() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for r in RESOURCES:
        if r.group and r.version not in out.setdefault(r.group, []):
            out[r.group].append(r.version)
    out[SUBRESOURCES_GROUP] = ["v1"]
    return out


def api_versions() -> dict:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}],
    }


def _group_doc(name: str, versions: list[str]) -> dict:
    vs = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
    return {"name": name, "versions": vs, "preferredVersion": vs[0]}


def api_group_list() -> dict:
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [_group_doc(g, vs) for g, vs in groups().items()]}


def api_group(name: str) -> dict | None:
    vs = groups().get(name)
    return None if vs is None else {"kind": "APIGroup", "apiVersion": "v1", **_group_doc(name, vs)}


def resource_list(group: str, version: str) -> dict | None:
    gv = f"{group}/{version}" if group else version
    if group == SUBRESOURCES_GROUP and version == "v1":
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": SUBRESOURCES_LIST}
    items = []
    for r in RESOURCES:
        if r.group != group or r.version != version:
            continue
        items.append(
            {
                "name": r.plural,
                "singularName": r.singular,
                "namespaced": r.namespaced,
                "kind": r.kind,
                "verbs": ALL_VERBS if r.kind != "Namespace" else [v for v in ALL_VERBS if v != "deletecollection"],
                **({"shortNames": list(r.short_names)} if r.short_names else {}),
                **(
                    {"categories": ["all"]}
                    if r.kind in ("Pod", "Service", "VirtualMachine", "VirtualMachineInstance")
                    else {}
                ),
            }
        )
        for sub in r.subresources:
            verbs = {"status": ["get", "patch", "update"], "scale": ["get", "patch", "update"]}
            items.append(
                {
                    "name": f"{r.plural}/{sub}",
                    "singularName": "",
                    "namespaced": r.namespaced,
                    "kind": {"scale": "Scale", "proxy": "PodProxyOptions"}.get(sub, r.kind),
                    "verbs": verbs.get(sub, ["create", "get"]),
                }
            )
    if not items:
        return None
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": items}
