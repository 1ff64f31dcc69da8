"""The SSH client: paramiko over a socket the target provides, strict about host keys.

The target gives a connected socket (the reference target's dial socket, a pod
port-forward on KubeVirt) rather than a ProxyCommand subprocess. Authentication is by the
per-run key only. The guest's host key is read over the serial console first and pinned:
a different key fails the connection (no AutoAddPolicy, no password fallback).

paramiko is imported when first used, not with this module: its import (0.1 s) stood between
the run's start and QEMU's launch, a wait the boot does not count. ``load_in_background`` imports
it while the guest boots (the target calls it once QEMU runs).
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import importlib
import io
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from slirp_conformance import redaction, waits
from slirp_conformance.console import Result

if TYPE_CHECKING:
    import paramiko


def _paramiko():  # -> the paramiko module
    import paramiko

    return paramiko


def paramiko_error() -> type[Exception]:
    """paramiko's SSHException, for an ``except`` outside this module."""
    return _paramiko().SSHException


def load_in_background() -> None:
    """Import paramiko in a thread of its own: an import under way makes one that comes meanwhile
    wait for it, so nothing is imported twice or half. Whatever goes wrong here is left to the
    import at first use to raise (e.g. Python's deadlock guard, should the main thread import a
    module of paramiko's import cycle at the same moment): nothing is printed from this thread."""

    def load() -> None:
        with contextlib.suppress(Exception):
            importlib.import_module("paramiko")

    threading.Thread(target=load, name="import-paramiko", daemon=True).start()


@dataclass(frozen=True)
class KeyPair:
    pem: str = field(repr=False)  # the private key, OpenSSH PEM; registered for redaction
    public_openssh: str  # "ssh-ed25519 AAAA... comment"

    @functools.cached_property
    def private(self) -> paramiko.PKey:
        return _paramiko().Ed25519Key.from_private_key(io.StringIO(self.pem))

    def __repr__(self) -> str:  # never print key material
        kind, blob = self.public_openssh.split()[:2]
        digest = base64.b64encode(hashlib.sha256(base64.b64decode(blob)).digest()).decode().rstrip("=")
        return f"KeyPair({kind}, fingerprint=SHA256:{digest})"


def generate_keypair(comment: str = "slirp-conformance") -> KeyPair:
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode()
    redaction.register(pem)
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return KeyPair(pem, f"{public.decode()} {comment}")


def parse_host_key(line: str) -> paramiko.PKey:
    """An OpenSSH public key line (``ssh-ed25519 AAAA... [comment]``) as a paramiko key."""
    parts = line.split()
    if len(parts) < 2:
        raise ValueError(f"not an OpenSSH public key line: {line!r}")
    return _paramiko().PKey.from_type_string(parts[0], base64.b64decode(parts[1]))


# After a missed deadline, how long (at most; scaled; never longer than the command's own timeout)
# the client keeps watching the command's channel to tell a late answer from none at all.
LATE_ANSWER_WINDOW = 30


class SSHTimeout(TimeoutError):
    """A command's step missed its deadline; the message names the command and the step."""


class SSHRefused(AssertionError):
    """The guest answered but refused us: wrong host key or key not accepted. Never retried."""


class _PinnedHostKey:
    """paramiko's missing-host-key policy (duck-typed: paramiko calls ``missing_host_key``) for a
    host key of a type the pinned one is not: refused like a different key, for which paramiko
    raises BadHostKeyException itself."""

    def missing_host_key(self, client, hostname, key) -> None:
        raise _paramiko().BadHostKeyException(hostname, key, client.get_host_keys().lookup(hostname) or key)


