"""The Fedora-like reference guest behind a VMI on the cluster test bed (`hack/testbed.sh up
--reference-guest fedora`): the node agent boots the Fedora-like flavour of the bed's KubeVirt
version from exactly the VMI's own cloudInitNoCloud, the suite meets it with the Fedora profile,
and `down` mid-boot leaves nothing.

The bed tests are marked ``testbed`` (run with ``-m testbed``, like tests/test_testbed.py); the
option check needs no bed and runs always. The control of the profile check (a busybox bed's run
meets the reference profile, not Fedora's) is in tests/test_testbed.py's passing suite run, which
runs anyway.
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from slirp_conformance import waits
from slirp_conformance.guest_profiles import FEDORA
from slirp_conformance.kubevirt.vm_manifest import render_vm
from slirp_conformance.reference.fedora_like import flavour_for
from slirp_conformance.ssh_client import generate_keypair
from slirp_conformance.vmspec import conformance_vm
from tests import testbed_cli
from tests.suite_runner import run_suite
from tests.test_reference_e2e import ALL_MODULES
from tests.testbed import bed, node_layout
from tests.testbed_probes import kubectl, leftovers, processes_mentioning, register_slirp_binding

KUBEVIRT_VERSION = testbed_cli.KUBEVIRT_VERSION  # the Fedora-like flavour follows from it (flavour_for)
NAMESPACE = "fedora-bed"


@pytest.fixture(scope="module")
def fedora_bed(tmp_path_factory):
    """A bed whose node agent boots the Fedora-like guest, up for the module: (kubeconfig, record,
    summary). Down at the end unless a test took it down."""
    kubeconfig = tmp_path_factory.mktemp("fedora-bed") / "kubeconfig"
    with testbed_cli.bed_up(kubeconfig, KUBEVIRT_VERSION, "--reference-guest", "fedora") as running:
        yield running.kubeconfig, running.record, running.summary


def test_up_refuses_a_reference_guest_it_cannot_boot_in_one_line(tmp_path):
    """Said at once, before any build or start: otherwise every VMI would fail on the node agent."""
    kubeconfig = tmp_path / "kubeconfig"
    for args, says in (
        (["--reference-guest", "fedora-39"], "--reference-guest 'fedora-39' is not one of busybox, fedora"),
        (["--reference-guest", "fedora", "--kubevirt-version", "v1.10.0"], "outside the supported range"),
    ):
        started = time.monotonic()
        up = testbed_cli.run("up", "--kubeconfig", str(kubeconfig), *args, timeout=120)
        took = time.monotonic() - started
        lines = up.stderr.strip().splitlines()
        assert (
            up.returncode == 2 and len(lines) == 1 and lines[0].startswith("testbed: error: ") and says in lines[0]
        ), f"{args}: expected exit 2 and one line saying {says!r}, got exit {up.returncode}: {up.stderr!r}"
        assert not kubeconfig.exists() and not bed.record_path(kubeconfig).exists(), f"{args}: `up` started a bed"
        assert took < 60, f"{args}: the refusal took {took:.0f} s: it should come before any build"


@pytest.mark.testbed
def test_contract_passes_with_a_fedora_like_guest_behind_the_vmi(fedora_bed, tmp_path):
    """The suite as a user runs it on a cluster (no profile named) meets a Fedora-like guest that
    cloud-init set up from exactly the VMI's own user data: console login as ``fedora`` with the
    run's password, SSH with the run's key, the Fedora profile found in /etc/os-release."""
    kubeconfig, record, summary = fedora_bed
    flavour = flavour_for(KUBEVIRT_VERSION)
    assert summary["reference_guest"] == f"fedora-like {flavour}", summary
    started = time.monotonic()
    run = run_suite(tmp_path, "--target=cluster", "--kubeconfig", str(kubeconfig), "--timeout-scale", "3", timeout=1800)
    print(f"suite on the fedora bed: exit {run.returncode} in {time.monotonic() - started:.1f} s")
    assert run.returncode == 0 and (run.report or {}).get("outcome") == "CONFORMANT", (
        f"exit {run.returncode}, failed {sorted(run.failed)}:\n{run.output[-5000:]}"
    )
    assert {t.split("::")[0] for t in run.ids("passed")} >= ALL_MODULES | {"test_slirp_kubevirt"}, run.outcomes
    assert [t for t in run.ids("passed") if "[console]" in t] and [t for t in run.ids("passed") if "[ssh]" in t], (
        f"expected checks over both the console and SSH to pass: {sorted(run.ids('passed'))}"
    )
    # It met the Fedora-like guest; a busybox bed's run meets reference-busybox (tests/test_testbed.py).
    assert run.guest_profile == FEDORA.name, (run.report or {}).get("versions")
    agent_log = (Path(record.state_dir) / "node-agent.log").read_text(errors="replace")
    assert f"booting the Fedora-like reference guest {flavour}" in agent_log, agent_log[-3000:]


def _create_fedora_vmi(kubeconfig: Path, name: str, password: str) -> dict:
    """The suite's own VM manifest as a VMI in NAMESPACE, its user data given as userDataBase64
    (the other form virt-launcher reads); returns the cloudInitNoCloud volume as sent."""
    register_slirp_binding(kubeconfig, KUBEVIRT_VERSION)
    if not kubectl(kubeconfig, "get", "namespace", "--ignore-not-found", NAMESPACE).strip():
        kubectl(kubeconfig, "create", "namespace", NAMESPACE)
    vm = render_vm(
        conformance_vm(name),
        namespace=NAMESPACE,
        image="quay.io/containerdisks/unused:bed",
        authorized_key=generate_keypair().public_openssh,
        password=password,
    )
    spec = vm["spec"]["template"]["spec"]
    volume = next(v["cloudInitNoCloud"] for v in spec["volumes"] if "cloudInitNoCloud" in v)
    volume["userDataBase64"] = base64.b64encode(volume.pop("userData").encode()).decode()
    kubectl(
        kubeconfig,
        "create",
        "-f",
        "-",
        input=json.dumps(
            {
                "apiVersion": "kubevirt.io/v1",
                "kind": "VirtualMachineInstance",
                "metadata": {"name": name, "namespace": NAMESPACE},
                "spec": spec,
            }
        ),
    )
    return volume


def _run_dir_once_booting(record: bed.BedRecord, name: str) -> Path:
    """The run dir of VMI ``name``'s VM once the node agent has started its QEMU (the console it
    publishes points into it)."""
    link = node_layout.console_socket(Path(record.state_dir), NAMESPACE, name)
    waits.wait_for(
        f"the node agent to start the VM of {NAMESPACE}/{name} and publish its console at {link}",
        link.is_symlink,
        waits.timeout("vmi-running"),
    )
    return link.resolve().parents[1]


def _iso_files(iso: Path, into: Path) -> dict[str, str]:
    subprocess.run(
        ["xorriso", "-osirrox", "on", "-indev", str(iso), "-extract", "/", str(into)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return {p.name: p.read_text() for p in into.iterdir()}


@pytest.mark.testbed
def test_the_vmis_own_nocloud_data_reaches_the_guests_cidata(fedora_bed, tmp_path):
    """Byte for byte what the VMI carries (base64-decoded), nothing of the agent's own making: the
    password is this test's alone, so cidata rendered from anything else cannot match."""
    kubeconfig, record, _ = fedora_bed
    password = f"nocloud-{uuid.uuid4().hex}"
    volume = _create_fedora_vmi(kubeconfig, "nocloud-vm", password)
    try:
        run_dir = _run_dir_once_booting(record, "nocloud-vm")
        files = _iso_files(run_dir / "cidata.iso", tmp_path / "cidata")
    finally:
        kubectl(kubeconfig, "delete", "vmi", "-n", NAMESPACE, "nocloud-vm", "--wait=false")
    user_data = base64.b64decode(volume["userDataBase64"]).decode()
    assert password in user_data, f"premise: the VMI's user data carries the test's password: {user_data!r}"
    assert files.get("user-data") == user_data, f"cidata user-data {files.get('user-data')!r}, VMI's {user_data!r}"
    assert files.get("network-config") == volume["networkData"], (
        f"cidata network-config {files.get('network-config')!r}, VMI's {volume['networkData']!r}"
    )
    assert "nocloud-vm" in files.get("meta-data", ""), files


@pytest.mark.testbed
def test_down_while_a_fedora_like_guest_boots_leaves_nothing(fedora_bed):
    """The Fedora-like guest's run dir holds more than the busybox one's (the root disk's overlay,
    the cidata ISO with the run's password): all of it goes when the bed stops mid-boot. Last
    in this module: it takes the bed down."""
    kubeconfig, record, _ = fedora_bed
    _create_fedora_vmi(kubeconfig, "down-vm", f"down-{uuid.uuid4().hex}")
    run_dir = _run_dir_once_booting(record, "down-vm")
    assert [p for p in processes_mentioning(str(run_dir / "cidata.iso"))], (
        f"premise: QEMU boots from the VMI's cidata ISO in {run_dir}"
    )
    console = run_dir / "qemu" / "console.log"
    assert not console.exists() or b"login:" not in console.read_bytes(), (
        "premise: the guest is still booting (no login prompt yet)"
    )
    down = testbed_cli.run("down", "--kubeconfig", str(kubeconfig), timeout=testbed_cli.DOWN_TIMEOUT)
    assert down.returncode == 0, down.stderr
    assert not leftovers(record), f"left after down: {leftovers(record)}"
    assert not run_dir.exists(), f"{run_dir} left behind"
