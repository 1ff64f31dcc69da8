"""Register the slirp binding in the KubeVirt CR for the run, then put the CR back exactly.

Registration MERGES ``network.binding.<name> = {sidecarImage}`` into ``spec.configuration``
(other bindings and network defaults stay; the user guide's ``add /spec/configuration/network``
would replace the whole object) and adds the NetworkBindingPlugins feature gate only when asked
and absent. Every write is a JSON patch guarded by a ``test`` of ``metadata.resourceVersion``;
on a concurrent change the CR is re-read and the patch rebuilt (bounded attempts).

Propagation: each virt-api/virt-controller/virt-handler pod reports the KubeVirt CR
resourceVersion it has loaded as ``config-resource-version`` in ``GET https://<pod>:8443/healthz``
(KubeVirt's own tests port-forward to it). Here it is read through the API server's pod proxy
(``/api/v1/namespaces/<ns>/pods/https:<pod>:8443/proxy/healthz``, needs ``get pods/proxy``), and
the wait ends when every component reports a version >= the patched CR's. When the pod proxy is
not allowed, virt-api's aggregated ``/apis/subresources.kubevirt.io/v1/healthz`` (same report,
virt-api only: the admission side) is used. When neither answers, propagation is "unverified":
the caller must then retry VM creation on the stale-config admission error
(``is_stale_config_error``) within waits.timeout("kubevirt-config-propagated").

Restore: on exit — normal, exception, KeyboardInterrupt, or a failure half-way through
registering — ``spec.configuration`` is re-read and replaced with the saved deep copy (removed
when it was absent), again guarded by a resourceVersion ``test``.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from slirp_conformance import waits
from slirp_conformance.cluster import kubevirt_cr, runner
from slirp_conformance.cluster.kubevirt_cr import KubeVirtAPI, KubeVirtRef, as_api
from slirp_conformance.cluster.versions import FEATURE_GATE
from slirp_conformance.errors import SetupError
from slirp_conformance.kubevirt.apis import KUBEVIRT, VIRT_API_HEALTHZ

log = logging.getLogger("slirp.cluster.kubevirt_config")
T = TypeVar("T")

_MISSING = object()
PATCH_ATTEMPTS = 8
# Consecutive current answers of the load-balanced virt-api healthz before trusting it.
VIRT_API_CONFIRMATIONS = 3
JSON_PATCH = "application/json-patch+json"
# Admission/controller messages that mean "virt-api/controller still has the old config".
STALE_CONFIG_MESSAGES = (
    "Binding plugins feature gate is not enabled",
    # kubevirt pkg/network/netbinding/netbinding.go: "bindining" through v1.6.6, "binding" from v1.7.0.
    "couldn't find configuration for network bindining",
    "couldn't find configuration for network binding",
)


class ConfigRestoreError(SetupError):
    """The KubeVirt CR could not be put back; the message carries the saved configuration."""


@dataclass
class Registration:
    """What ``slirp_binding_registered`` did (for evidence / JUnit properties)."""

    ref: KubeVirtRef
    binding_name: str
    sidecar_image: str
    feature_gate_added: bool
    resource_version: str
    propagation: str  # "verified" | "verified: virt-api only" | "unverified: <why>"
    component_versions: dict[str, str] = field(default_factory=dict)

    @property
    def propagation_verified(self) -> bool:
        return self.propagation.startswith("verified")


def _pointer(*parts: str) -> str:
    return "".join("/" + p.replace("~", "~0").replace("/", "~1") for p in parts)


def snapshot_spec(api: Any, ref: KubeVirtRef | None = None) -> dict:
    """A deep copy of the KubeVirt CR's ``spec`` (for before/after comparisons)."""
    api = as_api(api)
    ref = ref or kubevirt_cr.require_kubevirt(api)
    return copy.deepcopy(kubevirt_cr.get_kubevirt(api, ref).get("spec", {}))


