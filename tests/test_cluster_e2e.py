"""The cluster target end to end against the fake cluster: the whole contract runs through the
real client code (registration, VM boot, websocket console, SSH over pod port-forward), and the
KubeVirt CR is exactly as it was afterwards, whether the run passed, failed or was interrupted.
(The contract with a Fedora-like guest behind the VMI: tests/test_testbed_fedora_like.py, on the bed.)"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from fixtures import waits
from fixtures.guest_profiles import REFERENCE
from tests import fake_cluster, recording_tools
from tests.suite_runner import interrupt_suite, run_suite

pytestmark = pytest.mark.selftest_vm


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    path = tmp_path_factory.mktemp("fake") / "kubeconfig"
    with fake_cluster.running(path, preinstalled_kubevirt="v1.1.0") as running:
        yield running


def kubevirt_specs(kubeconfig) -> dict:
    out = subprocess.run(["kubectl", f"--kubeconfig={kubeconfig}", "get", "kubevirt", "-A", "-o", "json"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    return {f"{i['metadata']['namespace']}/{i['metadata']['name']}": i["spec"] for i in json.loads(out)["items"]}


def slirp_namespaces(kubeconfig) -> set[str]:
    out = subprocess.run(["kubectl", f"--kubeconfig={kubeconfig}", "get", "namespaces", "-o", "json"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    return {i["metadata"]["name"] for i in json.loads(out)["items"]
            if i["metadata"]["name"].startswith("slirp-conformance-")}


def guest_profile_met(run) -> str | None:
    """The guest profile the run recognised after login (from /etc/os-release), as its report names it."""
    return ((run.report or {}).get("versions") or {}).get("guest_profile")


def _args(fake, *extra) -> list[str]:
    # As the acceptance line has it: `--kubeconfig PATH` with a space, the guest profile found by itself.
    return ["--target=cluster", "--kubeconfig", str(fake.kubeconfig), *extra]


def test_contract_passes_and_the_kubevirt_cr_is_restored(fake, tmp_path):
    before = kubevirt_specs(fake.kubeconfig)
    run = run_suite(tmp_path, *_args(fake))
    assert kubevirt_specs(fake.kubeconfig) == before
    assert not slirp_namespaces(fake.kubeconfig)
    assert run.returncode == 0, run.output[-5000:]
    modules = {t.split("::")[0] for t in run.outcomes}
    assert "test_slirp_kubevirt" in modules and "test_slirp_icmp" in modules, modules
    # what tells a Fedora-like run (tests/test_testbed_fedora_like.py) from this one
    assert guest_profile_met(run) == REFERENCE.name, (run.report or {}).get("versions")


def test_failed_run_restores_the_cr(fake, tmp_path):
    """Forcing the Fedora profile on the reference guest fails the start after registration (its
    host key is not where Fedora keeps it)."""
    before = kubevirt_specs(fake.kubeconfig)
    artifacts = tmp_path / "artifacts"
    run = run_suite(tmp_path, *_args(fake), "--guest-profile=fedora-with-test-tooling",
                    "--timeout-scale=0.1", f"--artifacts={artifacts}")
    assert run.returncode != 0
    assert kubevirt_specs(fake.kubeconfig) == before
    assert not slirp_namespaces(fake.kubeconfig)
    # What a user gets to debug it, gathered before the VM and namespace went away.
    setup = artifacts / "session-setup"
    names = {p.name for p in setup.iterdir()}
    assert {"kubevirt-cr.yaml", "vm.yaml", "vmi.yaml", "pods.yaml", "events.yaml", "console-transcript.log"} <= names
    assert any(n.endswith("-compute.log") for n in names), names
    vm_yaml = (setup / "vm.yaml").read_text()
    assert "password" in vm_yaml and "password\": \"fedora" not in vm_yaml and "<redacted>" in vm_yaml


def test_interrupted_run_restores_the_cr(fake, tmp_path):
    before = kubevirt_specs(fake.kubeconfig)
    _, out = interrupt_suite(tmp_path, *_args(fake), when="the run to register the binding",
                             ready=lambda _pid: kubevirt_specs(fake.kubeconfig) != before)
    assert kubevirt_specs(fake.kubeconfig) == before, out[-3000:]
    waits.wait_for("the run's namespace to be gone", lambda: not slirp_namespaces(fake.kubeconfig), 60)


def test_kind_target_creates_uses_and_deletes_its_cluster(fake, tmp_path):
    """--target=kind with recording docker/kind/kubectl whose "cluster" is the fake API server:
    the suite creates the cluster from its own config, runs the contract on it, and deletes it."""
    bindir, log, state = tmp_path / "bin", tmp_path / "calls.log", tmp_path / "state"
    recording_tools.install(bindir)
    state.mkdir()
    log.touch()
    before = kubevirt_specs(fake.kubeconfig)
    run = run_suite(tmp_path, "--target=kind", "--kubevirt-version=v1.1.0", env={
        "PATH": f"{bindir}:{os.environ['PATH']}", "FAKE_LOG": str(log), "FAKE_STATE": str(state),
        "FAKE_KIND_KUBECONFIG": str(fake.kubeconfig)})
    calls = [line.split() for line in log.read_text().splitlines()]
    kind_calls = [c[1:3] for c in calls if c[0] == "kind"]
    assert run.returncode == 0, run.output[-5000:]
    assert ["'create'", "'cluster'"] in kind_calls and ["'delete'", "'cluster'"] in kind_calls, kind_calls
    create = next(c for c in calls if c[:3] == ["kind", "'create'", "'cluster'"])
    assert "'--config'" in create and "'slirp-conformance'" in create, create
    assert kubevirt_specs(fake.kubeconfig) == before
