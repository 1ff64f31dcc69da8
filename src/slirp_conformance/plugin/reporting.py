"""Reporting: evidence into JUnit properties, artifacts for failed tests, and the conformance report
(reports/conformance.{md,json}) with an honest JUnit (deselected and interrupted runs visible).
The fixtures that record evidence are ``fixtures/slirp_evidence.py``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from slirp_conformance import junit
from slirp_conformance.cluster.versions import parse_kubevirt_version
from slirp_conformance.conformance_report import CONTRACT_MARKERS, DESELECT_REASON, FINISHED_REPORT, ConformanceReport
from slirp_conformance.evidence import Evidence
from slirp_conformance.plugin.options import is_suite_run
from slirp_conformance.plugin.session import TARGET_KEY
from slirp_conformance.redaction import redact, redact_tree

EVIDENCE_KEY = pytest.StashKey[list]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    evidence = item.stash.get(EVIDENCE_KEY, [])
    if call.when == "teardown":
        item.user_properties.extend((f"evidence.{e.check}", redact(e.to_json())) for e in evidence)
    report = yield
    if report.when == "call" and evidence:
        report.sections.append(("evidence", "\n".join(f"{e.check}: {redact(e.to_json())}" for e in evidence)))
    if report.failed and item.config.getoption("artifacts"):
        _collect(item, Path(item.config.getoption("artifacts")), evidence)
    return report


def _collect(item, root: Path, evidence: list[Evidence]) -> None:
    """Artifacts of a failed test, gathered before any fixture unwinds."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", item.nodeid)
    into = root / safe
    into.mkdir(parents=True, exist_ok=True)
    (into / "evidence.json").write_text(redact(json.dumps({e.check: e.facts for e in evidence}, indent=2, default=str)))
    target = item.config.stash.get(TARGET_KEY, None)
    if target is not None:
        target.collect_artifacts(into)
    redact_tree(into)


# -- the conformance report (reports/conformance.{md,json}) and an honest JUnit -----------------
def _area(item) -> str:
    return next((m for m in CONTRACT_MARKERS if item.get_closest_marker(m)), "")


def _is_clause(item_or_report) -> bool:
    return "slirp" in getattr(item_or_report, "keywords", {})


def pytest_configure(config) -> None:
    if is_suite_run(config) and not hasattr(config, "workerinput"):  # the controller (or a plain run) writes the report
        config.pluginmanager.register(ConformanceReporting(config), "slirp-conformance-report")


class ConformanceReporting:
    """Gathers every clause's verdict; at the end writes the report and marks JUnit honestly:
    an interrupted run gets an error case, deselected clauses appear as skipped."""

    def __init__(self, config) -> None:
        self.config = config
        requested = config.getoption("kubevirt_version")
        self.report = ConformanceReport(
            target=config.getoption("target"),
            # run_inputs has refused an unparsable value by now (options.pytest_configure, tryfirst)
            requested_kubevirt_version=str(parse_kubevirt_version(requested)) if requested else None,
        )
        self.interrupted: str | None = None
        self.written: tuple[Path, Path] | None = None

    def pytest_deselected(self, items) -> None:
        for item in items:
            if _is_clause(item):
                self.report.deselect(
                    item.nodeid, _area(item), item.stash.get(DESELECT_REASON, "deselected by the run's -k/-m selection")
                )

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, items) -> None:
        for item in items:
            if _is_clause(item):
                self.report.expect(item.nodeid, _area(item))

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node, ids) -> None:
        for nodeid in ids:
            if "::test_" in nodeid and nodeid.split("::")[0].split("/")[-1].startswith("test_slirp_"):
                self.report.expect(nodeid, "")

    def pytest_runtest_logreport(self, report) -> None:
        if _is_clause(report):
            self.report.add(report)

    def pytest_keyboard_interrupt(self, excinfo) -> None:
        value = excinfo.value
        self.interrupted = f"{type(value).__name__}: {value}" if str(value) else type(value).__name__

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session, exitstatus) -> None:
        if not self.report.clauses:  # not a conformance run (the self-tests)
            return
        if self.config.option.collectonly:  # checked nothing: no verdict, and a real run's report stays
            return
        if exitstatus == pytest.ExitCode.INTERRUPTED and not self.interrupted:
            self.interrupted = "interrupted"
        self.report.finish(exitstatus, self.interrupted)
        self.config.stash[FINISHED_REPORT] = self.report
        directory = Path(self.config.getoption("report_dir"))
        if not directory.is_absolute():
            directory = self.config.invocation_params.dir / directory
        try:
            self.written = self.report.write(directory)
        except OSError as e:
            self.config.get_terminal_writer().line(
                f"slirp-conformance: cannot write the report under {directory}: {e.strerror}; pass --report-dir DIR",
                red=True,
            )

    def pytest_terminal_summary(self, terminalreporter) -> None:
        if self.written:
            terminalreporter.write_line(
                f"conformance: {self.report.outcome}; report {self.written[1]} (and {self.written[0].name})"
            )

    def pytest_unconfigure(self, config) -> None:
        """After junitxml wrote its file: deselected clauses as skipped cases, and an error case
        when the run was interrupted, so the XML never looks green for a run that did not finish."""
        xmlpath = config.option.xmlpath
        if not xmlpath or not Path(xmlpath).exists():
            return
        junit.redact_file(Path(xmlpath))
        if not self.report.clauses:
            return
        junit.amend(
            Path(xmlpath),
            deselected=[(c.nodeid, c.reason) for c in self.report.clauses.values() if c.verdict == "deselected"],
            interrupted=self.interrupted,
            not_run=[c.nodeid for c in self.report.clauses.values() if c.verdict == "not run"],
        )
