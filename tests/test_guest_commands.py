"""Every guest profile's network commands, run for real on the host against loopback peers,
and parsed by the same checks the suites use: the Fedora profile speaks python3 (the same on
every flavour of the image), the busybox reference profile OpenBSD netcat."""

from __future__ import annotations

import shlex
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import ClassVar

import pytest

from slirp_conformance import file_lock, waits
from slirp_conformance.cache_dirs import cache_root
from slirp_conformance.checks import dhcp, ipv6, ports, tcp, udp
from slirp_conformance.guest_profiles import FEDORA, PROFILES, REFERENCE, process_running, python3_command
from slirp_conformance.target import Endpoint
from tests.local_guest import LocalShell, free_tcp_port, loopback_peers

NAME, ADDRESS = "peer-echo.ns.svc.cluster.local", "198.18.0.1"


@pytest.fixture(scope="module")
def peers():
    with loopback_peers({NAME: ADDRESS}) as found:
        yield found


@pytest.fixture
def shell():
    return LocalShell()


@pytest.mark.parametrize("profile", PROFILES.values(), ids=PROFILES.keys())
def test_tcp_echo_and_8mib_transfer(profile, peers, shell):
    echo = Endpoint("127.0.0.1", peers["tcp_echo"])
    ev = tcp.egress_echo(shell, profile, echo)
    assert ev.received == ev.sent, ev.facts
    ev = tcp.transfer(shell, profile, echo, budget=60)
    assert ev.bytes_sent >= tcp.TRANSFER_BYTES and ev.bytes_received == ev.bytes_sent, ev.facts
    assert ev.md5_sent and ev.md5_received == ev.md5_sent, ev.facts


@pytest.mark.parametrize("profile", PROFILES.values(), ids=PROFILES.keys())
def test_the_transfer_tells_one_changed_bit(profile, peers, shell):
    # The negative control of the 8 MiB clause: as many bytes come back, one bit of them changed.
    ev = tcp.transfer(shell, profile, Endpoint("127.0.0.1", peers["tcp_echo_flipping_one_bit"]), budget=60)
    assert ev.bytes_sent >= tcp.TRANSFER_BYTES and ev.bytes_received == ev.bytes_sent, ev.facts
    assert ev.md5_sent and ev.md5_received and ev.md5_received != ev.md5_sent, ev.facts


@pytest.mark.parametrize("profile", PROFILES.values(), ids=PROFILES.keys())
def test_udp_echo(profile, peers, shell):
    ev = udp.echo(shell, profile, Endpoint("127.0.0.1", peers["udp_echo"]))
    assert ev.received == ev.sent, ev.facts


def test_tcp_echo_to_a_closed_port_fails_with_the_cause_on_stderr(shell):
    r = shell.run(FEDORA.tcp_echo_command("127.0.0.1", free_tcp_port(), "x"))
    assert not r.ok and r.output == "" and "ConnectionRefusedError" in r.stderr


def test_fedora_dns_query_answers_only_the_a_records(peers, shell):
    r = shell.run(FEDORA.tools.dns_lookup(NAME, "127.0.0.1", peers["dns"]))
    assert r.ok and FEDORA.parse_dns(r.output) == [ADDRESS], r
    r = shell.run(FEDORA.tools.dns_lookup("unknown.example", "127.0.0.1", peers["dns"]))
    assert r.ok and FEDORA.parse_dns(r.output) == [], r


def test_a_lost_udp_reply_is_a_failure_not_an_empty_echo(shell):
    r = shell.run(FEDORA.udp_echo_command("127.0.0.1", free_tcp_port(), "x"))
    assert not r.ok and r.output == "" and "no UDP reply" in r.stderr


def test_python3_programs_are_one_shell_line_and_refuse_what_would_break_quoting():
    assert "\n" not in FEDORA.transfer_command("10.0.2.2", 9007, 8 << 20, 60)
    for bad in ("print('x')", 'print("a\\n")', 'x = """a"""'):
        with pytest.raises(ValueError):
            python3_command(bad)


