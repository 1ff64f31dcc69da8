"""The fake cluster (tests/fake_cluster) against the official python client and kubectl.

The fast tests share one fake with KubeVirt v1.1.0 preinstalled; the ``selftest_vm`` ones share
one VM booted on it (a real ReferenceVM under TCG). A last test stops a fake with a running VM
and checks that nothing is left behind.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import websocket
import yaml
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.stream import portforward, stream

from fixtures import waits
from fixtures.reference.reference_vm import RUN_PREFIX
from fixtures.ssh_client import generate_keypair
from tests import leaks
from tests.fake_cluster import running

KV = ("kubevirt.io", "v1")
REPO = Path(__file__).resolve().parents[1]
SLIRP_IMAGE = "quay.io/kubevirt/network-slirp-binding:v1.1.0"
KUBECTL = shutil.which("kubectl")


# -- helpers ------------------------------------------------------------------------------------------
class Raw:
    """Plain HTTPS and websockets with the kubeconfig's CA and token."""

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

    def websocket(self, path: str, protocol: str) -> websocket.WebSocket:
        ws = websocket.WebSocket(sslopt={"cert_reqs": ssl.CERT_REQUIRED, "context": self.ctx})
        ws.connect("wss" + self.server[5:] + path, header=[f"Authorization: Bearer {self.token}"],
                   subprotocols=[protocol], timeout=10)
        return ws


