"""slirp_binding_registered: merge, feature gate, conflicts, propagation, exact restore.

Against a minimal in-memory fake of the two API calls families the module uses: the KubeVirt CR
through CustomObjectsApi (list/get/JSON-patch with RFC 6902 semantics, resourceVersion bumps,
422 on a failed ``test`` op as the API server answers) and the components' /healthz through
CoreV1Api's pod proxy.
"""

from __future__ import annotations

import copy
import json
import re
from types import SimpleNamespace

import pytest

from slirp_conformance import waits
from slirp_conformance.cluster import kubevirt_config as kc
from slirp_conformance.cluster.kubevirt_cr import KubeVirtAPI
from slirp_conformance.errors import SetupError

SIDECAR = "quay.io/kubevirt/network-slirp-binding:v1.1.0"


class FakeApiException(Exception):
    def __init__(self, status: int, body: str = ""):
        super().__init__(f"({status}) {body}")
        self.status = status
        self.body = body


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def apply_json_patch(doc: dict, ops: list[dict]) -> dict:
    """RFC 6902 add/remove/replace/test on dicts and lists (what the module sends)."""
    doc = copy.deepcopy(doc)
    for op in ops:
        *parents, last = [_unescape(t) for t in op["path"].split("/")[1:]]
        target = doc
        for token in parents:
            target = target[int(token)] if isinstance(target, list) else target[token]
        if op["op"] == "test":
            current = target[int(last)] if isinstance(target, list) else target.get(last, object())
            if current != op["value"]:
                raise FakeApiException(
                    422, f"the server rejected our request: testing value {op['path']} failed: test failed"
                )
        elif op["op"] == "add":
            if isinstance(target, list):
                target.append(op["value"]) if last == "-" else target.insert(int(last), op["value"])
            else:
                target[last] = copy.deepcopy(op["value"])
        elif op["op"] == "replace":
            if isinstance(target, list):
                target[int(last)] = op["value"]
            else:
                if last not in target:
                    raise FakeApiException(422, f"replace of missing {op['path']}")
                target[last] = copy.deepcopy(op["value"])
        elif op["op"] == "remove":
            if isinstance(target, list):
                del target[int(last)]
            else:
                if last not in target:
                    raise FakeApiException(422, f"remove of missing {op['path']}")
                del target[last]
        else:
            raise FakeApiException(422, f"unsupported op {op['op']}")
    return doc


class FakeCustomObjects:
    """One KubeVirt CR. ``before_patch`` hooks simulate concurrent writers and failures."""

    def __init__(self, spec: dict, namespace: str = "kubevirt", name: str = "kubevirt"):
        self.obj = {
            "apiVersion": "kubevirt.io/v1",
            "kind": "KubeVirt",
            "metadata": {"namespace": namespace, "name": name, "resourceVersion": "100"},
            "spec": spec,
        }
        self.patches: list[tuple[list[dict], str | None]] = []
        self.before_patch: list = []  # callables run (and popped) before the next patch

    def bump(self) -> None:
        self.obj["metadata"]["resourceVersion"] = str(int(self.obj["metadata"]["resourceVersion"]) + 1)

    def list_cluster_custom_object(self, group, version, plural, **_):
        assert (group, version, plural) == ("kubevirt.io", "v1", "kubevirts")
        return {"items": [copy.deepcopy(self.obj)]}

    def get_namespaced_custom_object(self, group, version, namespace, plural, name, **_):
        assert (namespace, name) == (self.obj["metadata"]["namespace"], self.obj["metadata"]["name"])
        return copy.deepcopy(self.obj)

    def patch_namespaced_custom_object(self, group, version, namespace, plural, name, body, _content_type=None, **_):
        self.patches.append((copy.deepcopy(body), _content_type))
        if self.before_patch:
            self.before_patch.pop(0)(self)
        if _content_type != "application/json-patch+json":
            raise FakeApiException(415, "a list body needs Content-Type application/json-patch+json")
        patched = apply_json_patch(self.obj, body)
        if patched != self.obj:
            self.obj = patched
            self.bump()
        return copy.deepcopy(self.obj)


