"""The suites' guest services (checks/ports.py ``start_all``, ``start_udp_all``): started together
in one guest command and stopped together, every service that started is stopped again when another
fails to start or its positive control never holds, and none outlives its stop (on this host's
shells, as tests/test_guest_commands.py runs the guest profiles' commands)."""

from __future__ import annotations

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
        ports.stop_all(shell, services)
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
        ports.stop_udp_all(shell, services)
    assert not any(Path(f"/tmp/slirp-udp-{p}.pid").exists() for p in (first, second))