def kubectl(kubeconfig, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([KUBECTL, "--kubeconfig", str(kubeconfig), *args], capture_output=True, text=True,
                          timeout=60, check=check)


def api_error(exc: ApiException) -> dict:
    return json.loads(exc.body)


def wait(what: str, probe, budget: float = 30):
    return waits.wait_for(what, probe, budget, retry_on=(ApiException,), max_interval=0.5)


def binding_vm(name: str, ns: str, binding: str = "slirp", run_strategy: str = "Always", userdata: str = "") -> dict:
    volumes = [{"name": "cloudinit", "cloudInitNoCloud": {"userData": userdata}}] if userdata else []
    return {
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": {"name": name, "namespace": ns},
        "spec": {"runStrategy": run_strategy, "template": {"metadata": {"labels": {"kubevirt.io/vm": name}}, "spec": {
            "domain": {"devices": {"interfaces": [{"name": "default", "binding": {"name": binding},
                                                   "macAddress": "02:5c:1a:00:00:01",
                                                   "ports": [{"name": "ssh", "port": 22},
                                                             {"name": "http-test", "port": 8080}]}]},
                       "resources": {"requests": {"memory": "256Mi"}}},
            "networks": [{"name": "default", "pod": {}}], "volumes": volumes}}},
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
    kv = custom.patch_namespaced_custom_object(*KV, "kubevirt", "kubevirts", "kubevirt", {"spec": {"configuration": {
        "developerConfiguration": {"featureGates": ["NetworkBindingPlugins"]},
        "network": {"binding": {"slirp": {"sidecarImage": SLIRP_IMAGE}}}}}})
    rv = kv["metadata"]["resourceVersion"]
    wait("virt-api to report the new config", lambda: raw.get("/apis/subresources.kubevirt.io/v1/healthz")[1]
         .get("config-resource-version") == rv, 10)
    return rv


@pytest.fixture(scope="module")
def vm(fake, core, custom, slirp_registered):
    """One running VM (TCG) shared by the VM tests: (namespace, name, launcher pod)."""
    ns, name = "vmtest", f"fake-selftest-vm-{os.getpid()}"  # no other run's QEMU has this -name
    core.create_namespace({"metadata": {"name": ns}})
    public = generate_keypair().public_openssh
    custom.create_namespaced_custom_object(*KV, ns, "virtualmachines", binding_vm(
        name, ns, userdata=f"#cloud-config\npassword: fedora\nssh_authorized_keys:\n  - {public}\n"))

    def ready():
        vmi = custom.get_namespaced_custom_object(*KV, ns, "virtualmachineinstances", name)
        return any(c["type"] == "Ready" and c["status"] == "True" for c in vmi.get("status", {}).get("conditions", []))
    wait("the VMI to become Ready", ready, 180)
    pod = core.list_namespaced_pod(ns, label_selector=f"vm.kubevirt.io/name={name}").items[0]
    yield ns, name, pod
    if fake.proc.poll() is None:
        core.delete_namespace(ns)


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
    assert {"pods", "pods/exec", "pods/portforward", "pods/log", "namespaces", "services", "events"} <= core
    sub = {r["name"] for r in raw.get("/apis/subresources.kubevirt.io/v1")[1]["resources"]}
    assert "virtualmachineinstances/console" in sub


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
    assert [c.metadata.name for c in core.list_namespaced_config_map(ns, field_selector="metadata.name=a").items] == ["a"]

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
    seen = [ev["type"] for ev in watch.Watch().stream(core.list_namespaced_config_map, ns, label_selector="pick=yes",
                                                      resource_version=rv, timeout_seconds=2)]
    assert seen == ["ADDED", "DELETED", "ADDED"]


def test_command_line_options_reach_every_reference_vm():
    from tests.fake_cluster.__main__ import parse_args
    opts, _ = parse_args(["--kubeconfig", "/nonexistent/kc", "--preinstalled-kubevirt",
                          "--qemu-sysctl", "net.ipv4.ping_group_range=0 2147483647", "--qemu-netdev-extra", "restrict=on"])
    assert opts.preinstalled_kubevirt == "v1.1.0" and opts.qemu.accel == "tcg"
    assert opts.qemu.sysctls == {"net.ipv4.ping_group_range": "0 2147483647"} and opts.qemu.netdev_extra == "restrict=on"


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
        core.create_namespaced_pod(ns, {"metadata": {"name": name}, "spec": {"containers": [{"name": "c", "image": "x"}]}})
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
    kubectl(fake.kubeconfig, "-n", ns, "patch", "configmap", "k", "--type", "json",
            "-p", '[{"op":"add","path":"/data/c","value":"3"}]')
    assert core.read_namespaced_config_map("k", ns).data == {"a": "1", "b": "2", "c": "3"}
    desc = kubectl(fake.kubeconfig, "-n", "kubevirt", "describe", "kv", "kubevirt").stdout
    assert "Available" in desc and "Observed Kube Virt Version:   v1.1.0" in desc, desc
    kubectl(fake.kubeconfig, "-n", ns, "delete", "configmap", "k", "--timeout=20s")
    assert core.list_namespaced_config_map(ns).items == []
    manifest = fake.kubeconfig.with_name("applied.yaml")
    for value in ("1", "2"):  # create, then a client-side-apply patch
        manifest.write_text(f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: ap, namespace: {ns}}}\n"
                            f"data: {{a: '{value}'}}\n")
        kubectl(fake.kubeconfig, "apply", "-f", str(manifest))
    assert core.read_namespaced_config_map("ap", ns).data == {"a": "2"}


# -- KubeVirt emulation -------------------------------------------------------------------------------
def test_preinstalled_kubevirt_is_available_with_release_config(custom):
    kv = custom.get_namespaced_custom_object(*KV, "kubevirt", "kubevirts", "kubevirt")
    assert kv["status"]["phase"] == "Deployed" and kv["status"]["observedKubeVirtVersion"] == "v1.1.0"
    assert {"type": "Available", "status": "True"}.items() <= next(
        c for c in kv["status"]["conditions"] if c["type"] == "Available").items()


