"""Which kubeconfig and context the cluster target uses, and one clear line when they are bad
(issue 7, item 4): ``--kubeconfig`` defaults to $KUBECONFIG, then ~/.kube/config; preflight
honours ``--context``. Each bad case stops with exit code 4, one error line naming the fix, no
traceback. The servers here are closed ports: which one an error names shows which file and
context were read."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.suite_runner import REPO


def _kubeconfig(path: Path, contexts: dict[str, int], current: str) -> Path:
    """A kubeconfig whose context NAME points at https://127.0.0.1:PORT (nothing listens there)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": current,
                "clusters": [
                    {"name": n, "cluster": {"server": f"https://127.0.0.1:{p}", "insecure-skip-tls-verify": True}}
                    for n, p in contexts.items()
                ],
                "users": [{"name": "u", "user": {"token": "not-a-secret-but-never-shown"}}],
                "contexts": [{"name": n, "context": {"cluster": n, "user": "u"}} for n in contexts],
            }
        )
    )
    return path


def _run(tmp_path: Path, *args: str, env: dict | None = None) -> tuple[int, str]:
    base = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-k", "slirp", "--target=cluster", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**base, "HOME": str(tmp_path / "home"), **(env or {})},
    )
    return r.returncode, r.stdout + r.stderr


def _one_error_line(code: int, text: str) -> str:
    assert code == 4, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    errors = [line for line in text.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 1, text[-3000:]
    assert "not-a-secret-but-never-shown" not in text
    return errors[0]


def test_default_is_home_kube_config(tmp_path):
    _kubeconfig(tmp_path / "home" / ".kube" / "config", {"home": 1}, "home")
    line = _one_error_line(*_run(tmp_path))
    assert "127.0.0.1:1" in line and "not reachable" in line, line


def test_kubeconfig_env_comes_before_home(tmp_path):
    _kubeconfig(tmp_path / "home" / ".kube" / "config", {"home": 1}, "home")
    env_file = _kubeconfig(tmp_path / "env-kubeconfig", {"env": 2}, "env")
    line = _one_error_line(*_run(tmp_path, env={"KUBECONFIG": str(env_file)}))
    assert "127.0.0.1:2" in line, line


def test_kubeconfig_env_may_list_several_files(tmp_path):
    listed = _kubeconfig(tmp_path / "second", {"second": 3}, "second")
    line = _one_error_line(*_run(tmp_path, env={"KUBECONFIG": f"{tmp_path / 'absent'}{os.pathsep}{listed}"}))
    assert "127.0.0.1:3" in line, line


def test_no_kubeconfig_anywhere_names_all_three_ways(tmp_path):
    line = _one_error_line(*_run(tmp_path))
    assert "--kubeconfig" in line and "KUBECONFIG" in line and str(tmp_path / "home" / ".kube" / "config") in line


def test_missing_file_names_it(tmp_path):
    line = _one_error_line(*_run(tmp_path, f"--kubeconfig={tmp_path / 'nope'}"))
    assert str(tmp_path / "nope") in line and "--kubeconfig" in line, line


@pytest.mark.parametrize("content", [":\n- [garbage\n", "just a string\n", "[1, 2]\n", ""])
def test_garbage_kubeconfig_is_one_line(tmp_path, content):
    bad = tmp_path / "bad"
    bad.write_text(content)
    line = _one_error_line(*_run(tmp_path, f"--kubeconfig={bad}"))
    assert str(bad) in line and "--kubeconfig" in line, line


def test_context_is_honoured_by_preflight(tmp_path):
    both = _kubeconfig(tmp_path / "both", {"first": 4, "second": 5}, "first")
    line = _one_error_line(*_run(tmp_path, f"--kubeconfig={both}", "--context=second"))
    assert "127.0.0.1:5" in line, line


def test_unknown_context_names_the_known_ones(tmp_path):
    both = _kubeconfig(tmp_path / "both", {"first": 4, "second": 5}, "first")
    line = _one_error_line(*_run(tmp_path, f"--kubeconfig={both}", "--context=third"))
    assert "third" in line and "first, second" in line and "--context" in line, line