class FakeCore:
    """virt-api/controller/handler pods whose /healthz reports the CR resourceVersion they loaded."""

    def __init__(self, custom: FakeCustomObjects, *, lag_polls: int = 0, proxy_status: int | None = None):
        self.custom = custom
        self.lag_polls = lag_polls  # how many healthz polls still report the previous version
        self.proxy_status = proxy_status
        self.proxy_calls: list[str] = []
        self._loaded = custom.obj["metadata"]["resourceVersion"]

    def list_namespaced_pod(self, namespace, label_selector, **_):
        component = label_selector.split("=")[1]
        meta = SimpleNamespace(name=f"{component}-0", deletion_timestamp=None)
        return SimpleNamespace(items=[SimpleNamespace(metadata=meta)])

    def connect_get_namespaced_pod_proxy_with_path(self, name, namespace, path, _preload_content=True, **_):
        assert name.startswith("https:") and name.endswith(":8443") and path == "healthz"
        self.proxy_calls.append(name)
        if self.proxy_status:
            raise FakeApiException(self.proxy_status, "forbidden")
        if self.lag_polls > 0:
            self.lag_polls -= 1
        else:
            self._loaded = self.custom.obj["metadata"]["resourceVersion"]
        body = json.dumps({"apiserver": {"connectivity": "ok"}, "config-resource-version": self._loaded}).encode()
        return SimpleNamespace(data=body)

    def get_raw(self, path, timeout):
        """virt-api's aggregated /apis/subresources.kubevirt.io/v1/healthz."""
        assert path == "/apis/subresources.kubevirt.io/v1/healthz"
        self.proxy_calls.append(path)
        self._loaded = self.custom.obj["metadata"]["resourceVersion"]
        return json.dumps({"apiserver": {"connectivity": "ok"}, "config-resource-version": self._loaded}).encode()


def make_api(
    spec: dict, *, virt_api_healthz: bool = False, **core_kwargs
) -> tuple[KubeVirtAPI, FakeCustomObjects, FakeCore]:
    custom = FakeCustomObjects(copy.deepcopy(spec))
    core = FakeCore(custom, **core_kwargs)
    return KubeVirtAPI(custom=custom, core=core, get_raw=core.get_raw if virt_api_healthz else None), custom, core


RELEASE_SPEC = {
    "certificateRotateStrategy": {},
    "configuration": {"developerConfiguration": {"featureGates": []}},
    "customizeComponents": {},
    "imagePullPolicy": "IfNotPresent",
    "workloadUpdateStrategy": {},
}
BUSY_SPEC = {
    "configuration": {
        "developerConfiguration": {"featureGates": ["Snapshot"], "useEmulation": True},
        "network": {
            "defaultNetworkInterface": "bridge",
            "permitSlirpInterface": False,
            "binding": {"passt": {"sidecarImage": "quay.io/kubevirt/network-passt-binding:v1.1.0"}},
        },
    }
}


@pytest.mark.parametrize(
    "spec", [RELEASE_SPEC, BUSY_SPEC, {}], ids=["release-cr", "other-bindings", "no-configuration"]
)
@pytest.mark.parametrize("gate", [True, False], ids=["gate", "no-gate"])
def test_register_merges_and_restores_exactly(spec, gate):
    api, custom, _ = make_api(spec)
    before = kc.snapshot_spec(api)

    with kc.slirp_binding_registered(api, SIDECAR, enable_feature_gate=gate) as reg:
        during = kc.snapshot_spec(api)
        config = during["configuration"]
        assert config["network"]["binding"]["slirp"] == {"sidecarImage": SIDECAR}, f"during: {config}"
        for key, value in (spec.get("configuration", {}).get("network") or {}).items():
            if key != "binding":
                assert config["network"][key] == value, f"network.{key} lost: {config['network']}"
        for name, value in ((spec.get("configuration", {}).get("network") or {}).get("binding") or {}).items():
            assert config["network"]["binding"][name] == value, f"binding {name} lost: {config['network']}"
        gates = (config.get("developerConfiguration") or {}).get("featureGates") or []
        assert (kc.FEATURE_GATE in gates) == gate, f"featureGates {gates} with enable_feature_gate={gate}"
        assert reg.propagation == "verified", reg
        assert reg.feature_gate_added == gate

    assert kc.snapshot_spec(api) == before, "spec.configuration not restored exactly"
    assert all(ct == "application/json-patch+json" for _, ct in custom.patches)
    assert all(
        body[0] == {"op": "test", "path": "/metadata/resourceVersion", "value": body[0]["value"]}
        for body, _ in custom.patches
    ), "every write must be guarded by a resourceVersion test"