def test_binding_needs_the_feature_gate_below_v1_5(custom, ns):
    kv = custom.get_namespaced_custom_object(*KV, "kubevirt", "kubevirts", "kubevirt")
    if "NetworkBindingPlugins" in kv["spec"]["configuration"]["developerConfiguration"].get("featureGates", []):
        pytest.skip("another test enabled the gate first (module order changed)")
    with pytest.raises(ApiException) as e:
        custom.create_namespaced_custom_object(*KV, ns, "virtualmachines", binding_vm("fg", ns))
    body = api_error(e.value)
    assert e.value.status == 422 and body["reason"] == "Invalid"
    assert body["message"] == ('admission webhook "virtualmachine-validator.kubevirt.io" denied the request: '
                               "Binding plugins feature gate is not enabled")


def test_new_kubevirt_cr_becomes_available_and_v1_5_needs_no_gate(tmp_path):
    with running(tmp_path / "kc", kubevirt_version="v1.5.0", propagation_delay=1) as f:
        api = config.new_client_from_config(str(f.kubeconfig))
        core, custom, raw = client.CoreV1Api(api), client.CustomObjectsApi(api), Raw(f.kubeconfig)
        core.create_namespace({"metadata": {"name": "kubevirt"}})
        rv = core.list_namespace().metadata.resource_version
        custom.create_namespaced_custom_object(*KV, "kubevirt", "kubevirts", {
            "apiVersion": "kubevirt.io/v1", "kind": "KubeVirt", "metadata": {"name": "kubevirt"},
            "spec": {"configuration": {"developerConfiguration": {"featureGates": []}}}})
        events = []
        for ev in watch.Watch().stream(custom.list_namespaced_custom_object, *KV, "kubevirt", "kubevirts",
                                       resource_version=rv, timeout_seconds=10):
            events.append(ev["type"])
            conds = {c["type"]: c["status"] for c in ev["object"].get("status", {}).get("conditions", [])}
            if conds.get("Available") == "True":
                break
        assert events[0] == "ADDED" and events[-1] == "MODIFIED" and conds["Available"] == "True", events
        kv = custom.get_namespaced_custom_object(*KV, "kubevirt", "kubevirts", "kubevirt")
        wait("the components to see the CR", lambda: raw.get("/apis/subresources.kubevirt.io/v1/healthz")[1]
             .get("config-resource-version") == kv["metadata"]["resourceVersion"], 10)
        core.create_namespace({"metadata": {"name": "v15"}})
        vm = custom.create_namespaced_custom_object(*KV, "v15", "virtualmachines",
                                                    binding_vm("halted", "v15", run_strategy="Halted"))
        assert vm["metadata"]["name"] == "halted"
        stopped = wait("printableStatus Stopped", lambda: custom.get_namespaced_custom_object(
            *KV, "v15", "virtualmachines", "halted").get("status", {}).get("printableStatus") == "Stopped", 10)
        assert stopped


def test_admission_uses_the_config_virt_api_has_seen(tmp_path):
    """Right after enabling the gate, virt-api still has the old CR: code that does not wait for
    propagation gets the stale-config error; after propagation the same create succeeds."""
    with running(tmp_path / "kc", preinstalled_kubevirt="v1.1.0", propagation_delay=2) as f:
        api = config.new_client_from_config(str(f.kubeconfig))
        core, custom, raw = client.CoreV1Api(api), client.CustomObjectsApi(api), Raw(f.kubeconfig)
        core.create_namespace({"metadata": {"name": "p"}})
        kv = custom.patch_namespaced_custom_object(*KV, "kubevirt", "kubevirts", "kubevirt", {"spec": {
            "configuration": {"developerConfiguration": {"featureGates": ["NetworkBindingPlugins"]}}}})
        with pytest.raises(ApiException) as e:
            custom.create_namespaced_custom_object(*KV, "p", "virtualmachines", binding_vm("early", "p", run_strategy="Halted"))
        assert "Binding plugins feature gate is not enabled" in api_error(e.value)["message"]
        wait("virt-api to load the CR", lambda: raw.get("/apis/subresources.kubevirt.io/v1/healthz")[1]
             .get("config-resource-version") == kv["metadata"]["resourceVersion"], 10)
        custom.create_namespaced_custom_object(*KV, "p", "virtualmachines", binding_vm("late", "p", run_strategy="Halted"))


