"""The lane of probes running ahead of their checks (slirp_conformance/ahead.py): a check gets its
probe's result or its exception, an exclusive probe in its check never overlaps the lane, the lane
lets earlier exclusive checks go first, a lane that stopped is a bounded wait naming it, and a
session that ends starts no probe."""

from __future__ import annotations

import threading
import time

import pytest

from slirp_conformance import ahead, waits


def _probe(name: str, fn, exclusive: bool = False) -> ahead.Probe:
    return ahead.Probe(name, lambda target, shell: fn(), exclusive)


class _Overlaps:
    """Counts how many exclusive sections run at once."""

    def __init__(self) -> None:
        self.now = 0
        self.most = 0
        self.order: list[str] = []
        self._lock = threading.Lock()

    def section(self, name: str, seconds: float = 0.05):
        def run():
            with self._lock:
                self.now += 1
                self.most = max(self.most, self.now)
                self.order.append(name)
            time.sleep(seconds)
            with self._lock:
                self.now -= 1
            return name

        return run


def _run(probe: ahead.Probe):
    return probe.run(None, None)


def test_a_check_takes_its_probes_result_from_the_lane():
    lane = ahead.Lane()
    p = _probe("p", lambda: "value")
    lane.begin([("t::a", p)], _run, ["t::a"])
    taken = lane.take("t::a", p, lambda: pytest.fail("ran again where the check is"))
    assert taken.value == "value" and taken.ran_ahead
    lane.join(5)


def test_a_probes_exception_is_raised_again_in_its_check():
    """A probe that failed ahead fails its check with the same exception, not a pass or a hang."""
    lane = ahead.Lane()

    def broken():
        raise waits.WaitTimeout("the guest's answer")

    p = _probe("p", broken)
    lane.begin([("t::a", p)], _run, ["t::a"])
    with pytest.raises(waits.WaitTimeout, match="the guest's answer"):
        lane.take("t::a", p, lambda: "never")
    lane.join(5)


def test_a_check_not_in_the_lane_runs_its_probe_where_it_is():
    lane = ahead.Lane()
    p = _probe("p", lambda: "lane")
    lane.begin([], _run, ["t::a"])
    taken = lane.take("t::a", p, lambda: "here")
    assert taken.value == "here" and not taken.ran_ahead


def test_an_exclusive_probe_in_its_check_never_overlaps_the_lane():
    """The lane's job (exclusive or not: every lane job holds the lock) and an exclusive probe in
    its check never overlap. The negative control: a probe that is not exclusive does overlap."""
    seen = _Overlaps()
    lane = ahead.Lane()
    lane_probe = _probe("lane", seen.section("lane", 0.3))
    here_probe = _probe("here", lambda: None, exclusive=True)
    lane.begin([("t::ssh", lane_probe)], _run, ["t::ssh"])
    time.sleep(0.05)  # the lane's section is under way
    lane.take("t::console", here_probe, seen.section("here", 0.1))
    lane.take("t::ssh", lane_probe, lambda: None)
    lane.join(5)
    assert seen.most == 1 and sorted(seen.order) == ["here", "lane"], seen.order

    unguarded = _Overlaps()
    free = ahead.Lane()
    lane_probe = _probe("lane", unguarded.section("lane", 0.3))
    free.begin([("t::ssh", lane_probe)], _run, ["t::ssh"])
    time.sleep(0.05)
    free.take("t::console", _probe("here", lambda: None), unguarded.section("here", 0.1))
    free.join(5)
    assert unguarded.most == 2  # not exclusive: they did overlap, so the lock above is what kept them apart


def test_the_lane_lets_an_earlier_exclusive_check_go_first():
    """The ICMP check comes before the transfer: the lane waits for it (it is not kept waiting
    behind the lane's job), and goes on once it has ended."""
    seen = _Overlaps()
    lane = ahead.Lane()
    lane_probe = _probe("ssh", seen.section("ssh"))
    console_probe = _probe("console", lambda: None, exclusive=True)
    lane.begin([("t::icmp[ssh]", lane_probe)], _run, ["t::icmp[console]", "t::icmp[ssh]"], ["t::icmp[console]"])
    time.sleep(0.2)
    assert seen.order == []  # waiting for the console's check
    lane.take("t::icmp[console]", console_probe, seen.section("console"))
    assert lane.take("t::icmp[ssh]", lane_probe, lambda: None).value == "ssh"
    assert seen.order == ["console", "ssh"]
    lane.join(5)


