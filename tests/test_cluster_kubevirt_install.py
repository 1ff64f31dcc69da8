"""KubeVirt install helpers that need no cluster: manifests (release URL or air-gapped dir), useEmulation.

The apply/wait/uninstall path talks to a real API (dynamic client): the install runs against the real
virt-operator for the kind cluster of tests/test_kind_kubevirt.py (hack/cluster-up.sh), which also
checks that an existing KubeVirt is used and not owned. The uninstall runs when a --target=kind run
deletes a cluster it created (the nightly job); no self-test checks it on a real operator yet.
"""

from __future__ import annotations

import urllib.error

import pytest
import yaml

from slirp_conformance.cluster import kubevirt_install as ki
from slirp_conformance.errors import SetupError

OPERATOR = [
    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kubevirt"}},
    {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "virt-operator", "namespace": "kubevirt"}},
]
CR = {
    "apiVersion": "kubevirt.io/v1",
    "kind": "KubeVirt",
    "metadata": {"name": "kubevirt", "namespace": "kubevirt"},
    "spec": {"configuration": {"developerConfiguration": {"featureGates": []}}, "imagePullPolicy": "IfNotPresent"},
}


def _write(directory, operator=OPERATOR, cr=(CR,)):
    (directory / "kubevirt-operator.yaml").write_text(yaml.safe_dump_all(operator))
    (directory / "kubevirt-cr.yaml").write_text(yaml.safe_dump_all(list(cr)))


def test_air_gapped_manifests_are_read_from_the_directory(tmp_path):
    _write(tmp_path)
    operator, crs = ki.load_manifests("v1.1.0", tmp_path)
    assert [d["kind"] for d in operator] == ["Namespace", "Deployment"]
    assert crs == [CR]


def test_missing_air_gapped_manifest_names_the_directory_and_files(tmp_path):
    (tmp_path / "kubevirt-operator.yaml").write_text(yaml.safe_dump_all(OPERATOR))
    with pytest.raises(SetupError, match=r"kubevirt-cr\.yaml.*put the v1\.1\.0 release's"):
        ki.load_manifests("v1.1.0", tmp_path)


def test_cr_manifest_without_a_kubevirt_object_is_refused(tmp_path):
    _write(tmp_path, cr=[OPERATOR[0]])
    with pytest.raises(SetupError, match="has no KubeVirt object"):
        ki.load_manifests("v1.1.0", tmp_path)


def test_download_failure_points_at_air_gapped_mode(monkeypatch):
    def offline(url, timeout):
        assert url == "https://github.com/kubevirt/kubevirt/releases/download/v1.5.3/kubevirt-operator.yaml"
        assert timeout > 0
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(ki.urllib.request, "urlopen", offline)
    with pytest.raises(SetupError, match="--kubevirt-manifests DIR"):
        ki.load_manifests("v1.5.3")


def test_use_emulation_is_set_on_a_copy_keeping_everything_else():
    emulated = ki.with_use_emulation(CR)
    assert emulated["spec"]["configuration"]["developerConfiguration"] == {"featureGates": [], "useEmulation": True}
    assert emulated["spec"]["imagePullPolicy"] == "IfNotPresent"
    assert "useEmulation" not in CR["spec"]["configuration"]["developerConfiguration"], "input must not change"
    bare = ki.with_use_emulation({"apiVersion": "kubevirt.io/v1", "kind": "KubeVirt", "metadata": {"name": "kv"}})
    assert bare["spec"]["configuration"]["developerConfiguration"]["useEmulation"] is True


class _Discovery:
    """A dynamic client's ``resources`` whose server serves ``kind`` only from the ``serves_from``-th look on."""

    def __init__(self, serves_from: int) -> None:
        self.looks = 0
        self.serves_from = serves_from

    def get(self, api_version: str, kind: str):
        from kubernetes.dynamic.exceptions import ResourceNotFoundError

        self.looks += 1
        if self.looks < self.serves_from:
            raise ResourceNotFoundError(f"No matches found for {{'api_version': {api_version!r}, 'kind': {kind!r}}}")
        return f"<resource {kind}>"


class _Dyn:
    def __init__(self, resources: _Discovery) -> None:
        self.resources = resources


def test_a_kind_discovery_serves_a_moment_late_is_waited_for(monkeypatch):
    """The CRD is Established before the API server's discovery serves its kind (CI saw the CR's
    creation fail in that moment): the lookup waits for it, bounded."""
    monkeypatch.setattr(ki.runner, "budget", lambda name: 10)
    discovery = _Discovery(serves_from=3)
    assert ki._discovered(_Dyn(discovery), "kubevirt.io/v1", "KubeVirt") == "<resource KubeVirt>"
    assert discovery.looks == 3


def test_a_kind_never_served_ends_in_one_timeout_naming_it(monkeypatch):
    from slirp_conformance import waits

    monkeypatch.setattr(ki.runner, "budget", lambda name: 0.5)
    with pytest.raises(waits.WaitTimeout, match=r"KubeVirt \(kubevirt\.io/v1\) in the API server's discovery"):
        ki._discovered(_Dyn(_Discovery(serves_from=10**6)), "kubevirt.io/v1", "KubeVirt")
