"""The variant VMs of a session (fixtures/slirp_vm.py ``VariantTargets``): booted beside the main
VM's checks where the target allows, each started once, every failure raised to every clause that
asks, every VM made torn down, and no wait without a bound (fake targets, no VM)."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest

import slirp_vm
from slirp_conformance import ahead, waits
from slirp_conformance.target import NotOnThisTarget
from slirp_vm import VariantTargets


class _Variant:
    def __init__(self, model: str, gate: threading.Event, fail: BaseException | None) -> None:
        self.model, self._gate, self._fail = model, gate, fail
        self.failure_artifacts = None
        self.starts = self.closes = 0
        self.started = threading.Event()  # its boot is under way
        self._closed = threading.Event()

    def start(self):
        self.starts += 1
        self.started.set()
        waits.wait_for("the gate, or a close under the boot", lambda: self._gate.is_set() or self._closed.is_set(), 10)
        if self._closed.is_set():  # as a real one: its QEMU killed under it, the login fails at once
            raise RuntimeError(f"{self.model}: closed under its boot")
        if self._fail is not None:
            self.close()  # as Target.start does on a failed start
            raise self._fail
        return self

    def close(self) -> None:
        self.closes += 1
        self._closed.set()

    def console(self):
        return f"{self.model} console"


class _Main:
    probes_ahead = False

    def __init__(
        self, fail: dict[str, BaseException] | None = None, refuse: str | None = None, broken: str | None = None
    ) -> None:
        self.gate = threading.Event()
        self.made: dict[str, _Variant] = {}
        self._fail = fail or {}
        self._refuse = refuse
        self._broken = broken

    def variant(self, spec):
        model = spec.interface.model
        if model == self._refuse:
            raise NotOnThisTarget(f"no {model} here")
        if model == self._broken:
            raise ValueError(f"cannot make a {model} VM")
        self.made[model] = _Variant(model, self.gate, self._fail.get(model))
        return self.made[model]


class _Request:
    def __init__(self, items: list | None = None) -> None:
        self.config = SimpleNamespace(getoption=lambda name: None, stash={})
        self.session = SimpleNamespace(items=items or [])
        self.finalizers: list = []

    def addfinalizer(self, fn) -> None:
        self.finalizers.append(fn)


def _variants(main: _Main) -> tuple[VariantTargets, _Request]:
    request = _Request()
    return VariantTargets(request, main), request  # type: ignore[arg-type]


def test_variants_boot_beside_the_checks_once_and_are_torn_down():
    main = _Main()
    variants, request = _variants(main)
    variants.boot_aside(["rtl8139", "virtio", "virtio"])
    assert sorted(main.made) == ["rtl8139", "virtio"]  # both under way before any clause asks
    main.gate.set()
    assert variants.get("virtio") is main.made["virtio"] is variants.get("virtio")
    assert variants.get("rtl8139") is main.made["rtl8139"]
    assert [v.starts for v in main.made.values()] == [1, 1]
    (close,) = request.finalizers
    close()
    assert [v.closes for v in main.made.values()] == [1, 1]


def test_a_failed_boot_fails_every_clause_that_asks_with_its_error():
    main = _Main(fail={"virtio": RuntimeError("QEMU exited: bad netdev")})
    variants, request = _variants(main)
    variants.boot_aside(["virtio"])
    main.gate.set()
    for _ in range(2):
        with pytest.raises(RuntimeError, match="bad netdev"):
            variants.get("virtio")
    assert main.made["virtio"].starts == 1
    request.finalizers[0]()


def test_a_variant_no_clause_named_boots_when_asked_and_one_the_target_cannot_boot_skips():
    main = _Main(refuse="rtl8139")
    main.gate.set()
    variants, _ = _variants(main)
    assert variants.get("virtio").starts == 1
    with pytest.raises(pytest.skip.Exception, match="no rtl8139 here"):
        variants.get("rtl8139")


def test_the_wait_for_a_boot_beside_the_checks_is_bounded_and_names_it(monkeypatch):
    monkeypatch.setattr(waits, "timeout", lambda name: 0.2)
    main = _Main()
    variants, request = _variants(main)
    variants.boot_aside(["virtio"])
    try:
        with pytest.raises(waits.WaitTimeout, match="virtio variant VM booting beside the checks"):
            variants.get("virtio")
    finally:
        main.gate.set()
        request.finalizers[0]()  # teardown closes what it made (under its boot if that still runs)
    assert main.made["virtio"].closes >= 1
    with pytest.raises(waits.WaitTimeout):  # the same answer for every clause, once it did boot too
        variants.get("virtio")


def test_the_boot_thread_outlives_the_boot_until_teardown():
    """reference_vm starts QEMU and the pod lab with PR_SET_PDEATHSIG, which fires when the THREAD
    that started them exits: a boot thread that ended after start() killed its VM at once."""
    main = _Main()
    main.gate.set()
    variants, request = _variants(main)
    before = set(threading.enumerate())
    variants.boot_aside(["virtio"])
    variants.get("virtio")
    (thread,) = set(threading.enumerate()) - before
    thread.join(0.3)
    assert thread.is_alive(), "the thread that started the variant VM ended while the VM is in use"
    request.finalizers[0]()
    thread.join(5)
    assert not thread.is_alive() and main.made["virtio"].closes == 1


def test_a_variant_that_cannot_even_be_made_beside_the_checks_fails_its_clauses_not_the_thread():
    main = _Main(broken="rtl8139")
    variants, request = _variants(main)
    variants.boot_aside(["rtl8139"])
    for _ in range(2):
        with pytest.raises(ValueError, match="cannot make a rtl8139 VM"):
            variants.get("rtl8139")
    request.finalizers[0]()


def test_teardown_cuts_a_boot_under_way_short_instead_of_waiting_it_out():
    """Ctrl-C while the conformance VM boots: the variants boot beside it from its launch, and a
    Fedora-like one takes a minute. Teardown closes it under its boot (the login then fails at
    once), and once more after its thread is done (whatever the cut boot made after). Waiting the
    boot out left the interrupted run killed by its parent with two run dirs behind (seen)."""
    main = _Main()  # the gate stays shut: the boot would run until its bound
    variants, request = _variants(main)
    variants.boot_aside(["virtio"])
    waits.wait_for(
        "the variant's boot to begin", lambda: "virtio" in main.made and main.made["virtio"].started.is_set(), 5
    )
    request.finalizers[0]()
    assert main.made["virtio"].closes == 2
    with pytest.raises(RuntimeError, match="closed under its boot"):
        variants.get("virtio")


class _Item:
    """A selected check about a variant, marked with its probe."""

    def __init__(self, nodeid: str, model: str, probe) -> None:
        self.nodeid = nodeid
        self._markers = {"probe": SimpleNamespace(args=(probe,)), "variant_vm": SimpleNamespace(args=(model,))}

    def get_closest_marker(self, name: str):
        return self._markers.get(name)


def test_a_variants_checks_probes_run_on_its_console_once_it_is_up_and_stop_with_it():
    """Where the session's target runs probes ahead, a variant's lane runs the probes of the checks
    about it on its console as soon as it has booted, and close() stops and joins that lane."""
    seen: list[tuple[str, object]] = []
    probe = ahead.Probe("nic", lambda target, shell: seen.append((target.model, shell)) or "evidence")
    main = _Main()
    main.probes_ahead = True
    request = _Request([_Item("suites/test_slirp_nic.py::test_n[virtio]", "virtio", probe)])
    variants = VariantTargets(request, main)  # type: ignore[arg-type]
    variants.boot_aside(["virtio"])
    main.gate.set()
    assert variants.get("virtio") is main.made["virtio"]
    lane = request.config.stash[slirp_vm._LANES]["virtio"]
    taken = lane.take("suites/test_slirp_nic.py::test_n[virtio]", probe, lambda: pytest.fail("ran in the check"))
    assert taken.ran_ahead and taken.value == "evidence" and seen == [("virtio", "virtio console")]
    for fn in reversed(request.finalizers):
        fn()
    assert main.made["virtio"].closes >= 1 and lane._thread is not None and not lane._thread.is_alive()
