"""The soak: the whole contract N times, each a separate pytest run of the suite, as JSON.

``python -m slirp_conformance.soak --runs N [--load] [--out DIR] [--run-timeout S] [pytest options]``
(``hack/soak.sh``). Every option it does not know goes to each run unchanged (``--target``,
``--reference-guest``, ``--kubevirt-version``, ``--kubeconfig``, ``--timeout-scale`` ...), so it
soaks the cluster targets as well as the reference target. Prints on stdout::

    {"runs": [{"run": 1, "outcome": "CONFORMANT", "exit_status": 0, "wall_s": 61.2,
               "clauses": {"dhcp.py::test_lease_time[ssh]": "pass", ...},
               "first_failure": null | {"clause": ..., "verdict": ..., "reason": ...}}, ...],
     "summary": {...}}

``--load`` runs two CPU burners beside the runs (as other work on a shared CI machine would: each
in a session of its own, so where the kernel groups the CPU by session (autogroup) or by cgroup they
compete with the run as another job does, not as a process of the run's own, beneath whose priority
the run's variant VMs boot at nice 19); they end with the soak, also on Ctrl-C, SIGTERM, or a SIGKILL
of the soak (parent-death signal).
Exit code: 0 every run CONFORMANT, 1 some run was not, 2 interrupted, 4 bad input (one line).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

from slirp_conformance.checkout import REPO, suite_pytest_argv
from slirp_conformance.errors import BAD_INPUT, refuse

BURNERS = 2
# One burner: a shell busy loop, nothing to install; its own session and process group, killed as a group.
_BURN = ["sh", "-c", "while :; do :; done"]
OWN_OPTIONS = ("--runs", "--load", "--out", "--run-timeout")
# Options a soak run sets itself (every run writes its own report, JUnit and artifacts).
RESERVED = ("--report-dir", "--junitxml", "--junit-xml", "--artifacts")


class BadInput(Exception):
    """One line naming the fix; exit 4."""


class Interrupted(Exception):
    pass


def _die_with_parent() -> None:
    """A burner, before exec: its own session (and so process group), SIGKILL when the soak dies
    (even by SIGKILL)."""
    os.setsid()
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _interrupted_with_parent() -> None:
    """A suite run, before exec: SIGTERM when the soak dies, which the run takes as Ctrl-C (its VM,
    namespaces and KubeVirt CR are put back), instead of running on unattended."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Burners:
    """``--load``: two CPU burners for the soak's lifetime (context manager; ``stop`` is idempotent)."""

    def __init__(self, count: int = BURNERS) -> None:
        self.count = count
        self.procs: list[subprocess.Popen] = []

    def __enter__(self) -> Burners:
        for _ in range(self.count):
            self.procs.append(
                subprocess.Popen(
                    _BURN, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, preexec_fn=_die_with_parent
                )
            )
        return self

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            p.wait()
        self.procs.clear()

    def __exit__(self, *exc) -> None:
        self.stop()


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        prog="hack/soak.sh",
        description="Run the whole slirp contract N times (separate pytest runs) and print JSON.",
        epilog="Any other option goes to every pytest run unchanged (e.g. --target=qemu --reference-guest fedora).",
        allow_abbrev=False,
    )
    parser.add_argument("--runs", required=True, help="how many separate runs of the suite")
    parser.add_argument("--load", action="store_true", help=f"{BURNERS} CPU burners beside the runs")
    parser.add_argument("--out", help="where each run's reports go (default: reports/soak-<UTC time>/)")
    parser.add_argument(
        "--run-timeout", default="3600", help="seconds one run may take before the soak stops it (default 3600)"
    )
    opts, passthrough = parser.parse_known_args(argv)
    given = opts.runs
    try:
        opts.runs = int(given)
        if opts.runs < 1:
            raise ValueError
    except ValueError:
        raise BadInput(f"--runs {given!r}: give a whole number of runs, at least 1 (e.g. --runs 5)") from None
    given = opts.run_timeout
    try:
        opts.run_timeout = float(given)
        if not 0 < opts.run_timeout < float("inf"):
            raise ValueError
    except ValueError:
        raise BadInput(f"--run-timeout {given!r}: give a positive number of seconds") from None
    for arg in passthrough:
        name = arg.split("=", 1)[0]
        if name in RESERVED:
            raise BadInput(f"{name}: the soak gives every run its own reports under --out; drop {name}")
    return opts, passthrough


def _junit_order(junit: Path) -> list[str]:
    """Test ids in the order they ran (pytest's JUnit keeps it), as ``file.py::name[param]``."""
    if not junit.exists():
        return []
    try:
        root = ET.parse(junit).getroot()
    except ET.ParseError:
        return []
    return [f"{c.get('classname', '').rsplit('.', 1)[-1]}.py::{c.get('name')}" for c in root.iter("testcase")]


