"""A fault for a child suite run (``-p tests.stall_injection``): the guest's ICMP probe command
hangs, and both clients wait at most ``STALL_BUDGET`` s for it (not its usual 67 s), so the run
shows how a stalled command reaches the report through the real console and SSH clients."""

from __future__ import annotations

from slirp_conformance import console, guest_profiles, ssh_client

STALL_MARK = "; sleep 120; : slirp-conformance-stall-injected"
STALL_BUDGET = 4.0

_ping_command = guest_profiles.GuestProfile.ping_command
_console_run = console.Console.run
_ssh_run = ssh_client.SSHClient.run


def _stalling_ping(self, host: str, count: int = 3) -> str:
    return _ping_command(self, host, count) + STALL_MARK


def _console_run_bounded(self, command: str, timeout: float = 60):
    return _console_run(self, command, min(timeout, STALL_BUDGET) if STALL_MARK in command else timeout)


def _ssh_run_bounded(self, command: str, timeout: float = 60):
    return _ssh_run(self, command, min(timeout, STALL_BUDGET) if STALL_MARK in command else timeout)


guest_profiles.GuestProfile.ping_command = _stalling_ping
console.Console.run = _console_run_bounded
ssh_client.SSHClient.run = _ssh_run_bounded
