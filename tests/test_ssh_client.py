"""The SSH client against an in-process SSH server whose shell behaves like the Fedora test
image's: every command first prints bash's ``bind`` warning on stderr (its profile.d line). Like
dropbear, it loses a command whose exec request comes while another command runs on the same
connection (the race in ssh_client.SSHClient's doc, made certain here)."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import paramiko
import pytest

from slirp_conformance.checks import udp
from slirp_conformance.guest_profiles import FEDORA
from slirp_conformance.ssh_client import KeyPair, SSHClient, SSHRefused, SSHTimeout, generate_keypair, parse_host_key
from slirp_conformance.target import Endpoint
from tests.local_guest import loopback_peers

BIND_WARNING = "bash: bind: warning: line editing not enabled\n"
NO_EXIT_STATUS = "exit-status-never-comes"
OUTPUT_STALLS = "output-stalls-midway"
EXEC_NEVER_ANSWERED = "exec-request-never-answered"
ANSWERS_LATE = "answers-3-s-late"  # a guest slower than the deadline: all of it, but after 3 s
RELEASE = threading.Event()  # lets a server stuck on purpose go at the end of a test


class _FedoraLikeServer(paramiko.ServerInterface):
    """One per connection."""

    def __init__(self, authorized: paramiko.PKey) -> None:
        self.authorized = authorized
        self.running = 0  # commands under way on this connection
        self.lock = threading.Lock()

    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        ok = username == "fedora" and key.get_base64() == self.authorized.get_base64()
        return paramiko.AUTH_SUCCESSFUL if ok else paramiko.AUTH_FAILED

    def check_channel_request(self, kind: str, chanid: int) -> int:
        return paramiko.OPEN_SUCCEEDED if kind == "session" else paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        if command.decode() == EXEC_NEVER_ANSWERED:  # the whole server stalls, as a stuck peer would
            RELEASE.wait(60)
            return False
        with self.lock:
            if self.running:  # dropbear closes a fresh channel when another command ends meanwhile
                channel.close()
                return False
            self.running += 1
        threading.Thread(target=self._exec, args=(channel, command.decode()), daemon=True).start()
        return True

    def _ended(self) -> None:
        """The command's process is gone: before its exit status goes out, as with a real server."""
        with self.lock:
            self.running -= 1

    def _exec(self, channel: paramiko.Channel, command: str) -> None:
        if command == NO_EXIT_STATUS:  # output and its end, then nothing: no status, no close
            channel.sendall(b"partial\n")
            channel.shutdown_write()
            return
        if command == OUTPUT_STALLS:  # some output, then nothing: no end, no status
            channel.sendall(b"partial\n")
            return
        if command == ANSWERS_LATE:
            channel.sendall(b"partial\n")
            time.sleep(3)
            channel.sendall(b"rest\n")
            self._ended()
            channel.send_exit_status(0)
            channel.close()
            return
        p = subprocess.run(["sh", "-c", command], capture_output=True, timeout=60)
        channel.sendall_stderr(BIND_WARNING.encode() + p.stderr)
        channel.sendall(p.stdout)
        self._ended()
        channel.send_exit_status(p.returncode)
        try:
            channel.close()
        except (EOFError, OSError):  # the client may hang up first, once it has the exit status
            pass


@dataclass
class _FakeGuest:
    user_key: KeyPair
    server_key: paramiko.PKey
    transports: list[paramiko.Transport]

    def dial(self) -> socket.socket:
        ours, theirs = socket.socketpair()
        t = paramiko.Transport(theirs)
        t.add_server_key(self.server_key)
        t.start_server(event=threading.Event(), server=_FedoraLikeServer(self.user_key.private))  # no block
        self.transports.append(t)
        return ours

    def connect(self) -> SSHClient:
        pinned = parse_host_key(f"{self.server_key.get_name()} {self.server_key.get_base64()}")
        return SSHClient.connect(
            self.dial, user="fedora", key=self.user_key, host_key=pinned, name="fake-fedora", budget=30
        )


