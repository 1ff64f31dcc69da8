"""The console client against a scripted serial line: a getty-like login and a shell that
echoes what it is sent, as a tty does, so the end markers are exercised for real."""

from __future__ import annotations

import contextlib
import os
import queue
import re
import secrets
import signal
import socket
import subprocess
import threading
import time

import pytest

from slirp_conformance import redaction
from slirp_conformance.checks import udp
from slirp_conformance.console import Console, ConsoleError, Credentials
from slirp_conformance.guest_profiles import FEDORA
from slirp_conformance.redaction import RedactedLog
from slirp_conformance.target import Endpoint
from tests.local_guest import loopback_peers


class FakeSerialGuest(threading.Thread):
    """Speaks like a serial console: 'login:' / 'Password:' then a '# ' shell running /bin/sh -c."""

    def __init__(
        self,
        sock: socket.socket,
        password: str = "secret",
        prompt_after_boot: bool = True,
        after_prompt: str = "",
        echo_password: bool = False,
        interject: str = "",
        ctrl_c: bool = True,
        login_times_out: int = 0,
        after_root_prompt: str = "",
    ) -> None:
        """``after_prompt``: escape codes a terminal prints after its prompts (agetty, bash);
        ``echo_password``: the tty still echoes when the password arrives (BusyBox login prints
        ``Password:`` before it turns the echo off); ``interject``: a line another writer puts on
        the console between each end marker and its line end (cloud-init through journald);
        ``ctrl_c``: Ctrl-C ends the running command and the rest of its line (False: it is lost,
        as on a shell that ignores it)."""
        super().__init__(daemon=True)
        self.ctrl_c = ctrl_c
        self.lines: queue.Queue[str] = queue.Queue()
        self.running: subprocess.Popen | None = None
        self.interrupted = threading.Event()
        threading.Thread(target=self._shell, daemon=True).start()
        self.sock, self.password, self.after_prompt = sock, password, after_prompt
        self.echo_password, self.interject = echo_password, interject
        self.logged_in = False
        self.login_times_out = login_times_out  # this many correct passwords come too late for login(1)
        # what another writer prints right after the root prompt of ``become-root`` (the stand-in for
        # ``sudo -i``), in the same write
        self.after_root_prompt = after_root_prompt
        self.state = "login" if prompt_after_boot else "shell"
        self.received = b""

    def send(self, text: str) -> None:
        self.sock.sendall(text.encode())

    def run(self) -> None:
        buf = b""
        try:
            while data := self.sock.recv(4096):
                self.received += data
                if b"\x03" in data and self.ctrl_c:  # the tty's SIGINT to the foreground command
                    self.interrupted.set()
                    self._interrupt()
                buf += data.replace(b"\x03", b"")
                while b"\r" in buf:
                    line, buf = buf.split(b"\r", 1)
                    self.handle(line.decode())
        except OSError:
            pass

    def handle(self, line: str) -> None:
        if self.state == "login":
            if line:
                self.user = line
                self.state = "password"
                self.send(line + "\r\nPassword: " + self.after_prompt)  # the user name echoes, not the password
            else:
                self.send(
                    "\r\nLast failed login: Tue Jun  9 22:25:30 UTC 2020 on ttyS0\r\nfakehost login: "
                    + self.after_prompt
                )
        elif self.state == "password":
            if self.echo_password:
                self.send(line)
            if line == self.password and self.login_times_out > 0:
                self.login_times_out -= 1
                self.state = "login"
                self.send("\r\nLogin timed out after 60 seconds.\r\n\r\nfakehost login: " + self.after_prompt)
            elif line == self.password:
                self.state = "shell"
                self.send("\r\n# " + self.after_prompt)
            else:
                self.state = "login"
                self.send("\r\nLogin incorrect\r\nfakehost login: " + self.after_prompt)
        else:
            self.lines.put(line)

    def _interrupt(self, sig: signal.Signals = signal.SIGINT) -> None:
        """SIGINT to the foreground process group, as the tty's line discipline sends it (or
        ``sig``: SIGKILL when the test ends)."""
        p = self.running
        if p is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, sig)

    def _shell(self) -> None:
        """Runs the shell's lines one after the other, as the tty's reader keeps reading."""
        try:
            self._shell_lines()
        except OSError:  # the test closed the line
            pass

    def _shell_lines(self) -> None:
        while True:
            line = self.lines.get()
            self.send(line + "\r\n")  # tty echo
            self.interrupted.clear()
            if line == "become-root":
                self.send("root@fakehost:~# " + self.after_root_prompt)
                continue
            if line.strip():  # output streams out as the command runs, like a real shell's
                with subprocess.Popen(
                    ["/bin/sh", "-c", line], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
                ) as p:
                    self.running = p
                    if self.interrupted.is_set():
                        self._interrupt()
                    while chunk := p.stdout.read1(4096):
                        text = chunk.decode().replace("\n", "\r\n")
                        if self.interject:
                            text = re.sub(
                                r"([BEF]_[0-9a-f]{12}(?::\d+:)?)\r\n", lambda m: m[1] + self.interject + "\r\n", text
                            )
                        self.send(text)
                self.running = None
            self.send("\x1b[6n# ")  # busybox ash asks for the cursor position after its prompt


