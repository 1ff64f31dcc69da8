"""Amends pytest's JUnit XML after it is written: what pytest leaves out, a gate must see.

Deselected clauses become ``<skipped>`` cases with the reason; an interrupted run gets one
``<error>`` case naming the clauses that never ran, so its file does not read as green; and the
run's secrets are masked in the whole file. The file is replaced atomically.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

from slirp_conformance.redaction import redact


def _case(nodeid: str) -> ET.Element:
    path, _, name = nodeid.partition("::")
    classname = path.removesuffix(".py").replace("/", ".")
    return ET.Element("testcase", classname=classname, name=name or path, time="0")


def amend(path: Path, *, deselected: list[tuple[str, str]], interrupted: str | None, not_run: list[str]) -> None:
    tree = ET.parse(path)
    root = tree.getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    if suite is None:
        return
    added = {"tests": 0, "skipped": 0, "errors": 0}
    for nodeid, reason in deselected:
        case = _case(nodeid)
        ET.SubElement(case, "skipped", type="pytest.deselected", message=f"deselected: {reason}")
        suite.append(case)
        added["tests"] += 1
        added["skipped"] += 1
    if interrupted:
        case = ET.Element("testcase", classname="slirp-conformance", name="run-interrupted", time="0")
        error = ET.SubElement(
            case,
            "error",
            type="interrupted",
            message=f"the run was interrupted ({interrupted}); {len(not_run)} clause(s) never ran",
        )
        error.text = "\n".join(not_run)
        suite.append(case)
        added["tests"] += 1
        added["errors"] += 1
    for key, n in added.items():
        if n:
            suite.set(key, str(int(suite.get(key, "0")) + n))
    _replace(path, ET.tostring(root, encoding="unicode"))


def redact_file(path: Path) -> None:
    """Mask the run's secrets in the whole file (tracebacks in failure texts included)."""
    text = path.read_text(errors="replace")
    masked = redact(text)
    if masked != text:
        _replace(path, masked)


def _replace(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text if text.startswith("<?xml") else '<?xml version="1.0" encoding="utf-8"?>' + text)
    tmp.replace(path)