def test_registration_never_replaces_the_network_object():
    ops = kc.registration_ops(BUSY_SPEC, "slirp", SIDECAR, add_feature_gate=True)
    assert ops == [
        {"op": "add", "path": "/spec/configuration/network/binding/slirp", "value": {"sidecarImage": SIDECAR}},
        {"op": "add", "path": "/spec/configuration/developerConfiguration/featureGates/-", "value": kc.FEATURE_GATE},
    ]


def test_gate_already_present_is_not_added_twice_and_stays_after_restore():
    spec = copy.deepcopy(RELEASE_SPEC)
    spec["configuration"]["developerConfiguration"]["featureGates"] = [kc.FEATURE_GATE]
    api, _, _ = make_api(spec)
    with kc.slirp_binding_registered(api, SIDECAR, enable_feature_gate=True) as reg:
        assert kc.snapshot_spec(api)["configuration"]["developerConfiguration"]["featureGates"] == [kc.FEATURE_GATE]
        assert not reg.feature_gate_added
    assert kc.snapshot_spec(api) == spec


def test_existing_slirp_binding_is_replaced_then_put_back():
    spec = {"configuration": {"network": {"binding": {"slirp": {"sidecarImage": "example.org/old:1"}}}}}
    api, _, _ = make_api(spec)
    with kc.slirp_binding_registered(api, SIDECAR, enable_feature_gate=False):
        assert kc.snapshot_spec(api)["configuration"]["network"]["binding"]["slirp"]["sidecarImage"] == SIDECAR
    assert kc.snapshot_spec(api) == spec


def test_concurrent_change_is_retried_not_overwritten():
    api, custom, _ = make_api(RELEASE_SPEC)

    def other_writer(fake):  # someone adds a gate between our read and our patch
        fake.obj["spec"]["configuration"]["developerConfiguration"]["featureGates"].append("Snapshot")
        fake.bump()

    custom.before_patch.append(other_writer)
    with kc.slirp_binding_registered(api, SIDECAR, enable_feature_gate=True):
        gates = kc.snapshot_spec(api)["configuration"]["developerConfiguration"]["featureGates"]
        assert gates == ["Snapshot", kc.FEATURE_GATE], f"the other writer's gate was lost: {gates}"
    assert len(custom.patches) == 3, "first patch conflicts (422 test failed), second registers, third restores"


@pytest.mark.parametrize("interrupt", [RuntimeError("boom"), KeyboardInterrupt()], ids=["exception", "ctrl-c"])
def test_restores_when_the_body_raises(interrupt):
    api, _, _ = make_api(BUSY_SPEC)
    before = kc.snapshot_spec(api)
    with pytest.raises(type(interrupt)):
        with kc.slirp_binding_registered(api, SIDECAR, enable_feature_gate=True):
            raise interrupt
    assert kc.snapshot_spec(api) == before


def test_restores_when_propagation_times_out_mid_registration(monkeypatch):
    monkeypatch.setitem(waits.TIMEOUTS, "kubevirt-config-propagated", 0.5)
    api, _, _ = make_api(RELEASE_SPEC, lag_polls=10_000)  # components never load the new config
    before = kc.snapshot_spec(api)
    with pytest.raises(waits.WaitTimeout, match=r"config|resourceVersion"):
        with kc.slirp_binding_registered(api, SIDECAR, enable_feature_gate=True):
            pytest.fail("the body must not run when propagation failed")
    assert kc.snapshot_spec(api) == before