def registration_ops(spec: dict, binding_name: str, sidecar_image: str, *, add_feature_gate: bool) -> list[dict]:
    """JSON-patch ops that merge the binding (and the gate) into ``spec.configuration``, nothing else.

    Each op adds at the deepest level that already exists, so sibling keys are never replaced.
    """
    binding = {"sidecarImage": sidecar_image}
    config = spec.get("configuration", _MISSING)
    ops: list[dict] = []
    if not isinstance(config, dict):
        new: dict = {"network": {"binding": {binding_name: binding}}}
        if add_feature_gate:
            new["developerConfiguration"] = {"featureGates": [FEATURE_GATE]}
        return [{"op": "add", "path": "/spec/configuration", "value": new}]
    network = config.get("network")
    if not isinstance(network, dict):
        ops.append(
            {
                "op": "add",
                "path": _pointer("spec", "configuration", "network"),
                "value": {"binding": {binding_name: binding}},
            }
        )
    elif not isinstance(network.get("binding"), dict):
        ops.append(
            {
                "op": "add",
                "path": _pointer("spec", "configuration", "network", "binding"),
                "value": {binding_name: binding},
            }
        )
    elif network["binding"].get(binding_name) != binding:
        # `add` on an existing member replaces just that member; restore puts the old one back.
        ops.append(
            {
                "op": "add",
                "path": _pointer("spec", "configuration", "network", "binding", binding_name),
                "value": binding,
            }
        )
    if add_feature_gate:
        dev = config.get("developerConfiguration")
        if not isinstance(dev, dict):
            ops.append(
                {
                    "op": "add",
                    "path": _pointer("spec", "configuration", "developerConfiguration"),
                    "value": {"featureGates": [FEATURE_GATE]},
                }
            )
        elif not isinstance(dev.get("featureGates"), list):
            ops.append(
                {
                    "op": "add",
                    "path": _pointer("spec", "configuration", "developerConfiguration", "featureGates"),
                    "value": [FEATURE_GATE],
                }
            )
        elif FEATURE_GATE not in dev["featureGates"]:
            ops.append(
                {
                    "op": "add",
                    "path": _pointer("spec", "configuration", "developerConfiguration", "featureGates", "-"),
                    "value": FEATURE_GATE,
                }
            )
    return ops


def restore_ops(spec: dict, saved_configuration: Any) -> list[dict]:
    """JSON-patch ops that make ``spec.configuration`` equal the saved value (absent = removed)."""
    current = spec.get("configuration", _MISSING)
    if saved_configuration is _MISSING:
        return [] if current is _MISSING else [{"op": "remove", "path": "/spec/configuration"}]
    if current == saved_configuration:
        return []
    op = "add" if current is _MISSING else "replace"
    return [{"op": op, "path": "/spec/configuration", "value": copy.deepcopy(saved_configuration)}]


def _is_conflict(exc: BaseException) -> bool:
    """409, or a failed ``test`` op (the API server answers 422 for a JSON-patch test failure)."""
    status = getattr(exc, "status", None)
    if status == 409:
        return True
    return status == 422 and "test" in str(getattr(exc, "body", "") or exc).lower()


def _patch_guarded(api: KubeVirtAPI, ref: KubeVirtRef, build_ops: Callable[[dict], list[dict]], what: str) -> dict:
    """Read the CR, build ops from it, patch with a resourceVersion test; re-read and retry on conflict."""
    for attempt in range(1, PATCH_ATTEMPTS + 1):
        obj = kubevirt_cr.get_kubevirt(api, ref)
        ops = build_ops(obj.get("spec", {}))
        if not ops:
            return obj
        rv = obj["metadata"]["resourceVersion"]
        body = [{"op": "test", "path": "/metadata/resourceVersion", "value": rv}, *ops]
        try:
            # The client defaults PATCH bodies to merge-patch; a JSON patch must say so.
            return KUBEVIRT.patch(api.custom, ref.namespace, ref.name, body, _content_type=JSON_PATCH)
        except Exception as e:
            if not _is_conflict(e):
                raise
            log.info("KubeVirt CR changed under us while %s (attempt %d/%d); re-reading", what, attempt, PATCH_ATTEMPTS)
    raise SetupError(
        f"the KubeVirt CR {ref.namespace}/{ref.name} kept changing while {what} "
        f"({PATCH_ATTEMPTS} attempts); is another controller (e.g. HCO) managing it? "
        f"Then configure the binding through that controller"
    )


def _rv_at_least(reported: str, wanted: str) -> bool:
    try:
        return int(reported) >= int(wanted)
    except (TypeError, ValueError):
        return reported == wanted


