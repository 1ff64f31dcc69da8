"""Fixtures shared by the self-test modules."""

import os
import re

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


# hack/test.sh runs the self-tests on two xdist workers with ``--dist loadgroup``: everything on the
# project's Docker engine (kind clusters, KubeVirt on them, dockerd's own tests) is one group and
# every reference VM boot another, so one worker drives the cluster while the other boots QEMU,
# each group in its own order and one test at a time, as when run alone. The unit tests fill the
# gaps. The leak checks already tell the two apart: tests/leaks.py counts only QEMUs and run
# directories of its own process tree, tests/kind_probes.py only the containers of its own run.
ENGINE_GROUP = "docker-engine"
VM_GROUP = "reference-vms"


def group_of(item) -> str | None:
    if item.get_closest_marker("kind") or item.get_closest_marker("docker"):
        return ENGINE_GROUP
    if item.get_closest_marker("selftest_vm"):
        return VM_GROUP
    return None


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook turns the groups into node ids
def pytest_collection_modifyitems(config, items):
    """Tests marked ``docker`` or ``kind`` run by default (``-m "not kind"`` leaves them out); where
    Docker or a kind cluster built here cannot run (not root) they are skipped with the reason, before
    any fixture could build or start one. The tests on the shared kind cluster with KubeVirt run last,
    together: the session fixture lives until the session ends, so it is up only while they run."""
    items.sort(key=lambda item: "kubevirt_kind" in getattr(item, "fixturenames", ()))
    for item in items:
        if group := group_of(item):
            item.add_marker(pytest.mark.xdist_group(group))
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


def pytest_configure(config):
    """A grouping that silently does nothing would run the kind tests and the reference VMs' tests on
    both workers at once (their dockerd leases and QEMUs then collide): pytest-xdist up to 3.8 writes
    the group into ``item._nodeid``, which pytest 9.2's structured node ids no longer read
    (pytest-xdist#1386), so refuse that pair in one line before any worker starts."""
    if config.getoption("dist", "no") != "loadgroup" or hasattr(config, "workerinput"):
        return
    from importlib.metadata import version

    def release(name: str) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", version(name))[:2])

    if release("pytest") >= (9, 2) and release("pytest-xdist") <= (3, 8):
        raise pytest.UsageError(
            f"pytest {version('pytest')} with pytest-xdist {version('pytest-xdist')} ignores xdist_group "
            "(pytest-xdist#1386): run hack/setup.sh, which installs the pytest that pyproject.toml pins"
        )


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
