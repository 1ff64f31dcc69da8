"""The KubeVirt version under test is the cluster's (issue 7, item 2): ``status.observedKubeVirtVersion``
of the KubeVirt CR (kubevirt staging/src/kubevirt.io/api/core/v1/types.go, KubeVirtStatus).
``--kubevirt-version`` defaults to none; given, it must agree with the cluster or the run stops at
once with one line. Against tests/fake_cluster with KubeVirt preinstalled at v1.5.3, a version the
test bed cannot build; no VM is booted here. A whole run against the bed without the flag, tested
as the bed's v1.1.0, is in tests/test_cluster_e2e.py.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from kubernetes import config

from slirp_conformance.checks import kubevirt
from slirp_conformance.cluster import kubevirt_cr, preflight, versions
from slirp_conformance.errors import SetupError
from slirp_conformance.kubevirt.environment import ClusterOptions, kubevirt_environment
from tests import fake_cluster
from tests.suite_runner import REPO


@pytest.fixture(scope="module")
def fake_v153(tmp_path_factory):
    path = tmp_path_factory.mktemp("fake") / "kubeconfig"
    with fake_cluster.running(path, preinstalled_kubevirt="v1.5.3") as running:
        yield running


def test_the_option_defaults_to_none():
    from slirp_conformance.plugin import options as plugin_options

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
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-k",
            "slirp",
            "--target=cluster",
            f"--kubeconfig={fake_v153.kubeconfig}",
            "--kubevirt-version=v1.1.0",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    text = r.stdout + r.stderr
    assert r.returncode == 4 and "Traceback" not in text, text[-3000:]
    errors = [line for line in text.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 1 and "v1.5.3" in errors[0] and "v1.1.0" in errors[0], text[-3000:]
    assert time.monotonic() - started < 60


def _cr_spec(kubeconfig) -> dict:
    api = config.new_client_from_config(config_file=str(kubeconfig))
    return kubevirt_cr.get_kubevirt(kubevirt_cr.as_api(api), kubevirt_cr.find_kubevirt(api))["spec"]


# The suite's own start (its KubeVirt environment: the cluster's version, then the binding registered
# for it), without the run's namespace and VM. v1.1.0 is the control: the same code adds the gate
# there, so the v1.5.3 row's empty gate list is the version's doing.
@pytest.mark.parametrize(
    ("cluster_version", "gates"),
    [
        ("v1.5.3", []),
        ("v1.1.0", [versions.FEATURE_GATE]),
    ],
)
def test_the_binding_is_registered_for_the_clusters_version(tmp_path, cluster_version, gates):
    with fake_cluster.running(tmp_path / "kubeconfig", preinstalled_kubevirt=cluster_version) as fake:
        before = _cr_spec(fake.kubeconfig)
        opts = ClusterOptions(target="cluster", kubeconfig=str(fake.kubeconfig))
        with kubevirt_environment(opts, tmp_path) as env:
            version = env.version
            described = env.describe()
            ev = kubevirt.kubevirt_cr(env)  # the check reads only the CR
        after = _cr_spec(fake.kubeconfig)
    image = f"quay.io/kubevirt/network-slirp-binding:{cluster_version}"
    assert str(version) == described["kubevirt_version"] == ev.kubevirt_version == cluster_version, (
        described,
        ev.facts,
    )
    assert described["sidecar_image"] == image and ev.binding == {"sidecarImage": image}, (described, ev.facts)
    assert ev.feature_gates == gates, ev.facts
    assert versions.needs_feature_gate(version) == bool(gates), "the gate-off check runs exactly where a gate is"
    assert after == before, "the CR is restored exactly"
