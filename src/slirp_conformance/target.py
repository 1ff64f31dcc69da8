"""What every target provides to the guest-facing suites, whatever runs the VM.

A target is a booted VM with a console and SSH, the peers on the far side of slirp's NAT,
and the contract: the facts the guest must observe, derived from the one ``VMSpec``.
"""

from __future__ import annotations

import abc
import ipaddress
import re
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from slirp_conformance import progress, ssh_client, waits
from slirp_conformance.console import Console
from slirp_conformance.guest_profiles import GuestProfile
from slirp_conformance.redaction import RedactedLog
from slirp_conformance.ssh_client import KeyPair, SSHClient, parse_host_key
from slirp_conformance.vmspec import NIC_PCI_IDS, UNLISTED_TEST_PORT, UNLISTED_UDP_TEST_PORT, VMSpec

if TYPE_CHECKING:
    import paramiko

SLIRP_LEASE_SECONDS = 86400  # libslirp's fixed DHCP lease time


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Peers:
    """Services beyond the NAT, as the guest addresses them."""

    tcp_echo: Endpoint
    udp_echo: Endpoint
    dns_name: str  # a name the peer side's DNS serves
    dns_address: str  # what it must resolve to
    icmp_host: str  # answers ICMP echo when pinged directly (proven by ``Target.ping_peer_directly``)


@dataclass(frozen=True)
class Contract:
    """What the guest must see, all derived from the VM spec and the pod's DNS search list."""

    guest_ip: str
    prefix: int
    gateway: str
    nameserver: str
    search_domains: tuple[str, ...]
    lease_seconds: int
    mac: str | None
    nic_model: str
    requested_nic_model: str | None  # what the VM spec asks for (None: no model given)
    nic_pci_id: str  # vendor:device of the NIC the guest must see
    listed_tcp_ports: tuple[int, ...]
    unlisted_tcp_port: int
    listed_udp_ports: tuple[int, ...] = ()
    unlisted_udp_port: int = UNLISTED_UDP_TEST_PORT

    @classmethod
    def from_spec(cls, spec: VMSpec, search_domains: tuple[str, ...]) -> Contract:
        net = spec.network.cidr
        base = int(net.network_address)
        host_bits = int(net.hostmask)
        listed = tuple(p.port for p in spec.interface.ports if p.protocol == "TCP")
        listed_udp = tuple(p.port for p in spec.interface.ports if p.protocol == "UDP")
        if UNLISTED_TEST_PORT in listed:
            raise ValueError(f"port {UNLISTED_TEST_PORT} must stay unlisted: the ports suite relies on it")
        if UNLISTED_UDP_TEST_PORT in listed_udp:
            raise ValueError(f"UDP port {UNLISTED_UDP_TEST_PORT} must stay unlisted: the ports suite relies on it")
        return cls(
            # QEMU's net_slirp_init (net/slirp.c) places slirp's addresses for `net=`: the network
            # ORed with 0x020f (first DHCP lease), 0x0202 (virtual host) and 0x0203 (DNS relay), each
            # masked to the host bits: .15/.2/.3 in a /24 (10.0.2.15), x.y.2.15 in a /16 or /22.
            guest_ip=str(ipaddress.IPv4Address(base | (0x020F & host_bits))),
            prefix=net.prefixlen,
            gateway=str(ipaddress.IPv4Address(base | (0x0202 & host_bits))),
            nameserver=str(ipaddress.IPv4Address(base | (0x0203 & host_bits))),
            search_domains=search_domains,
            lease_seconds=SLIRP_LEASE_SECONDS,
            mac=spec.interface.mac,
            nic_model=spec.interface.effective_model,
            requested_nic_model=spec.interface.model,
            nic_pci_id=NIC_PCI_IDS[spec.interface.effective_model],
            listed_tcp_ports=listed,
            unlisted_tcp_port=UNLISTED_TEST_PORT,
            listed_udp_ports=listed_udp,
            unlisted_udp_port=UNLISTED_UDP_TEST_PORT,
        )


@dataclass(frozen=True)
class UdpSend:
    """One datagram a client in the cluster sent to the pod's address, and what came back:
    ``answered`` (a reply datagram, in ``reply``), ``refused`` (the pod's kernel answered ICMP port
    unreachable: the datagram reached the pod and nothing was bound there), ``sent`` (it left the
    sender and nothing came back within the wait) or ``error`` (it could not be sent)."""

    outcome: str
    detail: str = ""
    reply: str | None = None


