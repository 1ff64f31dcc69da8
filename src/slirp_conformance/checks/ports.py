"""Guest services for the ports suite: an HTTP server per port, each serving its own token."""

from __future__ import annotations

import re
import secrets
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import ClassVar

from slirp_conformance import guest_batch, waits
from slirp_conformance.checks import tcp
from slirp_conformance.console import GuestShell, Result
from slirp_conformance.evidence import Evidence
from slirp_conformance.guest_profiles import GuestProfile, process_running, wait_while
from slirp_conformance.target import UdpSend


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
class ServiceIngressEvidence(IngressEvidence):
    """A client's request for a guest service's token through a ClusterIP Service selecting the
    launcher pod, by the Service's cluster IP or its DNS name (``via``)."""

    check: ClassVar[str] = "ingress-service"
    via: str = ""  # "cluster-ip" or "dns-name"
    dialled: str | None = None  # the host the client dialled
    service: dict | None = None  # name, cluster IP, DNS name, selector, ports, launcher pod IP, endpoints
    attempts: int | None = None  # this request's number (kube-proxy programs a new Service asynchronously)


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


@dataclass(frozen=True)
class _Launch:
    """One guest service's start: its preparation and server start, then its positive control
    (``control``, run again until it prints ``token``), and how it is stopped (``_Stop``)."""

    port: int
    what: str
    prepare: str
    serve: str
    control: str
    token: str
    stop: _Stop
    awaited: str  # what the control's bounded wait waits for, in its timeout's words


@dataclass(frozen=True)
class _Stop:
    what: str
    pid_file: str
    clean: str  # prints nothing


def _started(shell: GuestShell, launches: list[_Launch]) -> dict[int, Result]:
    """Every service's preparation and server start, then every positive control's first tries
    (up to 0.5 s each in the guest), in one guest command where the line allows (``guest_batch``:
    each part keeps its exit code); then each control again until it holds (bounded). A failed
    preparation or start, or a control that never holds, stops the check, saying why, once the
    services that did start are stopped again. Returns each port's control result. Inside
    ``then``, ``serve``'s own ``server & echo $! > pidfile`` is a list of its own, so ``$!`` is
    still the server."""
    parts = {f"setup-{x.port}": f"if {x.prepare}; then {x.serve}; else false; fi" for x in launches}
    parts |= {f"control-{x.port}": _until_printed(x.control, x.token, 0.5) for x in launches}
    got = guest_batch.run(shell, parts)
    failed = [x for x in launches if not got[f"setup-{x.port}"].ok]
    if failed:
        _stop_all(shell, [x.stop for x in launches if x not in failed])
        setup = got[f"setup-{failed[0].port}"]
        raise AssertionError(
            f"could not start {failed[0].what}: rc={setup.rc} stdout={setup.output[-200:]!r} "
            f"stderr={setup.stderr[-200:]!r}"
        )

    def answered(x: _Launch) -> Result:
        first = got[f"control-{x.port}"]
        return waits.wait_for(
            x.awaited,
            lambda: first if _answered(first, x.token) else shell.run(x.control),
            waits.scaled(20),
            accept=lambda r: _answered(r, x.token),
            describe=lambda r: f"rc={r.rc} output={r.output[-200:]!r}",
        )

    try:
        return {x.port: answered(x) for x in launches}
    except waits.WaitTimeout as e:
        _stop_all(shell, [x.stop for x in launches])
        raise AssertionError(f"positive control failed, the ports check would prove nothing: {e}") from None


def _until_printed(command: str, token: str, seconds: float) -> str:
    """A guest command running ``command`` every 20 ms until it prints ``token``, for ``seconds``
    at most; it prints what ``command`` printed last and exits with its code. A server started in
    the background a moment ago may not listen yet, so the first try in the same guest command as
    its start would often miss (``token``: letters, digits and '-', as the services make them)."""
    if not re.fullmatch(r"[A-Za-z0-9-]+", token):
        raise ValueError(f"token {token!r}: letters, digits and '-' only")
    return (
        f"slirp_n=0; while :; do slirp_out=$({command} 2>&1); slirp_rc=$?; "
        f"case $slirp_out in *{token}*) break;; esac; [ $slirp_n -ge {round(seconds * 50)} ] && break; "
        f"sleep 0.02; slirp_n=$((slirp_n+1)); done; printf '%s\\n' \"$slirp_out\"; (exit $slirp_rc)"
    )