def test_config_change_reaches_the_components_late(custom, raw, slirp_registered):
    kv = custom.patch_namespaced_custom_object(*KV, "kubevirt", "kubevirts", "kubevirt",
                                               {"metadata": {"annotations": {"touched": "yes"}}})
    seen = raw.get("/apis/subresources.kubevirt.io/v1/healthz")[1]["config-resource-version"]
    assert seen != kv["metadata"]["resourceVersion"]
    wait("propagation", lambda: raw.get("/apis/subresources.kubevirt.io/v1/healthz")[1]
         ["config-resource-version"] == kv["metadata"]["resourceVersion"], 10)


def test_component_pods_report_config_resource_version_through_the_pod_proxy(core, custom, slirp_registered):
    pods = core.list_namespaced_pod("kubevirt", label_selector="kubevirt.io in (virt-api,virt-controller,virt-handler)")
    assert {p.metadata.labels["kubevirt.io"] for p in pods.items} == {"virt-api", "virt-controller", "virt-handler"}
    assert all(p.status.phase == "Running" for p in pods.items)
    rv = custom.get_namespaced_custom_object(*KV, "kubevirt", "kubevirts", "kubevirt")["metadata"]["resourceVersion"]

    def versions():
        out = {}
        for p in pods.items:
            r = core.connect_get_namespaced_pod_proxy_with_path(f"https:{p.metadata.name}:8443", "kubevirt", "healthz",
                                                                _preload_content=False)
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
        wait("the CRD to be Established", lambda: any(
            c["type"] == "Established" and c["status"] == "True"
            for c in crds.get(name="kubevirts.kubevirt.io").to_dict().get("status", {}).get("conditions", [])), 10)
        kvs = dyn.resources.get(api_version="kubevirt.io/v1", kind="KubeVirt")
        kvs.create(namespace="kubevirt", body={"apiVersion": "kubevirt.io/v1", "kind": "KubeVirt",
                                               "metadata": {"name": "kubevirt"}, "spec": {}})
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
            return not kvs.get(namespace="kubevirt").items and not core.list_namespaced_pod(
                "kubevirt", label_selector="kubevirt.io in (virt-api,virt-controller,virt-handler)").items
        wait("KubeVirt and its components to be removed", gone, 15)


def test_unregistered_binding_fails_the_render_with_kubevirts_message(core, custom, ns, slirp_registered):
    custom.create_namespaced_custom_object(*KV, ns, "virtualmachines", binding_vm("unreg", ns, binding="nope"))
    msg = "failed to render launch manifest: couldn't find configuration for network bindining: nope"

    def synchronized_false():
        vmi = custom.get_namespaced_custom_object(*KV, ns, "virtualmachineinstances", "unreg")
        return [c for c in vmi.get("status", {}).get("conditions", [])
                if c["type"] == "Synchronized" and c["status"] == "False"]
    cond = wait("the Synchronized=False condition", synchronized_false, 10)[0]
    assert cond["reason"] == "FailedCreate" and cond["message"] == msg
    events = core.list_namespaced_event(ns, field_selector="involvedObject.name=unreg").items
    assert any(e.reason == "FailedCreate" and e.message == msg and e.type == "Warning" for e in events)
    assert core.list_namespaced_pod(ns).items == []


