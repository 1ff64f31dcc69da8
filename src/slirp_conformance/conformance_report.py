"""The conformance report of one run: what a release gate reads.

Collects every clause's verdict from pytest's reports (so it works the same under xdist, where
the controller only sees reports), then renders ``conformance.json`` for scripts and
``conformance.md`` for people (one screen; fit for a CI step summary). Verdicts:

- ``pass`` / ``fail``: the check ran and decided;
- ``void``: a check's premise did not hold (``VoidCheck``): it proved nothing, and is not a pass;
- ``error``: setup or teardown broke; ``skipped`` / ``deselected`` with the reason;
- ``quarantined``: marked ``@pytest.mark.quarantined(reason="<issue>: why")``: not run, never a pass;
- ``not run``: the run was interrupted before the clause ran.

Anything that reaches the files goes through ``redaction.redact``.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pytest

from slirp_conformance.redaction import redact

DESELECT_REASON = pytest.StashKey[str]()  # set on an item before it is deselected, for the report

VERDICT_ORDER = ("fail", "void", "error", "not run", "quarantined", "pass", "skipped", "deselected")
QUARANTINE_PREFIX = "QUARANTINED: "  # the xfail reason a quarantined clause carries (plugin/session.py)
CONTRACT_MARKERS = ("dhcp", "tcp", "udp", "icmp", "ports", "nic", "cidr", "kubevirt", "isolation", "ipv6")
DESCRIBE_KEYS_NOT_VERSIONS = {"namespace"}
RAN_AHEAD = "probe_ran_ahead"  # the JUnit property saying where a check's probe ran (fixture ``probed``)
# Areas whose clauses are findings a reviewer reads on their own (issue 20): each gets its own
# heading in conformance.md and its own list in conformance.json, apart from the contract's table.
FINDING_AREAS = {
    "isolation": (
        "Isolation findings",
        "What the guest can reach of the pod itself: a pass states that the exposure exists on this "
        "release (the plugin's behaviour, not a defect of the run).",
    ),
    "ipv6": (
        "IPv6 findings",
        "What the guest gets over IPv6 through slirp (the sidecar never turns QEMU's IPv6 off): "
        "asserted where the release's source decides it, the rest recorded as evidence.",
    ),
}


@dataclass
class Clause:
    nodeid: str
    area: str = ""
    verdict: str = "not run"
    reason: str = ""  # the first lines of a failure, void, error or skip reason
    duration_s: float = 0.0
    evidence: dict = field(default_factory=dict)
    # Where its probe ran when not in the check itself (slirp_conformance/ahead.py): the probe, how
    # long its result waited for the check, how long the check waited for it. Its duration_s then
    # leaves out the probe's own time.
    ran_ahead: str = ""


@dataclass
class ConformanceReport:
    target: str = ""
    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    interrupted: str | None = None  # why, when the run did not finish
    exit_status: int | None = None
    # The KubeVirt release the user named (--kubevirt-version), normalised; None when not named.
    requested_kubevirt_version: str | None = None
    versions: dict = field(default_factory=dict)
    clauses: dict[str, Clause] = field(default_factory=dict)

    # -- gathering -------------------------------------------------------------------------------
    def expect(self, nodeid: str, area: str) -> None:
        self.clauses.setdefault(nodeid, Clause(nodeid, area))

    def deselect(self, nodeid: str, area: str, reason: str) -> None:
        self.clauses[nodeid] = Clause(nodeid, area, "deselected", reason)

    def add(self, report) -> None:
        """One pytest TestReport (setup, call or teardown phase)."""
        clause = self.clauses.setdefault(report.nodeid, Clause(report.nodeid))
        clause.duration_s = round(clause.duration_s + getattr(report, "duration", 0.0), 3)
        for name, value in getattr(report, "user_properties", ()):
            if name.startswith("evidence."):
                clause.evidence[name.removeprefix("evidence.")] = _json_or_text(value)
            elif name == RAN_AHEAD:
                clause.ran_ahead = str(value)
            elif name not in DESCRIBE_KEYS_NOT_VERSIONS:
                self.versions.setdefault(name, str(value))
        xfail = str(getattr(report, "wasxfail", "")).removeprefix("[NOTRUN] ")  # pytest's prefix for run=False
        if report.skipped and xfail.startswith(QUARANTINE_PREFIX):
            clause.verdict, clause.reason = "quarantined", xfail.removeprefix(QUARANTINE_PREFIX)
        elif report.skipped:
            clause.verdict, clause.reason = "skipped", _skip_reason(report)
        elif report.failed:
            text = _failure_reason(report)
            if report.when == "call":
                clause.verdict, clause.reason = "fail", text
            elif "VOID " in text and clause.verdict != "fail":
                clause.verdict, clause.reason = "void", text
            elif clause.verdict not in ("fail", "void"):
                clause.verdict, clause.reason = "error", f"{report.when}: {text}"
        elif report.when == "call" and clause.verdict == "not run":
            clause.verdict = "pass"

    def finish(self, exit_status: int, interrupted: str | None) -> None:
        self.finished_at = time.time()
        self.exit_status = int(exit_status)
        self.interrupted = interrupted

    # -- reading ---------------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        out = {v: 0 for v in VERDICT_ORDER}
        for c in self.clauses.values():
            out[c.verdict] = out.get(c.verdict, 0) + 1
        return {k: v for k, v in out.items() if v}

    @property
    def release_mismatch(self) -> str | None:
        """Why the run did not check the release the user named (None when it did, or none was named):
        a verdict about another release is never a verdict about this one."""
        checked = self.versions.get("kubevirt_version")
        if self.requested_kubevirt_version and checked != self.requested_kubevirt_version:
            return (
                f"--kubevirt-version {self.requested_kubevirt_version} was requested but the run checked "
                f"{'KubeVirt ' + checked if checked else 'no recorded release'}"
            )
        return None

    @property
    def outcome(self) -> str:
        counts = self.counts()
        if self.interrupted:
            return "INTERRUPTED"
        if any(counts.get(v) for v in ("fail", "void", "error", "not run")):
            return "NOT CONFORMANT"
        if not counts.get("pass"):
            return "NOTHING CHECKED"
        return "NOT CONFORMANT" if self.release_mismatch else "CONFORMANT"

    def decided_by(self) -> dict:
        """Which release and which sidecar rendering the verdict rests on."""
        keys = ("kubevirt_version", "sidecar_render", "sidecar_render_mode", "sidecar_args_from", "sidecar_image")
        return {
            "kubevirt_version_requested": self.requested_kubevirt_version,
            **{k: self.versions[k] for k in keys if k in self.versions},
            **({"release_mismatch": self.release_mismatch} if self.release_mismatch else {}),
        }

    def premises(self) -> list[dict]:
        """The negative checks' premises: what proved each probe went out (or why it is void)."""
        out = []
        for c in self.clauses.values():
            for check, ev in c.evidence.items():
                if isinstance(ev, dict) and ("premise" in ev or "outcome" in ev):
                    out.append(
                        {
                            "nodeid": c.nodeid,
                            "check": check,
                            "verdict": c.verdict,
                            "premise": ev.get("premise", ev.get("outcome")),
                            "proof": _premise_proof(ev),
                        }
                    )
        return out

    def to_dict(self) -> dict:
        return {
            "outcome": self.outcome,
            "target": self.target,
            "interrupted": self.interrupted,
            "exit_status": self.exit_status,
            "decided_by": self.decided_by(),
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "versions": self.versions,
            "counts": self.counts(),
            "premises": self.premises(),
            "findings": {
                area: [
                    {"nodeid": c.nodeid, "verdict": c.verdict, "reason": c.reason, "evidence": c.evidence}
                    for c in sorted(self.clauses.values(), key=lambda c: c.nodeid)
                    if c.area == area
                ]
                for area in FINDING_AREAS
            },
            "clauses": [asdict(c) for c in sorted(self.clauses.values(), key=lambda c: c.nodeid)],
        }

    def to_markdown(self) -> str:
        counts = ", ".join(f"{n} {v}" for v, n in self.counts().items())
        lines = [
            f"# slirp conformance: **{self.outcome}**",
            "",
            f"Target `{self.target or 'unknown'}`; {counts or 'no clauses'}.",
        ]
        quarantined = [c for c in self.clauses.values() if c.verdict == "quarantined"]
        if quarantined:
            lines += [
                "",
                f"**{len(quarantined)} clause(s) quarantined, not checked by this run:** "
                + "; ".join(f"`{_short_id(c.nodeid)}` ({c.reason})" for c in quarantined),
            ]
        if self.interrupted:
            lines += ["", f"**Run interrupted** ({self.interrupted}): clauses marked `not run` were never checked."]
        if self.release_mismatch:
            lines += ["", f"**Not the requested release:** {self.release_mismatch}."]
        checked = self.versions.get("kubevirt_version")
        if checked:
            source = self.versions.get("sidecar_args_from") or self.versions.get("sidecar_image") or ""
            lines += [
                "",
                f"Decided for KubeVirt `{checked}`"
                + (f"; sidecar arguments from {source}" if source else "")
                + ("" if self.requested_kubevirt_version else " (no --kubevirt-version given)")
                + ".",
            ]
        if self.versions:
            lines += ["", "| version / setting | value |", "|---|---|"]
            lines += [f"| {k} | `{_cell(v, 90)}` |" for k, v in sorted(self.versions.items())]
        contract = [c for c in self.clauses.values() if c.area not in FINDING_AREAS]
        lines += ["", "| area | clause | verdict | decided by |", "|---|---|---|---|"]
        for (area, name), group in sorted(_by_clause(contract).items(), key=lambda kv: (_rank(kv[1]), kv[0])):
            verdicts = ", ".join(f"{c.verdict.upper()}" + (f" ({ch})" if ch else "") for ch, c in group)
            worst = min((c for _, c in group), key=lambda c: _rank([("", c)]))
            lines.append(f"| {area} | `{name}` | {verdicts} | {_cell(worst.reason or _summary(worst), 200)} |")
        for area, (heading, what) in FINDING_AREAS.items():
            found = [c for c in self.clauses.values() if c.area == area]
            if not found:
                continue
            lines += ["", f"## {heading}", "", what, "", "| clause | verdict | finding |", "|---|---|---|"]
            for (_, name), group in sorted(_by_clause(found).items(), key=lambda kv: (_rank(kv[1]), kv[0])):
                verdicts = ", ".join(f"{c.verdict.upper()}" + (f" ({ch})" if ch else "") for ch, c in group)
                worst = min((c for _, c in group), key=lambda c: _rank([("", c)]))
                lines.append(f"| `{name}` | {verdicts} | {_cell(worst.reason or _finding(worst), 400)} |")
        premises = self.premises()
        if premises:
            lines += [
                "",
                "Negative checks' premises (the probe really went out):",
                "",
                "| clause | premise | proof |",
                "|---|---|---|",
            ]
            lines += [
                f"| `{_short_id(p['nodeid'])}` | {_cell(json.dumps(p['premise']), 120)} | "
                f"{_cell(json.dumps(p['proof']), 160)} |"
                for p in premises
            ]
        return redact("\n".join(lines) + "\n")

    def write(self, directory: Path) -> tuple[Path, Path]:
        directory.mkdir(parents=True, exist_ok=True)
        paths = directory / "conformance.json", directory / "conformance.md"
        for path, text in zip(
            paths, (redact(json.dumps(self.to_dict(), indent=2, default=str)) + "\n", self.to_markdown()), strict=True
        ):
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_text(text)
            tmp.replace(path)
        return paths


