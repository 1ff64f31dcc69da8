"""Finding and reading the KubeVirt custom resource (any namespace), shared by install and config.

The API handle is ``KubeVirtAPI``: the two official-client APIs these modules use. Tests pass
in-memory fakes with the same methods.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from slirp_conformance.cluster.versions import KubeVirtVersion, parse_kubevirt_version
from slirp_conformance.errors import SetupError
from slirp_conformance.kubevirt.apis import KUBEVIRT

COMPONENT_LABELS = ("kubevirt.io=virt-api", "kubevirt.io=virt-controller", "kubevirt.io=virt-handler")


@dataclass
class KubeVirtAPI:
    """``custom``: CustomObjectsApi-like; ``core``: CoreV1Api-like; ``get_raw(path, timeout) -> bytes``:
    a GET of an API path (raises an exception with ``.status`` on HTTP errors)."""

    custom: Any
    core: Any
    get_raw: Any = None

    @classmethod
    def from_client(cls, api_client: Any) -> KubeVirtAPI:
        from kubernetes import client

        def get_raw(path: str, timeout: float) -> bytes:
            params = api_client.param_serialize(
                method="GET",
                resource_path=path,
                header_params={"Accept": "application/json"},
                auth_settings=["BearerToken"],
            )
            response = api_client.call_api(*params, _request_timeout=timeout)
            response.read()
            if not 200 <= response.status <= 299:
                raise client.ApiException(http_resp=response)
            return response.data

        return cls(custom=client.CustomObjectsApi(api_client), core=client.CoreV1Api(api_client), get_raw=get_raw)


def as_api(api: Any) -> KubeVirtAPI:
    """Accept an ``ApiClient`` or a ready ``KubeVirtAPI``."""
    return api if isinstance(api, KubeVirtAPI) else KubeVirtAPI.from_client(api)


@dataclass(frozen=True)
class KubeVirtRef:
    namespace: str
    name: str


def find_kubevirt(api: Any, request_timeout: float | None = None) -> KubeVirtRef | None:
    """The cluster's KubeVirt CR, or None. SetupError when there are several (ambiguous)."""
    api = as_api(api)
    kwargs = {} if request_timeout is None else {"_request_timeout": request_timeout}
    try:
        items = KUBEVIRT.list_all(api.custom, **kwargs).get("items", [])
    except Exception as e:
        if getattr(e, "status", None) == 404:  # the CRD is not installed
            return None
        raise
    live = [i for i in items if not i.get("metadata", {}).get("deletionTimestamp")]
    if not live:
        return None
    if len(live) > 1:
        names = ", ".join(f"{i['metadata']['namespace']}/{i['metadata']['name']}" for i in live)
        raise SetupError(f"found several KubeVirt CRs ({names}); the suite needs a cluster with exactly one")
    meta = live[0]["metadata"]
    return KubeVirtRef(meta["namespace"], meta["name"])


def get_kubevirt(api: Any, ref: KubeVirtRef, **kwargs: Any) -> dict:
    return KUBEVIRT.get(as_api(api).custom, ref.namespace, ref.name, **kwargs)


def require_kubevirt(api: Any) -> KubeVirtRef:
    ref = find_kubevirt(api)
    if ref is None:
        raise SetupError(
            "no KubeVirt CR in the cluster; install KubeVirt first (the kind target does it "
            "for you, or pass --kubevirt-version to let the suite install it)"
        )
    return ref


def condition(obj: dict, kind: str) -> dict | None:
    for cond in obj.get("status", {}).get("conditions", []) or []:
        if cond.get("type") == kind:
            return cond
    return None


def is_available(obj: dict) -> bool:
    cond = condition(obj, "Available")
    return bool(cond and cond.get("status") == "True")


def observed_version(obj: dict) -> str | None:
    """The version KubeVirt runs: ``status.observedKubeVirtVersion`` (api core/v1 types.go, KubeVirtStatus)."""
    return obj.get("status", {}).get("observedKubeVirtVersion")


def running_version(obj: dict, ref: KubeVirtRef) -> KubeVirtVersion:
    """``observed_version`` as a supported release; SetupError naming the CR otherwise."""
    found = observed_version(obj)
    if not found:
        raise SetupError(
            f"KubeVirt {ref.namespace}/{ref.name} reports no status.observedKubeVirtVersion; is it "
            f"deployed (kubectl get kubevirt -A)?"
        )
    try:
        return parse_kubevirt_version(found)
    except SetupError as e:
        raise SetupError(
            f"KubeVirt {ref.namespace}/{ref.name} runs {found!r} (status.observedKubeVirtVersion): {e}"
        ) from None


def check_requested(running: KubeVirtVersion, requested: KubeVirtVersion | None, ref: KubeVirtRef) -> None:
    """An explicit --kubevirt-version must be what the cluster runs."""
    if requested is not None and running != requested:
        raise SetupError(
            f"the cluster runs KubeVirt {running} ({ref.namespace}/{ref.name}) but --kubevirt-version "
            f"is {requested}; drop --kubevirt-version to test the installed one, or use a cluster "
            f"without KubeVirt"
        )
