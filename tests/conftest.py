"""Fixtures shared by the self-test modules."""

import os

import pytest

from slirp_conformance import docker_daemon, waits
from tests import testbed_cli
from tests.leaks import snapshot
from tests.testbed import bed


@pytest.fixture
def no_leaks():
    """The host is as it was before the test: no QEMU, namespace, veth or run dir of ours left."""
    before = snapshot()
    yield
    after = waits.wait_for(
        "the host to be as it was before the run",
        snapshot,
        15,
        accept=lambda s: not s.leaked_since(before),
        describe=lambda s: f"left behind: {s.leaked_since(before)}",
    )
    assert not after.leaked_since(before)


def pytest_collection_modifyitems(config, items):
    """Tests marked ``testbed`` or ``docker`` run by default (``-m "not testbed"`` leaves them out); where
    the bed or Docker cannot run (not root) they are skipped with the reason, before any fixture could
    build or start one."""
    for marker, what, unusable in (
        ("testbed", "the cluster test bed", bed.unusable_reason),
        ("docker", "Docker", docker_daemon.unusable_reason),
        ("kind", "a kind cluster built here", _kind_unusable_reason),
    ):
        marked = [item for item in items if item.get_closest_marker(marker)]
        reason = unusable() if marked else None
        if reason is None:
            continue
        skip = pytest.mark.skip(reason=f"{what} cannot run here: {reason}")
        for item in marked:
            item.add_marker(skip)


def _kind_unusable_reason() -> str | None:
    """Building the node image needs root (debootstrap, chroot, a containerd of its own) and Docker."""
    if os.geteuid() != 0:
        return "building the kind node image needs root (debootstrap, chroot)"
    return docker_daemon.unusable_reason()


@pytest.fixture(scope="session")
def shared_testbed(tmp_path_factory):
    """One cluster test bed (tests/testbed, KubeVirt v1.1.0) for every test that leaves it as it
    found it: its KubeVirt CR, namespaces and VMIs as they were. Tests that stop, break or keep
    changing a bed start their own (``testbed_cli.bed_up``)."""
    with testbed_cli.bed_up(tmp_path_factory.mktemp("shared-testbed") / "kubeconfig") as running:
        yield running
