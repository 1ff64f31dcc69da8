"""The machine-wide lock every cached build and the project's dockerd share (file_lock.held): a
second taker waits for the first within its bound, and past it gets one line naming the lock,
what held it and the fix, never a hang (they used to wait without a bound in three places)."""

from __future__ import annotations

import fcntl
import os
import threading
import time

import pytest

from slirp_conformance import file_lock
from slirp_conformance.errors import SetupError


def test_a_lock_held_past_the_bound_is_one_line_naming_it_and_the_fix(tmp_path):
    lock = tmp_path / "sub" / ".build.lock"
    lock.parent.mkdir()
    holder = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(holder, fcntl.LOCK_EX)
    try:
        started = time.monotonic()
        with pytest.raises(SetupError) as e:
            with file_lock.held(lock, "another build of X v1", 1.0, fix="stop that build"):
                pytest.fail("entered a block whose lock another holds")
        assert time.monotonic() - started < 10
        assert str(e.value).count("\n") == 0
        assert f"another build of X v1 to release {lock}" in str(e.value) and str(e.value).endswith("stop that build")
    finally:
        os.close(holder)
    with file_lock.held(lock, "another build of X v1", 1.0):  # control: released, taken at once
        pass


def test_the_second_taker_waits_for_the_first_then_runs(tmp_path):
    lock = tmp_path / ".lock"
    order: list[str] = []
    inside = threading.Event()

    def first() -> None:
        with file_lock.held(lock, "the first", 5):
            order.append("first in")
            inside.set()
            time.sleep(0.5)
            order.append("first out")

    t = threading.Thread(target=first)
    t.start()
    assert inside.wait(5)
    with file_lock.held(lock, "the first", 5):
        order.append("second in")
    t.join(5)
    assert order == ["first in", "first out", "second in"]
