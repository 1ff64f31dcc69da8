"""Waits are bounded, retry only what they are told to, and say what they waited for."""

import itertools
import re

import pytest

from slirp_conformance import waits


def test_returns_the_first_accepted_result():
    counter = itertools.count()
    assert waits.wait_for("a count of 3", lambda: next(counter), 5, accept=lambda n: n >= 3) == 3


def test_timeout_names_the_wait_and_the_last_state():
    with pytest.raises(waits.WaitTimeout, match=r"waited \d+ s \(budget 1 s\) for the moon; last state: 'not yet'"):
        waits.wait_for("the moon", lambda: "not yet", 1, accept=lambda s: s == "up")


def test_only_listed_exceptions_are_retried():
    def boom():
        raise KeyError("not retried")

    with pytest.raises(KeyError):
        waits.wait_for("x", boom, 5, retry_on=(ConnectionError,))


def test_listed_exceptions_are_retried_and_reported():
    def refused():
        raise ConnectionRefusedError("nobody home")

    with pytest.raises(waits.WaitTimeout, match="ConnectionRefusedError: nobody home"):
        waits.wait_for("a listener", refused, 1, retry_on=(ConnectionError,))


def test_scale_multiplies_named_timeouts():
    try:
        waits.set_timeout_scale(2.5)
        assert waits.timeout("vmi-running") == waits.TIMEOUTS["vmi-running"] * 2.5
    finally:
        waits.set_timeout_scale(1.0)
    with pytest.raises(ValueError):
        waits.set_timeout_scale(0)


def test_scale_reaches_every_bound_a_slow_guest_meets():
    """--timeout-scale also stretches the bounds that have no name: the guest-side ``timeout N`` of
    every guest command, a command's own budget and the console/SSH default (a loaded CI host runs
    the same guest several times slower). At scale 1 nothing changes (the control)."""
    from slirp_conformance.guest_profiles import FEDORA, REFERENCE

    def bounds() -> list[str]:
        return [
            FEDORA.tcp_echo_command("10.0.0.1", 7, "x").split(" python3")[0],
            "-w " + re.search(r" -u -w (\d+) ", REFERENCE.udp_echo_command("10.0.0.1", 7, "x")).group(1),
            FEDORA.ping_command("10.0.0.1").split(" ping")[0],
            "-lt " + re.search(r" -lt (\d+) \]", REFERENCE.ping_command("10.0.0.1")).group(1),  # 20 ms looks
            f"{waits.scaled(26):g}",
        ]

    assert bounds() == ["timeout 15", "-w 5", "timeout 7", "-lt 350", "26"]
    try:
        waits.set_timeout_scale(3)
        assert bounds() == ["timeout 45", "-w 15", "timeout 21", "-lt 1050", "78"]
    finally:
        waits.set_timeout_scale(1.0)
