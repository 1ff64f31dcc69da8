"""The fake cluster (tests/fake_cluster) against the official python client and kubectl.

Most tests share one fake with KubeVirt v1.1.0 preinstalled; a last test stops a fake and checks
that nothing is left behind. The fake boots no VM: what a VM behind a VMI does (launcher pod,
console, exec, port-forward, deletion) is checked on the cluster test bed (tests/test_testbed*.py).
"""

from __future__ import annotations

import base64
import json
import shutil
import ssl
import subprocess
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException
from kubernetes.dynamic import DynamicClient

from slirp_conformance import waits
from tests.fake_cluster import running

KV = ("kubevirt.io", "v1")
SLIRP_IMAGE = "quay.io/kubevirt/network-slirp-binding:v1.1.0"
KUBECTL = shutil.which("kubectl")


# -- helpers ------------------------------------------------------------------------------------------
class Raw:
    """Plain HTTPS with the kubeconfig's CA and token."""

    def __init__(self, kubeconfig) -> None:
        with open(kubeconfig) as f:
            cfg = yaml.safe_load(f)
        self.server = cfg["clusters"][0]["cluster"]["server"]
        self.ca = base64.b64decode(cfg["clusters"][0]["cluster"]["certificate-authority-data"]).decode()
        self.token = next(u["user"]["token"] for u in cfg["users"] if "token" in u["user"])
        self.ctx = ssl.create_default_context(cadata=self.ca)

    def get(self, path: str, token: str | None = "default") -> tuple[int, dict]:
        headers = {} if token is None else {"Authorization": f"Bearer {self.token if token == 'default' else token}"}
        req = urllib.request.Request(self.server + path, headers=headers)
        try:
            with urllib.request.urlopen(req, context=self.ctx, timeout=10) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())


def kubectl(kubeconfig, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(
        [KUBECTL, "--kubeconfig", str(kubeconfig), *args], capture_output=True, text=True, timeout=60, check=check
    )


def api_error(exc: ApiException) -> dict:
    return json.loads(exc.body)


def wait(what: str, probe, budget: float = 30):
    return waits.wait_for(what, probe, budget, retry_on=(ApiException,), max_interval=0.5)


def binding_vm(name: str, ns: str) -> dict:
    """A stopped VM whose interface uses the slirp binding: admission is all the fake does with it."""
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "runStrategy": "Halted",
            "template": {
                "metadata": {"labels": {"kubevirt.io/vm": name}},
                "spec": {
                    "domain": {
                        "devices": {
                            "interfaces": [
                                {
                                    "name": "default",
                                    "binding": {"name": "slirp"},
                                    "macAddress": "02:5c:1a:00:00:01",
                                    "ports": [{"name": "ssh", "port": 22}, {"name": "http-test", "port": 8080}],
                                }
                            ]
                        },
                        "resources": {"requests": {"memory": "256Mi"}},
                    },
                    "networks": [{"name": "default", "pod": {}}],
                },
            },
        },
    }


# -- fixtures -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    with running(tmp_path_factory.mktemp("fake") / "kubeconfig", preinstalled_kubevirt="v1.1.0") as f:
        yield f


@pytest.fixture(scope="module")
def api(fake):
    return config.new_client_from_config(str(fake.kubeconfig))


@pytest.fixture(scope="module")
def core(api):
    return client.CoreV1Api(api)


@pytest.fixture(scope="module")
def custom(api):
    return client.CustomObjectsApi(api)


@pytest.fixture(scope="module")
def raw(fake):
    return Raw(fake.kubeconfig)


@pytest.fixture
def ns(core, request):
    name = "t-" + request.node.name.lower().replace("_", "-")[:40].strip("-")
    core.create_namespace({"metadata": {"name": name}})
    yield name
    try:
        core.delete_namespace(name)
    except ApiException:
        pass


@pytest.fixture(scope="module")
def slirp_registered(custom, raw):
    return register_slirp(custom, raw)


