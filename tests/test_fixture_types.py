"""The suites' fixtures have declared types and every suite parameter carries its fixture's type
(issue 16), so the type checker (hack/lint.sh) checks each call a suite makes against what the
fixture gives; and it does flag a suite calling a method that type lacks."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.suite_runner import REPO

FIXTURE_SOURCES = sorted((REPO / "fixtures").glob("slirp_*.py"))
SUITE_SOURCES = sorted((REPO / "suites").glob("test_*.py"))


def _is_fixture(node: ast.FunctionDef) -> bool:
    return any("fixture" in ast.unparse(d) for d in node.decorator_list)


def _value_type(node: ast.FunctionDef) -> str | None:
    """What a fixture gives: its return type, or X of a yield fixture's Iterator[X]/Generator[X, ...]."""
    if node.returns is None:
        return None
    returns = node.returns
    if isinstance(returns, ast.Subscript) and ast.unparse(returns.value) in ("Iterator", "Generator"):
        inner = returns.slice.elts[0] if isinstance(returns.slice, ast.Tuple) else returns.slice
        return ast.unparse(inner)
    return ast.unparse(returns)


def _functions(source: str) -> list[ast.FunctionDef]:
    return [n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.FunctionDef)]


def mistyped(fixture_sources: list[str], suite_sources: list[str]) -> list[str]:
    """Fixtures without a declared type, and suite parameters whose type is not their fixture's."""
    declared: dict[str, str | None] = {}
    for source in fixture_sources + suite_sources:
        declared.update({f.name: _value_type(f) for f in _functions(source) if _is_fixture(f)})
    problems = [f"fixture {name} declares no type" for name, kind in declared.items() if kind is None]
    for source in suite_sources:
        for func in _functions(source):
            if not (func.name.startswith("test_") or _is_fixture(func)):
                continue
            for arg in func.args.args:
                wanted = declared.get(arg.arg)
                if wanted is None:
                    continue  # pytest's own fixtures (request, tmp_path...) or an untyped one, reported above
                given = ast.unparse(arg.annotation) if arg.annotation else None
                if given != wanted:
                    problems.append(f"{func.name}({arg.arg}: {given}): the fixture gives {wanted}")
    return problems


def test_every_suite_parameter_has_its_fixtures_declared_type():
    sources = [p.read_text() for p in FIXTURE_SOURCES], [p.read_text() for p in SUITE_SOURCES]
    assert FIXTURE_SOURCES and SUITE_SOURCES
    assert mistyped(*sources) == []


def test_the_type_check_of_parameters_catches_a_mismatch_and_a_missing_type():
    fixtures = textwrap.dedent(
        """
        @pytest.fixture
        def kubevirt_vm(slirp_target: Target) -> KubeVirtVM: ...
        @pytest.fixture
        def untyped(slirp_target): ...
        """
    )
    suite = "def test_x(kubevirt_vm: Target, record) -> None: ...\ndef test_y(kubevirt_vm) -> None: ...\n"
    assert mistyped([fixtures], [suite]) == [
        "fixture untyped declares no type",
        "test_x(kubevirt_vm: Target): the fixture gives KubeVirtVM",
        "test_y(kubevirt_vm: None): the fixture gives KubeVirtVM",
    ]


def test_the_type_checker_flags_a_call_the_fixtures_type_lacks(tmp_path: Path):
    """The KubeVirt suite once called the concrete target's experiments; on the Protocol that is an
    error. The same file's calls the types do have are the control: exactly the two bad lines fail."""
    suite = tmp_path / "test_slirp_typed.py"
    suite.write_text(
        textwrap.dedent(
            """
            from slirp_conformance.checks.kubevirt import KubeVirtVM
            from slirp_conformance.target import Target


            def test_kubevirt(kubevirt_vm: KubeVirtVM, slirp_target: Target) -> None:
                kubevirt_vm.kubevirt_cr()
                kubevirt_vm.try_unregistered_binding("slirp-unregistered")
                slirp_target.icmp_evidence()
                slirp_target.kubevirt_cr()
            """
        )
    )
    r = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(REPO / "pyproject.toml"), str(suite)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    errors = [line.split(": error: ", 1)[1] for line in r.stdout.splitlines() if ": error: " in line]
    assert r.returncode == 1, r.stdout + r.stderr
    assert errors == [
        '"KubeVirtVM" has no attribute "try_unregistered_binding"  [attr-defined]',
        '"Target" has no attribute "kubevirt_cr"  [attr-defined]',
    ], r.stdout