# -- a real VM behind the fake ------------------------------------------------------------------------
@pytest.mark.selftest_vm
def test_vm_runs_with_a_kubevirt_shaped_launcher_pod(vm, custom):
    ns, name, pod = vm
    vmi = custom.get_namespaced_custom_object(*KV, ns, "virtualmachineinstances", name)
    md = pod.metadata
    assert md.name.startswith(f"virt-launcher-{name}-") and len(md.name) == len(f"virt-launcher-{name}-") + 5
    assert md.labels["kubevirt.io"] == "virt-launcher" and md.labels["vm.kubevirt.io/name"] == name
    assert md.labels["kubevirt.io/created-by"] == vmi["metadata"]["uid"]
    containers = {c.name: c for c in pod.spec.containers}
    assert containers["hook-sidecar-0"].image == SLIRP_IMAGE
    assert [(p.name, p.container_port, p.protocol) for p in containers["compute"].ports] == [
        ("ssh", 22, "TCP"), ("http-test", 8080, "TCP")]
    assert pod.status.phase == "Running" and pod.status.pod_ip == "198.18.0.2"
    conds = {c["type"]: c for c in vmi["status"]["conditions"]}
    assert vmi["status"]["phase"] == "Running" and vmi["status"]["nodeName"] == "fake-node"
    assert conds["Ready"]["status"] == conds["AgentConnected"]["status"] == "True"
    assert (conds["LiveMigratable"]["status"], conds["LiveMigratable"]["reason"]) == (
        "False", "InterfaceNotLiveMigratable")
    vm_status = custom.get_namespaced_custom_object(*KV, ns, "virtualmachines", name)["status"]
    assert vm_status["printableStatus"] == "Running" and vm_status["ready"] and vm_status["created"]


def _recv_until(ws: websocket.WebSocket, needle: bytes, budget: float = 20) -> bytes:
    got = b""
    deadline = time.monotonic() + budget
    ws.settimeout(1)
    while needle not in got and time.monotonic() < deadline:
        try:
            opcode, data = ws.recv_data()
        except websocket.WebSocketTimeoutException:
            continue
        assert opcode == websocket.ABNF.OPCODE_BINARY, f"console sent opcode {opcode}"
        got += data
    return got


@pytest.mark.selftest_vm
def test_console_is_binary_drops_text_and_keeps_one_session(vm, raw):
    ns, name, _ = vm
    path = f"/apis/subresources.kubevirt.io/v1/namespaces/{ns}/virtualmachineinstances/{name}/console"
    first = raw.websocket(path, "plain.kubevirt.io")
    try:
        assert first.subprotocol == "plain.kubevirt.io"
        first.send("XYZZY-TEXT")  # a TEXT frame: dropped
        first.send_binary(b"\r")
        out = _recv_until(first, b"login:")
        assert b"login:" in out and b"XYZZY" not in out, out
        second = raw.websocket(path, "plain.kubevirt.io")
        try:
            first.settimeout(10)
            with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionError)):
                for _ in range(100):  # drain whatever was in flight, then the close arrives
                    opcode, _ = first.recv_data(control_frame=True)
                    if opcode == websocket.ABNF.OPCODE_CLOSE:
                        raise websocket.WebSocketConnectionClosedException("closed")
            second.send_binary(b"\r")
            assert b"login:" in _recv_until(second, b"login:")
        finally:
            second.close()
    finally:
        first.close()


@pytest.mark.selftest_vm
def test_pod_port_forward_reaches_the_guest_ssh_server(vm, core):
    ns, _, pod = vm
    pf = portforward(core.connect_get_namespaced_pod_portforward, pod.metadata.name, ns, ports="22")
    s = pf.socket(22)
    s.settimeout(20)
    try:
        assert s.recv(64).startswith(b"SSH-2.0-")
        s.settimeout(1)
        try:  # drain the key exchange offer: closing with unread data resets the client's proxy
            while s.recv(65536):
                pass
        except TimeoutError:
            pass
    finally:
        s.close()


@pytest.mark.selftest_vm
def test_pod_logs_per_container(vm, core):
    ns, _, pod = vm
    assert core.read_namespaced_pod_log(pod.metadata.name, ns, container="hook-sidecar-0").strip()
    with pytest.raises(ApiException) as e:
        core.read_namespaced_pod_log(pod.metadata.name, ns, container="nope")
    assert e.value.status == 400


