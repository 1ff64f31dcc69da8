"""The declared kubernetes client floor matches the API the cluster code calls (issue 7, item 3).

``src/slirp_conformance/cluster/kubevirt_cr.py`` calls ``ApiClient.param_serialize`` and the new
``call_api(method, url, ...)``. Checked in the published wheels: kubernetes 29.0.0 and 36.0.3 have
neither (``call_api(resource_path, method, ...)``); 37.0.0 is the first with both.
"""

from __future__ import annotations

import re
import tomllib

import kubernetes
import pytest

from slirp_conformance.cluster import preflight
from slirp_conformance.errors import SetupError
from tests.suite_runner import REPO


def _declared_floor() -> tuple[int, ...]:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    (spec,) = [d for d in deps if re.match(r"kubernetes\b", d)]
    return tuple(int(p) for p in re.search(r">=\s*([\d.]+)", spec).group(1).split("."))


def test_pyproject_declares_the_floor_the_code_needs():
    assert _declared_floor()[:2] == preflight.KUBERNETES_CLIENT_FLOOR[:2]
    assert preflight.KUBERNETES_CLIENT_FLOOR >= (37, 0)


def test_the_installed_client_has_the_api_used():
    api_client = kubernetes.client.ApiClient
    assert hasattr(api_client, "param_serialize") and "method" in api_client.call_api.__code__.co_varnames[:2]
    preflight.check_kubernetes_client()


@pytest.mark.parametrize("old", ["29.0.0", "36.0.3"])
def test_an_older_client_stops_with_the_pip_line(monkeypatch, old):
    monkeypatch.setattr(kubernetes, "__version__", old)
    with pytest.raises(SetupError, match=rf"kubernetes {re.escape(old)} .*pip install 'kubernetes>=37"):
        preflight.check_kubernetes_client()
