"""Registering the slirp binding on a real KubeVirt (the test bed: the real API server, virt-api
and virt-controller of KubeVirt v1.1.0, no operator): the suite's patch of the KubeVirt CR, its
propagation check against what virt-api really loaded, and the exact restore.

virt-api is the judge that the configuration arrived: its validating webhook refuses a VMI with
a binding plugin while the feature gate is off (the bed starts without it) and admits it once
the registration has reached it. Server-side dry runs ask it without creating anything, so the
shared bed is left as it was found.
"""

from __future__ import annotations

import json

import pytest
from kubernetes import client
from kubernetes import config as kubernetes_config
from kubernetes.client.rest import ApiException

from slirp_conformance import waits
from slirp_conformance.cluster import kubevirt_config as kc
from slirp_conformance.cluster import preflight
from tests import testbed_cli
from tests.testbed import components

pytestmark = pytest.mark.testbed

SIDECAR = f"quay.io/kubevirt/network-slirp-binding:{testbed_cli.KUBEVIRT_VERSION}"
GATE_OFF = "Binding plugins feature gate is not enabled"  # virt-api v1.1.0's admission message


def _virt_api_refusal(api_client) -> str | None:
    """virt-api's admission message for a VMI with the slirp binding (a server-side dry run), or
    None when it admits it."""
    vmi = {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstance",
        "metadata": {"name": "registration-probe", "namespace": "default"},
        "spec": {
            "domain": {
                "devices": {"interfaces": [{"name": "default", "binding": {"name": "slirp"}}]},
                "resources": {"requests": {"memory": "128Mi"}},
            },
            "networks": [{"name": "default", "pod": {}}],
        },
    }
    try:
        client.CustomObjectsApi(api_client).create_namespaced_custom_object(
            "kubevirt.io", "v1", "default", "virtualmachineinstances", vmi, dry_run="All"
        )
    except ApiException as e:
        return json.loads(e.body).get("message", e.body)
    return None


def test_register_verify_and_restore_on_a_preinstalled_kubevirt(shared_testbed):
    kubeconfig = shared_testbed.kubeconfig
    assert preflight.check_cluster_reachable(kubeconfig) == components.Pins.from_versions_env().kubernetes
    api_client = kubernetes_config.new_client_from_config(config_file=str(kubeconfig))
    before = kc.snapshot_spec(api_client)
    refusal = _virt_api_refusal(api_client)
    assert refusal and GATE_OFF in refusal, f"premise: virt-api refuses the binding before registration: {refusal}"

    with kc.slirp_binding_registered(api_client, SIDECAR, enable_feature_gate=True) as reg:
        config = kc.snapshot_spec(api_client)["configuration"]
        assert config["network"]["binding"]["slirp"] == {"sidecarImage": SIDECAR}, config
        assert kc.FEATURE_GATE in config["developerConfiguration"]["featureGates"], config
        # The bed runs virt-api and virt-controller as processes, not pods: the pod proxy has no
        # component to ask, so what is verified is virt-api's own report of the CR it loaded.
        assert reg.propagation == "verified: virt-api only", reg
        assert set(reg.component_versions.values()) == {reg.resource_version}, reg
        assert _virt_api_refusal(api_client) is None, "virt-api still refuses the binding after verified propagation"

    assert kc.snapshot_spec(api_client) == before, "the CR is not as it was before the registration"
    waits.wait_for(
        "virt-api to refuse the binding again once the registration is undone",
        lambda: _virt_api_refusal(api_client),
        60,
        accept=lambda msg: bool(msg) and GATE_OFF in msg,
        describe=lambda msg: f"virt-api answers {msg!r}",
    )
