"""Probes that run ahead of their checks: the SSH side of a clause, in a thread of its own, while
the serial console's checks go on (and a variant VM's checks' probes, on its own console, as soon
as it is up: fixtures/slirp_vm.py).

The console and SSH are independent views of one guest, and the SSH probes (the DHCP facts, the
TCP and UDP echoes, DNS, the 8 MiB transfer) mostly wait: on the guest, on slirp, on the peer. Run
one after the other they added their waits to the warm run; here they run in one lane beside the
console's checks, in the order their checks come, and each check takes its probe's result (or its
exception, raised again in the check). A check whose probe is not in the lane (the console's, one
whose probe does not run ahead, an xdist worker's) runs its probe itself: the same function, so
what it proves does not depend on where it ran.

What the probes share is guarded, not hoped for:
- An ``exclusive`` probe runs alone: while it runs in its check, the lane runs nothing (every job
  of the lane, and its preparation, the SSH connection, holds the lock the exclusive probes take).
  The ICMP probe is exclusive: its premise reads the guest's own counters around its ping
  (``OutEchos``, the NIC's ``tx_packets``, ``InDestUnreachs``: checks/icmp.py), and the lane's
  traffic would count in them, masking a NIC that sent nothing. It does not run ahead either: in
  the lane it would overlap whatever check the session runs meanwhile.
- Before each job the lane lets the exclusive checks that come before it in the session's order
  run (the ICMP checks come before the transfer: they are not kept waiting behind it), within a
  bound; the lock, not that order, is what keeps them apart.
- The console is one serial line: ``Console.run`` takes a lock, for whatever a lane probe's
  failure explanation reads there.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from slirp_conformance import waits

T = TypeVar("T")


@dataclass(frozen=True)
class Probe(Generic[T]):
    """A clause's probe: ``run(target, shell) -> evidence``, the same wherever it runs."""

    name: str
    run: Callable[[Any, Any], T]
    exclusive: bool = False  # in its check: the lane runs nothing meanwhile (see the module's doc)
    runs_ahead: bool = True  # may run in a lane (else always in its check)
    once: bool = False  # one reading serves every check that names it (facts that do not change in a run)


def probe(
    name: str, *, exclusive: bool = False, runs_ahead: bool = True, once: bool = False
) -> Callable[[Callable[[Any, Any], T]], Probe[T]]:
    """Decorator: a module-level ``(target, shell) -> evidence`` function as a ``Probe``; the checks
    that use it carry the marker ``probe(<it>)`` (the lane reads their order from it)."""

    def wrap(fn: Callable[[Any, Any], T]) -> Probe[T]:
        return Probe(name, fn, exclusive, runs_ahead, once)

    return wrap


_PREPARE: Probe[Any] = Probe("the lane's preparation", lambda target, shell: None)


class Probed(Protocol):
    """The ``probed`` fixture: ``probed(probe, shell, target=None)`` -> the probe's evidence about
    ``target`` (default: the conformance VM), fixtures/slirp_vm.py."""

    def __call__(self, probe: Probe[T], shell: Any, target: Any = None) -> T: ...


@dataclass
class _Job:
    check: str  # the check's node id
    probe: Probe[Any]
    done: threading.Event
    started_at: float | None = None
    ended_at: float | None = None
    value: Any = None
    error: BaseException | None = None


@dataclass(frozen=True)
class Taken(Generic[T]):
    """A probe's result, and whether (and how long before its check asked) it ran in the lane."""

    value: T
    ran_ahead: bool
    ready_before_asked_s: float | None = None  # how long the result waited for its check (ahead only)
    waited_s: float | None = None  # how long the check waited for it (ahead only)