@pytest.mark.parametrize("login_shell", ["sh", "bash"])
@pytest.mark.parametrize("profile", PROFILES.values(), ids=PROFILES.keys())
def test_listed_port_service_dies_by_its_own_pid(profile, login_shell):
    """``StartedServices.stop`` kills the server itself: afterwards nothing answers on the port. Also under
    bash (the Fedora guest's shell), which, unlike an ash, keeps a backgrounded `a && server`
    list's subshell between ``$!`` and the server."""
    shell = LocalShell(login_shell)
    port = free_tcp_port()
    service = ports.start(shell, profile, port)
    assert service.local_body == service.token
    ports.StartedServices(tcp=[port]).stop(shell)
    r = shell.run(profile.http_get_command(f"http://127.0.0.1:{port}/token"))
    assert not r.ok and service.token not in r.output, r


class _ResolvedShell(LocalShell):
    """A guest running systemd-resolved: /etc/resolv.conf lists only the stub."""

    FILES: ClassVar[dict[str, str]] = {
        "/etc/resolv.conf": "nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch ns.svc.cluster.local\n",
        "/run/systemd/resolve/resolv.conf": "nameserver 10.0.2.3\nsearch ns.svc.cluster.local\n",
    }

    def run(self, command: str, timeout: float = 60):
        for path, text in self.FILES.items():
            command = command.replace(f"cat {path}", "printf " + shlex.quote(text.replace("\n", "\\n")))
        return super().run(command, timeout)


@pytest.mark.parametrize(
    "profile, expected", [(FEDORA, ["10.0.2.3"]), (REFERENCE, ["127.0.0.53"])], ids=["fedora", "reference-busybox"]
)
def test_nameserver_is_read_where_the_guest_keeps_it(profile, expected):
    ev = dhcp.observe(_ResolvedShell(), profile)
    assert ev.resolv_nameservers == expected, ev.facts


class _DeadlineShell:
    """Records the deadline each command is given; answers like a transfer that sent nothing."""

    def __init__(self) -> None:
        self.timeouts: list[float | None] = []

    def run(self, command, timeout=None):
        self.timeouts.append(timeout)
        return LocalShell().run("true")


def test_the_transfer_gets_every_commands_allowance_on_top_of_its_own_bound():
    """Like the ping's (tests/test_icmp_premise.py): the guest-side bound plus the allowance every
    command has for the guest's own work around it, not a slimmer one (it was 30 s)."""
    shell = _DeadlineShell()
    tcp.transfer(shell, FEDORA, Endpoint("198.18.0.1", 9007), budget=180)
    assert shell.timeouts == [180 + waits.timeout("console-command")]


@pytest.mark.parametrize("profile", PROFILES.values(), ids=PROFILES.keys())
def test_udp_service_records_every_datagram_and_dies_by_its_own_pid(profile, shell):
    """The UDP ingress check's guest service: its positive control (a datagram from 127.0.0.1)
    arrives, so does a later one from another sender socket; ``StartedServices.stop`` kills the
    service."""
    port = free_tcp_port()
    service = ports.start_udp(shell, profile, port)
    pid = shell.run(f"cat /tmp/slirp-udp-{port}.pid").output.strip()
    try:
        assert service.local_token in service.local_received, service
        assert shell.run(profile.udp_send_command("127.0.0.1", port, "second-sender")).ok
        got = waits.wait_for(
            "the second datagram in the service's file",
            lambda: shell.run(f"cat {service.received_file}"),
            10,
            accept=lambda r: "second-sender" in r.output,
            describe=lambda r: r.output,
        )
        assert service.local_token in got.output
    finally:  # a failed check above must not leave the service running (seen after a CI red)
        ports.StartedServices(udp=[port]).stop(shell)
    assert not shell.run(process_running(pid)).ok  # gone, or a zombie nobody reaped yet: not running