@pytest.fixture
def fake_guest():
    guest = _FakeGuest(generate_keypair(), generate_keypair("host").private, [])
    RELEASE.clear()
    yield guest
    RELEASE.set()
    for t in guest.transports:
        t.close()


@pytest.fixture
def fedora_like_ssh(fake_guest):
    client = fake_guest.connect()
    yield client
    client.close()


def test_stderr_noise_does_not_reach_the_parsed_output(fedora_like_ssh):
    r = fedora_like_ssh.run("cat /proc/sys/kernel/hostname")
    assert r.ok and r.output == Path("/proc/sys/kernel/hostname").read_text(), r
    assert r.stderr == BIND_WARNING


def test_an_echo_check_over_ssh_still_compares_equal(fedora_like_ssh):
    with loopback_peers({}) as ports:
        ev = udp.echo(fedora_like_ssh, FEDORA, Endpoint("127.0.0.1", ports["udp_echo"]))
    assert ev.received == ev.sent, ev.facts


def _run_bounded(ssh: SSHClient, command: str) -> BaseException | None:
    """``ssh.run(command, timeout=2)`` in a thread, given 30 s: what it raised (None: it returned)."""
    raised: list[BaseException] = []

    def run() -> None:
        try:
            ssh.run(command, timeout=2)
        except BaseException as e:  # noqa: BLE001 (handed to the test thread)
            raised.append(e)

    worker = threading.Thread(target=run, daemon=True)
    t0 = time.monotonic()
    worker.start()
    worker.join(30)  # a bound for this test, should run() wait forever again
    assert not worker.is_alive(), f"run({command!r}) is still waiting after 30 s"
    assert time.monotonic() - t0 < 10, f"run({command!r}, timeout=2) took {time.monotonic() - t0:.0f} s"
    return raised[0] if raised else None


STOPPED = "the guest side stopped, not just slow"


@pytest.mark.parametrize(
    ("command", "step", "after"),
    [
        (NO_EXIT_STATUS, "the exit status (the output had ended: 8 bytes)", STOPPED),
        (OUTPUT_STALLS, "the end of its stdout (8 bytes so far, ending b'partial\\n')", STOPPED),
        (EXEC_NEVER_ANSWERED, "the guest's answer to the exec request", STOPPED),
    ],
    ids=["no-exit-status", "output-stalls", "exec-never-answered"],
)
def test_a_stalled_command_times_out_naming_the_command_and_the_step(fedora_like_ssh, command, step, after):
    """Whichever step the guest stops at, run() gives up within its timeout with a TimeoutError
    that names the command and what it waited for (the conformance report's reason), instead of
    waiting forever (paramiko's waits for the exec reply and the exit status have no bound), and
    says that nothing came after the deadline either: a stall, not a slow guest."""
    e = _run_bounded(fedora_like_ssh, command)
    assert isinstance(e, SSHTimeout), repr(e)
    assert f"waited 2 s for {step} of `{command}`" in str(e), str(e)
    assert after in str(e), str(e)


def test_a_late_answer_is_told_apart_from_a_stall(fedora_like_ssh):
    """A guest that answers after the deadline (as a guest starved of CPU does) still fails the
    command, and the reason says the answer came late: not the stall's words (the control above)."""
    e = _run_bounded(fedora_like_ssh, ANSWERS_LATE)
    assert isinstance(e, SSHTimeout), repr(e)
    assert f"waited 2 s for the end of its stdout (8 bytes so far, ending b'partial\\n') of `{ANSWERS_LATE}`" in str(e)
    assert "the guest did answer after the deadline: exit status 0 and 5 more bytes" in str(e), str(e)
    assert STOPPED not in str(e)


def test_a_command_that_ends_is_not_cut_short_by_the_bound(fedora_like_ssh):
    """The control: the same bound lets a command that ends in time through, with its status."""
    r = fedora_like_ssh.run("sleep 1; echo done; exit 3", timeout=5)
    assert (r.output, r.rc) == ("done\n", 3), r


