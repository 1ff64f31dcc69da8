"""kubevirt/vmi_start: what a start attempt reads of KubeVirt (the VMI's phase, its words of why
not), and when a word of why not is KubeVirt's answer rather than a passing sync error."""

from __future__ import annotations

import pytest
from kubernetes import client

from slirp_conformance.kubevirt import vmi_start

CIDR_REFUSAL = 'server error. command SyncVMI failed: "rpc error: ... invalid network CIDR \\"10.0.2.0/33\\""'
PASSING = "server error. command SyncVMI failed: failed to connect to the launcher's command socket"


class _Namespace:
    """A run namespace whose events and VMI follow a script: one (events, vmi) per poll, the last
    one repeated; it also takes the VM a start attempt creates and deletes."""

    def __init__(self, *polls: tuple[dict[str, list[str]], dict | Exception | None]) -> None:
        self.polls, self.reads, self.name = list(polls), 0, "selftest-ns"
        self.created: list[str] = []
        self.deleted: list[str] = []

    def _now(self):
        return self.polls[min(self.reads, len(self.polls) - 1)]

    def event_messages(self, involved: str, reason: str) -> list[str]:
        return self._now()[0].get(reason, [])

    def read_vmi(self, name: str) -> dict:
        vmi = self._now()[1]
        self.reads += 1
        if isinstance(vmi, Exception):
            raise vmi
        if vmi is None:
            raise client.ApiException(status=404)
        return vmi

    def create_vm(self, manifest: str) -> None:
        self.created.append(manifest)

    def delete_vm(self, name: str) -> None:
        self.deleted.append(name)


def _phase(phase: str, *conditions: dict) -> dict:
    return {"status": {"phase": phase, "conditions": list(conditions)}}


@pytest.mark.parametrize(
    ("events", "vmi", "phase", "why"),
    [
        ({"SyncFailed": [CIDR_REFUSAL]}, _phase("Scheduled"), "Scheduled", "invalid network CIDR"),
        ({"FailedCreate": ["pods is forbidden: failed quota: q"]}, None, None, "failed quota"),
        ({}, _phase("Failed", {"type": "Ready", "message": "launcher exited"}), "Failed", "launcher exited"),
        ({}, _phase("Failed"), "Failed", "no condition says why"),
        (
            {},
            _phase("Scheduling", {"type": "Synchronized", "status": "False", "message": "no binding x"}),
            "Scheduling",
            "no binding x",
        ),
        (
            {},
            _phase(
                "Scheduling",
                {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "1 Insufficient cpu"},
            ),
            "Scheduling",
            "Insufficient cpu",
        ),
        (
            {},
            _phase("Scheduling", {"type": "PodScheduled", "status": "False", "reason": "Pending", "message": "soon"}),
            "Scheduling",
            None,
        ),
        ({}, _phase("Running"), "Running", None),
        ({}, _phase("Scheduled"), "Scheduled", None),
        ({}, None, None, None),
    ],
    ids=[
        "sync-failed",
        "failed-create",
        "vmi-failed",
        "vmi-failed-mute",
        "synchronized-false",
        "unschedulable",
        "scheduling-pending",
        "running",
        "scheduled",
        "no-vmi",
    ],
)
def test_the_state_reads_phase_and_first_word_of_why(events, vmi, phase, why):
    got = vmi_start.start_state(_Namespace((events, vmi)), "vm-x")
    assert got.phase == phase
    assert (got.why is None) if why is None else (why in got.why), got


def test_an_api_error_other_than_not_found_is_not_read_as_no_vmi():
    with pytest.raises(client.ApiException):
        vmi_start.start_state(_Namespace(({}, client.ApiException(status=500))), "vm-x")


def test_a_word_of_why_ends_the_attempt_only_once_it_stood(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(vmi_start.time, "monotonic", lambda: clock[0])
    settled = vmi_start.Settled(10)
    failing = vmi_start.StartState("Scheduled", (PASSING,))
    assert not settled(vmi_start.StartState("Scheduled"))
    assert not settled(failing)  # the word is new
    clock[0] += 9
    assert not settled(failing)
    clock[0] += 1
    assert settled(failing)
    assert settled.seen == [PASSING]
    assert vmi_start.Settled(10)(vmi_start.StartState("Failed", ("launcher exited",)))  # an ended VMI at once


def _attempt(monkeypatch, ns: _Namespace) -> str | None:
    from slirp_conformance.kubevirt.environment import ClusterOptions
    from slirp_conformance.kubevirt.kubevirt_target import KubeVirtTarget
    from slirp_conformance.vmspec import conformance_vm

    monkeypatch.setattr(vmi_start, "WHY_SETTLES", 1.0)
    target = KubeVirtTarget(conformance_vm("selftest-attempt"), ClusterOptions(target="kind"))
    monkeypatch.setattr(target, "_namespace", lambda: ns)
    monkeypatch.setattr(target, "_vm_image", lambda: "registry.invalid/disk:selftest")
    try:
        return target.attempt_start(conformance_vm("selftest-variant"))
    finally:
        target.close()


def test_a_passing_sync_error_before_running_is_a_start(monkeypatch):
    """The false red this guards: ending at virt-handler's first SyncFailed reported a VM that then
    ran as refused (the control: the same word, never followed by Running, is the refusal)."""
    ns = _Namespace(({"SyncFailed": [PASSING]}, _phase("Scheduled")), ({"SyncFailed": [PASSING]}, _phase("Running")))
    assert _attempt(monkeypatch, ns) is None
    assert ns.deleted == ["selftest-variant"]


def test_a_word_that_stands_is_the_refusal_with_every_word_seen(monkeypatch):
    ns = _Namespace(
        ({"SyncFailed": [PASSING]}, _phase("Scheduled")),
        ({"SyncFailed": [PASSING, CIDR_REFUSAL]}, _phase("Scheduled")),
    )
    got = _attempt(monkeypatch, ns)
    assert got is not None and "invalid network CIDR" in got and PASSING in got, got
    assert ns.reads >= 3 and ns.deleted == ["selftest-variant"]


def test_an_ended_vmi_is_the_answer_at_once(monkeypatch):
    ns = _Namespace(({}, _phase("Failed", {"type": "Ready", "message": "launcher exited"})))
    assert _attempt(monkeypatch, ns) == "launcher exited"
    assert ns.reads == 1
