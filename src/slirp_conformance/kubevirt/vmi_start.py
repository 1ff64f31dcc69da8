"""Where the start of a VM stands, as KubeVirt tells it: the VMI's phase and KubeVirt's first word of
why it does not run. One reading for every start attempt of the suite (a variant spec, the renamed
binding, a VM under a ResourceQuota); each caller decides which words end its wait, since a word
that is final for one (quota admission's FailedCreate) may pass for another (virt-handler's
SyncFailed while the launcher pod is still starting)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

# virt-handler's event when a sync of the VMI fails, where a hook sidecar's error lands
# (pkg/virt-handler/vm.go at every release), and virt-controller's when it cannot create the
# launcher pod (quota admission, a bad pod template: pkg/virt-controller/watch/vmi.go).
WHY_EVENTS = ("SyncFailed", "FailedCreate")
ENDED = ("Running", "Failed", "Succeeded")


class VmiSource(Protocol):
    """A namespace that can read a VMI and its events (``RunNamespace``, the quota namespace)."""

    def read_vmi(self, name: str) -> dict: ...

    def event_messages(self, involved: str, reason: str) -> list[str]: ...


@dataclass(frozen=True)
class StartState:
    phase: str | None  # the VMI's phase; None while there is no VMI
    # KubeVirt's words of why not, first first: the events' messages, else an unschedulable pod's or
    # Synchronized=False's, else (a VMI that ended) its conditions' messages
    whys: tuple[str, ...] = ()

    @property
    def why(self) -> str | None:
        return self.whys[0] if self.whys else None

    @property
    def running(self) -> bool:
        return self.phase == "Running"

    @property
    def ended(self) -> bool:
        """Running, or a VMI that will not run again (Failed, Succeeded)."""
        return self.phase in ENDED

    def describe(self) -> str:
        words = " | ".join(self.whys) or "no word from KubeVirt of why not"
        return f"VMI phase {self.phase or '(no VMI yet)'}; {words}"


def start_state(source: VmiSource, name: str, events: tuple[str, ...] = WHY_EVENTS) -> StartState:
    """The start of VM ``name`` now (see ``StartState.whys`` for where its words come from)."""
    from kubernetes.client import ApiException  # here: --target=qemu collects this module and never needs the client

    whys = tuple(dict.fromkeys(message for reason in events for message in source.event_messages(name, reason)))
    try:
        vmi = source.read_vmi(name)
    except ApiException as e:
        if e.status != 404:
            raise
        return StartState(None, whys)
    status = vmi.get("status", {})
    conditions = status.get("conditions") or []
    phase = status.get("phase")
    if not whys:
        # the launcher pod's scheduling failed (PodScheduled=False, reason Unschedulable: "0/1 nodes are
        # available: 1 Insufficient cpu"), or a sync did (Synchronized=False)
        whys = tuple(
            c["message"]
            for c in conditions
            if c.get("status") == "False"
            and c.get("message")
            and (
                c.get("type") == "Synchronized"
                or (c.get("type") == "PodScheduled" and c.get("reason") == "Unschedulable")
            )
        )
    if not whys and phase in ("Failed", "Succeeded"):
        whys = tuple(c["message"] for c in conditions if c.get("message")) or ("no condition says why",)
    return StartState(phase, whys)


# A start attempt takes a word of why not for KubeVirt's answer once it stood this long without the
# VMI running: virt-handler reports a passing SyncFailed while a launcher pod is still coming up (met
# with the renamed binding), and a sidecar's refusal repeats on every sync.
WHY_SETTLES = 10.0


class Settled:
    """``accept`` of a start attempt's wait: the VMI ran or ended, or a word of why not has stood
    ``seconds``; ``seen`` keeps every word, first first."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.seen: list[str] = []
        self._first: float | None = None

    def __call__(self, state: StartState) -> bool:
        self.seen.extend(w for w in state.whys if w not in self.seen)
        if state.ended:
            return True
        if not state.whys:
            return False
        self._first = self._first if self._first is not None else time.monotonic()
        return time.monotonic() - self._first >= self.seconds
