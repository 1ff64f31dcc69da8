"""The README's "Where things are" table matches the tree (issue 16): every path it names exists, and
every module and subpackage of the package and every fixture module is named there."""

from __future__ import annotations

import re

from tests.suite_runner import REPO

PACKAGE = REPO / "src" / "slirp_conformance"


def _table() -> str:
    readme = (REPO / "README.md").read_text()
    return readme.split("## Where things are\n", 1)[1].split("\n## ", 1)[0]


def _named(table: str) -> set[str]:
    return set(re.findall(r"`([^`]+)`", table))


def missing_paths(table: str) -> list[str]:
    """Paths the table names that are not in the tree."""
    return sorted(n for n in _named(table) if "/" in n and " " not in n and not (REPO / n.rstrip("/")).exists())


def unnamed(table: str) -> list[str]:
    """Modules, subpackages and fixture modules the table does not name (in full, or by file name in
    a row that names its directory: `src/slirp_conformance/junit.py` or `junit.py`)."""
    named = _named(table)
    wanted = [
        *(f"src/slirp_conformance/{p.name}" for p in PACKAGE.glob("*.py") if p.name != "__init__.py"),
        *(f"src/slirp_conformance/{p.name}/" for p in PACKAGE.iterdir() if (p / "__init__.py").exists()),
        *(p.name for p in (REPO / "fixtures").glob("slirp_*.py")),
        "hack/",
        "suites/",
        "tests/",
    ]
    return sorted(w for w in wanted if w not in named and w.rsplit("/", 1)[-1] not in named)


def test_the_table_names_what_is_there_and_nothing_else():
    table = _table()
    assert missing_paths(table) == []
    assert unnamed(table) == [], "add these to README's 'Where things are'"


def test_the_check_finds_a_module_left_out_and_a_path_that_went():
    table = _table().replace("`src/slirp_conformance/version.py`", "`src/slirp_conformance/versions.py`")
    assert unnamed(table) == ["src/slirp_conformance/version.py"]
    assert missing_paths(table) == ["src/slirp_conformance/versions.py"]