@dataclass(frozen=True)
class ClusterService:
    """A ClusterIP Service the run made in front of the VM's launcher pod (cluster targets only)."""

    name: str
    cluster_ip: str | None
    dns_name: str  # <name>.<namespace>.svc.<cluster domain>, the domain read from the launcher pod
    selector: dict[str, str]
    ports: tuple[int, ...]  # the VM's listed TCP ports, each as port and targetPort
    launcher_pod_ip: str | None
    endpoints: tuple[str, ...]  # the ready addresses of its EndpointSlices when the clause dialled


class VariantVMs(Protocol):
    """The ``variant_targets`` fixture: a second VM per requested NIC model (``vmspec.variant_vm``),
    booted on first use; skips the clause where the target cannot boot one."""

    def get(self, model: str) -> Target: ...


class NotOnThisTarget(Exception):
    """The target cannot do this (yet); the clause is skipped with this reason, never passed."""


# What `ss -tni` says about a stalled connection: queues, what is unacknowledged or lost, and when
# each side last sent or heard something (ms ago).
_SS_KEYS = re.compile(
    r"^(unacked|retrans|lost|backoff|rto|lastsnd|lastrcv|lastack|snd_wnd|notsent|bytes_acked|bytes_received):"
)


def ss_summary(text: str) -> str:
    """``ss -tni`` (or netstat) output in one line: each socket's state, queues and addresses, then
    only the ``-i`` fields that tell where its bytes stand."""
    out: list[str] = []
    for line in text.splitlines():
        words = line.split()
        if not words or words[0] in ("State", "Recv-Q", "Netid", "Proto"):
            continue
        if line[:1].isspace():  # ss -i: the socket's details on the next line
            details = " ".join(w for w in words if _SS_KEYS.match(w))
            if out and details:
                out[-1] += f" ({details})"
        else:
            out.append(" ".join(words))
    return " | ".join(out) or "(no socket)"


