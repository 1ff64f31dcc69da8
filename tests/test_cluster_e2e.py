"""The suite's cluster targets end to end on the cluster test bed (tests/testbed: the real API
server, virt-api and virt-controller of KubeVirt v1.1.0, the node agent's VM): what the bed's
own module (tests/test_testbed.py) does not run. A run without ``--kubevirt-version`` is tested as
the bed's KubeVirt version, read from the cluster; a failed start leaves the user what to debug
it with and the KubeVirt CR as it was; ``--target=kind`` creates its cluster, runs the contract on
it and deletes it.

All leave the shared bed as they found it: the CR restored, the run's namespace gone.
"""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from slirp_conformance import waits
from slirp_conformance.cluster import versions
from tests import recording_tools, testbed_cli
from tests.suite_runner import run_suite
from tests.testbed_probes import kubectl

pytestmark = pytest.mark.testbed

BED_TIMEOUTS = ("--timeout-scale", "3")  # as tests/test_testbed.py: other builds may share the machine


def _kubectl_json(kubeconfig: Path, *args: str) -> dict:
    return json.loads(kubectl(kubeconfig, *args, "-o", "json"))


def kubevirt_specs(kubeconfig: Path) -> dict:
    return {
        f"{i['metadata']['namespace']}/{i['metadata']['name']}": i["spec"]
        for i in _kubectl_json(kubeconfig, "get", "kubevirt", "-A")["items"]
    }


def slirp_namespaces(kubeconfig: Path) -> set[str]:
    return {
        i["metadata"]["name"]
        for i in _kubectl_json(kubeconfig, "get", "namespaces")["items"]
        if i["metadata"]["name"].startswith("slirp-conformance-")
    }


def _wait_run_namespace_gone(kubeconfig: Path) -> None:
    """The run deletes its namespace and waits for it; this only bounds a slow controller-manager."""
    waits.wait_for(
        "the run's namespace to be gone",
        lambda: slirp_namespaces(kubeconfig),
        60,
        accept=lambda left: not left,
        describe=lambda left: f"still there: {left}",
    )


def test_a_run_without_the_flag_is_tested_as_the_beds_version(shared_testbed, tmp_path):
    """The version under test is read from the cluster (issue 7, item 2): the bed runs v1.1.0, which
    is not KUBEVIRT_DEFAULT_VERSION, so a run that fell back to the default would record another
    version, skip the feature gate and register another sidecar image. (Versions the bed cannot
    build: tests/test_cluster_version_detection.py, without a VM.)"""
    bed_version = testbed_cli.KUBEVIRT_VERSION
    assert str(versions.default_version()) != bed_version, "premise: the default differs from the bed's version"
    assert versions.needs_feature_gate(bed_version), "premise: the bed's version needs the feature gate"
    kubeconfig = shared_testbed.kubeconfig
    before = kubevirt_specs(kubeconfig)
    run = run_suite(
        tmp_path,
        "--target=cluster",
        "--kubeconfig",
        str(kubeconfig),
        *BED_TIMEOUTS,
        "suites/test_slirp_kubevirt.py",
        timeout=1200,
    )
    assert run.returncode == 0, run.output[-5000:]
    assert kubevirt_specs(kubeconfig) == before, "the CR changed across the run"
    _wait_run_namespace_gone(kubeconfig)
    assert ((run.report or {}).get("versions") or {}).get("kubevirt_version") == bed_version, run.report
    cases = {c.get("name"): c for c in ET.parse(tmp_path / "junit.xml").getroot().iter("testcase")}
    props = {
        p.get("name"): p.get("value") for p in cases["test_binding_registered_with_the_sidecar_image"].iter("property")
    }
    assert props["kubevirt_version"] == bed_version, props
    assert props["sidecar_image"] == f"quay.io/kubevirt/network-slirp-binding:{bed_version}", props
    gates = json.loads(props["evidence.kubevirt-cr"])["feature_gates"]
    assert versions.FEATURE_GATE in gates, props
    assert run.outcomes.get("test_slirp_kubevirt::test_feature_gate_present_where_needed") == "passed", run.outcomes
    assert (
        run.outcomes.get("test_slirp_kubevirt::test_binding_plugin_refused_while_the_feature_gate_is_off") == "passed"
    ), run.outcomes


def test_failed_start_leaves_artifacts_and_restores_the_cr(shared_testbed, tmp_path):
    """Forcing the Fedora profile on the reference guest fails the start after registration (its
    host key is not where Fedora keeps it); what a user gets to debug it is gathered before the
    VM and namespace go, with the run's password redacted."""
    kubeconfig = shared_testbed.kubeconfig
    before = kubevirt_specs(kubeconfig)
    artifacts = tmp_path / "artifacts"
    run = run_suite(
        tmp_path,
        "--target=cluster",
        "--kubeconfig",
        str(kubeconfig),
        "--guest-profile=fedora-with-test-tooling",
        f"--artifacts={artifacts}",
        *BED_TIMEOUTS,
        timeout=1200,
    )
    assert run.returncode != 0, run.output[-3000:]
    assert kubevirt_specs(kubeconfig) == before, "the CR changed across the failed run"
    _wait_run_namespace_gone(kubeconfig)
    setup = artifacts / "session-setup"
    names = {p.name for p in setup.iterdir()} if setup.is_dir() else set()
    assert {"kubevirt-cr.yaml", "vm.yaml", "vmi.yaml", "pods.yaml", "events.yaml", "console-transcript.log"} <= names, (
        names,
        run.output[-3000:],
    )
    assert any(n.endswith("-compute.log") for n in names), names
    vm_yaml = (setup / "vm.yaml").read_text()
    assert "password" in vm_yaml and "<redacted>" in vm_yaml and 'password": "fedora' not in vm_yaml, vm_yaml


def test_kind_target_creates_uses_and_deletes_its_cluster(shared_testbed, tmp_path):
    """--target=kind with recording docker/kind/kubectl whose "cluster" is the bed
    (FAKE_KIND_KUBECONFIG): the suite creates the cluster from its own config, runs the contract
    on the bed's real components, and deletes it."""
    kubeconfig = shared_testbed.kubeconfig
    bindir, log, state = tmp_path / "bin", tmp_path / "calls.log", tmp_path / "state"
    recording_tools.install(bindir)
    state.mkdir()
    log.touch()
    before = kubevirt_specs(kubeconfig)
    run = run_suite(
        tmp_path,
        "--target=kind",
        f"--kubevirt-version={testbed_cli.KUBEVIRT_VERSION}",
        *BED_TIMEOUTS,
        timeout=1800,
        env={
            "PATH": f"{bindir}:{os.environ['PATH']}",
            "FAKE_LOG": str(log),
            "FAKE_STATE": str(state),
            "FAKE_KIND_KUBECONFIG": str(kubeconfig),
        },
    )
    calls = [line.split() for line in log.read_text().splitlines()]
    kind_calls = [c[1:3] for c in calls if c[0] == "kind"]
    assert run.returncode == 0, run.output[-5000:]
    assert {t.split("::")[0] for t in run.ids("passed")} >= {"test_slirp_kubevirt", "test_slirp_icmp"}, run.outcomes
    assert ["'create'", "'cluster'"] in kind_calls and ["'delete'", "'cluster'"] in kind_calls, kind_calls
    create = next(c for c in calls if c[:3] == ["kind", "'create'", "'cluster'"])
    assert "'--config'" in create and "'slirp-conformance'" in create, create
    assert kubevirt_specs(kubeconfig) == before, "the CR changed across the kind run"
    _wait_run_namespace_gone(kubeconfig)