def register_slirp(custom, raw) -> str:
    """Feature gate on and slirp registered (merged), then wait for the components to see it."""
    kv = custom.patch_namespaced_custom_object(
        *KV,
        "kubevirt",
        "kubevirts",
        "kubevirt",
        {
            "spec": {
                "configuration": {
                    "developerConfiguration": {"featureGates": ["NetworkBindingPlugins"]},
                    "network": {"binding": {"slirp": {"sidecarImage": SLIRP_IMAGE}}},
                }
            }
        },
    )
    rv = kv["metadata"]["resourceVersion"]
    wait(
        "virt-api to report the new config",
        lambda: raw.get("/apis/subresources.kubevirt.io/v1/healthz")[1].get("config-resource-version") == rv,
        10,
    )
    return rv


# -- API machinery ------------------------------------------------------------------------------------
def test_discovery_lists_kubevirt_resources_with_short_names(raw):
    assert raw.get("/version")[1]["gitVersion"].startswith("v1.")
    groups = {g["name"] for g in raw.get("/apis")[1]["groups"]}
    assert {"kubevirt.io", "subresources.kubevirt.io", "apps"} <= groups
    res = {r["name"]: r for r in raw.get("/apis/kubevirt.io/v1")[1]["resources"]}
    assert "vm" in res["virtualmachines"]["shortNames"] and "vmi" in res["virtualmachineinstances"]["shortNames"]
    assert "kv" in res["kubevirts"]["shortNames"] and res["kubevirts"]["namespaced"]
    assert "watch" in res["virtualmachines"]["verbs"]
    core = {r["name"] for r in raw.get("/api/v1")[1]["resources"]}
    assert {"pods", "pods/proxy", "namespaces", "services", "events"} <= core


def test_requests_without_the_token_get_401_status(raw):
    for token in (None, "wrong"):
        code, body = raw.get("/api/v1/namespaces", token=token)
        assert code == 401 and body["kind"] == "Status" and body["reason"] == "Unauthorized", body


def test_client_certificate_context_authenticates(fake):
    api = config.new_client_from_config(str(fake.kubeconfig), context="fake-cert")
    names = {n.metadata.name for n in client.CoreV1Api(api).list_namespace().items}
    assert "default" in names


def test_crud_conflicts_selectors_and_patches(core, ns):
    cm = core.create_namespaced_config_map(ns, {"metadata": {"name": "a", "labels": {"app": "x"}}, "data": {"k": "1"}})
    assert cm.metadata.uid and cm.metadata.creation_timestamp and int(cm.metadata.resource_version) > 0
    with pytest.raises(ApiException) as e:
        core.create_namespaced_config_map(ns, {"metadata": {"name": "a"}})
    assert e.value.status == 409 and api_error(e.value)["reason"] == "AlreadyExists"
    gen = core.create_namespaced_config_map(ns, {"metadata": {"generateName": "gen-"}})
    assert gen.metadata.name.startswith("gen-") and len(gen.metadata.name) > 4
    with pytest.raises(ApiException) as e:
        core.read_namespaced_config_map("missing", ns)
    assert e.value.status == 404 and api_error(e.value)["reason"] == "NotFound"
    assert [c.metadata.name for c in core.list_namespaced_config_map(ns, label_selector="app=x").items] == ["a"]
    assert [c.metadata.name for c in core.list_namespaced_config_map(ns, label_selector="app in (y,z)").items] == []
    assert [c.metadata.name for c in core.list_namespaced_config_map(ns, field_selector="metadata.name=a").items] == [
        "a"
    ]

    stale = core.read_namespaced_config_map("a", ns)
    core.patch_namespaced_config_map("a", ns, {"data": {"k": "2"}})  # merge/strategic patch
    stale.data = {"k": "stale"}
    with pytest.raises(ApiException) as e:
        core.replace_namespaced_config_map("a", ns, stale)
    assert e.value.status == 409 and api_error(e.value)["reason"] == "Conflict"
    after = core.patch_namespaced_config_map("a", ns, [{"op": "add", "path": "/data/j", "value": "3"}])  # JSON patch
    assert after.data == {"k": "2", "j": "3"}
    assert int(after.metadata.resource_version) > int(stale.metadata.resource_version)
    with pytest.raises(ApiException) as e:
        core.patch_namespaced_config_map("a", ns, [{"op": "replace", "path": "/data/nope", "value": "x"}])
    assert e.value.status == 422
    core.delete_namespaced_config_map("a", ns)
    with pytest.raises(ApiException):
        core.read_namespaced_config_map("a", ns)


