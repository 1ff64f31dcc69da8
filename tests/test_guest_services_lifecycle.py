"""The suites' guest services (checks/ports.py ``start_all``, ``start_udp_all``, ``StartedServices``): started together
in one guest command and stopped together, every service that started is stopped again when another
fails to start or its positive control never holds, and none outlives its stop (on this host's
shells, as tests/test_guest_commands.py runs the guest profiles' commands)."""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path

import pytest

from slirp_conformance import waits
from slirp_conformance.checks import ports
from slirp_conformance.guest_profiles import PROFILES
from tests.local_guest import LocalShell


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers(shell: LocalShell, profile, port: int, token: str) -> bool:
    r = shell.run(profile.http_get_command(f"http://127.0.0.1:{port}/token"))
    return r.ok and token in r.output


@pytest.mark.parametrize("profile", PROFILES.values(), ids=PROFILES.keys())
def test_services_start_together_and_none_outlives_the_stop(profile):
    shell = LocalShell("bash")
    first, second = _free_port(), _free_port()
    services = ports.start_all(shell, profile, (first, second))
    try:
        assert all(s.local_body == s.token for s in services.values()), services
        assert all(_answers(shell, profile, p, s.token) for p, s in services.items())
    finally:
        ports.StartedServices(tcp=list(services)).stop(shell)
    assert not any(_answers(shell, profile, p, s.token) for p, s in services.items())
    assert not any(Path(f"/tmp/slirp-www-{p}.pid").exists() for p in services)


def test_a_service_that_fails_to_start_leaves_the_others_stopped():
    """The second port's preparation fails (a file stands where its directory goes): the start says
    which, and the first port's server, already started, is stopped again."""
    shell, profile = LocalShell("bash"), PROFILES["reference-busybox"]
    first, second = _free_port(), _free_port()
    blocker = Path(f"/tmp/slirp-www-{second}")
    blocker.write_text("in the way")
    try:
        with pytest.raises(AssertionError, match=f"could not start a guest HTTP server on port {second}"):
            ports.start_all(shell, profile, (first, second))
    finally:
        blocker.unlink()
    assert not Path(f"/tmp/slirp-www-{first}.pid").exists()
    assert not shell.run(profile.http_get_command(f"http://127.0.0.1:{first}/token")).ok


def test_a_positive_control_that_never_holds_stops_every_service():
    """A service whose own request never gets its token proves nothing: the start fails naming the
    control, and every service it started is stopped."""
    shell, profile = LocalShell("bash"), PROFILES["reference-busybox"]
    first, second = _free_port(), _free_port()

    class Deaf(type(profile)):
        def http_get_command(self, url: str) -> str:
            return "echo not-the-token"

    deaf = Deaf(**{f: getattr(profile, f) for f in profile.__dataclass_fields__})
    try:
        waits.set_timeout_scale(0.02)
        with pytest.raises(AssertionError, match="positive control failed"):
            ports.start_all(shell, deaf, (first, second))
    finally:
        waits.set_timeout_scale(1.0)
    assert not any(Path(f"/tmp/slirp-www-{p}.pid").exists() for p in (first, second))
    assert not shell.run(profile.http_get_command(f"http://127.0.0.1:{first}/token")).ok


def test_udp_services_start_together_and_stop_together():
    shell, profile = LocalShell("bash"), PROFILES["reference-busybox"]
    first, second = _free_port(), _free_port()
    services = ports.start_udp_all(shell, profile, (first, second))
    try:
        assert all(s.local_token in s.local_received for s in services.values()), services
    finally:
        ports.StartedServices(udp=list(services)).stop(shell)
    assert not any(Path(f"/tmp/slirp-udp-{p}.pid").exists() for p in (first, second))


class _Counting(LocalShell):
    def __init__(self) -> None:
        super().__init__("sh")
        self.commands: list[str] = []

    def run(self, command: str, timeout: float = 60):
        self.commands.append(command)
        return super().run(command, timeout)


def test_a_modules_http_and_udp_services_stop_in_one_guest_command():
    """``StartedServices.stop`` (the ports suite's module end, where the run waits): both kinds in
    one guest command, and neither kind outlives it."""
    shell, profile = _Counting(), PROFILES["reference-busybox"]
    tcp_ports, udp_ports = (_free_port(), _free_port()), (_free_port(), _free_port())
    started = ports.StartedServices()
    tcp = ports.start_all(shell, profile, tcp_ports)
    started.tcp.extend(tcp)
    started.udp.extend(ports.start_udp_all(shell, profile, udp_ports))
    stopped = False
    try:
        assert not any(_udp_port_free(p) for p in udp_ports)  # the premise: the services hold their ports
        shell.commands.clear()
        started.stop(shell)
        stopped = True
    finally:
        if not stopped:  # a failed premise or stop leaves no service running
            with contextlib.suppress(Exception):
                started.stop(LocalShell("sh"))
    assert len(shell.commands) == 1, shell.commands
    assert not any(_answers(shell, profile, p, s.token) for p, s in tcp.items())
    assert not any(Path(f"/tmp/slirp-www-{p}.pid").exists() for p in tcp_ports)
    assert not any(Path(f"/tmp/slirp-udp-{p}.pid").exists() for p in udp_ports)
    assert all(_udp_port_free(p) for p in udp_ports)


def _udp_port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
        return True
