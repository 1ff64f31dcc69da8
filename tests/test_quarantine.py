"""A quarantined clause is shown as such, never as a pass (issue 15): not run, its reason in the
report, skipped in JUnit; a quarantine without a reason stops the run."""

from __future__ import annotations

import pytest

from slirp_conformance.conformance_report import QUARANTINE_PREFIX, ConformanceReport
from tests.suite_runner import run_suite

CLAUSE = "test_lease_time[console]"
SELECT = [
    "-p",
    "quarantine_clause",
    "-k",
    "test_lease_time and console or test_mac_address_from_spec and console",
    "--target=qemu",
]
INJECT = """
import pytest

@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
    for item in items:
        if item.name == {clause!r}:
            item.add_marker(pytest.mark.quarantined({marker_args}))
"""


def _inject(tmp_path, marker_args: str) -> dict:
    (tmp_path / "quarantine_clause.py").write_text(INJECT.format(clause=CLAUSE, marker_args=marker_args))
    return {"PYTHONPATH": str(tmp_path)}


class _Report:
    when, nodeid, keywords, user_properties, duration, failed = "setup", "suites/x.py::t", {}, (), 0.0, False
    skipped = True
    wasxfail = "[NOTRUN] " + QUARANTINE_PREFIX + "#99: breaks on Tuesdays"  # as pytest sets it for run=False


def test_the_report_calls_a_quarantined_clause_quarantined_not_pass():
    report = ConformanceReport(target="qemu")
    report.add(_Report())
    clause = report.clauses["suites/x.py::t"]
    assert (clause.verdict, clause.reason) == ("quarantined", "#99: breaks on Tuesdays")
    assert report.counts() == {"quarantined": 1} and report.outcome == "NOTHING CHECKED"
    assert "1 clause(s) quarantined, not checked by this run:** `x.py::t` (#99: breaks on Tuesdays)" in (
        report.to_markdown()
    )


@pytest.mark.selftest_vm
def test_a_quarantined_clause_is_not_run_and_reported_as_quarantined(tmp_path, no_leaks):
    run = run_suite(tmp_path / "q", *SELECT, env=_inject(tmp_path, 'reason="#999: injected by the self-test"'))
    assert run.returncode == 0, run.output[-3000:]
    clauses = {c["nodeid"].split("::")[-1]: c for c in run.report["clauses"]}
    assert (
        clauses[CLAUSE]["verdict"] == "quarantined" and clauses[CLAUSE]["reason"] == "#999: injected by the self-test"
    )
    assert clauses["test_mac_address_from_spec[console]"]["verdict"] == "pass"
    counts = {k: v for k, v in run.report["counts"].items() if k != "deselected"}  # the rest of the suite
    assert counts == {"quarantined": 1, "pass": 1}, run.report["counts"]
    assert run.outcomes[f"test_slirp_dhcp::{CLAUSE}"] == "skipped"  # JUnit
    assert "quarantined, not checked by this run" in (tmp_path / "q" / "reports" / "conformance.md").read_text()
    # the control: the same clause, not quarantined, runs and passes
    control = run_suite(tmp_path / "control", *SELECT[2:])
    assert control.returncode == 0 and control.outcomes[f"test_slirp_dhcp::{CLAUSE}"] == "passed", control.output


def test_a_quarantine_without_a_reason_stops_the_run(tmp_path):
    run = run_suite(tmp_path / "noreason", *SELECT, env=_inject(tmp_path, ""))
    assert run.returncode == 4 and "Traceback" not in run.output, run.output
    assert "@pytest.mark.quarantined needs reason='<issue>: why it is quarantined'" in run.output