FINISHED_REPORT = pytest.StashKey[ConformanceReport]()  # the controller's, once the verdict is in


def _by_clause(clauses) -> dict[tuple[str, str], list[tuple[str, Clause]]]:
    """Clauses grouped by test function: the [console]/[ssh] runs of one check share a row."""
    out: dict[tuple[str, str], list[tuple[str, Clause]]] = {}
    for c in clauses:
        name, _, channel = _short_id(c.nodeid).partition("[")
        out.setdefault((c.area, name), []).append((channel.rstrip("]"), c))
    return out


def _rank(group) -> int:
    return min(VERDICT_ORDER.index(c.verdict) if c.verdict in VERDICT_ORDER else 9 for _, c in group)


def _json_or_text(value):
    try:
        return json.loads(value)
    except (TypeError, ValueError):
        return value


def _first_lines(text: str, n: int = 3) -> str:
    """The reason a clause did not pass; long enough for a timeout's evidence (each side's queues)
    and, for a batch of guest commands, its parts (``guest_batch``)."""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return " / ".join(lines[:n])[:2000]


def _failure_reason(report) -> str:
    """What failed, in the exception's own words (``TimeoutError: ... `the command` ...``): the
    crash line pytest keeps apart, not the first lines of the traceback (the test's source)."""
    crash = getattr(getattr(report, "longrepr", None), "reprcrash", None)
    message = getattr(crash, "message", None)
    if not message:
        return _first_lines(getattr(report, "longreprtext", ""))
    # "slirp_conformance.console.ConsoleError: ..." -> "ConsoleError: ...": room for the words
    return _first_lines(re.sub(r"^(?:[A-Za-z_]\w*\.)+(?=\w+: )", "", message))