def _short(nodeid: str) -> str:
    """``suites/test_slirp_dhcp.py::test_lease_time[ssh]`` -> ``dhcp.py::test_lease_time[ssh]``."""
    return nodeid.split("/")[-1].removeprefix("test_slirp_")


BAD_VERDICTS = ("fail", "void", "error", "not run")


def summarize_run(run: int, report: dict | None, exit_status: int, wall_s: float, junit: Path, note: str = "") -> dict:
    """One run's line of the soak JSON, from its conformance.json and JUnit."""
    if report is None:
        return {
            "run": run,
            "outcome": "NO REPORT",
            "exit_status": exit_status,
            "wall_s": round(wall_s, 1),
            "clauses": {},
            "first_failure": {"clause": None, "verdict": "error", "reason": note or "the run wrote no report"},
        }
    clauses = {c["nodeid"]: c for c in report.get("clauses", [])}
    order = {name: i for i, name in enumerate(_junit_order(junit))}
    bad = [c for c in clauses.values() if c["verdict"] in BAD_VERDICTS]
    # The first to go wrong in run order; clauses the run never reached ("not run") come last.
    bad.sort(key=lambda c: (c["verdict"] == "not run", order.get(_junit_name(c["nodeid"]), len(order)), c["nodeid"]))
    first = bad[0] if bad else None
    if first is None and report.get("outcome") != "CONFORMANT":
        first_failure = {"clause": None, "verdict": report.get("outcome"), "reason": _run_level_reason(report, note)}
    elif first is not None:
        first_failure = {"clause": _short(first["nodeid"]), "verdict": first["verdict"], "reason": first["reason"]}
    else:
        first_failure = None
    return {
        "run": run,
        "outcome": report.get("outcome"),
        "exit_status": exit_status,
        "wall_s": round(wall_s, 1),
        "clauses": {_short(n): c["verdict"] for n, c in sorted(clauses.items())},
        "first_failure": first_failure,
        **({"note": note} if note else {}),
    }


def _junit_name(nodeid: str) -> str:
    return nodeid.split("/")[-1]


def _run_level_reason(report: dict, note: str) -> str:
    mismatch = (report.get("decided_by") or {}).get("release_mismatch")
    return note or report.get("interrupted") or mismatch or f"outcome {report.get('outcome')}"


def summary(runs: list[dict], requested: int, load: bool, passthrough: list[str]) -> dict:
    walls = [r["wall_s"] for r in runs]
    failing = Counter(
        f"{clause} {verdict}" for r in runs for clause, verdict in r["clauses"].items() if verdict in BAD_VERDICTS
    )
    return {
        "runs_requested": requested,
        "runs_done": len(runs),
        "conformant": sum(r["outcome"] == "CONFORMANT" for r in runs),
        "outcomes": dict(Counter(r["outcome"] for r in runs)),
        "clauses_not_passing": dict(failing.most_common()),
        "wall_s": (
            {"min": min(walls), "median": round(statistics.median(walls), 1), "max": max(walls)} if walls else {}
        ),
        "load": f"{BURNERS} CPU burners" if load else "none",
        "pytest_options": passthrough,
    }


