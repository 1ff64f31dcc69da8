"""The whole product path on the real stack: a kind cluster built here with KubeVirt installed through
its own virt-operator (``kubevirt_kind``, tests/conftest.py: ``hack/cluster-up.sh --images-from-source``),
the slirp plugin's real sidecar, and the suite run on it as a user runs it (marker ``kind``).

What ran here against stand-ins before (the cluster test bed's node agent and kubelet endpoint, the
fake API server) now meets KubeVirt's own virt-api, virt-controller, virt-handler and virt-launcher,
a real kubelet and containerd: the passing run with the CR identical before and after (premise: the
run did register the binding), the interrupted run, the registration's propagation to every
component pod, and the version the suite reads from the cluster. Every test leaves the shared cluster
as it found it.
"""

from __future__ import annotations

import json
import os
import threading
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from kubernetes import config as kubernetes_config

from slirp_conformance import waits
from slirp_conformance.cluster import kubevirt_config as kc
from slirp_conformance.cluster import kubevirt_cr, preflight, versions
from slirp_conformance.errors import SetupError
from tests import kind_probes
from tests.kind_probes import kubectl
from tests.suite_runner import interrupt_suite, run_suite
from tests.test_reference_e2e import ALL_MODULES

pytestmark = pytest.mark.kind

KUBEVIRT = kind_probes.KUBEVIRT
# other engineers' builds and VMs share the 2 cores: a TCG guest in a pod boots slower than alone
TIMEOUTS = ("--timeout-scale", "3")


@pytest.fixture(scope="module")
def as_cluster(kubevirt_kind) -> tuple[str, ...]:
    """The options of a ``--target=cluster`` run on the kind cluster: its kubeconfig, and the peer image
    built here and loaded into its nodes (--target=cluster knows nothing of --images-from-source, and
    its default peer image would be pulled from a registry there is none of: ImagePullBackOff)."""
    from slirp_conformance.kubevirt_images import build

    peer = build.build(KUBEVIRT).peer_image  # found in the cache: the fixture's cluster-up built it
    return ("--target=cluster", f"--kubeconfig={kubevirt_kind.kubeconfig}", f"--peer-image={peer}", *TIMEOUTS)


def _json(kubeconfig: str, *args: str) -> dict:
    return json.loads(kubectl(kubeconfig, *args, "-o", "json").stdout)


def _kubevirt_specs(kubeconfig: str) -> dict[str, dict]:
    return {
        f"{i['metadata']['namespace']}/{i['metadata']['name']}": i["spec"]
        for i in _json(kubeconfig, "get", "kubevirt", "-A")["items"]
    }


def _registered(specs: dict[str, dict]) -> bool:
    return any(
        "slirp" in (((spec.get("configuration") or {}).get("network") or {}).get("binding") or {})
        for spec in specs.values()
    )


def _properties(junit: Path, case: str) -> dict[str, str]:
    cases = {c.get("name"): c for c in ET.parse(junit).getroot().iter("testcase")}
    return {p.get("name") or "": p.get("value") or "" for p in cases[case].iter("property")}


