"""How long a client's datagram is looked for in the guest service's file (checks/ports.py
``send_from_cluster``), with a fake sender and guest shell (no VM)."""

from __future__ import annotations

from slirp_conformance import waits
from slirp_conformance.checks import ports
from slirp_conformance.console import Result
from slirp_conformance.target import UdpSend


class _Shell:
    """The guest service's file: the token shows from the ``arrives_at``-th read on (never: None)."""

    def __init__(self, token: str, arrives_at: int | None) -> None:
        self.token, self.arrives_at, self.reads = token, arrives_at, 0

    def run(self, command: str, timeout: float | None = None) -> Result:
        self.reads += 1
        arrived = self.arrives_at is not None and self.reads >= self.arrives_at
        return Result(command, "control\n" + (self.token + "\n" if arrived else ""), 0)


def _attempt(outcome: str, arrives_at: int | None) -> tuple[ports.UdpIngressEvidence, _Shell]:
    ev = ports.UdpIngressEvidence(port=8083, token="tok-1", guest_local_control="c", guest_local_received="c")
    shell = _Shell(ev.token, arrives_at)
    service = ports.GuestUdpService(8083, "/tmp/received", "c", "c")
    ports.send_from_cluster(lambda port, payload: UdpSend(outcome, "detail"), shell, service, ev)  # type: ignore[arg-type]
    return ev, shell


def test_a_datagram_the_pod_refused_is_read_for_once_not_waited_for(monkeypatch):
    monkeypatch.setattr(waits, "scaled", lambda s: 30.0)  # a wait would show as many reads, or hang the test
    ev, shell = _attempt("refused", None)
    assert (ev.sender, shell.reads, ev.guest_received) == ("refused", 1, "control")


def test_a_datagram_that_left_is_read_for_until_it_shows():
    ev, shell = _attempt("sent", 3)
    assert shell.reads == 3 and "tok-1" in ev.guest_received


def test_silence_after_a_datagram_that_left_is_waited_out_within_the_bound(monkeypatch):
    monkeypatch.setattr(waits, "scaled", lambda s: 0.3)
    ev, shell = _attempt("sent", None)
    assert shell.reads > 1 and ev.guest_received == "control"