@pytest.mark.selftest_vm
def test_vmi_port_forward_fails_for_slirp(vm, raw):
    ns, name, _ = vm
    path = f"/apis/subresources.kubevirt.io/v1/namespaces/{ns}/virtualmachineinstances/{name}/portforward/22/tcp"
    ws = raw.websocket(path, "plain.kubevirt.io")
    try:
        ws.settimeout(15)
        opcode, data = ws.recv_data(control_frame=True)
        assert opcode == websocket.ABNF.OPCODE_CLOSE and b"10.0.2.15:22" in data, data
    finally:
        ws.close()


@pytest.mark.selftest_vm
def test_exec_returns_stdout_and_exit_code(vm, core):
    ns, _, pod = vm
    ws = stream(core.connect_get_namespaced_pod_exec, pod.metadata.name, ns, container="compute",
                command=["sh", "-c", "ip -4 -o addr show; echo oops >&2; exit 3"], stderr=True, stdin=False,
                stdout=True, tty=False, _preload_content=False)
    ws.run_forever(timeout=30)
    assert "198.18.0.2" in ws.read_stdout() and "oops" in ws.read_stderr()
    assert ws.returncode == 3
    out = stream(core.connect_get_namespaced_pod_exec, pod.metadata.name, ns, container="compute",
                 command=["true"], stderr=True, stdin=False, stdout=True, tty=False, _preload_content=False)
    out.run_forever(timeout=30)
    assert out.returncode == 0