@dataclass
class _Answers:
    """The components' answers in one propagation mode: any at all, and the current streak."""

    probe: Callable[[], dict[str, str]]  # {component: config-resource-version}
    current: Callable[[dict[str, str]], bool]  # every component has loaded the wanted version
    needed: int  # consecutive current answers that make the mode's verdict
    any: bool = False
    streak: int = 0

    def count(self) -> dict[str, str]:
        versions = self.probe()
        self.any = True
        self.streak = self.streak + 1 if self.current(versions) else 0
        return versions

    def enough(self, versions: dict[str, str]) -> bool:
        return self.current(versions) and self.streak >= self.needed


class _ProxyUnavailable(Exception):
    """The pod proxy is forbidden/absent: propagation cannot be observed."""


def _component_versions(api: KubeVirtAPI, namespace: str) -> dict[str, str]:
    """``{pod name: config-resource-version}`` of every live virt-api/controller/handler pod."""
    timeout = runner.budget("api-probe")
    versions: dict[str, str] = {}
    for selector in kubevirt_cr.COMPONENT_LABELS:
        pods = api.core.list_namespaced_pod(namespace, label_selector=selector, _request_timeout=timeout).items
        if not pods:  # KubeVirt is Available before this runs, so its pods exist under other labels
            raise _ProxyUnavailable(f"no pods labelled {selector} in {namespace}")
        for pod in pods:
            if pod.metadata.deletion_timestamp is not None:
                continue
            try:
                response = api.core.connect_get_namespaced_pod_proxy_with_path(
                    f"https:{pod.metadata.name}:8443",
                    namespace,
                    "healthz",
                    _preload_content=False,
                    _request_timeout=timeout,
                )
            except Exception as e:
                status = getattr(e, "status", None)
                if status in (401, 403, 404, 405):
                    raise _ProxyUnavailable(f"pods/proxy answered HTTP {status} for {pod.metadata.name}") from None
                raise
            data = response.data if hasattr(response, "data") else response
            report = json.loads(data.decode() if isinstance(data, bytes) else data)
            versions[pod.metadata.name] = str(report.get("config-resource-version"))
    return versions


def _virt_api_versions(api: KubeVirtAPI) -> dict[str, str]:
    """virt-api's aggregated ``/apis/subresources.kubevirt.io/v1/healthz`` (one replica per call)."""
    if api.get_raw is None:
        raise _ProxyUnavailable("no raw GET available")
    try:
        data = api.get_raw(VIRT_API_HEALTHZ, runner.budget("api-probe"))
    except Exception as e:
        status = getattr(e, "status", None)
        if status in (401, 403, 404):
            raise _ProxyUnavailable(f"{VIRT_API_HEALTHZ} answered HTTP {status}") from None
        raise
    report = json.loads(data.decode() if isinstance(data, bytes) else data)
    return {"virt-api (subresources healthz)": str(report.get("config-resource-version"))}


def wait_propagated(api: Any, ref: KubeVirtRef, resource_version: str) -> tuple[str, dict[str, str]]:
    """Wait until the KubeVirt components report ``resource_version`` (or newer).

    First every virt-api/controller/handler pod through the pod proxy ("verified"); when the
    proxy is not allowed, virt-api's aggregated healthz, read until several consecutive answers
    (different replicas) are current ("verified: virt-api only"); else "unverified: <why>".
    Raises WaitTimeout when components answered but stayed behind for the whole budget.
    """
    api = as_api(api)
    budget = waits.timeout("kubevirt-config-propagated")
    retry_on: tuple[type[BaseException], ...] = (LookupError, ValueError, OSError, ConnectionError, *_api_errors())

    def behind(versions: dict[str, str]) -> str:
        lag = {p: v for p, v in versions.items() if not _rv_at_least(v, resource_version)}
        return f"want >= {resource_version}; behind: {lag or 'none'}"

    def current(versions: dict[str, str]) -> bool:
        return bool(versions) and all(_rv_at_least(v, resource_version) for v in versions.values())

    reasons: list[str] = []
    modes: tuple[tuple[str, Callable[[], dict[str, str]], int], ...] = (
        ("verified", lambda: _component_versions(api, ref.namespace), 1),
        ("verified: virt-api only", lambda: _virt_api_versions(api), VIRT_API_CONFIRMATIONS),
    )
    for mode, probe, needed in modes:
        answered = _Answers(probe, current, needed)
        try:
            versions = waits.wait_for(
                f"KubeVirt components to load CR resourceVersion {resource_version} ({mode})",
                answered.count,
                budget,
                accept=answered.enough,
                retry_on=retry_on,
                describe=behind,
            )
        except _ProxyUnavailable as e:
            reasons.append(str(e))
            continue
        except waits.WaitTimeout:
            if answered.any:
                raise
            reasons.append(f"no healthz answer in {budget:.0f} s ({mode})")
            continue
        return mode, versions
    why = "; ".join(reasons)
    log.warning(
        "cannot observe KubeVirt config propagation (%s); callers must retry VM creation on the "
        "stale-config admission error",
        why,
    )
    return f"unverified: {why}", {}


