"""Several guest commands in one round trip (``guest_batch``), the console's line limit that
cuts a batch into runs, and busybox's ping that the guest ends once every request has its ICMP
error. The batches run for real in the host's sh (an ash, like busybox's) and bash (Fedora's)."""

from __future__ import annotations

import os
import socket
import stat
from dataclasses import replace
from pathlib import Path

import pytest

from slirp_conformance import guest_batch
from slirp_conformance.console import Console, Credentials, Result, command_limit
from slirp_conformance.guest_profiles import FEDORA, REFERENCE, GuestProfile
from tests.local_guest import LocalShell
from tests.test_console import FakeSerialGuest


@pytest.mark.parametrize("login_shell", ["sh", "bash"])
def test_each_part_gets_its_own_output_and_exit_code(login_shell):
    got = guest_batch.run(
        LocalShell(login_shell),
        {
            "two": "echo a; echo b",
            "no-newline": "printf x",
            "fails": "echo before; ls /nonexistent-slirp-path",
            "job": "sleep 0.1 &",
            "empty": "true",
            "last": "echo end; exit_code() { return 7; }; exit_code",
        },
    )
    assert (got["two"].output, got["two"].rc) == ("a\nb\n", 0)
    assert (got["no-newline"].output, got["no-newline"].rc) == ("x", 0)
    assert got["fails"].rc != 0 and got["fails"].output.startswith("before\n")
    assert "nonexistent-slirp-path" in got["fails"].output  # stderr folded into the part's output
    assert (got["job"].rc, got["empty"].output, got["empty"].rc) == (0, "", 0)
    assert (got["last"].output, got["last"].rc) == ("end\n", 7)


def test_a_batch_that_breaks_off_says_which_parts_never_ended():
    got = guest_batch.run(LocalShell(), {"first": "echo one", "ends-the-shell": "exit 3", "never": "echo two"})
    assert (got["first"].output, got["first"].rc) == ("one\n", 0)
    assert got["ends-the-shell"].rc == -1 and "did not end" in got["ends-the-shell"].stderr
    assert got["never"].rc == -1 and got["never"].output == ""


def test_part_names_and_lines_are_checked_before_anything_runs():
    with pytest.raises(ValueError, match="part name"):
        guest_batch.command({"a b": "true"}, "t")
    with pytest.raises(ValueError, match="one line"):
        guest_batch.command({"a": "echo 1\necho 2"}, "t")


class _LimitedShell(LocalShell):
    """A console-like shell with a line limit: records each guest command it was given."""

    def __init__(self, limit: int | None) -> None:
        super().__init__()
        self.limit, self.lines = limit, []

    def command_limit(self) -> int | None:
        return self.limit

    def run(self, command: str, timeout: float = 60) -> Result:
        assert self.limit is None or len(command) <= self.limit, len(command)
        self.lines.append(command)
        return super().run(command, timeout)


@pytest.mark.parametrize("limit, commands", [(None, 1), (10_000, 1), (220, 3)])
def test_parts_go_in_as_few_commands_as_the_line_limit_allows(limit, commands):
    parts = {f"p{i}": f"echo {'x' * 40}{i}" for i in range(5)}
    shell = _LimitedShell(limit)
    got = guest_batch.run(shell, parts)
    assert len(shell.lines) == commands, shell.lines
    assert [got[f"p{i}"].output for i in range(5)] == [f"{'x' * 40}{i}\n" for i in range(5)]


def test_the_console_refuses_a_line_its_guest_would_cut_and_sends_nothing():
    """busybox ash (echo off) keeps 4095 characters of a console line and loses the rest (measured):
    the command then never ends, and the console waited 67 s for a marker that never came."""
    ours, theirs = socket.socketpair()
    guest = FakeSerialGuest(theirs)
    guest.start()
    try:
        console = Console(ours, name="fake")
        console.login(Credentials("root", "secret"), timeout=10)
        console.line_limit = REFERENCE.console_line_limit
        fits = console.command_limit()
        assert fits is not None and 3500 < fits < 4095
        assert console.run("echo " + "x" * (fits - 5)).output == "x" * (fits - 5) + "\n"
        sent = len(guest.received)
        with pytest.raises(ValueError, match="keeps 4095"):
            console.run("echo " + "x" * (fits - 4))
        assert len(guest.received) == sent
        assert console.run("echo still here").output == "still here\n"
    finally:
        ours.close()
        theirs.close()
        guest._interrupt(9)


def test_the_busybox_icmp_probe_fits_its_console_in_one_line():
    """The ICMP probe's four parts on busybox's console (echo off): one line, one round trip."""
    parts = {
        "before": REFERENCE.icmp_counters_command(),
        "route": REFERENCE.route_get_command("198.18.0.1"),
        "ping": REFERENCE.ping_command("198.18.0.1"),
        "after": REFERENCE.icmp_counters_command(),
    }
    limit = command_limit(REFERENCE.console_line_limit)  # what the console's markers leave
    assert [list(g) for g in guest_batch._groups(parts, "slirp-part-0123abcd", limit)] == [
        ["before", "route", "ping", "after"],
    ]


