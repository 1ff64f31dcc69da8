"""The KubeVirt version under test is the cluster's (issue 7, item 2): ``status.observedKubeVirtVersion``
of the KubeVirt CR (kubevirt staging/src/kubevirt.io/api/core/v1/types.go, KubeVirtStatus).
``--kubevirt-version`` defaults to none; given, it must agree with the cluster or the run stops at
once with one line. Against tests/fake_cluster with KubeVirt v1.5.3 preinstalled."""

from __future__ import annotations

import subprocess
import sys
import time
import xml.etree.ElementTree as ET

import pytest

from fixtures.cluster import preflight, versions
from fixtures.errors import SetupError
from tests import fake_cluster
from tests.suite_runner import REPO, run_suite


@pytest.fixture(scope="module")
def fake_v153(tmp_path_factory):
    path = tmp_path_factory.mktemp("fake") / "kubeconfig"
    with fake_cluster.running(path, preinstalled_kubevirt="v1.5.3") as running:
        yield running


def test_the_option_defaults_to_none():
    from fixtures import plugin_options

    seen = {}

    class Group:
        def addoption(self, *names, **kw):
            seen.update({n: kw for n in names})

    class Parser:
        def getgroup(self, *_a, **_k):
            return Group()

    plugin_options.pytest_addoption(Parser())
    assert seen["--kubevirt-version"]["default"] is None


def test_preflight_reads_the_clusters_version(fake_v153):
    report = preflight.preflight("cluster", kubevirt_version=None, kubeconfig=fake_v153.kubeconfig)
    assert report.kubevirt_version == versions.parse_kubevirt_version("v1.5.3")


def test_preflight_refuses_a_flag_that_disagrees(fake_v153):
    with pytest.raises(SetupError, match=r"runs KubeVirt v1\.5\.3 .*--kubevirt-version is v1\.1\.0") as err:
        preflight.preflight("cluster", kubevirt_version="v1.1.0", kubeconfig=fake_v153.kubeconfig)
    assert "\n" not in str(err.value)


def test_a_disagreeing_flag_stops_the_run_at_once_in_one_line(fake_v153):
    started = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "pytest", "-k", "slirp", "--target=cluster",
                        f"--kubeconfig={fake_v153.kubeconfig}", "--kubevirt-version=v1.1.0"],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    text = r.stdout + r.stderr
    assert r.returncode == 4 and "Traceback" not in text, text[-3000:]
    errors = [line for line in text.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 1 and "v1.5.3" in errors[0] and "v1.1.0" in errors[0], text[-3000:]
    assert time.monotonic() - started < 60


def _junit(tmp_path) -> ET.Element:
    return ET.parse(tmp_path / "junit.xml").getroot()


@pytest.mark.selftest_vm
def test_a_v1_5_3_cluster_without_the_flag_is_tested_as_v1_5_3(fake_v153, tmp_path):
    run = run_suite(tmp_path, "--target=cluster", "--kubeconfig", str(fake_v153.kubeconfig),
                    "--guest-profile=reference-busybox", "suites/test_slirp_kubevirt.py")
    assert run.returncode == 0, run.output[-5000:]
    cases = {c.get("name"): c for c in _junit(tmp_path).iter("testcase")}
    props = {p.get("name"): p.get("value")
             for p in cases["test_binding_registered_with_the_sidecar_image"].iter("property")}
    assert props["kubevirt_version"] == "v1.5.3", props
    assert props["sidecar_image"] == "quay.io/kubevirt/network-slirp-binding:v1.5.3", props
    assert '"feature_gates": []' in props["evidence.kubevirt-cr"], "no gate added at v1.5.3"
    gate_off = cases["test_binding_plugin_refused_while_the_feature_gate_is_off"].find("skipped")
    assert gate_off is not None and "v1.5.3" in gate_off.get("message", ""), ET.tostring(gate_off or ET.Element("x"))