def test_the_suite_is_conformant_on_kind_with_kubevirt_built_here(kubevirt_kind, tmp_path):
    """``--target=kind --images-from-source --kubevirt-version V`` on the cluster (reused by its
    name: the node image, KubeVirt's images and its install are found, not redone): the whole
    contract over the console and SSH and the KubeVirt-only suite pass, the report says CONFORMANT,
    the guest's QEMU carries the sidecar's arguments, and the KubeVirt CR is exactly as before.

    Premise of "as before": the run changed it (a poller sees the binding registered during the run)."""
    kubeconfig = kubevirt_kind.kubeconfig
    before = _kubevirt_specs(kubeconfig)
    assert before and not _registered(before), f"premise: the CR starts without the slirp binding: {before}"
    seen_registered, done = [], threading.Event()

    def watch_cr() -> None:
        while not done.wait(2):
            try:
                if _registered(_kubevirt_specs(kubeconfig)):
                    seen_registered.append(True)
            except AssertionError:  # one kubectl call failing under load is not the test's concern
                pass

    poller = threading.Thread(target=watch_cr, daemon=True)
    poller.start()
    try:
        run = run_suite(
            tmp_path,
            *kind_probes.kind_run_args(kubevirt_kind.name),
            *TIMEOUTS,
            timeout=3600,
        )
    finally:
        done.set()
        poller.join(30)
    assert seen_registered, f"premise: the run never registered the binding; its output:\n{run.output[-3000:]}"
    report = run.report or {}
    assert run.returncode == 0 and report.get("outcome") == "CONFORMANT", (
        f"exit {run.returncode}, outcome {report.get('outcome')}, failed {sorted(run.failed)}:\n{run.output[-5000:]}"
    )
    passed_modules = {t.split("::")[0] for t in run.ids("passed")}
    assert passed_modules >= ALL_MODULES | {"test_slirp_kubevirt"}, run.outcomes
    assert run.ids("skipped") == kind_probes.skipped_on_kind(), (
        f"skipped but not expected: {sorted(run.ids('skipped') - kind_probes.skipped_on_kind())}; "
        f"expected but ran: {sorted(kind_probes.skipped_on_kind() - run.ids('skipped'))}"
    )
    # issue 20's cluster-only clauses: the Service by cluster IP and DNS name, the renamed binding
    for clause in (f"{SERVICE_CLAUSE}[cluster-ip]", f"{SERVICE_CLAUSE}[dns-name]", RENAMED_CLAUSE, *QUOTA_CLAUSES):
        assert run.outcomes.get(clause) == "passed", (clause, run.outcomes)
    # every clause of the contract ran on both channels and passed; what was skipped says why
    for clause in ("test_slirp_icmp::test_icmp_echo_to_peer_gets_no_reply", "test_slirp_tcp::test_egress_echo"):
        for channel in ("console", "ssh"):
            assert run.outcomes.get(f"{clause}[{channel}]") == "passed", (clause, channel, run.outcomes)
    assert not run.failed, run.outcomes
    assert (report.get("versions") or {}).get("kubevirt_version") == KUBEVIRT, report.get("versions")
    qemu = _properties(tmp_path / "junit.xml", "test_qemu_command_line_carries_slirp_as_the_sidecar_renders_it")
    argv = qemu.get("evidence.qemu-command-line", "")
    assert "user," in argv and "e1000" in argv, qemu  # the sidecar's -netdev user and NIC, read from the pod
    assert _kubevirt_specs(kubeconfig) == before, "the CR changed across the passing run"
    left = kind_probes.wait_no_run_leftovers(kubeconfig)
    assert not left, f"the run left {left}"


# Issue 20's cluster-only clauses, each with a fault of the cluster's side (tests/clause_faults.py).
SERVICE_CLAUSE = "test_slirp_ports::test_cluster_ip_service_reaches_guest_service"
RENAMED_CLAUSE = "test_slirp_kubevirt::test_binding_under_another_name_works_from_v1_9_and_is_refused_before"
QUOTA_CLAUSES = (
    "test_slirp_kubevirt::test_vm_under_a_resource_quota_starts_once_sidecar_resources_are_configured",
    "test_slirp_kubevirt::test_vm_under_a_resource_quota_without_sidecar_resources_fails_with_the_reason",
)
CLUSTER_FAULTS = {
    "service-selects-nothing": {f"{SERVICE_CLAUSE}[{via}]" for via in ("cluster-ip", "dns-name")},
    # v1.1.0's sidecar serves only `slirp`: from v1.9.0 that turns the clause red (below, it is the
    # behaviour the clause expects, so the fault changes nothing there)
    "renamed-sidecar-serves-slirp-only": {RENAMED_CLAUSE},
    "sidecar-resources-never-set": {QUOTA_CLAUSES[0]},
    "bare-quota-vm-guaranteed": {QUOTA_CLAUSES[1]},
}


