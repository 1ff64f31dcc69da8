"""tests/suite_runner.interrupt_suite: a child that ends before the awaited moment ends the wait at
once, with its exit code and output (a kind run that fails in setup must not hold a self-test for
the whole budget of "its VMI Running")."""

from __future__ import annotations

import time

import pytest

from slirp_conformance.plugin.session import CLEANING_UP
from tests import park_after_collection, suite_runner


def test_a_child_that_exits_early_ends_the_wait_with_its_output(tmp_path):
    t0 = time.monotonic()
    with pytest.raises(AssertionError, match=r"exited 4 before the moment that never comes") as raised:
        suite_runner.interrupt_suite(
            tmp_path, "--target=nonsense", when="the moment that never comes", ready=lambda _pid: False, timeout=300
        )
    assert time.monotonic() - t0 < 120
    assert "nonsense" in str(raised.value)  # the child's own one-line error is in the message


def test_the_control_a_child_that_reaches_the_moment_is_interrupted(tmp_path):
    """The wait still works for a child that lives: it reaches the moment, gets SIGINT and ends the
    way an interrupted run ends (pytest's exit 2, after the suite's own cleanup line)."""
    parked = tmp_path / "parked"
    code, output = suite_runner.interrupt_suite(
        tmp_path,
        "--target=qemu",
        "--collect-only",
        "-p",
        "tests.park_after_collection",
        when="the child to park after its collection",
        ready=lambda pid: parked.is_file() and parked.read_text() == str(pid),
        timeout=120,
        env={park_after_collection.PARKED_ENV: str(parked)},
    )
    assert code == 2, output[-3000:]
    assert CLEANING_UP.decode().strip() in output