@pytest.fixture
def serial():
    def make(**kwargs):
        ours, theirs = socket.socketpair()
        guest = FakeSerialGuest(theirs, **kwargs)
        guest.start()
        made.append((ours, theirs, guest))
        return Console(ours, name="fake"), guest

    made = []
    yield make
    for a, b, guest in made:
        a.close()
        b.close()
        _leave_nothing_behind(guest)


def _leave_nothing_behind(guest: FakeSerialGuest) -> None:
    """The fake guest's shell is the host's: a command still running is killed, and the stderr
    files of the console's lines are removed (a command interrupted by Ctrl-C never reaches its
    line's ``rm``; in a real guest the file dies with the VM, here it would stay in the host's /tmp)."""
    guest._interrupt(signal.SIGKILL)
    for token in set(re.findall(rb"/tmp/\.slirp-conformance-stderr-([0-9a-f]{12})", guest.received)):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"/tmp/.slirp-conformance-stderr-{token.decode()}")


def test_login_then_output_and_exit_codes(serial):
    console, _ = serial()
    console.login(Credentials("root", "secret"), timeout=10)
    r = console.run("echo hello; echo world")
    assert (r.output, r.rc) == ("hello\nworld\n", 0)
    assert console.run("sh -c 'exit 3'").rc == 3
    r = console.run("printf 'no newline'; false")
    assert (r.output, r.rc) == ("no newline", 1)


def test_the_echoed_command_line_never_counts_as_output(serial):
    console, _ = serial()
    console.login(Credentials("root", "secret"), timeout=10)
    r = console.run("echo B_ E_ markers-look-alike")
    assert r.output == "B_ E_ markers-look-alike\n"


def test_password_is_not_written_to_the_transcript(tmp_path):
    ours, theirs = socket.socketpair()
    FakeSerialGuest(theirs).start()
    with open(tmp_path / "t.log", "w") as transcript:
        console = Console(ours, transcript=transcript, name="fake")
        console.login(Credentials("root", "secret"), timeout=10)
        console.run("echo done")
    text = (tmp_path / "t.log").read_text()
    assert "fakehost login:" in text and "done" in text and "secret" not in text
    ours.close()
    theirs.close()


@pytest.mark.parametrize("redacted", [True, False], ids=["redacted-log", "plain-file-control"])
def test_an_echoed_password_is_redacted_in_the_transcript(tmp_path, redacted):
    """The guest echoes the typed password: the transcript the target writes (RedactedLog) masks it;
    the control, a plain file, shows the echo really happened."""
    password = "pw-" + secrets.token_hex(8)
    redaction.register(password)
    ours, theirs = socket.socketpair()
    FakeSerialGuest(theirs, password=password, echo_password=True).start()
    path = tmp_path / "t.log"
    with RedactedLog(path) if redacted else path.open("w") as transcript:
        console = Console(ours, transcript=transcript, name="fake")
        console.login(Credentials("root", password), timeout=10)
        console.run("echo done")
    text = path.read_text()
    assert "Password:" in text and "done" in text
    assert (password in text) is not redacted, text
    ours.close()
    theirs.close()


def test_shell_without_login_prompt(serial):
    console, _ = serial(prompt_after_boot=False)
    console.login(None, timeout=10)
    assert console.run("echo ok").output == "ok\n"


def test_wrong_password_is_reported_not_retried_forever(serial):
    console, _ = serial(password="other")
    with pytest.raises(ConsoleError, match="refused 3 times"):
        console.login(Credentials("root", "secret"), timeout=30)


def test_a_hung_command_times_out_with_the_last_screen(serial):
    console, _ = serial()
    console.login(Credentials("root", "secret"), timeout=10)
    with pytest.raises(ConsoleError) as e:
        console.run("echo started; sleep 3", timeout=1)
    assert "waited 1 s for the end of `echo started; sleep 3`" in str(e.value)
    assert "    | started" in str(e.value)


@pytest.mark.parametrize("ctrl_c", [True, False], ids=["ctrl-c-frees-the-shell", "ctrl-c-ignored"])
def test_after_a_hung_command_the_next_one_runs_or_fails_at_once_naming_it(serial, ctrl_c):
    """A command that missed its deadline is interrupted (Ctrl-C) so the next command gets a free
    shell, not the hung one's leftovers (which would give the next clause a false verdict). Where
    Ctrl-C does not free it, every later command fails at once, naming the command that hung."""
    console, _ = serial(ctrl_c=ctrl_c)
    console.login(Credentials("root", "secret"), timeout=10)
    with pytest.raises(ConsoleError, match="waited 1 s for the end of `sleep 60`"):
        console.run("sleep 60", timeout=1)
    if ctrl_c:
        r = console.run("echo next", timeout=10)
        assert (r.output, r.rc) == ("next\n", 0), r
    else:
        with pytest.raises(ConsoleError, match=r"not running `echo next`: .* since `sleep 60` timed out"):
            console.run("echo next", timeout=10)