@pytest.mark.skipif(
    os.environ.get("SLIRP_SELFTEST_REAL_STACK_CONTROLS") != "1",
    reason="one more VM boot on the kind cluster and KubeVirt v1.1.0's sidecar built here (measured 479 s at "
    "load 14-17, v1.1.0's images cached): set SLIRP_SELFTEST_REAL_STACK_CONTROLS=1 to run it",
)
def test_cluster_clause_faults_turn_exactly_their_clauses_red(kubevirt_kind, tmp_path):
    """Every fault in one run (one VM boot): a launcher pod the Service does not select turns exactly
    the Service clause red (both ways of dialling), a sidecar that serves only `slirp` exactly the
    renamed-binding clause, sidecar resources never set exactly the quota clause that needs them,
    a guaranteed-QoS bare VM exactly the quota refusal's; the listed port at the pod address,
    reached in the same run, stays green."""
    from tests.clause_faults import FAULT_ENV

    faults = [
        f
        for f in CLUSTER_FAULTS
        if f != "renamed-sidecar-serves-slirp-only" or versions.binding_name_configurable(KUBEVIRT)
    ]
    wanted = set().union(*(CLUSTER_FAULTS[f] for f in faults))
    run = run_suite(
        tmp_path,
        *kind_probes.kind_run_args(kubevirt_kind.name),
        *TIMEOUTS,
        "-p",
        "tests.clause_faults",
        "-k",
        "cluster_ip_service or another_name or resource_quota or test_listed_port_reaches",
        env={FAULT_ENV: ",".join(faults)},
        timeout=3600,
    )
    assert run.failed == wanted, (
        f"unexpected red: {sorted(run.failed - wanted)}; unexpected green: {sorted(wanted - run.failed)}\n"
        f"{run.output[-3000:]}"
    )
    assert run.outcomes.get("test_slirp_ports::test_listed_port_reaches_guest_service") == "passed", run.outcomes
    assert run.report is not None and run.report["outcome"] == "NOT CONFORMANT", run.output[-3000:]
    left = kind_probes.wait_no_run_leftovers(kubevirt_kind.kubeconfig)
    assert not left, f"the run left {left}"


def test_an_interrupted_run_puts_the_cr_back_and_leaves_no_vm(kubevirt_kind, as_cluster, tmp_path):
    """Ctrl-C as soon as the suite's VMI exists (its launcher pod starting on the real kubelet): exit 2,
    the CR as found, the VM and the run's namespace gone."""
    kubeconfig = kubevirt_kind.kubeconfig
    before = _kubevirt_specs(kubeconfig)

    def vmi_created(_pid: int) -> bool:
        vmis = _json(kubeconfig, "get", "vmis", "-A")["items"]
        return any(v["metadata"]["namespace"].startswith("slirp-conformance-") for v in vmis)

    code, output = interrupt_suite(
        tmp_path,
        *as_cluster,
        when="the suite's VMI on the kind cluster",
        ready=vmi_created,
        timeout=900,
    )
    assert code == 2, f"expected exit 2 (interrupted), got {code}:\n{output[-3000:]}"
    assert _kubevirt_specs(kubeconfig) == before, f"the CR changed across the interrupted run:\n{output[-2000:]}"
    left = kind_probes.wait_no_run_leftovers(kubeconfig)
    assert not left, f"the interrupted run left {left}"