def test_an_earlier_check_that_ended_without_its_probe_lets_the_lane_go():
    """A check skipped or failed before its probe still ends: the lane does not wait out its bound."""
    lane = ahead.Lane()
    p = _probe("ssh", lambda: "done")
    lane.begin([("t::b", p)], _run, ["t::a", "t::b"], ["t::a"])
    lane.check_done("t::a")
    started = time.monotonic()
    assert lane.take("t::b", p, lambda: None).value == "done"
    assert time.monotonic() - started < 5
    lane.join(5)


def test_a_lane_that_stopped_is_a_bounded_wait_naming_the_probe(monkeypatch):
    release = threading.Event()
    lane = ahead.Lane()
    stuck = _probe("stuck", release.wait)
    after = _probe("after", lambda: None)
    monkeypatch.setitem(waits.TIMEOUTS, "probes-ahead", 0.3)
    lane.begin([("t::a", stuck), ("t::b", after)], _run, ["t::a", "t::b"])
    try:
        with pytest.raises(waits.WaitTimeout, match=r"the probe after .* the lane was running stuck \(for t::a\)"):
            lane.take("t::b", after, lambda: None)
    finally:
        release.set()
        lane.join(5)


def test_no_probe_begins_once_the_session_ends():
    ran: list[str] = []
    gate = threading.Event()
    lane = ahead.Lane()
    first = _probe("first", lambda: (gate.wait(5), ran.append("first")))
    second = _probe("second", lambda: ran.append("second"))
    lane.begin([("t::a", first), ("t::b", second)], _run, ["t::a", "t::b"])
    lane.stop()
    gate.set()
    lane.join(5)
    assert ran == ["first"]
    with pytest.raises(RuntimeError, match="the session ended before the probe second ran ahead"):
        lane.take("t::b", second, lambda: None)


def test_a_check_that_asks_for_another_probe_than_the_lane_ran_is_an_error():
    lane = ahead.Lane()
    p = _probe("p", lambda: 1)
    lane.begin([("t::a", p)], _run, ["t::a"])
    with pytest.raises(RuntimeError, match="asked for the probe q"):
        lane.take("t::a", _probe("q", lambda: 2), lambda: 2)
    lane.join(5)


def test_the_lanes_preparation_never_overlaps_an_exclusive_probe_in_its_check():
    """The SSH connection the lane makes first is guest traffic too: an ICMP probe under way in its
    check has it wait."""
    seen = _Overlaps()
    lane = ahead.Lane()
    held = threading.Event()

    def icmp_in_its_check():
        held.set()
        return seen.section("icmp", 0.3)()

    checker = threading.Thread(
        target=lane.take, args=("t::icmp", _probe("icmp", lambda: None, exclusive=True), icmp_in_its_check)
    )
    checker.start()
    held.wait(5)
    lane.begin([("t::x", _probe("x", lambda: None))], _run, ["t::icmp", "t::x"], prepare=seen.section("prepare", 0.1))
    checker.join(5)
    lane.join(5)
    assert seen.most == 1 and seen.order == ["icmp", "prepare"], seen.order


def test_checks_that_name_a_once_probe_share_one_reading_and_others_get_their_own():
    runs: list[str] = []
    facts = ahead.Probe("facts", lambda target, shell: runs.append("facts") or len(runs), once=True)
    echo = ahead.Probe("echo", lambda target, shell: runs.append("echo") or len(runs))
    lane = ahead.Lane()
    lane.begin(
        [("t::a", facts), ("t::b", facts), ("t::c", echo), ("t::d", echo)], _run, ["t::a", "t::b", "t::c", "t::d"]
    )
    a, b = lane.take("t::a", facts, lambda: None).value, lane.take("t::b", facts, lambda: None).value
    c, d = lane.take("t::c", echo, lambda: None).value, lane.take("t::d", echo, lambda: None).value
    lane.join(5)
    assert a == b and c != d and runs == ["facts", "echo", "echo"], runs
