"""One way into the suite (issue 16): the plugin is registered once, by the package's entry point;
pytest runs rooted elsewhere are refused in one line; hack/conformance.sh pins the root from any
directory; other projects' pytest runs in the same Python are left alone; nothing re-executes pytest."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.suite_runner import REPO

PLUGIN_MODULES = (
    "slirp_conformance.plugin.options",
    "slirp_conformance.plugin.session",
    "slirp_conformance.plugin.reporting",
    "slirp_vm",
    "slirp_evidence",
)


def _run(args: list[str], cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})})


def test_each_plugin_module_is_registered_once():
    r = _run([sys.executable, "-m", "pytest", "--trace-config", "-k", "slirp", "--collect-only"], REPO)
    assert r.returncode == 0, r.stdout + r.stderr
    active = r.stdout.split("active plugins:", 1)[1].split("\n\n", 1)[0]
    names = [line.split(":", 1)[0].strip() for line in active.splitlines() if line.strip()]
    for module in PLUGIN_MODULES:
        assert names.count(module) == 1, f"{module}: registered {names.count(module)} times in\n{active}"
    assert names.count("slirp_conformance") == 1, active  # the entry point itself
    # One distribution registers it: a stale *.egg-info in the checkout's root (on sys.path when
    # pytest runs there) once added its own entry point for plugin.options.
    third_party = r.stdout.split("registered third-party plugins:", 1)[1].split("active plugins:", 1)[0]
    ours = [line for line in third_party.splitlines() if "slirp-conformance" in line]
    assert len(ours) == 1 and ours[0].strip().endswith("slirp_conformance/plugin/__init__.py"), third_party


def test_a_run_rooted_outside_the_repo_is_one_line_naming_the_fix(tmp_path):
    """`--kubeconfig PATH` (a space, not '='): pytest takes PATH for a test path and roots the run there."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\n")
    r = _run([sys.executable, "-m", "pytest", "-k", "slirp", "--target=cluster", "--kubeconfig", str(kubeconfig)], REPO)
    text = r.stdout + r.stderr
    assert r.returncode == 4 and "Traceback" not in text, text
    errors = [line for line in text.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and "pytest rooted this run in " in errors[0], text
    # pytest roots it in the common ancestor of the invocation dir and PATH: PATH's own directory, or
    # above it when the checkout shares an ancestor with it (a clone under /tmp, like pytest's tmp_path)
    rooted = Path(errors[0].split("pytest rooted this run in ", 1)[1].split(",", 1)[0])
    assert rooted != REPO and (rooted == tmp_path or rooted in tmp_path.parents), errors[0]
    assert "--kubeconfig=PATH" in errors[0] and "hack/conformance.sh" in errors[0], text
    # the control: the same value with '=' is read as the option's (and refused for what it is)
    r = _run([sys.executable, "-m", "pytest", "-k", "slirp", "--target=cluster", f"--kubeconfig={tmp_path}/none"], REPO)
    assert r.returncode == 4 and f"the kubeconfig {tmp_path}/none does not exist" in r.stdout + r.stderr


def test_conformance_sh_pins_the_root_from_any_directory(tmp_path):
    missing = tmp_path / "k"  # does not exist: the run stops in preflight, after rooting right
    r = _run([str(REPO / "hack" / "conformance.sh"), "--target=cluster", "--kubeconfig", str(missing)], tmp_path)
    assert r.returncode == 4, r.stdout + r.stderr
    assert f"the kubeconfig {missing} does not exist" in r.stdout + r.stderr
    r = _run([str(REPO / "hack" / "conformance.sh"), "--collect-only", "-q"], tmp_path)
    assert r.returncode == 0 and "suites/test_slirp_icmp.py::test_icmp_echo_to_peer_gets_no_reply[console]" in r.stdout
    assert not (tmp_path / "reports").exists()  # outputs go to the checkout's reports/


def test_a_collect_only_run_writes_no_verdict(tmp_path):
    """It checks nothing: a report would say NOT CONFORMANT and overwrite the last real run's."""
    r = _run([sys.executable, "-m", "pytest", "-k", "slirp", "--collect-only", "-q", f"--report-dir={tmp_path}"], REPO)
    assert r.returncode == 0 and "test_icmp_echo_to_peer_gets_no_reply" in r.stdout, r.stdout + r.stderr
    assert list(tmp_path.iterdir()) == [] and "conformance:" not in r.stdout
    # control: a run that deselects every clause reaches a verdict (NOTHING CHECKED), and writes it
    r = _run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--target=qemu",
            "-k",
            "slirp and not slirp",
            "-q",
            f"--report-dir={tmp_path}",
        ],
        REPO,
    )
    assert (tmp_path / "conformance.json").exists(), r.stdout + r.stderr


def test_another_projects_pytest_run_is_left_alone(tmp_path):
    """The plugin is installed in the venv: it must not refuse or report on runs that are not ours."""
    (tmp_path / "test_other.py").write_text("def test_other():\n    assert 1 + 1 == 2\n")
    r = _run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)], tmp_path)
    assert r.returncode == 0 and "1 passed" in r.stdout, r.stdout + r.stderr
    assert not (tmp_path / "reports").exists()


def test_nothing_in_the_package_reexecutes_pytest():
    src = REPO / "src" / "slirp_conformance"
    offenders = [str(p.relative_to(REPO)) for p in src.rglob("*.py") if re.search(r"\bos\.exec[lv]", p.read_text())]
    assert offenders == []


def test_fixtures_is_not_an_import_name_of_ours(tmp_path):
    """PyPI has a well-known `fixtures` package; this project installs none of that name."""
    r = _run([sys.executable, "-c", "import importlib.util as u; print(u.find_spec('fixtures'))"], tmp_path)
    assert r.returncode == 0 and r.stdout.strip() == "None", r.stdout + r.stderr
    r = _run([sys.executable, "-c", "import slirp_conformance.plugin as p; print(p.__file__)"], tmp_path)
    assert r.stdout.strip() == str(REPO / "src" / "slirp_conformance" / "plugin" / "__init__.py"), r.stderr