@pytest.mark.selftest_vm
@pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")
def test_kubectl_exec_and_port_forward_over_spdy(vm, fake):
    ns, _, pod = vm
    r = kubectl(fake.kubeconfig, "-n", ns, "exec", pod.metadata.name, "-c", "compute", "--",
                "sh", "-c", "echo spdy-out; echo spdy-err >&2; exit 4", check=False)
    assert (r.returncode, r.stdout.strip()) == (4, "spdy-out") and "spdy-err" in r.stderr, r
    r = subprocess.run([KUBECTL, "--kubeconfig", str(fake.kubeconfig), "-n", ns, "exec", "-i", pod.metadata.name,
                        "-c", "compute", "--", "sh", "-c", "tr a-z A-Z"], input="piped through\n", check=False,
                       capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stdout) == (0, "PIPED THROUGH\n"), r
    pf = subprocess.Popen([KUBECTL, "--kubeconfig", str(fake.kubeconfig), "-n", ns, "port-forward",
                           pod.metadata.name, ":22"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = pf.stdout.readline()  # "Forwarding from 127.0.0.1:NNNNN -> 22" (kubectl exits on failure: EOF)
        assert "Forwarding from 127.0.0.1:" in line, (line, pf.stderr.read() if pf.poll() is not None else "")
        local = int(line.split("127.0.0.1:")[1].split()[0])
        with socket.create_connection(("127.0.0.1", local), timeout=20) as s:
            s.settimeout(20)
            assert s.recv(64).startswith(b"SSH-2.0-")
            s.settimeout(1)
            try:
                while s.recv(65536):
                    pass
            except TimeoutError:
                pass
    finally:
        pf.terminate()
        pf.wait(10)


@pytest.mark.selftest_vm
def test_exec_streams_stdin_and_output_live(vm, core):
    """Like the suite's nc-under-exec bridge: input goes in while the command runs."""
    ns, _, pod = vm
    ws = stream(core.connect_get_namespaced_pod_exec, pod.metadata.name, ns, container="compute",
                command=["sh", "-c", "read line; echo got:$line; sleep 0.5; echo done"], stdin=True, stdout=True,
                stderr=True, tty=False, _preload_content=False)
    ws.write_stdin("hello\n")
    got = ""
    deadline = time.monotonic() + 20
    while "got:hello" not in got and time.monotonic() < deadline:
        ws.update(timeout=1)
        got += ws.read_stdout() or ""
    assert "got:hello" in got and ws.is_open(), got  # output arrived before the command ended
    ws.run_forever(timeout=20)
    assert "done" in got + (ws.read_stdout() or "") and ws.returncode == 0
    ws.close()


@pytest.mark.selftest_vm
def test_peer_pod_runs_in_the_labs_peer_namespace(vm, core):
    ns = vm[0]
    core.create_namespaced_pod(ns, {"metadata": {"name": "peer", "labels": {
        "app.kubernetes.io/component": "slirp-peer"}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}})
    pod = wait("the peer pod to run", lambda: (p := core.read_namespaced_pod("peer", ns)).status.phase == "Running"
               and p, 10)
    assert pod.status.pod_ip == "198.18.0.1"
    out = stream(core.connect_get_namespaced_pod_exec, "peer", ns, command=["ip", "-4", "-o", "addr", "show"],
                 stderr=True, stdin=False, stdout=True, tty=False)
    assert "198.18.0.1" in out


@pytest.mark.selftest_vm
def test_the_suites_cluster_target_passes_a_suite_against_the_fake(tmp_path):
    """End to end: the suite's own --target=cluster code (install check, registration with verified
    propagation, VM, console, SSH over the pod port-forward, exec bridges) against its own fake."""
    with running(tmp_path / "kc", preinstalled_kubevirt="v1.1.0") as f:
        r = subprocess.run([sys.executable, "-m", "pytest", "suites/test_slirp_dhcp.py", "--target=cluster",
                            "--kubeconfig", str(f.kubeconfig), "--guest-profile", "reference-busybox", "-q"],
                           cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]


@pytest.mark.selftest_vm
def test_deleting_the_vm_terminates_then_removes_vmi_pod_and_qemu(vm, core, custom):
    ns, name, _ = vm
    custom.delete_namespaced_custom_object(*KV, ns, "virtualmachines", name)
    terminating = custom.get_namespaced_custom_object(*KV, ns, "virtualmachines", name)
    assert terminating["metadata"].get("deletionTimestamp"), "a VM goes through Terminating"

    def gone(kind):
        try:
            custom.get_namespaced_custom_object(*KV, ns, kind, name)
            return False
        except ApiException as exc:
            return exc.status == 404
    wait("the VM to be gone", lambda: gone("virtualmachines"), 20)
    wait("the VMI to be gone", lambda: gone("virtualmachineinstances"), 20)
    wait("the launcher pod to be gone", lambda: not core.list_namespaced_pod(
        ns, label_selector=f"vm.kubevirt.io/name={name}").items, 20)
    wait("its QEMU to exit", lambda: not {p for p in leaks.snapshot().qemu_processes if f"-name {name} " in p}, 20)


@pytest.mark.selftest_vm
def test_stopping_the_fake_leaves_nothing_behind(fake, core, custom, slirp_registered):
    """Stop with a VM still booting. Other self-tests may run QEMU at the same time: look only at
    this fake's VM and run dirs."""
    ns, name = "stoptest", f"fake-selftest-stop-{os.getpid()}"
    core.create_namespace({"metadata": {"name": ns}})
    legacy = binding_vm(name, ns)  # the pre-runStrategy way to start a VM
    del legacy["spec"]["runStrategy"]
    legacy["spec"]["running"] = True
    custom.create_namespaced_custom_object(*KV, ns, "virtualmachines", legacy)
    wait("the VMI to run", lambda: custom.get_namespaced_custom_object(*KV, ns, "virtualmachineinstances", name)
         .get("status", {}).get("phase") == "Running", 60)
    ours = lambda state: {p for p in state.qemu_processes if f"-name {name} " in p}
    run_dirs = lambda state: {d for d in state.run_dirs if f"{RUN_PREFIX}{fake.proc.pid}-" in d}
    before = leaks.snapshot()
    assert ours(before) and run_dirs(before), "the VM should be running now"
    assert fake.stop() == 0
    after = leaks.snapshot()
    assert not ours(after) and not run_dirs(after), after
    assert not fake.kubeconfig.exists()
    assert not list(Path(tempfile.gettempdir()).glob(f"fake-cluster-{fake.proc.pid}-*"))