class Target(abc.ABC):
    """A running conformance VM. Created by the session fixture, closed at session end.

    Subclasses bring the VM up in ``_start`` (ending with ``_open_console``) and tear it down in
    ``_teardown``; the guest access common to every target (console login, pinned host key,
    SSH through a port-forward) lives here.
    """

    name: str
    spec: VMSpec
    profile: GuestProfile
    peers: Peers
    contract: Contract
    failure_artifacts: Path | None = None  # set before start(): where a failed start leaves evidence
    # Its variant VMs share nothing with it (their own pod, QEMU, console): they may boot in
    # threads beside this VM (fixtures/slirp_vm.py) as soon as its own is launched
    # (``when_launched``), instead of when a clause first asks.
    variants_boot_aside: bool = False
    # The SSH side of the clauses marked ``probe`` may run in a lane beside the console's checks
    # (slirp_conformance/ahead.py). Measured on the reference target, where SSH is a port-forward
    # into the VM's own lab; a cluster target keeps every probe in its check until it is measured there.
    probes_ahead: bool = False
    _on_launched: Callable[[], None] | None = None
    _key: KeyPair  # the run's SSH key, authorized in the guest
    _console: Console | None = None
    _transcript: RedactedLog | None = None
    _transcript_path: Path | None = None
    _host_key: paramiko.PKey | None = None
    _ssh: SSHClient | None = None
    _ssh_error: BaseException | None = None

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> Target:
        try:
            self._start()
        except BaseException:
            if self.failure_artifacts is not None:  # gather before anything unwinds
                self.collect_artifacts(self.failure_artifacts)
            self.close()
            raise
        return self

    @abc.abstractmethod
    def _start(self) -> None:
        """Bring the VM up, call ``_launched`` once it runs, then ``_open_console``."""

    def when_launched(self, callback: Callable[[], None]) -> None:
        """``callback`` runs once this VM is launched, before its login (a target that boots no
        VM of its own never calls it)."""
        self._on_launched = callback

    def _launched(self) -> None:
        ssh_client.load_in_background()  # while the guest boots, not before QEMU starts
        callback, self._on_launched = self._on_launched, None
        if callback is not None:
            callback()

    def _open_console(self, sock: socket.socket, transcript: Path, name: str) -> None:
        """Log in on the serial console, then read the guest's SSH host key there to pin it."""
        self._transcript_path = transcript
        self._transcript = RedactedLog(transcript)  # a guest may echo the password (redaction.py)
        self._console = Console(sock, transcript=self._transcript, name=name)
        with progress.phase(f"{name}: logging in"):
            self._console.login(self.profile.credentials, self._login_budget())
        self.profile = self._recognise_guest()
        self._console.line_limit = self.profile.console_line_limit
        if self.profile.settle_command:
            self._console.run(self.profile.settle_command, self._login_budget())
        self._host_key = parse_host_key(self._console.run(self.profile.host_key_command).output.strip())

    def _login_budget(self) -> float:
        """The console login's bound (and the boot's jobs' after it)."""
        return waits.timeout("console-login")

    def _recognise_guest(self) -> GuestProfile:
        """The guest's profile, decided right after the console login: by default the one the
        target started with (a target that boots a guest it does not know reads it from the guest)."""
        return self.profile

    def close(self) -> None:
        """Tear everything down; safe to call twice and after a failed start."""
        for client in (self._ssh, self._console):
            if client is not None:
                client.close()
        self._ssh = self._console = None
        if self._transcript is not None:
            self._transcript.close()
            self._transcript = None
        self._teardown()

    @abc.abstractmethod
    def _teardown(self) -> None:
        """Release what ``_start`` created (VM, namespaces, cluster...)."""

    # -- guest access -----------------------------------------------------------------------------
    def console(self) -> Console:
        """The logged-in serial console (one per VM; shared by the session)."""
        assert self._console is not None, "target not started"
        return self._console

    def ssh(self) -> SSHClient:
        """SSH as the profile's user with the run's key, through a port-forward to port 22,
        the host key pinned. Connected on first use; a failure is kept and raised again, so
        every SSH test fails at once with the same cause."""
        # A probe running ahead (ahead.py) may ask at the same time as a check: one client, which
        # gives each command under way at once a connection of its own (ssh_client.SSHClient).
        # The lock is the instance's own (dict.setdefault is atomic), made on first use: subclasses
        # do not all call an __init__ here.
        with vars(self).setdefault("_ssh_lock", threading.Lock()):
            if self._ssh is None:
                if self._ssh_error is not None:
                    raise self._ssh_error
                try:
                    client = self._ssh_connect(waits.timeout("ssh-ready"))
                except (waits.WaitTimeout, AssertionError) as e:
                    self._ssh_error = e
                    raise
                client.explain_timeout = self.explain_ssh_timeout
                self._ssh = client
            return self._ssh

    def _ssh_connect(self, budget: float) -> SSHClient:
        if self._host_key is None:
            raise RuntimeError(f"{self.name} target not started: no host key pinned for SSH yet")
        return SSHClient.connect(
            lambda: self.port_forward(22),
            user=self.profile.ssh_user,
            key=self._key,
            host_key=self._host_key,
            name=self.spec.name,
            budget=budget,
        )

    def explain_ssh_timeout(self) -> str:
        """Where the bytes of the session's SSH connection stand when a command over it missed its
        deadline: the guest kernel's TCP sockets on port 22 (over the console), what the target
        sees of the connection (``_ssh_path_state``), and whether a new SSH connection works."""
        parts = []
        try:
            r = self.console().run(self.profile.tcp_sockets_command(22), timeout=waits.scaled(20))
            parts.append("the guest's TCP on port 22 (console): " + ss_summary(r.output))
        except (AssertionError, OSError) as e:
            parts.append(f"the guest's TCP on port 22: unreadable ({type(e).__name__}: {str(e)[:200]})")
        parts.extend(self._ssh_path_state())
        try:
            fresh = self._ssh_connect(waits.scaled(30))
            try:
                r = fresh.run("echo fresh-connection-ok", timeout=waits.scaled(20))
                parts.append("a new SSH connection works" if r.output.strip() == "fresh-connection-ok" else "")
            finally:
                fresh.close()
        except (AssertionError, OSError, ssh_client.paramiko_error(), EOFError) as e:
            parts.append(f"a new SSH connection fails too ({type(e).__name__}: {str(e)[:200]})")
        return "; ".join(p for p in parts if p)

    def _ssh_path_state(self) -> list[str]:
        """Hook: what the target sees of the SSH connection between the client and the guest."""
        return []

    def transcript_text(self) -> str | None:
        """The console transcript so far, redacted (its unfinished last line too: the prompt)."""
        if self._transcript is not None:
            self._transcript.flush()
        if self._transcript_path is not None and self._transcript_path.exists():
            pending = self._transcript.pending() if self._transcript is not None else ""
            return self._transcript_path.read_text(errors="replace") + pending
        return None

    # -- what each target provides -------------------------------------------------------------
    @abc.abstractmethod
    def dial_guest_port(self, port: int, timeout: float = 5) -> socket.socket:
        """A TCP connection to ``port`` at the pod's address, as a client in the cluster would.

        Raises ConnectionError (or TimeoutError) when nothing answers there.
        """

    def send_udp_to_pod(self, port: int, payload: bytes, wait: float = 2) -> UdpSend:
        """One datagram to ``port`` at the pod's address, from a client in the cluster; waits up to
        ``wait`` s for a reply or an ICMP error."""
        raise NotOnThisTarget(f"UDP ingress from a client is not implemented on --target={self.name} yet (issue 20)")

    def variant(self, spec: VMSpec) -> Target:
        """A second VM of another spec (issue 20's variant VMs) beside this one, not started."""
        raise NotOnThisTarget(f"a second VM spec ({spec.name}) cannot be booted on --target={self.name}")

    def attempt_start(self, spec: VMSpec) -> str | None:
        """Try to start a VM of ``spec`` beside this one: None when it started (it is removed again
        at once), else the reason it did not."""
        raise NotOnThisTarget(
            f"a start attempt of a second VM spec ({spec.name}) is not possible on --target={self.name}"
        )

    def listen_on_pod_loopback(self, host: str, port: int, token: str) -> None:
        """Start a TCP service on the pod's (the launcher pod's) loopback ``host`` (127.0.0.1 or ::1)
        that answers every connection with ``token``: a process in the pod that keeps to itself."""
        raise NotOnThisTarget(
            f"a listener on the pod's loopback is not implemented on --target={self.name} yet (issue 20)"
        )

    def guest_service(self) -> ClusterService:
        """A ClusterIP Service on the VM's listed TCP ports selecting its launcher pod, made on first
        use in the run's namespace (gone with it)."""
        raise NotOnThisTarget(
            f"a Kubernetes Service in front of the VM exists only on cluster targets, not on --target={self.name}"
        )

    def dial_from_cluster_client(self, host: str, port: int) -> socket.socket:
        """A TCP connection to host:port made by the client in the cluster (its own resolver for names)."""
        raise NotOnThisTarget(f"no client pod in a cluster on --target={self.name}")

    def pod_global_ipv6(self) -> list[str] | None:
        """The pod's own global IPv6 addresses (whether IPv6 egress could work at all); None when
        the target cannot tell."""
        return None

    def pod_loopback_clients(self, host: str, port: int) -> list[str]:
        """The client addresses the pod's loopback service saw."""
        return []

    @abc.abstractmethod
    def port_forward(self, port: int, timeout: float = 5) -> socket.socket:
        """A TCP connection to ``port`` on the pod's loopback, like a pod port-forward (SSH uses it).

        slirp sees a loopback client here, so the guest answers its gateway: this path works
        even when the guest has no default route, unlike ``dial_guest_port``.
        """

    @abc.abstractmethod
    def ping_peer_directly(self) -> dict:
        """Ping ``peers.icmp_host`` from beside the VM (the pod), not through slirp: evidence that
        the peer does answer ICMP, so a guest's failed ping is slirp's doing. Keys: ok, output."""

    @abc.abstractmethod
    def icmp_evidence(self) -> dict:
        """What decides slirp's ICMP: the pod's net.ipv4.ping_group_range, QEMU's uid/gid, caps."""

    def sidecar_args(self) -> list[str] | None:
        """The ``-netdev``/``-device`` arguments the sidecar gave this VM's QEMU, where the target
        knows them (None elsewhere)."""
        return None

    def describe(self) -> dict:
        """Versions and settings for reports (JUnit properties)."""
        return {"target": self.name}

    def collect_artifacts(self, into: Path) -> None:
        """Logs, transcripts and object dumps worth reading after a failure (redacted by the caller)."""
        into.mkdir(parents=True, exist_ok=True)
        text = self.transcript_text()
        if text is not None:
            into.joinpath("console-transcript.log").write_text(text)
