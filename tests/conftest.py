"""Fixtures shared by the self-test modules."""

import pytest

from fixtures import waits
from tests import testbed_cli
from tests.leaks import snapshot


@pytest.fixture
def no_leaks():
    """The host is as it was before the test: no QEMU, namespace, veth or run dir of ours left."""
    before = snapshot()
    yield
    after = waits.wait_for("the host to be as it was before the run", snapshot, 15,
                           accept=lambda s: not s.leaked_since(before),
                           describe=lambda s: f"left behind: {s.leaked_since(before)}")
    assert not after.leaked_since(before)


def pytest_collection_modifyitems(config, items):
    """Tests marked ``testbed`` run only when ``-m`` selects them: skipped (with the reason) before
    any fixture could build or start a bed."""
    expr = config.getoption("markexpr") or ""
    if "testbed" in expr and "not testbed" not in expr:
        return
    skip = pytest.mark.skip(reason="the cluster test bed runs only when selected: pass -m testbed "
                                   "(first run builds Kubernetes from Go modules, ~20 min on 2 cores)")
    for item in items:
        if item.get_closest_marker("testbed"):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def shared_testbed(tmp_path_factory):
    """One cluster test bed (tests/testbed, KubeVirt v1.1.0) for every test that leaves it as it
    found it: its KubeVirt CR, namespaces and VMIs as they were. Tests that stop, break or keep
    changing a bed start their own (``testbed_cli.bed_up``)."""
    with testbed_cli.bed_up(tmp_path_factory.mktemp("shared-testbed") / "kubeconfig") as running:
        yield running
