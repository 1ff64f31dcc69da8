"""The suites' guest services fixtures (checks/ports.py ``started_each``): every service that
started is stopped, also when a later one fails to start or the checks fail."""

from __future__ import annotations

import pytest

from slirp_conformance.checks import ports


class _StartFailed(Exception):
    pass


class _ChecksFailed(Exception):
    pass


def _run(fail_start_at: int | None = None, fail_checks: bool = False) -> tuple[list[int], list[int]]:
    started, stopped = [], []

    def start(port: int) -> str:
        if port == fail_start_at:
            raise _StartFailed(f"positive control failed on {port}")
        started.append(port)
        return f"service-{port}"

    fixture = ports.started_each((8080, 8081, 8082), start, stopped.append)
    try:
        services = next(fixture)
        assert services == {p: f"service-{p}" for p in (8080, 8081, 8082)}
        if fail_checks:
            fixture.throw(_ChecksFailed("a check failed"))
        next(fixture, None)
    except (_StartFailed, _ChecksFailed):
        pass
    return started, stopped


def test_every_started_service_is_stopped_after_the_checks():
    assert _run() == ([8080, 8081, 8082], [8080, 8081, 8082])


def test_a_service_that_fails_to_start_leaves_the_others_stopped():
    assert _run(fail_start_at=8081) == ([8080], [8080])


def test_services_are_stopped_when_the_checks_fail():
    assert _run(fail_checks=True) == ([8080, 8081, 8082], [8080, 8081, 8082])


def test_the_positive_controls_failure_reaches_the_fixture():
    def start(port: int) -> str:
        raise _StartFailed(f"positive control failed on {port}")

    fixture = ports.started_each((8080,), start, lambda port: None)
    with pytest.raises(_StartFailed, match="8080"):
        next(fixture)