def _datagrams_when_the_payload_comes_late(send_command: Callable[[int], str], tries: int = 5) -> int:
    """How many of ``tries`` runs of a UDP send (``send_command(port)``, ``printf ... | nc ...``)
    delivered their datagram when printf, the writing end of its pipe, writes 0.2 s late (as on a
    loaded guest)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver:
        receiver.bind(("127.0.0.1", 0))
        receiver.settimeout(0.5)
        payload, nc = send_command(receiver.getsockname()[1]).split(" | ", 1)
        got = 0
        for _ in range(tries):
            subprocess.run(["sh", "-c", f"(sleep 0.2; {payload}) | {nc}"], timeout=15, check=False)
            try:
                receiver.recv(100)
                got += 1
            except TimeoutError:
                pass
        return got


def test_a_udp_send_whose_payload_comes_late_still_sends_it():
    """The busybox guest's UDP send (its services' positive control) waits for its input: with
    OpenBSD nc's ``-w 0`` it polled once, found the pipe empty and quit, sending nothing (seen as a
    lost datagram in a loaded CI run). The control: the old command, same timing, sends none."""

    def send(port: int) -> str:
        return REFERENCE.udp_send_command("127.0.0.1", port, "late")

    assert " -q 0 " in send(9) and " -w 0 " not in send(9)
    assert _datagrams_when_the_payload_comes_late(send) == 5
    assert _datagrams_when_the_payload_comes_late(lambda port: send(port).replace(" -q 0 ", " -w 0 ")) == 0


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
@pytest.mark.parametrize("profile", PROFILES.values(), ids=PROFILES.keys())
def test_tcp_read_prints_what_the_server_says_first(profile, host, shell):
    """The pod-loopback check's client: connect (IPv4 or IPv6) and print what the server sends."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as server:
        server.bind((host, 0))
        server.listen(1)

        def serve() -> None:
            conn, _ = server.accept()
            with conn:
                conn.sendall(b"pod-token\n")

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        r = shell.run(profile.tcp_read_command(host, server.getsockname()[1]))
        thread.join(10)
    assert r.ok and r.output.strip() == "pod-token", r


def test_processes_with_an_argument_are_found_and_not_the_grep_itself(shell):
    """How the IPv6 DNS probe finds its query again: by one whole argument in /proc/PID/cmdline."""
    argument = "fec0::3"
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", argument])
    try:
        command = REFERENCE.processes_with_argument_command(argument)
        assert command == FEDORA.processes_with_argument_command(argument)
        found = shell.run(command).output.split()
        assert found == [f"/proc/{holder.pid}/cmdline"], found
        assert shell.run(REFERENCE.processes_with_argument_command("fec0::")).output.split() == []  # whole arguments
    finally:
        holder.kill()
        holder.wait()
    assert shell.run(command).output.split() == []


def test_udp6_counters_are_read_as_the_guest_prints_them(shell):
    counters = ipv6.parse_udp6_counters(shell.run(REFERENCE.udp6_counters_command()).output)
    assert set(counters) == {"Udp6OutDatagrams", "Icmp6InDestUnreachs"}, counters


# The host's [::1], spelt so that no other process on the host has it as an argument: the probe
# stops its query by that argument.
LOOPBACK6 = "0:0:0:0:0:0:0:1"


@pytest.fixture
def dns6_port():
    """[::1]:53 for this test alone: the tests that play the relay there (one keeps the port bound,
    the others need it free) run on two xdist workers, and on a free port taken by the other's
    relay a refused query would go unanswered instead (a false red, seen once)."""
    with file_lock.held(
        cache_root() / "selftest-dns6.lock", "another self-test playing the IPv6 DNS relay on [::1]:53", 60
    ):
        yield


def _dns6_relay_port(monkeypatch) -> socket.socket:
    """slirp's IPv6 DNS relay, played by this host's [::1]:53: a UDP socket bound there, taking
    whatever comes and answering nothing (skips where something else has the port)."""
    taken = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        taken.bind(("::1", 53))
    except OSError:
        taken.close()
        pytest.skip("something listens on [::1]:53 here (or no IPv6 loopback)")
    monkeypatch.setattr(ipv6, "SLIRP_DNS6", LOOPBACK6)
    return taken


