"""The SSH client against an in-process SSH server whose shell behaves like the Fedora test
image's: every command first prints bash's ``bind`` warning on stderr (its profile.d line)."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from pathlib import Path

import paramiko
import pytest

from slirp_conformance.checks import udp
from slirp_conformance.guest_profiles import FEDORA
from slirp_conformance.ssh_client import SSHClient, SSHTimeout, generate_keypair, parse_host_key
from slirp_conformance.target import Endpoint
from tests.local_guest import loopback_peers

BIND_WARNING = "bash: bind: warning: line editing not enabled\n"
NO_EXIT_STATUS = "exit-status-never-comes"
OUTPUT_STALLS = "output-stalls-midway"
EXEC_NEVER_ANSWERED = "exec-request-never-answered"
ANSWERS_LATE = "answers-3-s-late"  # a guest slower than the deadline: all of it, but after 3 s
RELEASE = threading.Event()  # lets a server stuck on purpose go at the end of a test


class _FedoraLikeServer(paramiko.ServerInterface):
    def __init__(self, authorized: paramiko.PKey) -> None:
        self.authorized = authorized

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
        threading.Thread(target=self._exec, args=(channel, command.decode()), daemon=True).start()
        return True

    @staticmethod
    def _exec(channel: paramiko.Channel, command: str) -> None:
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
            channel.send_exit_status(0)
            channel.close()
            return
        p = subprocess.run(["sh", "-c", command], capture_output=True, timeout=60)
        channel.sendall_stderr(BIND_WARNING.encode() + p.stderr)
        channel.sendall(p.stdout)
        channel.send_exit_status(p.returncode)
        try:
            channel.close()
        except (EOFError, OSError):  # the client may hang up first, once it has the exit status
            pass


@pytest.fixture
def fedora_like_ssh():
    user_key = generate_keypair()
    server_key = generate_keypair("host").private
    transports = []

    def dial() -> socket.socket:
        ours, theirs = socket.socketpair()
        t = paramiko.Transport(theirs)
        t.add_server_key(server_key)
        t.start_server(event=threading.Event(), server=_FedoraLikeServer(user_key.private))  # no block
        transports.append(t)
        return ours

    pinned = parse_host_key(f"{server_key.get_name()} {server_key.get_base64()}")
    client = SSHClient.connect(dial, user="fedora", key=user_key, host_key=pinned, name="fake-fedora", budget=30)
    RELEASE.clear()
    yield client
    RELEASE.set()
    client.close()
    for t in transports:
        t.close()


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
