"""A fault for a child suite run (``-p tests.stall_injection``): the guest's ICMP probe command
hangs, and both clients wait at most ``STALL_BUDGET`` s for it (not its usual 67 s), so the run
shows how a stalled command reaches the report through the real console and SSH clients.

The fault is installed by the plugin hook ``pytest_configure`` of the run that loads it, never at
import: the self-tests import ``STALL_MARK`` from here, and a patch made at import leaked the hang
into every later test of their own process (a CI run's ssh-stall self-tests waited 4 s on an
injected ``sleep 120``)."""

from __future__ import annotations

from slirp_conformance import console, guest_profiles, ssh_client

STALL_MARK = "; sleep 120; : slirp-conformance-stall-injected"
STALL_BUDGET = 4.0


def _install() -> None:
    ping_command = guest_profiles.GuestProfile.ping_command
    console_run = console.Console.run
    ssh_run = ssh_client.SSHClient.run

    def stalling_ping(self, host: str, count: int = 3) -> str:
        return ping_command(self, host, count) + STALL_MARK

    def console_run_bounded(self, command: str, timeout: float = 60):
        return console_run(self, command, min(timeout, STALL_BUDGET) if STALL_MARK in command else timeout)

    def ssh_run_bounded(self, command: str, timeout: float = 60):
        return ssh_run(self, command, min(timeout, STALL_BUDGET) if STALL_MARK in command else timeout)

    guest_profiles.GuestProfile.ping_command = stalling_ping  # type: ignore[method-assign]
    console.Console.run = console_run_bounded  # type: ignore[method-assign]
    ssh_client.SSHClient.run = ssh_run_bounded  # type: ignore[method-assign]


def pytest_configure(config) -> None:
    _install()
