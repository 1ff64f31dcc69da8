"""Fixtures shared by the self-test modules."""

import os

import pytest

from slirp_conformance import docker_daemon, waits
from tests import kind_probes
from tests.leaks import snapshot


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
    """Tests marked ``docker`` or ``kind`` run by default (``-m "not kind"`` leaves them out); where
    Docker or a kind cluster built here cannot run (not root) they are skipped with the reason, before
    any fixture could build or start one. The tests on the shared kind cluster with KubeVirt run last,
    together: the session fixture lives until the session ends, so it is up only while they run."""
    items.sort(key=lambda item: "kubevirt_kind" in getattr(item, "fixturenames", ()))
    for marker, what, unusable in (
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
def kubevirt_kind(tmp_path_factory):
    """One real kind cluster with KubeVirt (``kind_probes.KUBEVIRT``) installed through its own
    virt-operator, every image built here: ``hack/cluster-up.sh --images-from-source`` (hack/test.sh
    builds the images before pytest starts, so no cold build runs inside a test's budget). For every
    self-test that leaves it as it found it (the KubeVirt CR restored, its namespaces gone); deleted
    by ``hack/cluster-down.sh`` at the end, and then nothing of it may be left on the host."""
    name = f"slirp-selftest-kv-{kind_probes.RUN}"
    cluster = kind_probes.up(
        name, tmp_path_factory.mktemp(name), "--kubevirt-version", kind_probes.KUBEVIRT, kubevirt=True
    )
    try:
        yield cluster
    finally:
        r = kind_probes.down(cluster)
    assert r is not None and r.returncode == 0, r.stderr[-3000:] if r else "already down"
    assert kind_probes.wait_no_leaks(cluster.before, 120).leaked_since(cluster.before) == {}