def _skip_reason(report) -> str:
    longrepr = getattr(report, "longrepr", None)
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return _first_lines(getattr(report, "longreprtext", ""))


def _premise_proof(ev: dict) -> dict:
    to_peer = ev.get("to_peer")
    peer = to_peer if isinstance(to_peer, dict) else {}
    keys = ("echo_requests_out", "nic_tx_packets", "route", "local_errors", "replies")
    proof = {k: peer[k] for k in keys if k in peer}
    if "pod" in ev:
        proof["pod"] = ev["pod"]
    if "error" in ev:
        proof["attempt"] = ev["error"]
    if "reason" in ev:  # a VM that must not start: why it did not
        proof["reason"] = ev["reason"]
    if "sender_detail" in ev:  # a datagram: what came back to its sender (ICMP from the pod)
        proof["attempt"] = ev["sender_detail"]
    return proof


def _finding(c: Clause) -> str:
    """A finding in words, from its evidence (the whole evidence is in conformance.json)."""
    ev = c.evidence
    loop = ev.get("pod-loopback")
    if isinstance(loop, dict):
        got = "the pod's token" if loop.get("guest_got") == loop.get("token") else repr(loop.get("guest_got"))
        return (
            f"the guest dialled {loop.get('guest_dials')} and read {got} from {loop.get('pod_listener')} "
            f"(a client at the pod address: {loop.get('from_cluster')}; the pod saw {loop.get('pod_saw_clients')})"
        )
    v6 = ev.get("ipv6")
    if isinstance(v6, dict):
        return (
            f"addresses {v6.get('addresses')}; default via {v6.get('default_routes')}; the resolver's IPv6 "
            f"servers {v6.get('resolver_nameservers6')}; A query at {v6.get('dns6_server')}: "
            f"{v6.get('dns6_answers') or 'no answer'} ({v6.get('dns6_datagrams_sent')} sent, "
            f"{v6.get('dns6_unreachables')} ICMPv6 unreachable back; ended {v6.get('dns6_ended')}); "
            f"the pod's own global IPv6: {v6.get('pod_global_ipv6')}"
        )
    return _summary(c)


def _summary(c: Clause) -> str:
    if not c.evidence:
        return ""
    return "; ".join(f"{k}: {json.dumps(v, sort_keys=True, default=str)}" for k, v in c.evidence.items())


def _short_id(nodeid: str) -> str:
    return nodeid.split("/")[-1].removeprefix("test_slirp_")


def _cell(text: str, limit: int) -> str:
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _iso(t: float | None) -> str | None:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t)) if t else None
