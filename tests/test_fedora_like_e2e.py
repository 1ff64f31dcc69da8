"""The Fedora profile for real: the contract on a Fedora-like reference guest, and the negative
controls turning exactly the same checks red as on the busybox guest.

One flavour runs by default (busybox-nc, KubeVirt v1.2 - v1.8); all three with
``SLIRP_SELFTEST_ALL_FLAVOURS=1 hack/test.sh -k fedora_like``.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from slirp_conformance.reference import fedora_image
from tests.leaks import qemu_of
from tests.suite_runner import interrupt_suite, run_suite
from tests.test_reference_e2e import ALL_MODULES, PING_GROUP_RED, RESTRICT_RED

pytestmark = pytest.mark.selftest_vm

DEFAULT_VERSION = "v1.5.3"
VERSIONS = {"v1.1.0": "nmap-ncat", DEFAULT_VERSION: "busybox-nc", "v1.9.0": "openbsd-nc"}
ALL_FLAVOURS = os.environ.get("SLIRP_SELFTEST_ALL_FLAVOURS") == "1"
# An emulated systemd guest boots in 20-30 s on an idle 2-core machine, several times that on a
# busy one: the child runs get twice KubeVirt's own budgets.
SLOW_GUEST = ("--timeout-scale", "2")


@pytest.fixture(scope="module")
def fedora_like_images():
    """Built (or found) before the child runs, so their budgets hold only the boot and the checks."""
    t0 = time.monotonic()
    images = fedora_image.build()
    print(f"fedora-like images ready in {time.monotonic() - t0:.1f} s (a build took {images.build_s} s)")
    return images


def _fedora(version: str) -> tuple[str, ...]:
    return ("--target=qemu", "--reference-guest", "fedora", "--kubevirt-version", version, *SLOW_GUEST)


@pytest.mark.parametrize("version", VERSIONS, ids=[f"{v}-{f}" for v, f in VERSIONS.items()])
def test_contract_passes_on_the_fedora_like_flavour(version, fedora_like_images, tmp_path, no_leaks):
    if version != DEFAULT_VERSION and not ALL_FLAVOURS:
        pytest.skip("one flavour by default; SLIRP_SELFTEST_ALL_FLAVOURS=1 runs all three")
    run = run_suite(tmp_path, *_fedora(version), timeout=900)
    assert run.returncode == 0, run.output[-4000:]
    # deselected KubeVirt-only checks appear in JUnit as skipped
    assert {t.split("::")[0] for t, o in run.outcomes.items() if o != "skipped"} == ALL_MODULES
    assert not run.failed and len(run.ids("passed")) >= 25, run.outcomes


# The negative controls below run the conformance VM's clauses only: the second VM specs (NIC model,
# custom CIDR) boot the same Fedora-like image with the same profile, two more emulated systemd boots
# per run (about 4 min of a loaded CI run), and their faults are proven on busybox
# (test_reference_e2e). The passing run above keeps every module.
VARIANT_MODULES = ("test_slirp_nic", "test_slirp_cidr")
MAIN_VM_ONLY = ("-k", " and ".join(f"not {m}" for m in VARIANT_MODULES))


def _main_vm(ids: set[str]) -> set[str]:
    return {t for t in ids if not t.startswith(tuple(f"{m}::" for m in VARIANT_MODULES))}


def test_restrict_on_turns_exactly_the_same_checks_red(fedora_like_images, tmp_path, no_leaks):
    run = run_suite(
        tmp_path, *_fedora(DEFAULT_VERSION), *MAIN_VM_ONLY, "--qemu-netdev-extra", "restrict=on", timeout=900
    )
    wanted = _main_vm(RESTRICT_RED)
    assert wanted and run.failed == wanted, (
        f"unexpected red: {sorted(run.failed - wanted)}; unexpected green: {sorted(wanted - run.failed)}"
    )
    assert not {t for t in run.outcomes if t.startswith(VARIANT_MODULES)} - run.ids("skipped"), run.outcomes


def test_open_ping_group_range_turns_exactly_icmp_red(fedora_like_images, tmp_path, no_leaks):
    run = run_suite(
        tmp_path,
        *_fedora(DEFAULT_VERSION),
        *MAIN_VM_ONLY,
        "--qemu-sysctl",
        "net.ipv4.ping_group_range=0 2147483647",
        timeout=900,
    )
    wanted = _main_vm(PING_GROUP_RED)
    assert wanted and run.failed == wanted, (
        f"unexpected red: {sorted(run.failed - wanted)}; unexpected green: {sorted(wanted - run.failed)}"
    )


def test_interrupted_boot_leaves_nothing(fedora_like_images, no_leaks, tmp_path):
    """Ctrl-C while the guest boots: QEMU, namespaces, the run dir with its overlay and ISO all go."""
    rc, out = interrupt_suite(
        tmp_path,
        *_fedora(DEFAULT_VERSION),
        when="the child run's Fedora-like QEMU to start",
        ready=lambda pid: any("cidata.iso" in p for p in qemu_of(pid)),
        sig=signal.SIGINT,
    )
    assert rc in (1, 2), out[-2000:]