def test_multi_line_commands_are_refused(serial):
    console, _ = serial()
    with pytest.raises(ValueError):
        console.run("echo a\necho b")


def test_stderr_is_kept_apart_from_the_output(serial):
    """A terminal merges the streams; the console still returns stdout alone as ``output``."""
    console, _ = serial()
    console.login(Credentials("root", "secret"), timeout=10)
    r = console.run("echo 'bind: warning: line editing not enabled' >&2; echo 10.0.2.3; echo late >&2")
    assert (r.output, r.stderr, r.rc) == ("10.0.2.3\n", "bind: warning: line editing not enabled\nlate\n", 0)
    r = console.run("ls /nonexistent-slirp-path")
    assert r.output == "" and "nonexistent-slirp-path" in r.stderr and r.rc != 0


@pytest.mark.parametrize("escapes", ["\x1b[0m", "\x1b[?2004h", "\x1b[0m\x1b[?2004h"])
def test_login_prompts_followed_by_escape_codes(serial, escapes):
    """agetty may reset colours after ``login: ``; bash switches bracketed paste on after its prompt."""
    console, _ = serial(after_prompt=escapes)
    console.login(Credentials("root", "secret"), timeout=10)
    assert console.run("echo ok").output == "ok\n"


def test_fedora_dns_check_runs_over_the_console(serial):
    """The Fedora profile's DNS query is one console line, answered and parsed end to end."""
    console, _ = serial()
    console.login(Credentials("root", "secret"), timeout=10)
    with loopback_peers({"peer.ns.svc.cluster.local": "198.18.0.1"}) as ports:
        r = console.run(FEDORA.tools.dns_lookup("peer.ns.svc.cluster.local", "127.0.0.1", ports["dns"]))
        ev = udp.echo(console, FEDORA, Endpoint("127.0.0.1", ports["udp_echo"]))
    assert r.ok and FEDORA.parse_dns(r.output) == ["198.18.0.1"], r
    assert ev.received == ev.sent, ev.facts


def test_a_console_message_inside_a_markers_line_does_not_break_the_command(serial):
    """cloud-init's stages print on the serial console (through journald) while the Fedora profile's
    settle command runs; on a loaded machine a line of theirs landed between a marker and its line
    end (``B_<token>[  108.367637] cloud-init[377]: ...``) and the console waited out its budget."""
    console, _ = serial(interject="[  108.367637] cloud-init[377]: Cloud-init v. 22.4.2 running 'modules:config'\r\n")
    console.login(Credentials("root", "secret"), timeout=10)
    r = console.run("echo hello; echo oops >&2; false", timeout=5)
    assert r.rc == 1 and "hello" in r.output and "oops" in r.stderr, r


def test_a_login_the_guest_timed_out_is_made_again_within_the_budget(serial):
    """login(1) gave up waiting (its own 60 s) before a starved guest took the password and asks
    again: the console logs in again instead of waiting out its whole budget for a shell."""
    console, guest = serial(login_times_out=2)
    t0 = time.monotonic()
    console.login(Credentials("root", "secret"), timeout=20)
    assert time.monotonic() - t0 < 10 and guest.state == "shell"
    assert console.run("echo in").output.strip() == "in"


def test_a_refused_login_still_counts_as_refused(serial):
    """The control: a wrong password is a refusal, as before, and ends the login after three."""
    console, _ = serial(password="other")
    with pytest.raises(ConsoleError, match="refused 3 times"):
        console.login(Credentials("root", "secret"), timeout=20)


@pytest.mark.parametrize(
    "after_root_prompt",
    ["", "[   55.015421] cloud-init[296]: Cloud-init v. 22.4.2 running 'modules:config'\r\n"],
    ids=["alone", "followed-by-cloud-init"],
)
def test_a_root_prompt_another_writer_followed_is_asked_for_again(serial, after_root_prompt):
    """On kind, cloud-init's last stages printed on the console right after ``sudo -i``'s prompt, and
    the login waited out its whole budget for a prompt at the screen's end: Enter brings a fresh one."""
    console, _ = serial(after_root_prompt=after_root_prompt)
    t0 = time.monotonic()
    console.login(Credentials("fedora", "secret", become_root="become-root"), timeout=30)
    assert time.monotonic() - t0 < 15, "the login waited out its budget"
    assert console.run("echo in").output.strip() == "in"
