"""hack/test.sh's two workers: the Docker engine's tests and the reference VMs' tests each stay on
one worker (tests/conftest.py group_of), and the xdist in this venv really keeps a group together
(pytest-xdist#1386: under pytest 9.2, xdist 3.8 spreads a group's tests over every worker)."""

from __future__ import annotations

import os
import subprocess
import sys
from types import SimpleNamespace

import pytest

from tests import conftest

GROUPED = """
import os, pytest

@pytest.mark.xdist_group("a")
@pytest.mark.parametrize("i", range(4))
def test_a(i):
    with open(os.path.join(os.environ["GROUPS_OUT"], f"a-{i}"), "w") as f:
        f.write(os.environ["PYTEST_XDIST_WORKER"])

@pytest.mark.xdist_group("b")
@pytest.mark.parametrize("i", range(4))
def test_b(i):
    with open(os.path.join(os.environ["GROUPS_OUT"], f"b-{i}"), "w") as f:
        f.write(os.environ["PYTEST_XDIST_WORKER"])
"""


class _Item:
    def __init__(self, *markers: str) -> None:
        self.markers = set(markers)

    def get_closest_marker(self, name: str):
        return name if name in self.markers else None


@pytest.mark.parametrize(
    ("markers", "group"),
    [
        (("kind",), conftest.ENGINE_GROUP),
        (("docker",), conftest.ENGINE_GROUP),
        (("kind", "selftest_vm"), conftest.ENGINE_GROUP),
        (("selftest_vm",), conftest.VM_GROUP),
        ((), None),
    ],
)
def test_each_test_is_grouped_by_what_it_drives(markers, group):
    assert conftest.group_of(_Item(*markers)) == group


def test_this_venvs_xdist_keeps_each_group_on_one_worker(tmp_path):
    (tmp_path / "test_grouped.py").write_text(GROUPED)
    out = tmp_path / "out"
    out.mkdir()
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:randomly",
            "-p",
            "no:cacheprovider",
            "-n",
            "2",
            "--dist",
            "loadgroup",
            str(tmp_path / "test_grouped.py"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        # not the parent worker's own xdist variables: this child is a controller of its own
        env={**{k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}, "GROUPS_OUT": str(out)},
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    workers = {g: {(out / f"{g}-{i}").read_text() for i in range(4)} for g in "ab"}
    assert all(len(w) == 1 for w in workers.values()), f"a group ran on several workers: {workers}"


def test_the_pair_that_ignores_groups_is_refused_in_one_line(monkeypatch):
    import importlib.metadata

    monkeypatch.setattr(importlib.metadata, "version", lambda name: {"pytest": "9.2.0", "pytest-xdist": "3.8.0"}[name])
    config = SimpleNamespace(getoption=lambda name, default=None: "loadgroup")
    with pytest.raises(pytest.UsageError, match=r"pytest-xdist#1386"):
        conftest.pytest_configure(config)