class SSHClient:
    """Runs commands in the guest over SSH. Same ``run`` contract as the console.

    One command at a time per SSH connection: a command that comes while every connection has one
    under way (a probe in the lane beside a check's command: ahead.py) gets a connection of its own,
    kept for the next. Dropbear, the reference guest's server, closes a session channel whose exec
    request it has not handled yet whenever any child of that connection's process exits: on
    SIGCHLD ``channelio`` runs ``check_close`` on every channel (common-channel.c), and
    ``sesscheckclose`` (svr-chansession.c) finds a session with no process yet (pid 0) closable, so
    it sends EOF and CLOSE (dropbear 2022.83, still so upstream). One check's command ending as the
    lane opened a channel on the same connection lost the lane's command: paramiko's
    ``Channel is not open`` at the exec request, a false red in CI. Nothing is retried: the race
    cannot happen when no two commands share a connection.
    """

    def __init__(self, first: paramiko.SSHClient, connect: Callable[[float], paramiko.SSHClient], name: str) -> None:
        self._connect = connect  # another connection like the first, within a budget
        self._idle = [first]
        self._every: list[paramiko.SSHClient] = [first]
        self._lock = threading.Lock()
        self._closed = False
        self.name = name
        # Called when a command misses its deadline: what the target sees of the connection then
        # (each side's queues), appended to the timeout's message. Set by the target.
        self.explain_timeout: Callable[[], str] | None = None

    @classmethod
    def connect(
        cls,
        dial: Callable[[], socket.socket],
        *,
        user: str,
        key: KeyPair,
        host_key: paramiko.PKey,
        name: str,
        budget: float,
    ) -> SSHClient:
        """Connect through ``dial()``; retry only transport-level failures until ``budget`` runs out."""
        alias = f"[{name}]"
        pm = _paramiko()

        def attempt() -> paramiko.SSHClient:
            client = pm.SSHClient()
            client.get_host_keys().add(alias, host_key.get_name(), host_key)
            client.set_missing_host_key_policy(_PinnedHostKey())
            sock = dial()
            try:
                client.connect(
                    alias,
                    sock=sock,
                    username=user,
                    pkey=key.private,
                    allow_agent=False,
                    look_for_keys=False,
                    timeout=waits.scaled(15),
                    banner_timeout=waits.scaled(15),
                    auth_timeout=waits.scaled(15),
                )
            except (pm.BadHostKeyException, pm.AuthenticationException) as e:
                client.close()
                sock.close()
                raise SSHRefused(f"SSH to {name} as {user}: {type(e).__name__}: {e}") from e
            except BaseException:
                client.close()
                sock.close()
                raise
            return client

        def connect_within(seconds: float) -> paramiko.SSHClient:
            return waits.wait_for(
                f"SSH to {name} as {user}",
                attempt,
                seconds,
                retry_on=(pm.SSHException, ConnectionError, socket.timeout, EOFError),
            )

        return cls(connect_within(budget), connect_within, name)

    @property
    def connections(self) -> int:
        """How many SSH connections the client has made (one per command under way at once, at most)."""
        return len(self._every)

    @contextlib.contextmanager
    def _connection(self, what: str, deadline: float) -> Iterator[paramiko.SSHClient]:
        """A connection with no command under way, for one command: an idle one, else a new one
        made within what is left of the command's deadline."""
        with self._lock:
            if self._closed:
                raise SSHTimeout(f"{self.name}: the SSH client is closed; cannot run {what}")
            client = self._idle.pop(0) if self._idle else None
        if client is None:
            try:
                client = self._connect(max(deadline - time.monotonic(), 0))
            except waits.WaitTimeout as e:
                raise SSHTimeout(f"{self.name}: no SSH connection was free for {what} and a new one failed: {e}") from e
            with self._lock:
                self._every.append(client)
        try:
            yield client
        finally:
            self._give_back(client)

    def _give_back(self, client: paramiko.SSHClient) -> None:
        with self._lock:
            closed = self._closed
            if not closed:
                self._idle.append(client)
        if closed:  # close() came while the command ran
            client.close()

    def run(self, command: str, timeout: float | None = None) -> Result:
        """Run ``command``; every step (channel open, exec request, output, exit status) shares one
        deadline, and a step that misses it raises ``SSHTimeout`` naming the command and the step
        (the report's reason for the clause). paramiko's own waits for the exec request's reply and
        for the exit status have no bound at all."""
        timeout = waits.timeout("console-command") if timeout is None else timeout
        deadline = time.monotonic() + timeout
        what = f"`{command[:160]}`" if len(command) <= 160 else f"`{command[:150]}...`"
        with self._connection(what, deadline) as client:
            transport = client.get_transport()
            if transport is None or not transport.is_active():
                raise SSHTimeout(f"{self.name}: the SSH connection is closed; cannot run {what}")
            try:
                chan = transport.open_session(timeout=max(deadline - time.monotonic(), 0.001))
            except _paramiko().SSHException as e:
                raise self._timeout(client, f"a new SSH channel (open: {e})", what, timeout) from e
            try:
                return self._exec(client, chan, command, what, timeout, deadline)
            finally:
                chan.close()

    def _exec(
        self,
        client: paramiko.SSHClient,
        chan: paramiko.Channel,
        command: str,
        what: str,
        timeout: float,
        deadline: float,
    ) -> Result:
        failed: list[BaseException] = []

        def request() -> None:
            try:
                chan.exec_command(command)
            except BaseException as e:  # noqa: BLE001 (handed to the caller's thread)
                failed.append(e)

        requester = threading.Thread(target=request, name=f"ssh-exec {self.name}", daemon=True)
        requester.start()
        requester.join(max(deadline - time.monotonic(), 0))
        if requester.is_alive():
            try:
                raise self._timeout(
                    client,
                    "the guest's answer to the exec request",
                    what,
                    timeout,
                    lambda missed_at, until: self._late_exec_reply(requester, failed, missed_at, until),
                )
            finally:
                chan.close()  # ends paramiko's wait for the reply
        if failed:
            raise failed[0]
        out = self._drain(client, chan, chan.recv, what, timeout, deadline, "stdout")
        err = self._drain(client, chan, chan.recv_stderr, what, timeout, deadline, "stderr")
        # recv_exit_status() waits without a bound: a guest whose sshd closed the output but never
        # sent the status held a whole run for minutes (seen with the Fedora-like guest).
        if not chan.status_event.wait(max(deadline - time.monotonic(), 0)):
            raise self._stalled(
                client, chan, f"the exit status (the output had ended: {len(out)} bytes)", what, timeout
            )
        # Apart: Fedora's profile.d makes every command print a `bind` warning on stderr.
        return Result(command, out.decode(errors="replace"), chan.exit_status, err.decode(errors="replace"))

    def _drain(self, client, chan, recv, what: str, timeout: float, deadline: float, stream: str) -> bytes:
        data = bytearray()
        while True:
            chan.settimeout(max(deadline - time.monotonic(), 0.001))
            try:
                chunk = recv(65536)
            except TimeoutError:
                raise self._stalled(
                    client,
                    chan,
                    f"the end of its {stream} ({len(data)} bytes so far, ending {bytes(data[-60:])!r})",
                    what,
                    timeout,
                ) from None
            if not chunk:
                return bytes(data)
            data += chunk

    def _stalled(
        self, client: paramiko.SSHClient, chan: paramiko.Channel, step: str, what: str, timeout: float
    ) -> SSHTimeout:
        """``_timeout`` for a step after the exec request, watching the command's channel for a late answer."""
        return self._timeout(
            client, step, what, timeout, lambda missed_at, until: self._late_answer(chan, missed_at, until)
        )

    def _timeout(
        self,
        client: paramiko.SSHClient,
        step: str,
        what: str,
        timeout: float,
        late: Callable[[float, float], str] | None = None,
    ) -> SSHTimeout:
        """The timeout naming the command and the step, with what the target sees then
        (``explain_timeout``) and, when the command's channel is still open (``late``), whether the
        guest answered after all within a while after the deadline: an answer that comes late is a
        guest too slow for the deadline; none at all, a guest side that stopped. Either way the
        command has failed: nothing is retried and the late answer is not used."""
        missed_at = time.monotonic()
        transport = client.get_transport()
        up = transport is not None and transport.is_active()
        state = "the SSH connection is still up" if up else "the SSH connection is down"
        message = f"{self.name}: waited {timeout:.0f} s for {step} of {what}; {state}"
        if self.explain_timeout is not None:
            message += f"; {self.explain_timeout()}"
        if late is not None and up:
            message += f"; {late(missed_at, missed_at + min(timeout, waits.scaled(LATE_ANSWER_WINDOW)))}"
        return SSHTimeout(message)

    @staticmethod
    def _late_answer(chan: paramiko.Channel, missed_at: float, until: float) -> str:
        """After a missed deadline (``missed_at``): does the command's exit status (or the channel's
        close) come by ``until``, and how much output came after the deadline?"""
        answered = chan.status_event.wait(max(until - time.monotonic(), 0))
        late = time.monotonic() - missed_at
        more = 0
        while chan.recv_ready():
            more += len(chan.recv(65536))
        while chan.recv_stderr_ready():
            more += len(chan.recv_stderr(65536))
        if answered and chan.exit_status != -1:
            return (
                f"the guest did answer after the deadline: exit status {chan.exit_status} and {more} more bytes "
                f"of output within {late:.0f} s of it (a guest slower than the deadline, not a stalled one)"
            )
        if answered:
            return f"the guest closed the channel after the deadline without an exit status ({more} more bytes)"
        return (
            f"nothing answered the command in the {late:.0f} s after the deadline either ({more} more bytes, "
            f"no exit status): the guest side stopped, not just slow"
        )

    @staticmethod
    def _late_exec_reply(
        requester: threading.Thread, failed: list[BaseException], missed_at: float, until: float
    ) -> str:
        requester.join(max(until - time.monotonic(), 0))
        late = time.monotonic() - missed_at
        if requester.is_alive():
            return (
                f"the exec request stayed unanswered in the {late:.0f} s after the deadline too: "
                f"the guest side stopped, not just slow"
            )
        outcome = f"refused ({failed[0]})" if failed else "accepted"
        return (
            f"the guest did answer after the deadline: the exec request was {outcome} within {late:.0f} s of it "
            f"(a guest slower than the deadline, not a stalled one)"
        )

    def close(self) -> None:
        """Closes every connection; one with a command under way is closed now too."""
        with self._lock:
            self._closed = True
            every, self._idle = list(self._every), []
        for client in every:
            client.close()
