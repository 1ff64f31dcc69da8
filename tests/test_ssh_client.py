"""The SSH client against an in-process SSH server whose shell behaves like the Fedora test
image's: every command first prints bash's ``bind`` warning on stderr (its profile.d line)."""

from __future__ import annotations

import socket
import subprocess
import threading
from pathlib import Path

import paramiko
import pytest

from slirp_conformance.checks import udp
from slirp_conformance.guest_profiles import FEDORA
from slirp_conformance.ssh_client import SSHClient, generate_keypair, parse_host_key
from slirp_conformance.target import Endpoint
from tests.local_guest import loopback_peers

BIND_WARNING = "bash: bind: warning: line editing not enabled\n"
NO_EXIT_STATUS = "exit-status-never-comes"


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
        threading.Thread(target=self._exec, args=(channel, command.decode()), daemon=True).start()
        return True

    @staticmethod
    def _exec(channel: paramiko.Channel, command: str) -> None:
        if command == NO_EXIT_STATUS:  # output and its end, then nothing: no status, no close
            channel.sendall(b"partial\n")
            channel.shutdown_write()
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
    yield client
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


def test_a_command_whose_exit_status_never_comes_times_out_naming_it(fedora_like_ssh):
    """Its output ends (EOF) but the server never sends the exit status: run() gives up within
    its timeout and says which command, instead of waiting forever."""
    raised: list[BaseException] = []

    def run() -> None:
        try:
            fedora_like_ssh.run(NO_EXIT_STATUS, timeout=2)
        except BaseException as e:  # noqa: BLE001 (handed to the test thread)
            raised.append(e)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(30)  # a bound for this test, should run() wait forever again
    assert not worker.is_alive(), "run() is still waiting for an exit status that never comes"
    assert len(raised) == 1 and isinstance(raised[0], TimeoutError) and NO_EXIT_STATUS in str(raised[0]), raised