def _http(profile: GuestProfile, port: int) -> _Launch:
    token = f"slirp-port-{port}-" + secrets.token_hex(6)
    root = _root(port)
    # Not `a && b && server & echo $!`: there $! would be the backgrounded list's subshell, not the
    # server, and killing it could leave the server listening. ``_started`` puts the server's
    # start after `then`, where it is a list of its own.
    return _Launch(
        port,
        f"a guest HTTP server on port {port}",
        f"mkdir -p {root} && printf '%s' {token} > {root}/token",
        profile.http_serve_command(port, root, f"{root}.pid"),
        profile.http_get_command(f"http://127.0.0.1:{port}/token"),
        token,
        _http_stop(port),
        f"the guest's own HTTP server on port {port} to answer inside the guest",
    )


def _http_stop(port: int) -> _Stop:
    root = _root(port)
    return _Stop(f"the guest HTTP server on port {port}", f"{root}.pid", f"rm -rf {root}")


def start_all(shell: GuestShell, profile: GuestProfile, ports: Iterable[int]) -> dict[int, GuestService]:
    """A guest HTTP server on each port, serving a token of its own, each proven from inside (the
    guest's own request gets the token); started together, in one guest command where it fits."""
    launches = [_http(profile, port) for port in ports]
    local = _started(shell, launches)
    return {x.port: GuestService(x.port, x.token, local[x.port].output.strip()) for x in launches}


def start(shell: GuestShell, profile: GuestProfile, port: int) -> GuestService:
    return start_all(shell, profile, (port,))[port]


def _answered(r: Result, token: str) -> bool:
    return r.ok and token in r.output


def _stop_by_pid_file(shell: GuestShell, what: str, pid_file: str, clean: str) -> None:
    _stop_all(shell, [_Stop(what, pid_file, clean)])


def _stop_all(shell: GuestShell, stops: list[_Stop]) -> None:
    """For each service: read its pid, run ``clean``, kill it and wait until that process is gone;
    the pid file goes last. A service that left no pid file is an error: it may still run. Every
    service is stopped before the first error is raised.

    A guest command costs about 0.15 s on the Fedora-like guest under TCG (10-100 ms on busybox's
    console), so the readings, the kills and the first looks (up to 0.5 s in the guest each, every
    20 ms) are one command (``guest_batch``), and the look that finds a process gone removes its
    pid file; a bounded wait after it covers a slow end. Every service is killed before the first
    look: the services end together, in one 20 ms look, not one after the other (busybox console,
    four services: 0.28 s when each was killed and waited for in turn)."""
    if not stops:
        return
    running = process_running("$slirp_pid")

    def read_pid(x: _Stop) -> str:  # the shell's own read, no process; empty when there is no file
        return f"slirp_pid=; {{ read -r slirp_pid <{x.pid_file}; }} 2>/dev/null"

    def numeric(then: str) -> str:
        return f"case $slirp_pid in ''|*[!0-9]*) false;; *) {then};; esac"

    kills = {
        f"kill-{i}": f'{read_pid(x)}; {x.clean}; echo "pid $slirp_pid"; {numeric("kill $slirp_pid")}'
        for i, x in enumerate(stops)
    }
    looks = {
        f"gone-{i}": f"{read_pid(x)}; " + numeric(f"{wait_while(running, 0.5)}; ! {running} && rm -f {x.pid_file}")
        for i, x in enumerate(stops)
    }
    got = guest_batch.run(shell, kills | looks)
    errors: list[BaseException] = []
    for i, x in enumerate(stops):
        said = re.search(r"^pid (.*)$", got[f"kill-{i}"].output, re.M)
        pid = said.group(1).strip() if said else got[f"kill-{i}"].output.strip()
        if not pid.isdigit():
            errors.append(AssertionError(f"{x.what} left no pid file ({x.pid_file}): {pid!r}"))
            continue
        if got[f"gone-{i}"].ok:
            continue
        try:
            _gone(shell, x, pid)
        except Exception as e:  # noqa: BLE001 - the others are stopped first, then the first error raised
            errors.append(e)
    if errors:
        raise errors[0]


def _gone(shell: GuestShell, x: _Stop, pid: str) -> None:
    """The bounded wait for a killed service to exit; its pid file is removed either way."""
    running = process_running(pid)
    gone_then_forget = f"! {running} && rm -f {x.pid_file}"  # rc 0 only once the process is gone
    try:
        waits.wait_for(
            f"{x.what} (pid {pid}) to exit",
            lambda: shell.run(gone_then_forget),
            waits.scaled(10),
            accept=lambda r: r.ok,
            describe=lambda r: f"still running ({running}: rc={r.rc})",
        )
    except BaseException:
        shell.run(f"rm -f {x.pid_file}")
        raise


# -- UDP: a guest service that records every datagram it receives ----------------------------------
@dataclass(frozen=True)
class GuestUdpService:
    port: int
    received_file: str  # where the guest service appends every payload it receives
    local_token: str  # the positive control's datagram, sent from inside the guest
    local_received: str  # what the service had received once the control arrived


