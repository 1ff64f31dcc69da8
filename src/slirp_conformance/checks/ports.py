"""Guest services for the ports suite: an HTTP server per port, each serving its own token."""

from __future__ import annotations

import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from slirp_conformance import waits
from slirp_conformance.checks import tcp
from slirp_conformance.console import GuestShell
from slirp_conformance.evidence import Evidence
from slirp_conformance.guest_profiles import GuestProfile


@dataclass(frozen=True)
class GuestService:
    port: int
    token: str
    local_body: str  # what the guest itself got from it (the positive control)


@dataclass
class IngressEvidence(Evidence):
    """A client's request for a guest service's token at the pod address."""

    check: ClassVar[str] = "ingress"
    port: int
    token: str  # what the guest service serves
    guest_local_body: str  # what the guest itself got from it (the positive control)
    body: str | None = None  # what the client got
    body_error: str | None = None  # connected, but the request failed
    error: str | None = None  # the connection failed


@dataclass
class ListedPortEvidence(IngressEvidence):
    check: ClassVar[str] = "ingress-listed"


@dataclass
class UnlistedPortEvidence(IngressEvidence):
    check: ClassVar[str] = "ingress-unlisted"
    outcome: str | None = None  # "connected", "refused" (RST: no hostfwd there) or "no answer"


@dataclass
class SshIngressEvidence(Evidence):
    check: ClassVar[str] = "ingress-ssh"
    listed_ports: list[int]  # the interface's listed TCP ports (22 among them)
    rc: int
    hostname: str  # what the guest answered over SSH


def request_from_cluster(dial: Callable[[int], socket.socket], service: GuestService, ev: IngressEvidence) -> str:
    """GET the service's token at the pod address through ``dial`` (the target's
    ``dial_guest_port``), as a client in the cluster would; records body or error in ``ev`` and
    returns the outcome: "connected", "refused" (RST) or "no answer"."""
    try:
        with dial(service.port) as sock:
            try:
                ev.body = tcp.http_get(sock, "/token")
            except (ConnectionError, TimeoutError) as e:
                ev.body_error = f"{type(e).__name__}: {e}"
            return "connected"
    except ConnectionRefusedError as e:
        ev.error = f"{type(e).__name__}: {e}"
        return "refused"
    except (ConnectionError, TimeoutError) as e:
        ev.error = f"{type(e).__name__}: {e}"
        return "no answer"


def _root(port: int) -> str:
    return f"/tmp/slirp-www-{port}"


def start(shell: GuestShell, profile: GuestProfile, port: int) -> GuestService:
    token = f"slirp-port-{port}-" + secrets.token_hex(6)
    root = _root(port)
    # Two commands: in `a && b && server & echo $!`, $! would be the backgrounded list's
    # subshell, not the server, and killing it could leave the server listening.
    setup = shell.run(f"mkdir -p {root} && printf '%s' {token} > {root}/token")
    if setup.ok:
        setup = shell.run(profile.http_serve_command(port, root, f"{root}.pid"))
    if not setup.ok:
        raise AssertionError(
            f"could not start a guest HTTP server on port {port}: rc={setup.rc} "
            f"stdout={setup.output[-200:]!r} stderr={setup.stderr[-200:]!r}"
        )
    get = profile.http_get_command(f"http://127.0.0.1:{port}/token")
    try:
        local = waits.wait_for(
            f"the guest's own HTTP server on port {port} to answer inside the guest",
            lambda: shell.run(get),
            waits.scaled(20),
            accept=lambda r: r.ok and token in r.output,
            describe=lambda r: f"rc={r.rc} output={r.output[-200:]!r}",
        )
    except waits.WaitTimeout as e:
        raise AssertionError(f"positive control failed, the ports check would prove nothing: {e}") from None
    return GuestService(port, token, local.output.strip())


def stop(shell: GuestShell, port: int) -> None:
    """Kill the server by its own PID and wait until that process is gone."""
    root = _root(port)
    pid = shell.run(f"cat {root}.pid").output.strip()
    shell.run(f"rm -rf {root}")
    if not pid.isdigit():
        raise AssertionError(f"the guest HTTP server on port {port} left no pid file ({root}.pid): {pid!r}")
    shell.run(f"kill {pid}")
    try:
        waits.wait_for(
            f"the guest HTTP server on port {port} (pid {pid}) to exit",
            lambda: shell.run(f"kill -0 {pid}"),
            waits.scaled(10),
            accept=lambda r: not r.ok,
            describe=lambda r: f"kill -0 {pid}: rc={r.rc}",
        )
    finally:
        shell.run(f"rm -f {root}.pid")