def test_restores_when_the_registration_patch_itself_fails():
    api, custom, _ = make_api(BUSY_SPEC)
    before = kc.snapshot_spec(api)

    def server_error(fake):
        raise FakeApiException(500, "etcdserver: request timed out")

    custom.before_patch.append(server_error)
    with pytest.raises(FakeApiException):
        with kc.slirp_binding_registered(api, SIDECAR, enable_feature_gate=True):
            pass
    assert kc.snapshot_spec(api) == before


def test_restore_reverts_changes_made_by_others_during_the_run():
    api, custom, _ = make_api(RELEASE_SPEC)
    before = kc.snapshot_spec(api)
    with kc.slirp_binding_registered(api, SIDECAR, enable_feature_gate=False):
        custom.obj["spec"]["configuration"]["network"]["defaultNetworkInterface"] = "masquerade"
        custom.bump()
    assert kc.snapshot_spec(api) == before


def test_propagation_waits_for_lagging_components():
    api, _, _ = make_api(RELEASE_SPEC, lag_polls=4)
    with kc.slirp_binding_registered(api, SIDECAR, enable_feature_gate=False) as reg:
        assert reg.propagation == "verified"
        assert set(reg.component_versions) == {"virt-api-0", "virt-controller-0", "virt-handler-0"}
        assert all(int(v) >= int(reg.resource_version) for v in reg.component_versions.values())


def test_forbidden_proxy_degrades_to_unverified_quickly():
    api, _, _ = make_api(RELEASE_SPEC, proxy_status=403)
    with kc.slirp_binding_registered(api, SIDECAR, enable_feature_gate=False) as reg:
        assert reg.propagation.startswith("unverified"), reg.propagation
        assert not reg.propagation_verified


def test_forbidden_pod_proxy_falls_back_to_virt_api_healthz():
    api, _, core = make_api(RELEASE_SPEC, proxy_status=403, virt_api_healthz=True)
    with kc.slirp_binding_registered(api, SIDECAR, enable_feature_gate=False) as reg:
        assert reg.propagation == "verified: virt-api only", reg.propagation
        assert core.proxy_calls.count("/apis/subresources.kubevirt.io/v1/healthz") >= kc.VIRT_API_CONFIRMATIONS


def test_stale_config_errors_are_recognised():
    assert kc.is_stale_config_error(FakeApiException(422, "Binding plugins feature gate is not enabled"))
    assert kc.is_stale_config_error(RuntimeError("couldn't find configuration for network bindining: slirp"))
    assert not kc.is_stale_config_error(RuntimeError("admission webhook denied: spec.domain invalid"))


def test_restore_failure_names_the_saved_configuration():
    api, custom, _ = make_api(BUSY_SPEC)
    with pytest.raises(kc.ConfigRestoreError, match="permitSlirpInterface"):
        with kc.slirp_binding_registered(api, SIDECAR, enable_feature_gate=False):
            custom.before_patch.append(lambda fake: (_ for _ in ()).throw(FakeApiException(500, "apiserver down")))


def test_missing_sidecar_image_is_a_setup_error():
    api, _, _ = make_api(RELEASE_SPEC)
    with pytest.raises(SetupError, match="sidecar image"):
        with kc.slirp_binding_registered(api, "", enable_feature_gate=False):
            pass


def test_retry_while_config_stale_retries_only_the_stale_config_error(monkeypatch):
    monkeypatch.setitem(waits.TIMEOUTS, "kubevirt-config-propagated", 5)
    answers = [
        FakeApiException(422, "admission webhook denied the request: Binding plugins feature gate is not enabled"),
        "created",
    ]

    def create():
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert kc.retry_while_config_stale(create) == "created"
    with pytest.raises(FakeApiException, match=re.escape("spec.domain")):
        kc.retry_while_config_stale(lambda: (_ for _ in ()).throw(FakeApiException(422, "spec.domain invalid")))
