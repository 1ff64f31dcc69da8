"""A child suite run's plugin (``-p tests.park_after_collection``): once collection is done it
writes the file named by ``SLIRP_SELFTEST_PARKED`` and waits there (at most 120 s) for a signal.

It gives tests/suite_runner.interrupt_suite's control a child whose moment is known: a
``--collect-only`` child signalled "at once" raced its own exit, and under load the signal landed
anywhere from Python's start-up to its finalization (CI saw exit 1 once)."""

from __future__ import annotations

import os
import time
from pathlib import Path

PARKED_ENV = "SLIRP_SELFTEST_PARKED"
PARK_BUDGET = 120.0


def pytest_collection_finish(session) -> None:
    Path(os.environ[PARKED_ENV]).write_text(str(os.getpid()))
    time.sleep(PARK_BUDGET)  # the suite's SIGINT handler raises here, which ends the sleep (PEP 475)
    raise AssertionError(f"parked {PARK_BUDGET:.0f} s after collection and no signal came")