def _api_errors() -> tuple[type[BaseException], ...]:
    try:
        from kubernetes.client import ApiException
        from urllib3.exceptions import HTTPError

        return (ApiException, HTTPError)
    except ImportError:  # pragma: no cover
        return ()


def is_stale_config_error(exc: BaseException) -> bool:
    """True for the admission/controller errors of a component that has not loaded the new config yet."""
    text = f"{exc} {getattr(exc, 'body', '')}"
    return any(message in text for message in STALE_CONFIG_MESSAGES)


class StaleConfigError(Exception):
    """An admission/controller error saying KubeVirt has not loaded the registration yet."""


def retry_while_config_stale(create: Callable[[], T], what: str = "the VM to be admitted") -> T:
    """Call ``create`` until it stops failing with the stale-config errors (bounded by
    "kubevirt-config-propagated"). For when ``Registration.propagation`` is "unverified"."""

    def attempt() -> T:
        try:
            return create()
        except Exception as e:
            if is_stale_config_error(e):
                raise StaleConfigError(f"{type(e).__name__}: {runner.redact(str(e))[:300]}") from None
            raise

    return waits.wait_for(
        what + " with the new KubeVirt configuration",
        attempt,
        waits.timeout("kubevirt-config-propagated"),
        accept=lambda _: True,
        retry_on=(StaleConfigError,),
    )


def _restore(api: KubeVirtAPI, ref: KubeVirtRef, saved: Any, expected_after_register: Any) -> None:
    def build(spec: dict) -> list[dict]:
        current = spec.get("configuration", _MISSING)
        if expected_after_register is not None and current != expected_after_register and current != saved:
            log.warning(
                "spec.configuration of KubeVirt %s/%s changed while the binding was registered; "
                "restoring the saved value reverts those changes too",
                ref.namespace,
                ref.name,
            )
        return restore_ops(spec, saved)

    try:
        obj = _patch_guarded(api, ref, build, "restoring spec.configuration")
    except BaseException as e:
        shown = "absent" if saved is _MISSING else json.dumps(saved, sort_keys=True)
        raise ConfigRestoreError(
            f"could not restore spec.configuration of KubeVirt {ref.namespace}/{ref.name} ({type(e).__name__}: "
            f"{runner.redact(str(e))[:300]}); put it back by hand, it was: {shown}"
        ) from e
    log.info(
        "restored spec.configuration of KubeVirt %s/%s (resourceVersion %s)",
        ref.namespace,
        ref.name,
        obj["metadata"]["resourceVersion"],
    )
    try:
        wait_propagated(api, ref, obj["metadata"]["resourceVersion"])
    except waits.WaitTimeout as e:
        log.warning("restored configuration not yet loaded by every component: %s", e)


@contextmanager
def slirp_binding_registered(
    api_client: Any, sidecar_image: str, *, binding_name: str = "slirp", enable_feature_gate: bool
) -> Iterator[Registration]:
    """Register ``binding_name`` -> ``sidecar_image`` in the KubeVirt CR for the ``with`` block.

    ``enable_feature_gate``: add NetworkBindingPlugins (use ``versions.needs_feature_gate``).
    ``api_client``: a kubernetes ``ApiClient`` or a ``KubeVirtAPI``.
    """
    if not sidecar_image:
        raise SetupError("the slirp binding needs a sidecar image; pass --slirp-sidecar-image")
    api = as_api(api_client)
    ref = kubevirt_cr.require_kubevirt(api)
    before = kubevirt_cr.get_kubevirt(api, ref)
    spec_before = before.get("spec", {})
    # (not deepcopy(_MISSING): a copy of the sentinel would no longer be the sentinel)
    saved = copy.deepcopy(spec_before["configuration"]) if "configuration" in spec_before else _MISSING
    gate_present = FEATURE_GATE in (
        ((before.get("spec", {}).get("configuration") or {}).get("developerConfiguration") or {}).get("featureGates")
        or []
    )
    after: Any = None
    try:
        obj = _patch_guarded(
            api,
            ref,
            lambda spec: registration_ops(spec, binding_name, sidecar_image, add_feature_gate=enable_feature_gate),
            "registering the binding",
        )
        after = copy.deepcopy(obj.get("spec", {}).get("configuration"))
        rv = obj["metadata"]["resourceVersion"]
        log.info(
            "registered network binding %r (sidecar %s, feature gate added: %s) in KubeVirt %s/%s at "
            "resourceVersion %s",
            binding_name,
            sidecar_image,
            enable_feature_gate and not gate_present,
            ref.namespace,
            ref.name,
            rv,
        )
        propagation, component_versions = wait_propagated(api, ref, rv)
        yield Registration(
            ref=ref,
            binding_name=binding_name,
            sidecar_image=sidecar_image,
            feature_gate_added=enable_feature_gate and not gate_present,
            resource_version=rv,
            propagation=propagation,
            component_versions=component_versions,
        )
    finally:
        _restore(api, ref, saved, after)