def test_watch_streams_added_modified_deleted(core, ns):
    rv = core.list_namespaced_config_map(ns).metadata.resource_version
    core.create_namespaced_config_map(ns, {"metadata": {"name": "w"}, "data": {"a": "1"}})
    core.patch_namespaced_config_map("w", ns, {"data": {"a": "2"}})
    core.delete_namespaced_config_map("w", ns)
    seen = []
    for ev in watch.Watch().stream(core.list_namespaced_config_map, ns, resource_version=rv, timeout_seconds=2):
        seen.append((ev["type"], ev["object"].metadata.name))
    assert seen == [("ADDED", "w"), ("MODIFIED", "w"), ("DELETED", "w")]


def test_selector_watch_sees_objects_enter_and_leave(core, ns):
    rv = core.list_namespaced_config_map(ns).metadata.resource_version
    core.create_namespaced_config_map(ns, {"metadata": {"name": "s", "labels": {"pick": "yes"}}})
    core.patch_namespaced_config_map("s", ns, {"metadata": {"labels": {"pick": "no"}}})
    core.patch_namespaced_config_map("s", ns, {"data": {"ignored": "1"}})
    core.patch_namespaced_config_map("s", ns, {"metadata": {"labels": {"pick": "yes"}}})
    seen = [
        ev["type"]
        for ev in watch.Watch().stream(
            core.list_namespaced_config_map, ns, label_selector="pick=yes", resource_version=rv, timeout_seconds=2
        )
    ]
    assert seen == ["ADDED", "DELETED", "ADDED"]


def test_command_line_options():
    from tests.fake_cluster.__main__ import parse_args

    opts, _ = parse_args(["--kubeconfig", "/nonexistent/kc", "--preinstalled-kubevirt", "--propagation-delay", "3"])
    assert (opts.preinstalled_kubevirt, opts.propagation_delay) == ("v1.1.0", 3.0), opts
    opts, _ = parse_args(["--kubeconfig", "/nonexistent/kc", "--preinstalled-kubevirt", "v1.5.3"])
    assert opts.preinstalled_kubevirt == "v1.5.3", opts


def test_namespace_goes_through_terminating(core):
    core.create_namespace({"metadata": {"name": "doomed"}})
    core.create_namespaced_config_map("doomed", {"metadata": {"name": "x"}})
    core.delete_namespace("doomed")
    assert core.read_namespace("doomed").status.phase == "Terminating"
    with pytest.raises(ApiException) as e:
        core.create_namespaced_config_map("doomed", {"metadata": {"name": "y"}})
    assert e.value.status == 403

    def gone():
        try:
            core.read_namespace("doomed")
            return False
        except ApiException as exc:
            return exc.status == 404

    wait("the namespace to disappear", gone, 10)


def test_pods_terminate_gracefully_unless_forced(core, ns):
    for name in ("graceful", "forced"):
        core.create_namespaced_pod(
            ns, {"metadata": {"name": name}, "spec": {"containers": [{"name": "c", "image": "x"}]}}
        )
    core.delete_namespaced_pod("graceful", ns)
    assert core.read_namespaced_pod("graceful", ns).metadata.deletion_timestamp is not None
    core.delete_namespaced_pod("forced", ns, grace_period_seconds=0)
    with pytest.raises(ApiException) as e:
        core.read_namespaced_pod("forced", ns)
    assert e.value.status == 404


def test_dynamic_client_lists_kubevirt(api, tmp_path):
    dyn = DynamicClient(api, cache_file=str(tmp_path / "discovery.json"))  # not /tmp/osrcp-*.json
    kvs = dyn.resources.get(api_version="kubevirt.io/v1", kind="KubeVirt").get(namespace="kubevirt")
    assert [k.metadata.name for k in kvs.items] == ["kubevirt"]


@pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")
def test_kubectl_get_describe_patch_delete(fake, core, ns):
    core.create_namespaced_config_map(ns, {"metadata": {"name": "k"}, "data": {"a": "1"}})
    out = kubectl(fake.kubeconfig, "-n", "kubevirt", "get", "kv").stdout
    assert "kubevirt" in out and "Deployed" in out, out
    assert "k" in kubectl(fake.kubeconfig, "-n", ns, "get", "configmaps", "-o", "name").stdout
    kubectl(fake.kubeconfig, "-n", ns, "patch", "configmap", "k", "--type", "merge", "-p", '{"data":{"b":"2"}}')
    kubectl(
        fake.kubeconfig,
        "-n",
        ns,
        "patch",
        "configmap",
        "k",
        "--type",
        "json",
        "-p",
        '[{"op":"add","path":"/data/c","value":"3"}]',
    )
    assert core.read_namespaced_config_map("k", ns).data == {"a": "1", "b": "2", "c": "3"}
    desc = kubectl(fake.kubeconfig, "-n", "kubevirt", "describe", "kv", "kubevirt").stdout
    assert "Available" in desc and "Observed Kube Virt Version:   v1.1.0" in desc, desc
    kubectl(fake.kubeconfig, "-n", ns, "delete", "configmap", "k", "--timeout=20s")
    assert core.list_namespaced_config_map(ns).items == []
    manifest = fake.kubeconfig.with_name("applied.yaml")
    for value in ("1", "2"):  # create, then a client-side-apply patch
        manifest.write_text(
            f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: ap, namespace: {ns}}}\ndata: {{a: '{value}'}}\n"
        )
        kubectl(fake.kubeconfig, "apply", "-f", str(manifest))
    assert core.read_namespaced_config_map("ap", ns).data == {"a": "2"}


# -- KubeVirt emulation -------------------------------------------------------------------------------
def test_preinstalled_kubevirt_is_available_with_release_config(custom):
    kv = custom.get_namespaced_custom_object(*KV, "kubevirt", "kubevirts", "kubevirt")
    assert kv["status"]["phase"] == "Deployed" and kv["status"]["observedKubeVirtVersion"] == "v1.1.0"
    assert {"type": "Available", "status": "True"}.items() <= next(
        c for c in kv["status"]["conditions"] if c["type"] == "Available"
    ).items()


def test_binding_needs_the_feature_gate_below_v1_5(custom, ns):
    kv = custom.get_namespaced_custom_object(*KV, "kubevirt", "kubevirts", "kubevirt")
    if "NetworkBindingPlugins" in kv["spec"]["configuration"]["developerConfiguration"].get("featureGates", []):
        pytest.skip("another test enabled the gate first (module order changed)")
    with pytest.raises(ApiException) as e:
        custom.create_namespaced_custom_object(*KV, ns, "virtualmachines", binding_vm("fg", ns))
    body = api_error(e.value)
    assert e.value.status == 422 and body["reason"] == "Invalid"
    assert body["message"] == (
        'admission webhook "virtualmachine-validator.kubevirt.io" denied the request: '
        "Binding plugins feature gate is not enabled"
    )


