"""The cluster modules through the real kubernetes client against tests/fake_cluster (real HTTP).

What the in-memory fakes cannot show: the JSON patch really goes out as
application/json-patch+json, the pod-proxy healthz path and the dynamic client's
create/delete of release-manifest objects work, and one failed `test` op is answered like the
API server does. Skipped when the fake API server is not available.
"""

from __future__ import annotations

import time

import pytest
import yaml

fake_cluster = pytest.importorskip("tests.fake_cluster")
kubernetes_config = pytest.importorskip("kubernetes.config")

from fixtures.cluster import kubevirt_config as kc  # noqa: E402
from fixtures.cluster import kubevirt_cr, preflight  # noqa: E402
from fixtures.cluster.kubevirt_install import KubeVirtInstallation  # noqa: E402

SIDECAR = "quay.io/kubevirt/network-slirp-binding:v1.1.0"


def _client(fake):
    return kubernetes_config.new_client_from_config(config_file=str(fake.kubeconfig))


def test_register_verify_and_restore_on_a_preinstalled_kubevirt(tmp_path):
    with fake_cluster.running(tmp_path / "kubeconfig", preinstalled_kubevirt="v1.1.0", propagation_delay=1) as fake:
        assert preflight.check_cluster_reachable(fake.kubeconfig).startswith("v1.")
        api_client = _client(fake)
        before = kc.snapshot_spec(api_client)
        started = time.monotonic()
        with kc.slirp_binding_registered(api_client, SIDECAR, enable_feature_gate=True) as reg:
            config = kc.snapshot_spec(api_client)["configuration"]
            assert config["network"]["binding"]["slirp"] == {"sidecarImage": SIDECAR}
            assert kc.FEATURE_GATE in config["developerConfiguration"]["featureGates"]
            assert reg.propagation == "verified", reg
            assert {name.split("-")[1] for name in reg.component_versions} >= {"api", "controller", "handler"}
        assert time.monotonic() - started < 60
        assert kc.snapshot_spec(api_client) == before


def _manifests(directory):
    operator = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kubevirt"}},
        {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
         "metadata": {"name": "kubevirts.kubevirt.io"},
         "spec": {"group": "kubevirt.io", "scope": "Namespaced",
                  "names": {"kind": "KubeVirt", "plural": "kubevirts", "singular": "kubevirt", "listKind": "KubeVirtList"},
                  "versions": [{"name": "v1", "served": True, "storage": True, "schema": {
                      "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}}]}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "kubevirt-operator", "namespace": "kubevirt"}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "virt-operator", "namespace": "kubevirt"},
         "spec": {"replicas": 1, "selector": {"matchLabels": {"kubevirt.io": "virt-operator"}},
                  "template": {"metadata": {"labels": {"kubevirt.io": "virt-operator"}},
                               "spec": {"containers": [{"name": "virt-operator",
                                                        "image": "quay.io/kubevirt/virt-operator:v1.5.3"}]}}}},
    ]
    cr = {"apiVersion": "kubevirt.io/v1", "kind": "KubeVirt", "metadata": {"name": "kubevirt", "namespace": "kubevirt"},
          "spec": {"configuration": {"developerConfiguration": {"featureGates": []}}, "imagePullPolicy": "IfNotPresent"}}
    (directory / "kubevirt-operator.yaml").write_text(yaml.safe_dump_all(operator))
    (directory / "kubevirt-cr.yaml").write_text(yaml.safe_dump(cr))


def test_install_from_air_gapped_manifests_then_uninstall_only_that(tmp_path):
    _manifests(tmp_path)
    with fake_cluster.running(tmp_path / "kubeconfig", available_delay=1) as fake:
        api_client = _client(fake)
        assert kubevirt_cr.find_kubevirt(api_client) is None
        with KubeVirtInstallation(api_client, "v1.5.3", use_emulation=True, manifests_dir=tmp_path) as kv:
            assert kv.installed and kv.version == "v1.5.3"
            spec = kc.snapshot_spec(api_client)
            assert spec["configuration"]["developerConfiguration"]["useEmulation"] is True
            other = KubeVirtInstallation(api_client, "v1.5.3", use_emulation=True)
            assert other.ensure() == "v1.5.3" and not other.installed, "an existing KubeVirt is used, not owned"
        assert kubevirt_cr.find_kubevirt(api_client) is None, "uninstall removes what it installed"