# -- busybox's ping, ended by the guest once every request has its ICMP error -----------------------

_FAKE_PING = """#!/usr/bin/env python3
# Like busybox ping without replies: a request every 0.2 s, each answered by an ICMP error that it
# ignores (the test's counter file stands for InDestUnreachs), then a second's wait; SIGINT prints
# the statistics, as busybox's handler does.
import signal, sys, time
counter, errors = sys.argv[1], int(sys.argv[2])
sent = 0
def stats(*interrupted):
    print(f"\\n--- statistics ---\\n{sent} packets transmitted, 0 packets received, 100% packet loss", flush=True)
    if interrupted:
        print(f"fake ping: SIGINT after request {sent}", flush=True)
    sys.exit(1)
signal.signal(signal.SIGINT, stats)
print("PING 198.18.0.1 (198.18.0.1): 56 data bytes", flush=True)
for i in range(3):
    sent += 1
    if i < errors:
        with open(counter, "r+") as f:
            n = int(f.read()) + 1
            f.seek(0); f.write(str(n)); f.truncate()
    time.sleep(0.2 if i < 2 else 1.0)
stats()
"""


def _ping_in(tmp_path: Path, errors: int, profile: GuestProfile = REFERENCE) -> Result:
    """Runs ``profile``'s ping command with a fake ping on PATH that gets ``errors`` ICMP errors."""
    counter = tmp_path / "unreachables"
    counter.write_text("40")
    fake = tmp_path / "ping"
    fake.write_text(_FAKE_PING)
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)

    class Counted(GuestProfile):
        def icmp_in_dest_unreachs_command(self) -> str:
            return f"cat {counter}"

    command = Counted(**{f: getattr(profile, f) for f in profile.__dataclass_fields__}).ping_command("198.18.0.1")
    ping = f"ping -n -c 3 -i {profile.ping_interval:g} -W 1 198.18.0.1"
    assert command.count(f"{ping} &") == 1, command
    command = command.replace(ping, f"{fake} {counter} {errors}")
    return LocalShell().run(f"PATH={tmp_path}:{os.environ['PATH']}; {command}")


def test_busybox_ping_ends_once_every_request_has_its_icmp_error(tmp_path):
    r = _ping_in(tmp_path, errors=3)
    assert "3 packets transmitted" in r.output and r.rc == 1, r
    # stopped right after the third request's error, not after the second's wait that follows it
    assert "fake ping: SIGINT after request 3" in r.output, r
    assert "ping stopped on an ICMP error for each request" in r.output, r


@pytest.mark.parametrize("errors", [0, 2])
def test_busybox_ping_runs_its_course_without_an_error_for_each_request(tmp_path, errors):
    """The control: a request without its error (none came, or the peer rate-limited them) may
    still get its reply, so the ping waits it out as before, and nothing says it was stopped."""
    r = _ping_in(tmp_path, errors=errors)
    assert "3 packets transmitted" in r.output and r.rc == 1, r
    assert "SIGINT" not in r.output and "stopped" not in r.output, r


def test_iputils_ping_is_left_to_end_by_itself():
    assert not FEDORA.ping_ignores_icmp_errors
    assert FEDORA.ping_command("198.18.0.1") == "timeout 7 ping -n -c 3 -i 0.2 -W 1 198.18.0.1"
    assert "kill -INT" not in replace(REFERENCE, ping_ignores_icmp_errors=False).ping_command("198.18.0.1")


class _Stalls:
    """A shell whose client gives up on the command, as the SSH client and the console do."""

    def run(self, command: str, timeout: float = 60) -> Result:
        raise TimeoutError(f"waited 4 s for the end of `{command[:150]}...`")


def test_a_batch_that_times_out_names_each_part_by_its_start_and_end():
    """The SSH client names a command by its first 150 characters; a batch's hung part may come
    later, so the error lists the parts (the report keeps 2000 characters of a reason)."""
    long = "echo start; " + "x=1; " * 40 + "sleep 120; : the-end-of-the-long-part"
    with pytest.raises(TimeoutError) as caught:
        guest_batch.run(_Stalls(), {"first": "cat /proc/net/snmp", "long": long})
    text = str(caught.value)
    assert text.startswith("waited 4 s for the end of `{ cat /proc/net/snmp; } 2>&1"), text
    assert "of the parts first: `cat /proc/net/snmp`; long: `echo start; x=1;" in text, text
    assert "sleep 120; : the-end-of-the-long-part`" in text and len(text) < 600, text
