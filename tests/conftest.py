"""Fixtures shared by the self-test modules."""

import pytest

from fixtures import waits
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