@contextmanager
def feature_gate_off(api_client: Any, ref: KubeVirtRef) -> Iterator[str]:
    """Remove NetworkBindingPlugins from the feature gates for the ``with`` block (a negative
    check), waiting for the change to reach the components both ways. Yields the propagation
    state. The session's registration restores the whole configuration at its end anyway."""
    api = as_api(api_client)

    def gates(spec: dict) -> list:
        return ((spec.get("configuration") or {}).get("developerConfiguration") or {}).get("featureGates") or []

    def remove(spec: dict) -> list[dict]:
        if FEATURE_GATE not in gates(spec):
            return []
        path = _pointer(
            "spec", "configuration", "developerConfiguration", "featureGates", str(gates(spec).index(FEATURE_GATE))
        )
        return [{"op": "test", "path": path, "value": FEATURE_GATE}, {"op": "remove", "path": path}]

    def add(spec: dict) -> list[dict]:
        if FEATURE_GATE in gates(spec):
            return []
        return [
            {
                "op": "add",
                "path": _pointer("spec", "configuration", "developerConfiguration", "featureGates", "-"),
                "value": FEATURE_GATE,
            }
        ]

    obj = _patch_guarded(api, ref, remove, "turning the feature gate off")
    try:
        state, _ = wait_propagated(api, ref, obj["metadata"]["resourceVersion"])
        yield state
    finally:
        obj = _patch_guarded(api, ref, add, "turning the feature gate back on")
        wait_propagated(api, ref, obj["metadata"]["resourceVersion"])


SIDECAR_CONTAINER_TYPE = "sidecar"  # api core/v1 types.go SupportContainerType SideCar (v1.1.0..v1.9.0)


@contextmanager
def sidecar_resources_set(api_client: Any, ref: KubeVirtRef, resources: dict) -> Iterator[str]:
    """``spec.configuration.supportContainerResources`` gets ``{type: sidecar, resources}`` (an entry of
    that type already there is replaced, others stay) for the ``with`` block; yields the propagation
    state. Exit puts the configuration back as it was at entry (the run's registration stays) and
    waits for the components to load it. virt-controller gives every hook sidecar, the network
    binding plugins' included, those requests and limits (renderresources.go sidecarResources)."""
    api = as_api(api_client)
    saved = copy.deepcopy(kubevirt_cr.get_kubevirt(api, ref).get("spec", {}).get("configuration", _MISSING))

    def add(spec: dict) -> list[dict]:
        config = spec.get("configuration")
        entry = {"type": SIDECAR_CONTAINER_TYPE, "resources": resources}
        if not isinstance(config, dict):
            return [{"op": "add", "path": "/spec/configuration", "value": {"supportContainerResources": [entry]}}]
        entries = [e for e in config.get("supportContainerResources") or [] if e.get("type") != SIDECAR_CONTAINER_TYPE]
        return [
            {
                "op": "add",
                "path": _pointer("spec", "configuration", "supportContainerResources"),
                "value": [*entries, entry],
            }
        ]

    after: Any = None
    try:
        obj = _patch_guarded(api, ref, add, "setting the sidecar containers' resources")
        after = copy.deepcopy(obj.get("spec", {}).get("configuration"))
        state, _ = wait_propagated(api, ref, obj["metadata"]["resourceVersion"])
        yield state
    finally:
        _restore(api, ref, saved, after)