def _refusing_dns6(monkeypatch) -> None:
    """The relay without an upstream: nothing listens on [::1]:53, so the kernel refuses each
    datagram with an ICMPv6 port unreachable."""
    _dns6_relay_port(monkeypatch).close()


def test_a_dns6_query_every_datagram_of_which_was_refused_is_ended_by_the_suite(shell, monkeypatch, dns6_port):
    """The Fedora profile's query (unconnected socket) ignores an ICMPv6 port unreachable and would
    wait out its three 3 s tries, like busybox nslookup in the guest: once every datagram it sent was
    refused, the probe ends it and leaves no process behind."""
    _refusing_dns6(monkeypatch)
    ev = ipv6.Ipv6Evidence(netdev="")
    ipv6._ask_dns6(shell, FEDORA, NAME, ev)
    assert ev.dns6_ended.startswith("by the suite: all"), ev
    assert ev.dns6_datagrams_sent and ev.dns6_unreachables and ev.dns6_unreachables >= ev.dns6_datagrams_sent, ev
    assert ev.dns6_answers == []
    assert shell.run(FEDORA.processes_with_argument_command(LOOPBACK6)).output.split() == []
    assert not shell.run(f"test -e {ipv6._DNS6_OUT} || test -e {ipv6._DNS6_RC}").ok


def test_a_dns6_query_that_ends_by_itself_is_read_as_it_ended(shell, monkeypatch, dns6_port):
    """This host's busybox nslookup (a connected socket on loopback) gives up at the first refusal."""
    _refusing_dns6(monkeypatch)
    ev = ipv6.Ipv6Evidence(netdev="")
    ipv6._ask_dns6(shell, REFERENCE, NAME, ev)
    assert ev.dns6_answers == [], ev
    if ev.dns6_ended == "by itself":
        assert "refused" in ev.dns6_output.lower(), ev
    else:
        assert ev.dns6_ended.startswith("by the suite: all"), ev
    assert shell.run(REFERENCE.processes_with_argument_command(LOOPBACK6)).output.split() == []


def test_a_dns6_query_neither_answered_nor_refused_is_ended_at_the_watchs_bound(shell, monkeypatch, dns6_port):
    """A relay that takes the query and never answers: no refusal comes, so the watch ends the query
    at its bound (scaled down here: 0.4 s), says so, and leaves no process behind."""
    with _dns6_relay_port(monkeypatch):
        ev = ipv6.Ipv6Evidence(netdev="")
        try:
            waits.set_timeout_scale(0.02)
            ipv6._ask_dns6(shell, FEDORA, NAME, ev)
        finally:
            waits.set_timeout_scale(1.0)
    assert ev.dns6_ended == "by the suite: still running past its bound", ev
    assert ev.dns6_datagrams_sent and not ev.dns6_unreachables, ev
    assert shell.run(FEDORA.processes_with_argument_command(LOOPBACK6)).output.split() == []
    assert not shell.run(f"test -e {ipv6._DNS6_OUT} || test -e {ipv6._DNS6_RC}").ok


def test_busybox_udp_echo_stops_its_nc_once_the_reply_is_read(peers, shell):
    """OpenBSD nc would wait out its idle bound after the reply: the echo stops it as soon as the
    reply is in its output, and leaves no nc behind (its port is one of nc's arguments). The bound
    is scaled to 100 s, past the local shell's 60 s deadline: only the early stop returns in time."""
    port = peers["udp_echo"]
    try:
        waits.set_timeout_scale(20)
        command = REFERENCE.udp_echo_command("127.0.0.1", port, "x")
        ev = udp.echo(shell, REFERENCE, Endpoint("127.0.0.1", port))
    finally:
        waits.set_timeout_scale(1.0)
    assert " -w 100 " in command
    assert ev.received == ev.sent, ev.facts
    left = shell.run(REFERENCE.processes_with_argument_command(str(port)))
    assert left.output == "", left