class Soak:
    def __init__(self, opts: argparse.Namespace, passthrough: list[str]) -> None:
        self.opts = opts
        self.passthrough = passthrough
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        self.out = Path(opts.out) if opts.out else REPO / "reports" / f"soak-{stamp}"
        self.runs: list[dict] = []
        self.child: subprocess.Popen | None = None
        self.current: tuple[int, Path, float] | None = None  # run number, its directory, its start

    def _argv(self, run_dir: Path) -> list[str]:
        return suite_pytest_argv(
            str(REPO / "suites"),
            "-p",
            "no:cacheprovider",
            f"--junitxml={run_dir / 'conformance.xml'}",
            f"--artifacts={run_dir / 'artifacts'}",
            f"--report-dir={run_dir}",
            *self.passthrough,
        )

    def one(self, n: int) -> dict:
        run_dir = self.out / f"run-{n:03d}"
        run_dir.mkdir(parents=True, exist_ok=True)
        log = run_dir / "pytest-output.log"
        note = ""
        t0 = time.monotonic()
        self.current = (n, run_dir, t0)
        with open(log, "wb") as out:
            # Same process group as the soak: a Ctrl-C at the terminal reaches the run itself, which
            # cleans up its VM or cluster as any interrupted run does.
            self.child = subprocess.Popen(
                self._argv(run_dir),
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=_interrupted_with_parent,
            )
            try:
                rc = self.child.wait(self.opts.run_timeout)
            except subprocess.TimeoutExpired:
                note = f"the soak stopped this run after --run-timeout {self.opts.run_timeout:.0f} s"
                rc = self.stop_child()
            self.child = None
        if rc == BAD_INPUT:  # the same in every run: stop at once, with the run's own line
            raise BadInput(_error_line(log) + f" (run {n}; whole output: {log})")
        return self.finish(note, rc)

    def stop_child(self) -> int:
        """Interrupt the running suite run as Ctrl-C would, and wait for its cleanup (bounded).

        By SIGTERM, which the run takes as Ctrl-C, not by SIGINT: a soak started where SIGINT is
        ignored (a background job of a shell, as `hack/soak.sh ... &` is) hands that to the run,
        and a SIGINT that came before the run's plugin set its handler was lost; the soak then
        waited its 300 s and killed the run without a report. A SIGTERM that early ends the run
        before it has started anything; a second one, after a terminal's Ctrl-C, is harmless."""
        child = self.child
        assert child is not None, "no suite run under way"
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(300)
            except subprocess.TimeoutExpired:
                child.kill()
        return child.wait()

    def finish(self, note: str, rc: int) -> dict:
        """The current run's line, from what it left in its directory."""
        assert self.current is not None, "no suite run under way"
        n, run_dir, t0 = self.current
        wall = time.monotonic() - t0
        report_path = run_dir / "conformance.json"
        report = json.loads(report_path.read_text()) if report_path.exists() else None
        if report is None and not note:
            note = f"pytest exited {rc} without a report: {_last_line(run_dir / 'pytest-output.log')}"
        return summarize_run(n, report, rc, wall, run_dir / "conformance.xml", note)

    def run(self) -> int:
        print(
            f"soak: {self.opts.runs} run(s), each `pytest suites -k slirp {' '.join(self.passthrough)}`"
            f"{', 2 CPU burners beside them' if self.opts.load else ''}; reports under {self.out}",
            file=sys.stderr,
            flush=True,
        )
        for n in range(1, self.opts.runs + 1):
            result = self.one(n)
            self.runs.append(result)
            ff = result["first_failure"]
            print(
                f"soak: run {n}/{self.opts.runs}: {result['outcome']} in {result['wall_s']} s"
                + (f"; first failure {ff['clause']} {ff['verdict']}: {ff['reason'][:200]}" if ff else ""),
                file=sys.stderr,
                flush=True,
            )
            if result["exit_status"] == 2 or result["outcome"] == "INTERRUPTED":
                raise Interrupted(f"run {n} was interrupted")
        return 0 if all(r["outcome"] == "CONFORMANT" for r in self.runs) else 1

    def result(self) -> dict:
        return {"runs": self.runs, "summary": summary(self.runs, self.opts.runs, self.opts.load, self.passthrough)}


def _last_line(path: Path) -> str:
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "(no output)"
    return lines[-1].strip() if lines else "(no output)"


def _error_line(path: Path) -> str:
    """The line saying what was wrong (pytest's usage error, the suite's one line), else the last."""
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "(no output)"
    errors = [line for line in lines if "error" in line.lower() and "usage:" not in line.lower()]
    return errors[-1] if errors else (lines[-1] if lines else "(no output)")


def _interrupt(signum, _frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    try:
        opts, passthrough = parse_args(sys.argv[1:] if argv is None else argv)
    except BadInput as e:
        return refuse("soak", e)
    signal.signal(signal.SIGTERM, _interrupt)
    soak = Soak(opts, passthrough)
    burners = Burners(BURNERS if opts.load else 0)
    status = 0
    try:
        with burners:
            if opts.load:
                print(f"soak: CPU burners running, pids {burners.pids}", file=sys.stderr, flush=True)
            status = soak.run()
    except BadInput as e:
        return refuse("soak", e)
    except (KeyboardInterrupt, Interrupted) as e:
        status = 2
        for sig in (signal.SIGINT, signal.SIGTERM):  # more Ctrl-C must not break the cleanup under way
            signal.signal(sig, signal.SIG_IGN)
        if soak.child is not None:  # the run under way: interrupted as well, cleaned up, and reported
            rc = soak.stop_child()
            soak.child = None
            soak.runs.append(soak.finish("interrupted with the soak", rc))
        print(f"soak: interrupted ({e or 'Ctrl-C'}); CPU burners stopped", file=sys.stderr, flush=True)
    finally:
        burners.stop()
    result = soak.result()
    result["summary"]["interrupted"] = status == 2
    print(json.dumps(result, indent=1))
    s = result["summary"]
    print(
        f"soak: {s['conformant']}/{s['runs_done']} runs CONFORMANT ({s['runs_requested']} requested); "
        f"outcomes {s['outcomes']}; wall {s['wall_s']}",
        file=sys.stderr,
    )
    return status


if __name__ == "__main__":
    sys.exit(main())
