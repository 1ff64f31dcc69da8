"""KubeVirt's operator install path through the real kubernetes client against tests/fake_cluster
(real HTTP): the dynamic client's create/delete of release-manifest objects, waiting for the
KubeVirt CR to be Available, and uninstalling only what it installed.

The fake plays virt-operator here because the cluster test bed has none (it starts virt-api and
virt-controller itself); registration and its propagation are checked on the bed
(tests/test_testbed_registration.py).
"""

from __future__ import annotations

import pytest
import yaml

fake_cluster = pytest.importorskip("tests.fake_cluster")
kubernetes_config = pytest.importorskip("kubernetes.config")

from slirp_conformance.cluster import kubevirt_config as kc  # noqa: E402
from slirp_conformance.cluster import kubevirt_cr  # noqa: E402
from slirp_conformance.cluster.kubevirt_install import KubeVirtInstallation  # noqa: E402


def _client(fake):
    return kubernetes_config.new_client_from_config(config_file=str(fake.kubeconfig))


def _manifests(directory):
    operator = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kubevirt"}},
        {
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": "kubevirts.kubevirt.io"},
            "spec": {
                "group": "kubevirt.io",
                "scope": "Namespaced",
                "names": {
                    "kind": "KubeVirt",
                    "plural": "kubevirts",
                    "singular": "kubevirt",
                    "listKind": "KubeVirtList",
                },
                "versions": [
                    {
                        "name": "v1",
                        "served": True,
                        "storage": True,
                        "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
                    }
                ],
            },
        },
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": "kubevirt-operator", "namespace": "kubevirt"},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "virt-operator", "namespace": "kubevirt"},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"kubevirt.io": "virt-operator"}},
                "template": {
                    "metadata": {"labels": {"kubevirt.io": "virt-operator"}},
                    "spec": {
                        "containers": [{"name": "virt-operator", "image": "quay.io/kubevirt/virt-operator:v1.5.3"}]
                    },
                },
            },
        },
    ]
    cr = {
        "apiVersion": "kubevirt.io/v1",
        "kind": "KubeVirt",
        "metadata": {"name": "kubevirt", "namespace": "kubevirt"},
        "spec": {"configuration": {"developerConfiguration": {"featureGates": []}}, "imagePullPolicy": "IfNotPresent"},
    }
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
