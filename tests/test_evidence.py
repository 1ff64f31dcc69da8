"""Evidence and ``expect`` (issue 16): one dataclass per check, one helper that states a clause and,
when it does not hold, says expected, actual and every fact once; the suites state every clause
that way."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import json
import re
from dataclasses import dataclass, field
from typing import ClassVar

import pytest

from slirp_conformance import checks
from slirp_conformance.checks import cidr, dhcp, icmp, ipv6, isolation, kubevirt, nic, ports, tcp, udp
from slirp_conformance.evidence import Evidence, at_least, contains, contains_run, expect, matches
from tests.suite_runner import REPO


@dataclass
class Inner:
    server_id: str | None


@dataclass
class Sample(Evidence):
    check: ClassVar[str] = "sample"
    received: str
    lease: Inner | None
    sizes: list[int] = field(default_factory=list)
    conditions: dict = field(default_factory=dict)
    error: str | None = None  # observed only sometimes


def sample(**kw) -> Sample:
    return Sample(**{"received": "token", "lease": Inner("10.0.2.2"), **kw})


def test_a_clause_that_holds_passes_silently():
    ev = sample(conditions={"LiveMigratable": {"status": "False"}})
    expect(ev, "received", "token")
    expect(ev, "lease.server_id", "10.0.2.2")
    expect(ev, "conditions.LiveMigratable.status", "False")


def test_a_clause_that_fails_says_check_field_expected_actual_and_every_fact_once():
    ev = sample(received="other", error="boom")
    with pytest.raises(AssertionError) as failed:
        expect(ev, "received", "token")
    message = str(failed.value)
    head, _, body = message.partition("\nevidence:\n")
    assert head == "sample: received: expected 'token', got 'other'", message
    assert json.loads(body) == {
        "received": "other",
        "lease": {"server_id": "10.0.2.2"},
        "sizes": [],
        "conditions": {},
        "error": "boom",
    }


def test_a_missing_level_reads_as_none_and_fails():
    with pytest.raises(AssertionError, match=re.escape("lease.server_id: expected '10.0.2.2', got None")):
        expect(sample(lease=None), "lease.server_id", "10.0.2.2")
    with pytest.raises(AssertionError, match="got None"):
        expect(sample(), "conditions.LiveMigratable.reason", "InterfaceNotLiveMigratable")


def test_a_misspelt_field_is_an_error_not_a_none():
    with pytest.raises(KeyError, match="recieved"):
        expect(sample(), "recieved", "token")


QEMU_RUN = ["-netdev", "user", "-device", "e1000"]


@pytest.mark.parametrize(
    ("actual", "wanted", "holds"),
    [
        (["a", "b"], contains("b"), True),
        (["a"], contains("b"), False),
        ("Binding plugins feature gate is not enabled", contains("gate is not enabled"), True),
        (None, contains("x"), False),
        (8 << 20, at_least(8 << 20), True),
        ((8 << 20) - 1, at_least(8 << 20), False),
        (None, at_least(0), False),
        ("vm-1", matches(r"\S"), True),
        ("", matches(r"\S"), False),
        (
            ["q", "-netdev", "user", "-device", "e1000", "x"],
            contains_run(["-netdev", "user", "-device", "e1000"]),
            True,
        ),
        (["-netdev", "user", "x", "-device", "e1000"], contains_run(["-netdev", "user", "-device", "e1000"]), False),
    ],
)
def test_matchers(actual, wanted, holds):
    ev = sample(conditions={"value": actual})
    if holds:
        expect(ev, "conditions.value", wanted)
    else:
        with pytest.raises(AssertionError, match=re.escape(f"expected {wanted!r}")):
            expect(ev, "conditions.value", wanted)


def test_facts_leave_out_an_optional_fact_until_observed_but_keep_a_required_none():
    assert "error" not in sample().facts
    assert sample(error="x").facts["error"] == "x"
    assert sample(lease=None).facts["lease"] is None


def test_every_check_has_its_own_evidence_class_and_name():
    classes = {
        obj
        for module in (cidr, dhcp, icmp, ipv6, isolation, kubevirt, nic, ports, tcp, udp)
        for obj in vars(module).values()
        if inspect.isclass(obj) and issubclass(obj, Evidence) and obj.__module__.startswith(checks.__name__)
    }
    names = [c.check for c in classes if "check" in vars(c)]
    assert len(names) == len(set(names)), sorted(names)
    assert all(dataclasses.is_dataclass(c) for c in classes)
    # what the report reads: a negative check's premise ("premise" or "outcome"), nowhere else
    premised = {c.check for c in classes if {"premise", "outcome"} & {f.name for f in dataclasses.fields(c)}}
    assert premised == {"icmp", "ingress-unlisted", "ingress-udp-unlisted", "invalid-cidr"}, premised


def test_suites_state_every_clause_with_expect():
    """No bare ``assert`` in suites/: each clause is an ``expect``, so its message is never hand-written."""
    offenders = [
        f"{path.name}:{node.lineno}"
        for path in sorted((REPO / "suites").glob("test_*.py"))
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Assert)
    ]
    assert offenders == []