def test_a_failed_start_leaves_artifacts_and_puts_the_cr_back(kubevirt_kind, as_cluster, tmp_path):
    """Forcing the busybox reference profile on the Fedora-like guest fails the start after the
    registration and the login (the guest has no dropbear host key); what a user gets to debug it is
    gathered from the real launcher pod before the VM and namespace go, with the run's password redacted."""
    kubeconfig = kubevirt_kind.kubeconfig
    before = _kubevirt_specs(kubeconfig)
    artifacts = tmp_path / "artifacts"
    run = run_suite(
        tmp_path, *as_cluster, "--guest-profile=reference-busybox", f"--artifacts={artifacts}", timeout=1800
    )
    assert run.returncode == 1 and not run.ids("passed"), f"exit {run.returncode}: {run.outcomes}\n{run.output[-3000:]}"
    assert _kubevirt_specs(kubeconfig) == before, "the CR changed across the failed run"
    left = kind_probes.wait_no_run_leftovers(kubeconfig)
    assert not left, f"the failed run left {left}"
    setup = artifacts / "session-setup"
    names = {p.name for p in setup.iterdir()} if setup.is_dir() else set()
    wanted = {"kubevirt-cr.yaml", "vm.yaml", "vmi.yaml", "pods.yaml", "events.yaml", "console-transcript.log"}
    assert wanted <= names and any(n.endswith("-compute.log") for n in names), (names, run.output[-3000:])
    vm_yaml = (setup / "vm.yaml").read_text()
    assert "password" in vm_yaml and "<redacted>" in vm_yaml, vm_yaml
    compute = next(setup / n for n in names if n.endswith("-compute.log"))
    assert "virt-launcher" in compute.read_text(), f"{compute.name} is not virt-launcher's log"


def test_registration_reaches_every_component_pod_and_is_undone_exactly(kubevirt_kind):
    """The suite's patch of the KubeVirt CR, its propagation check against what each virt-api,
    virt-controller and virt-handler pod reports it loaded (through the API server's pod proxy: the
    bed had no pods to ask, only virt-api's own report), and the exact restore."""
    api_client = kubernetes_config.new_client_from_config(config_file=kubevirt_kind.kubeconfig)
    before = kc.snapshot_spec(api_client)
    sidecar = versions.slirp_sidecar_image(versions.parse_kubevirt_version(KUBEVIRT))
    gate = versions.needs_feature_gate(KUBEVIRT)
    with kc.slirp_binding_registered(api_client, sidecar, enable_feature_gate=gate) as reg:
        config = kc.snapshot_spec(api_client)["configuration"]
        assert config["network"]["binding"]["slirp"] == {"sidecarImage": sidecar}, config
        gates = (config.get("developerConfiguration") or {}).get("featureGates") or []
        assert (kc.FEATURE_GATE in gates) == gate, config
        assert reg.propagation == "verified", reg
        components = {pod.split("-")[1] for pod in reg.component_versions}  # virt-{api,controller,handler}-...
        assert components == {"api", "controller", "handler"}, reg.component_versions
        assert all(int(v) >= int(reg.resource_version) for v in reg.component_versions.values()), reg
    assert kc.snapshot_spec(api_client) == before, "the CR is not as it was before the registration"


@pytest.fixture
def reported_version(kubevirt_kind):
    """The cluster's KubeVirt CR reports another release (``status.observedKubeVirtVersion``, what the
    suite reads as the version under test) while virt-operator, which writes that status, is scaled
    to zero; afterwards the status is put back as it was and the operator scaled up again.

    Fault injection on the real API server instead of a second cluster per release (a v1.1.0 cluster
    is another node image and KubeVirt build: about 30 min cold, SLIRP_KIND_SELFTEST_KUBEVIRT=v1.1.0
    runs every kind self-test on one)."""
    kubeconfig = kubevirt_kind.kubeconfig
    cr = _json(kubeconfig, "get", "kubevirt", "-A")["items"][0]
    namespace, name = cr["metadata"]["namespace"], cr["metadata"]["name"]
    operator = _json(kubeconfig, "get", "deployment", "virt-operator", "-n", namespace)
    replicas = str(operator["spec"].get("replicas", 1))
    original = cr["status"]["observedKubeVirtVersion"]

    def report(version: str) -> None:
        patch = json.dumps({"status": {"observedKubeVirtVersion": version}})
        kubectl(
            kubeconfig, "patch", "kubevirt", name, "-n", namespace, "--subresource=status", "--type=merge", "-p", patch
        )

    try:
        kubectl(kubeconfig, "scale", "deployment", "virt-operator", "-n", namespace, "--replicas=0")
        waits.wait_for(
            "virt-operator's pods to be gone after scaling it to zero",
            lambda: _json(kubeconfig, "get", "pods", "-n", namespace, "-l", "kubevirt.io=virt-operator")["items"],
            180,
            accept=lambda pods: not pods,
            describe=lambda pods: f"{len(pods)} pods left",
        )
        yield report
    finally:
        report(original)
        kubectl(kubeconfig, "scale", "deployment", "virt-operator", "-n", namespace, f"--replicas={replicas}")
        kubectl(
            kubeconfig,
            "rollout",
            "status",
            "deployment/virt-operator",
            "-n",
            namespace,
            "--timeout=300s",
            timeout=320,
        )
    after = _json(kubeconfig, "get", "kubevirt", name, "-n", namespace)
    assert after["status"]["observedKubeVirtVersion"] == original, after["status"]