def test_new_kubevirt_cr_becomes_available_and_v1_5_needs_no_gate(tmp_path):
    with running(tmp_path / "kc", kubevirt_version="v1.5.0", propagation_delay=1) as f:
        api = config.new_client_from_config(str(f.kubeconfig))
        core, custom, raw = client.CoreV1Api(api), client.CustomObjectsApi(api), Raw(f.kubeconfig)
        core.create_namespace({"metadata": {"name": "kubevirt"}})
        rv = core.list_namespace().metadata.resource_version
        custom.create_namespaced_custom_object(
            *KV,
            "kubevirt",
            "kubevirts",
            {
                "apiVersion": "kubevirt.io/v1",
                "kind": "KubeVirt",
                "metadata": {"name": "kubevirt"},
                "spec": {"configuration": {"developerConfiguration": {"featureGates": []}}},
            },
        )
        events = []
        for ev in watch.Watch().stream(
            custom.list_namespaced_custom_object, *KV, "kubevirt", "kubevirts", resource_version=rv, timeout_seconds=10
        ):
            events.append(ev["type"])
            conds = {c["type"]: c["status"] for c in ev["object"].get("status", {}).get("conditions", [])}
            if conds.get("Available") == "True":
                break
        assert events[0] == "ADDED" and events[-1] == "MODIFIED" and conds["Available"] == "True", events
        kv = custom.get_namespaced_custom_object(*KV, "kubevirt", "kubevirts", "kubevirt")
        wait(
            "the components to see the CR",
            lambda: (
                raw.get("/apis/subresources.kubevirt.io/v1/healthz")[1].get("config-resource-version")
                == kv["metadata"]["resourceVersion"]
            ),
            10,
        )
        core.create_namespace({"metadata": {"name": "v15"}})
        vm = custom.create_namespaced_custom_object(*KV, "v15", "virtualmachines", binding_vm("halted", "v15"))
        assert vm["metadata"]["name"] == "halted", "admitted without the gate at v1.5"


def test_admission_uses_the_config_virt_api_has_seen(tmp_path):
    """Right after enabling the gate, virt-api still has the old CR: code that does not wait for
    propagation gets the stale-config error; after propagation the same create succeeds."""
    with running(tmp_path / "kc", preinstalled_kubevirt="v1.1.0", propagation_delay=2) as f:
        api = config.new_client_from_config(str(f.kubeconfig))
        core, custom, raw = client.CoreV1Api(api), client.CustomObjectsApi(api), Raw(f.kubeconfig)
        core.create_namespace({"metadata": {"name": "p"}})
        kv = custom.patch_namespaced_custom_object(
            *KV,
            "kubevirt",
            "kubevirts",
            "kubevirt",
            {"spec": {"configuration": {"developerConfiguration": {"featureGates": ["NetworkBindingPlugins"]}}}},
        )
        with pytest.raises(ApiException) as e:
            custom.create_namespaced_custom_object(*KV, "p", "virtualmachines", binding_vm("early", "p"))
        assert "Binding plugins feature gate is not enabled" in api_error(e.value)["message"]
        wait(
            "virt-api to load the CR",
            lambda: (
                raw.get("/apis/subresources.kubevirt.io/v1/healthz")[1].get("config-resource-version")
                == kv["metadata"]["resourceVersion"]
            ),
            10,
        )
        custom.create_namespaced_custom_object(*KV, "p", "virtualmachines", binding_vm("late", "p"))


def test_config_change_reaches_the_components_late(custom, raw, slirp_registered):
    kv = custom.patch_namespaced_custom_object(
        *KV, "kubevirt", "kubevirts", "kubevirt", {"metadata": {"annotations": {"touched": "yes"}}}
    )
    seen = raw.get("/apis/subresources.kubevirt.io/v1/healthz")[1]["config-resource-version"]
    assert seen != kv["metadata"]["resourceVersion"]
    wait(
        "propagation",
        lambda: (
            raw.get("/apis/subresources.kubevirt.io/v1/healthz")[1]["config-resource-version"]
            == kv["metadata"]["resourceVersion"]
        ),
        10,
    )


def test_component_pods_report_config_resource_version_through_the_pod_proxy(core, custom, slirp_registered):
    pods = core.list_namespaced_pod("kubevirt", label_selector="kubevirt.io in (virt-api,virt-controller,virt-handler)")
    assert {p.metadata.labels["kubevirt.io"] for p in pods.items} == {"virt-api", "virt-controller", "virt-handler"}
    assert all(p.status.phase == "Running" for p in pods.items)
    rv = custom.get_namespaced_custom_object(*KV, "kubevirt", "kubevirts", "kubevirt")["metadata"]["resourceVersion"]

    def versions():
        out = {}
        for p in pods.items:
            r = core.connect_get_namespaced_pod_proxy_with_path(
                f"https:{p.metadata.name}:8443", "kubevirt", "healthz", _preload_content=False
            )
            out[p.metadata.name] = json.loads(r.data)["config-resource-version"]
        return out

    wait("every component to report the CR's resourceVersion", lambda: set(versions().values()) == {rv}, 10)
    with pytest.raises(ApiException) as e:
        core.connect_get_namespaced_pod_proxy_with_path(f"https:{pods.items[0].metadata.name}:9999", "kubevirt", "x")
    assert e.value.status == 503


