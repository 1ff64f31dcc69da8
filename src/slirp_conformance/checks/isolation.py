"""Isolation: what the guest can reach of the pod itself. libslirp maps its gateway address to
the host's loopback (QEMU's ``-netdev user``: the virtual host forwards to 127.0.0.1; with a
custom ``net=`` the gateway is that network's .2), so a process listening on the launcher pod's
loopback is reachable from the guest. A finding a security reviewer needs stated, not a defect of
the plugin: the sidecar renders no ``restrict`` and nothing that would change it."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import pytest

from slirp_conformance.console import GuestShell
from slirp_conformance.evidence import Evidence
from slirp_conformance.target import NotOnThisTarget, Target

POD_LOOPBACK_PORT = 9109  # listed nowhere: the pod keeps it to itself


@dataclass
class PodLoopbackEvidence(Evidence):
    check: ClassVar[str] = "pod-loopback"
    pod_listener: str  # where the pod's own service listens
    guest_dials: str  # what the guest connects to (the slirp gateway)
    token: str  # what the pod's service answers
    from_cluster: str  # a client elsewhere in the cluster at the pod address: refused (loopback only)
    guest_got: str = ""  # what the guest read
    guest_rc: int | None = None
    pod_saw_clients: list[str] = field(default_factory=list)  # source addresses the pod's service saw


# The fixture ``pod_loopback_seen(pod_host, guest_host, more_problems=())`` (fixtures/slirp_evidence.py).
PodLoopbackSeen = Callable[..., PodLoopbackEvidence]


def new_token() -> str:
    return "slirp-pod-loopback-" + secrets.token_hex(6)


def pod_loopback_service(target: Target, host: str) -> str:
    """A TCP service on the pod's loopback ``host`` (127.0.0.1 or ::1) at ``POD_LOOPBACK_PORT`` that
    answers a new token, which is returned; the clause is skipped where the target has no such pod."""
    token = new_token()
    try:
        target.listen_on_pod_loopback(host, POD_LOOPBACK_PORT, token)
    except NotOnThisTarget as e:
        pytest.skip(str(e))
    return token


def _at_port(host: str) -> str:
    return f"[{host}]:{POD_LOOPBACK_PORT}" if ":" in host else f"{host}:{POD_LOOPBACK_PORT}"


def observe(target: Target, pod_host: str, guest_host: str, token: str) -> PodLoopbackEvidence:
    """The premise of a pod-loopback check: the pod's service on ``pod_host`` (its loopback), which
    the guest will dial at ``guest_host``, tried from elsewhere in the cluster at the pod address."""
    return PodLoopbackEvidence(
        pod_listener=f"{_at_port(pod_host)} in the pod's network namespace",
        guest_dials=_at_port(guest_host),
        token=token,
        from_cluster=from_cluster(target.dial_guest_port, POD_LOOPBACK_PORT),
    )


def premise_problems(ev: PodLoopbackEvidence) -> list[str]:
    """Why reaching the service from the guest would show nothing about the pod's loopback."""
    if ev.from_cluster == "refused":
        return []
    return [f"a client in the cluster got '{ev.from_cluster}' at the pod address: the service is not loopback-only"]


def guest_dials(shell: GuestShell, target: Target, ev: PodLoopbackEvidence, pod_host: str, guest_host: str) -> None:
    """The guest's read of ``guest_host`` at the service's port, and the clients the pod's service saw."""
    r = shell.run(target.profile.tcp_read_command(guest_host, POD_LOOPBACK_PORT))
    ev.guest_got, ev.guest_rc = r.output.strip(), r.rc
    ev.pod_saw_clients = target.pod_loopback_clients(pod_host, POD_LOOPBACK_PORT)


def from_cluster(dial: Callable[[int], object], port: int) -> str:
    """A client pod's connection to the pod address at ``port``: "refused" for a loopback-only service."""
    try:
        sock = dial(port)
    except ConnectionRefusedError:
        return "refused"
    except (ConnectionError, TimeoutError) as e:
        return f"no answer ({type(e).__name__})"
    close = getattr(sock, "close", None)
    if close is not None:
        close()
    return "connected"