@dataclass
class UdpIngressEvidence(Evidence):
    """A client's datagram to a guest UDP service at the pod address."""

    check: ClassVar[str] = "ingress-udp"
    port: int
    token: str  # the client's payload
    guest_local_control: str  # the datagram the guest sent itself first (the service was up)
    guest_local_received: str  # what the service had received after it
    sender: str = ""  # what the client's side saw: sent, answered, refused (ICMP from the pod), error
    sender_detail: str = ""
    guest_received: str = ""  # every payload the guest service received, read after the client's send


@dataclass
class ListedUdpPortEvidence(UdpIngressEvidence):
    check: ClassVar[str] = "ingress-udp-listed"
    token_reached_guest: bool | None = None


@dataclass
class UnlistedUdpPortEvidence(UdpIngressEvidence):
    check: ClassVar[str] = "ingress-udp-unlisted"
    outcome: str | None = None  # "refused" (the pod's ICMP port unreachable), "reached the guest" or "no answer"


def _udp_root(port: int) -> str:
    return f"/tmp/slirp-udp-{port}"


def _udp(profile: GuestProfile, port: int) -> _Launch:
    root = _udp_root(port)
    received = f"{root}.received"
    token = f"slirp-udp-local-{port}-" + secrets.token_hex(6)
    return _Launch(
        port,
        f"a guest UDP service on port {port}",
        f"rm -f {received} && : > {received}",
        profile.udp_serve_command(port, received, f"{root}.pid"),
        # A datagram sent before the service bound its socket is lost: send again, then read.
        f"{profile.udp_send_command('127.0.0.1', port, token)} >/dev/null; cat {received}",
        token,
        _udp_stop(port),
        f"the guest's own UDP service on port {port} to receive a datagram sent inside the guest",
    )


def _udp_stop(port: int) -> _Stop:
    root = _udp_root(port)
    return _Stop(f"the guest UDP service on port {port}", f"{root}.pid", f"rm -f {root}.received")


def start_udp_all(shell: GuestShell, profile: GuestProfile, ports: Iterable[int]) -> dict[int, GuestUdpService]:
    """A UDP service on each port in the guest, each proven up from inside: a datagram the guest
    sends to its own 127.0.0.1:port is in the service's file (the positive control); started
    together, in one guest command where it fits."""
    launches = [_udp(profile, port) for port in ports]
    got = _started(shell, launches)
    return {
        x.port: GuestUdpService(x.port, f"{_udp_root(x.port)}.received", x.token, got[x.port].output.strip())
        for x in launches
    }


def start_udp(shell: GuestShell, profile: GuestProfile, port: int) -> GuestUdpService:
    return start_udp_all(shell, profile, (port,))[port]


def _until_received(what: str, read: Callable[[], Result], token: str, seconds: float) -> Result:
    """``read`` (the guest service's file) again until ``token`` is in it; WaitTimeout after ``seconds`` (scaled)."""
    return waits.wait_for(
        what,
        read,
        waits.scaled(seconds),
        accept=lambda r: r.ok and token in r.output,
        describe=lambda r: f"rc={r.rc} received={r.output[-200:]!r}",
    )


def send_from_cluster(
    send: Callable[[int, bytes], UdpSend], shell: GuestShell, service: GuestUdpService, ev: UdpIngressEvidence
) -> None:
    """The client's datagram (``send``: the target's ``send_udp_to_pod``), then what the guest
    service received, read until the token shows or a few seconds pass (a datagram is not
    acknowledged: its arrival is read where it lands). Refused by the pod (ICMP port unreachable),
    it is read once: no socket in the pod took the datagram, so nothing can have forwarded it to the
    guest, and waiting would only wait out a silence already explained."""
    result = send(service.port, ev.token.encode() + b"\n")
    ev.sender, ev.sender_detail = result.outcome, result.detail

    def read():
        return shell.run(f"cat {service.received_file}")

    if result.outcome == "refused":
        ev.guest_received = read().output.strip()
        return
    try:
        got = _until_received(
            f"the client's datagram in the guest UDP service's file on port {service.port}", read, ev.token, 3
        )
    except waits.WaitTimeout:
        got = read()
    ev.guest_received = got.output.strip()


@dataclass
class StartedServices:
    """The guest services (HTTP servers on ``tcp`` ports, UDP services on ``udp`` ports) that a
    module started, stopped together by ``stop``: each killed by its own PID and waited for until
    that process is gone, in one guest command for both kinds, not one each, at the end of the
    module, where the run waits for it (0.15 s a command on the busybox console under TCG)."""

    tcp: list[int] = field(default_factory=list)
    udp: list[int] = field(default_factory=list)

    def stop(self, shell: GuestShell) -> None:
        _stop_all(shell, [*map(_http_stop, self.tcp), *map(_udp_stop, self.udp)])