# The suite's preflight reads the version under test from the real API server. The registration for
# that version is not run here: with virt-operator scaled down its own webhook for KubeVirt CR updates
# (kubevirt-update-validator, served by virt-operator) refuses every change ("connection refused", 500),
# the binding's registration included; the feature gate per version is checked in
# tests/test_cluster_versions.py and its addition in tests/test_cluster_kubevirt_config.py.
@pytest.mark.parametrize("reported", ["v1.5.3", "v1.1.0"])
def test_the_version_under_test_is_the_one_the_cluster_reports(kubevirt_kind, reported_version, reported):
    if reported == KUBEVIRT:
        pytest.skip(f"the cluster runs {KUBEVIRT} itself (SLIRP_KIND_SELFTEST_KUBEVIRT): nothing to inject")
    kubeconfig = kubevirt_kind.kubeconfig
    assert preflight.preflight("cluster", kubevirt_version=None, kubeconfig=kubeconfig).kubevirt_version == (
        versions.parse_kubevirt_version(KUBEVIRT)
    ), "premise: the cluster reports its own release before the injection"
    reported_version(reported)
    assert preflight.preflight("cluster", kubevirt_version=None, kubeconfig=kubeconfig).kubevirt_version == (
        versions.parse_kubevirt_version(reported)
    )
    with pytest.raises(SetupError, match=rf"runs KubeVirt {reported} .*--kubevirt-version is {KUBEVIRT}") as err:
        preflight.preflight("cluster", kubevirt_version=KUBEVIRT, kubeconfig=kubeconfig)
    assert "\n" not in str(err.value)


def test_a_disagreeing_flag_stops_the_run_at_once_in_one_line(kubevirt_kind, tmp_path):
    """On the cluster as it is (no fault injected): the flag names another release than the cluster runs."""
    other = "v1.1.0" if KUBEVIRT != "v1.1.0" else "v1.9.0"
    run = run_suite(
        tmp_path,
        "--target=cluster",
        f"--kubeconfig={kubevirt_kind.kubeconfig}",
        f"--kubevirt-version={other}",
        timeout=300,
    )
    assert run.returncode == 4 and "Traceback" not in run.output, run.output[-3000:]
    errors = [line for line in run.output.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 1 and KUBEVIRT in errors[0] and other in errors[0], run.output[-3000:]


def test_an_existing_kubevirt_is_used_not_owned(kubevirt_kind):
    """The suite's installer finds the release cluster-up installed and takes no ownership of it:
    leaving its ``with`` block removes nothing (the run's exit never uninstalls a user's KubeVirt)."""
    from slirp_conformance.cluster.kubevirt_install import KubeVirtInstallation

    api_client = kubernetes_config.new_client_from_config(config_file=kubevirt_kind.kubeconfig)
    with KubeVirtInstallation(api_client, KUBEVIRT, use_emulation=True) as kv:
        assert kv.version == KUBEVIRT and not kv.installed, (kv.version, kv.installed)
    assert kubevirt_cr.find_kubevirt(api_client) is not None, "leaving the block removed the KubeVirt it found"