def _at_once(run, how_many: int) -> list:
    """``run(i)`` for i in range(how_many), each in its own thread, all at once: what each
    returned or raised, within 30 s."""
    outcomes: list = [None] * how_many
    start = threading.Barrier(how_many)

    def one(i: int) -> None:
        start.wait(10)
        try:
            outcomes[i] = run(i)
        except Exception as e:  # noqa: BLE001 (the test reads it)
            outcomes[i] = e

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(how_many)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads), "a command is still waiting after 30 s"
    return outcomes


def test_commands_at_once_each_get_a_connection(fedora_like_ssh):
    """The lane's probe and a check's command at once (ahead.py): each runs, on a connection of
    its own, against a server that loses a command sent beside another on one connection."""
    outcomes = _at_once(lambda i: fedora_like_ssh.run(f"sleep 0.5; echo {i}", timeout=10), 3)
    assert not [o for o in outcomes if isinstance(o, Exception)], outcomes
    assert [(r.output, r.rc) for r in outcomes] == [("0\n", 0), ("1\n", 0), ("2\n", 0)], outcomes
    assert fedora_like_ssh.connections == 3


def test_commands_one_after_another_share_one_connection(fedora_like_ssh):
    """The cost control: a connection is made only for a command that comes while every other
    one is busy; commands one after another use the first."""
    for i in range(3):
        assert fedora_like_ssh.run(f"echo {i}", timeout=10).output == f"{i}\n"
    assert fedora_like_ssh.connections == 1


def test_the_fake_server_loses_a_command_sent_beside_another_on_one_connection(fake_guest):
    """The premise of the test above: commands at once on one paramiko connection (what
    SSHClient did before) lose all but one, as dropbear's race lost the lane's transfer."""
    pinned = parse_host_key(f"{fake_guest.server_key.get_name()} {fake_guest.server_key.get_base64()}")
    client = paramiko.SSHClient()
    client.get_host_keys().add("[fake]", pinned.get_name(), pinned)
    client.connect(
        "[fake]",
        sock=fake_guest.dial(),
        username="fedora",
        pkey=fake_guest.user_key.private,
        allow_agent=False,
        look_for_keys=False,
        timeout=10,
    )
    try:

        def run(i: int) -> str:
            chan = client.get_transport().open_session(timeout=10)
            try:
                chan.settimeout(10)
                chan.exec_command(f"sleep 0.5; echo {i}")
                return chan.makefile().read().decode()
            finally:
                chan.close()

        outcomes = _at_once(run, 3)
    finally:
        client.close()
    lost = [o for o in outcomes if isinstance(o, paramiko.SSHException)]
    assert len(lost) == 2, outcomes


@pytest.mark.parametrize("pinned_kind", ["same-type", "other-type"])
def test_a_host_key_other_than_the_pinned_one_is_refused_not_retried(fake_guest, pinned_kind):
    """A different key of the pinned type (paramiko's own check) and a key of another type (the
    client's missing-key policy) both end the connection at once as refused: never retried as a
    transport failure, never accepted."""
    if pinned_kind == "same-type":
        pinned = parse_host_key(generate_keypair().public_openssh)
    else:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        line = (
            ec.generate_private_key(ec.SECP256R1())
            .public_key()
            .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
            .decode()
        )
        pinned = parse_host_key(line)
    t0 = time.monotonic()
    with pytest.raises(SSHRefused, match="BadHostKeyException"):
        SSHClient.connect(
            fake_guest.dial, user="fedora", key=fake_guest.user_key, host_key=pinned, name="fake-fedora", budget=30
        )
    assert time.monotonic() - t0 < 10, "a refused host key was retried"
    assert len(fake_guest.transports) == 1, "a refused host key was retried"


def test_the_keypair_never_shows_its_private_half(fake_guest):
    key = fake_guest.user_key
    assert key.pem not in repr(key) and "PRIVATE" not in repr(key)
    assert repr(key) == f"KeyPair(ssh-ed25519, fingerprint={key.private.fingerprint})"