class Lane:
    """One thread running probes in order (``begin``), and the lock of the exclusive probes.

    ``order``: every selected check's node id in the session's order; ``exclusive_inline``: those
    whose exclusive probe runs where its check is (the ICMP checks). ``check_done`` is told when a
    check has ended, however it ended."""

    def __init__(self) -> None:
        self._exclusive = threading.Lock()
        self._jobs: dict[str, _Job] = {}
        self._order: dict[str, int] = {}
        self._inline_pending: set[str] = set()
        self._changed = threading.Condition()
        self._closing = False
        self._thread: threading.Thread | None = None
        self.running: str | None = None  # the probe under way in the lane, for a timeout's message
        self.channel: Callable[[], object] | None = None  # the shell its probes run on (a check asks on it)

    # -- the lane ---------------------------------------------------------------------------------
    def begin(
        self,
        jobs: Sequence[tuple[str, Probe[Any]]],
        run: Callable[[Probe[Any]], Any],
        order: Sequence[str],
        exclusive_inline: Sequence[str] = (),
        prepare: Callable[[], object] | None = None,
    ) -> None:
        """Run ``jobs`` (check node id, probe) in a thread, in that order, each by ``run(probe)``,
        after ``prepare()`` (its exception ignored: ``run`` meets it again). Checks that name the same
        ``once`` probe share one run of it."""
        if self._thread is not None:
            raise RuntimeError("the lane has begun already")
        self._order = {nodeid: i for i, nodeid in enumerate(order)}
        with self._changed:
            self._inline_pending = set(exclusive_inline)
        shared: dict[int, _Job] = {}
        for check, p in jobs:  # the checks that name one ``once`` probe (a module's facts) share its job
            job = _Job(check, p, threading.Event())
            self._jobs[check] = shared.setdefault(id(p), job) if p.once else job
        if not self._jobs:
            return
        self._thread = threading.Thread(target=self._work, args=(run, prepare), name="slirp-probes-ahead", daemon=True)
        self._thread.start()

    def _work(self, run: Callable[[Probe[Any]], Any], prepare: Callable[[], object] | None) -> None:
        if prepare is not None:
            # e.g. the SSH connection, while the first probe may still wait for its turn; its traffic
            # must not fall into an ICMP probe's counters (exclusive). A failure here is the probes'
            # own to raise (the target keeps it: Target.ssh).
            with contextlib.suppress(Exception), self._exclusively(_PREPARE):
                prepare()
        for job in list({id(j): j for j in self._jobs.values()}.values()):  # each job once, in order
            if self._closing:
                job.error = RuntimeError(f"the session ended before the probe {job.probe.name} ran ahead")
                job.done.set()
                continue
            try:
                self._after_earlier_exclusive_checks(job.check)
                with self._exclusively(job.probe):
                    self.running = f"{job.probe.name} (for {job.check})"
                    job.started_at = time.monotonic()
                    job.value = run(job.probe)
            except BaseException as e:  # noqa: BLE001 - raised again in the check that takes it
                job.error = e
            finally:
                job.ended_at = time.monotonic()
                self.running = None
                job.done.set()

    def _after_earlier_exclusive_checks(self, check: str) -> None:
        """Waits (bounded) until the exclusive checks that come before ``check`` (run in their checks)
        have ended, so they take the lock first; a bound that runs out only costs order."""
        mine = self._order.get(check, len(self._order))
        budget = waits.timeout("console-command")
        with self._changed:
            self._changed.wait_for(
                lambda: self._closing or not any(self._order.get(c, -1) < mine for c in self._inline_pending),
                timeout=budget,
            )

    @contextlib.contextmanager
    def _exclusively(self, p: Probe[Any], in_check: bool = False) -> Iterator[None]:
        """The lock: always in the lane, in a check only for an exclusive probe."""
        if in_check and not p.exclusive:
            yield
            return
        budget = waits.timeout("probes-ahead")
        if not self._exclusive.acquire(timeout=budget):
            raise waits.WaitTimeout(
                f"waited {budget:.0f} s for the probes that must not overlap {p.name}; "
                f"the lane was running {self.running or 'nothing'}"
            )
        try:
            yield
        finally:
            self._exclusive.release()

    # -- the checks -------------------------------------------------------------------------------
    def scheduled(self, check: str) -> bool:
        return check in self._jobs

    def take(self, check: str, p: Probe[T], run_here: Callable[[], T]) -> Taken[T]:
        """``check``'s probe result: from the lane when it is scheduled there (its exception raised
        again here), else ``run_here()`` (holding the lane's lock for an exclusive probe)."""
        job = self._jobs.get(check)
        if job is None:
            try:
                with self._exclusively(p, in_check=True):
                    return Taken(run_here(), ran_ahead=False)
            finally:
                self.check_done(check)
        if job.probe is not p:
            raise RuntimeError(f"{check} asked for the probe {p.name}, and the lane ran {job.probe.name} for it")
        asked = time.monotonic()
        # Every probe before it in the lane is bounded by its own waits; this bound only catches a
        # lane that stopped (its probes are listed in the message).
        budget = waits.timeout("probes-ahead")
        if not job.done.wait(budget):
            raise waits.WaitTimeout(
                f"waited {budget:.0f} s for the probe {p.name} running ahead of {check}; the lane was running "
                f"{self.running or 'nothing'} (its probes: {', '.join(j.probe.name for j in self._jobs.values())})"
            )
        if job.error is not None:
            raise job.error
        ended = job.ended_at if job.ended_at is not None else asked
        return Taken(
            job.value,
            ran_ahead=True,
            ready_before_asked_s=round(max(asked - ended, 0.0), 3),
            waited_s=round(max(ended - asked, 0.0), 3),
        )

    def check_done(self, check: str) -> None:
        """A check has ended (passed, failed, skipped or never reached its probe)."""
        with self._changed:
            if check in self._inline_pending:
                self._inline_pending.discard(check)
                self._changed.notify_all()

    # -- the end ----------------------------------------------------------------------------------
    def stop(self) -> None:
        """No probe begins after this (the session is ending: before the target closes, or a probe
        would begin on a closed target and wait out its bounds). Safe to call twice."""
        with self._changed:
            self._closing = True
            self._changed.notify_all()

    def join(self, budget: float | None = None) -> None:
        """The probe under way has ended (``budget``: a console command's by default; the target's
        close ends its commands at once)."""
        self.stop()
        if self._thread is not None:
            self._thread.join(waits.timeout("console-command") if budget is None else budget)