OPERATOR_MANIFEST = """
apiVersion: v1
kind: Namespace
metadata: {name: kubevirt}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: kubevirts.kubevirt.io}
spec:
  group: kubevirt.io
  names: {kind: KubeVirt, plural: kubevirts, singular: kubevirt, shortNames: [kv, kvs]}
  scope: Namespaced
  versions: [{name: v1, served: true, storage: true, schema: {openAPIV3Schema: {type: object}}}]
---
apiVersion: scheduling.k8s.io/v1
kind: PriorityClass
metadata: {name: kubevirt-cluster-critical}
value: 1000000000
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: kubevirt-operator, namespace: kubevirt}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: kubevirt-operator}
rules: [{apiGroups: ["*"], resources: ["*"], verbs: ["*"]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: kubevirt-operator}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: kubevirt-operator}
subjects: [{kind: ServiceAccount, name: kubevirt-operator, namespace: kubevirt}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: virt-operator, namespace: kubevirt}
spec:
  selector: {matchLabels: {kubevirt.io: virt-operator}}
  template:
    metadata: {labels: {kubevirt.io: virt-operator}}
    spec: {containers: [{name: virt-operator, image: "quay.io/kubevirt/virt-operator:v1.3.1"}]}
"""


def test_operator_manifest_install_and_uninstall_with_the_dynamic_client(tmp_path):
    with running(tmp_path / "kc", available_delay=1) as f:
        api = config.new_client_from_config(str(f.kubeconfig))
        dyn = DynamicClient(api, cache_file=str(tmp_path / "discovery.json"))
        for doc in yaml.safe_load_all(OPERATOR_MANIFEST):
            res = dyn.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
            res.create(body=doc, namespace=doc["metadata"].get("namespace") if res.namespaced else None)
        crds = dyn.resources.get(api_version="apiextensions.k8s.io/v1", kind="CustomResourceDefinition")
        wait(
            "the CRD to be Established",
            lambda: any(
                c["type"] == "Established" and c["status"] == "True"
                for c in crds.get(name="kubevirts.kubevirt.io").to_dict().get("status", {}).get("conditions", [])
            ),
            10,
        )
        kvs = dyn.resources.get(api_version="kubevirt.io/v1", kind="KubeVirt")
        kvs.create(
            namespace="kubevirt",
            body={"apiVersion": "kubevirt.io/v1", "kind": "KubeVirt", "metadata": {"name": "kubevirt"}, "spec": {}},
        )
        phases = []

        def available():
            kv = kvs.get(name="kubevirt", namespace="kubevirt").to_dict()
            phases.append(kv.get("status", {}).get("phase"))
            return kv.get("status", {}).get("phase") == "Deployed" and kv

        kv = wait("KubeVirt to be Available", available, 15)
        assert kv["status"]["observedKubeVirtVersion"] == "v1.3.1"  # from the operator's image
        assert "Deploying" in phases, phases
        core = client.CoreV1Api(api)
        assert len(core.list_namespaced_pod("kubevirt", label_selector="kubevirt.io=virt-handler").items) == 1
        kvs.delete(name="kubevirt", namespace="kubevirt")

        def gone():
            return (
                not kvs.get(namespace="kubevirt").items
                and not core.list_namespaced_pod(
                    "kubevirt", label_selector="kubevirt.io in (virt-api,virt-controller,virt-handler)"
                ).items
            )

        wait("KubeVirt and its components to be removed", gone, 15)


def test_stopping_the_fake_leaves_nothing_behind(tmp_path):
    with running(tmp_path / "kc", preinstalled_kubevirt="v1.1.0") as f:
        pid = f.proc.pid
        assert f.kubeconfig.exists()
        assert f.stop() == 0
        assert not f.kubeconfig.exists()
    assert not list(Path(tempfile.gettempdir()).glob(f"fake-cluster-{pid}-*"))