def test_two_udp_echoes_at_once_each_read_their_own_reply(peers, shell):
    """The console's UDP echo and the SSH one run at once (the SSH side ahead, ahead.py): with one
    pair of files for both, a check read the other's reply. Each echo now reads only its own."""
    echo = Endpoint("127.0.0.1", peers["udp_echo"])
    got: dict[int, udp.UdpEchoEvidence] = {}

    def run(i: int) -> None:
        got[i] = udp.echo(shell, REFERENCE, echo)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(got) == 4 and all(ev.received == ev.sent for ev in got.values()), {i: ev.facts for i, ev in got.items()}


def test_busybox_udp_echo_without_a_reply_is_empty(shell):
    """The control: nothing answers on the port (the loopback's port unreachable ends nc), so
    nothing is read back and the echo check has nothing to compare."""
    ev = udp.echo(shell, REFERENCE, Endpoint("127.0.0.1", free_tcp_port()))
    assert ev.received == "", ev.facts


def test_a_service_that_left_no_pid_file_is_an_error_not_a_clean_stop(shell):
    """Without its pid the service cannot be proven gone: the stop says so instead of passing."""
    with pytest.raises(AssertionError, match="left no pid file"):
        ports.StartedServices(tcp=[free_tcp_port()]).stop(shell)


def test_a_service_that_outlives_its_kill_fails_the_stop_by_name(shell, tmp_path):
    """The stop's wait is real: a service that ignores SIGTERM is still running when the bound
    runs out, and the stop fails naming it (its pid file is removed all the same)."""
    pid_file, ignoring = tmp_path / "stubborn.pid", tmp_path / "ignoring-term"
    shell.run(
        f"sh -c 'trap \"\" TERM; : > {ignoring}; while :; do sleep 0.1; done' >/dev/null 2>&1 & echo $! > {pid_file}"
    )
    pid = pid_file.read_text().strip()
    # The premise: SIGTERM is ignored by the time the stop sends it (a kill before the trap ends the
    # service, and the stop rightly finds it gone: seen in CI once the stop's kill came sooner).
    waits.wait_for("the stubborn service to ignore SIGTERM", ignoring.exists, 10)
    try:
        waits.set_timeout_scale(0.1)
        with pytest.raises(waits.WaitTimeout, match=f"the stubborn service \\(pid {pid}\\) to exit"):
            ports._stop_by_pid_file(shell, "the stubborn service", str(pid_file), clean="true")
        assert not pid_file.exists()
    finally:
        waits.set_timeout_scale(1.0)
        shell.run(f"kill -9 {pid}")


class _NoLeaseShell(LocalShell):
    """A guest whose DHCP client has no lease yet: the lease file is missing, its log says why."""

    def run(self, command: str, timeout: float = 60):
        command = command.replace("cat /run/udhcpc.lease", "cat /nonexistent/udhcpc.lease")
        command = command.replace("tail -n 20 /run/udhcpc.log", "printf 'udhcpc: sending discover\\n'")
        return super().run(command, timeout)


def test_a_guest_without_a_lease_says_what_its_dhcp_client_said():
    ev = dhcp.observe(_NoLeaseShell(), REFERENCE)
    assert ev.lease is None and ev.client_log == "udhcpc: sending discover", ev.facts


def test_a_guest_with_a_lease_is_not_asked_for_its_dhcp_clients_log(tmp_path):
    lease = tmp_path / "lease"
    lease.write_text(
        "event=bound\nip=10.0.2.15\nmask=24\nrouter=10.0.2.2\ndns=10.0.2.3\nserverid=10.0.2.2\nlease=86400\n"
    )

    class _Leased(LocalShell):
        def run(self, command: str, timeout: float = 60):
            return super().run(command.replace("cat /run/udhcpc.lease", f"cat {lease}"), timeout)

    ev = dhcp.observe(_Leased(), REFERENCE)
    assert ev.lease is not None and ev.lease.address == "10.0.2.15" and ev.client_log is None, ev.facts
