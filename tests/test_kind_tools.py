"""hack/install-tools.sh builds kind and kubectl from their Go modules when asked (--from-source) or when
the download fails (no route to GitHub/dl.k8s.io here): the pinned versions, cached, installed atomically."""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from slirp_conformance import kind_tools
from slirp_conformance.checkout import REPO
from slirp_conformance.cluster import versions

SCRIPT = REPO / "hack" / "install-tools.sh"
PINS = versions.pins_for("v1.9.0")  # kind v0.30.0, kubectl v1.34.0


def _install(tmp_path, *extra: str, env_file=None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if env_file:
        env["SLIRP_VERSIONS_ENV"] = str(env_file)
    return subprocess.run(
        ["bash", str(SCRIPT), "--kubevirt-version", "v1.9.0", "--dir", str(tmp_path / "tools"), *extra],
        capture_output=True,
        text=True,
        timeout=1800,
        env=env,
    )


def _versions(tmp_path) -> tuple[str, str]:
    kind = subprocess.run([str(tmp_path / "tools/bin/kind"), "version"], capture_output=True, text=True, timeout=30)
    kubectl = subprocess.run(
        [str(tmp_path / "tools/bin/kubectl"), "version", "--client"], capture_output=True, text=True, timeout=30
    )
    return kind.stdout.split()[1], re.search(r"Client Version: (\S+)", kubectl.stdout).group(1)


def test_from_source_installs_the_pinned_versions(tmp_path):
    r = _install(tmp_path, "--from-source")
    assert r.returncode == 0, r.stderr
    assert "building kind v0.30.0 from its Go module" in r.stdout
    assert _versions(tmp_path) == (PINS.kind, PINS.kubectl)
    assert os.readlink(tmp_path / "tools/bin/kind") == "../dist/kind-v0.30.0-linux-amd64-source"
    assert not [p.name for p in (tmp_path / "tools/dist").iterdir() if p.name.startswith(".")], "no temp file left"


def test_a_failed_download_falls_back_to_building(tmp_path):
    pins = tmp_path / "versions.env"
    text = versions.VERSIONS_ENV.read_text()
    text = re.sub(r'KIND_URL_TEMPLATE=".*"', f'KIND_URL_TEMPLATE="file://{tmp_path}/absent/kind"', text)
    text = re.sub(r'KUBECTL_URL_TEMPLATE=".*"', f'KUBECTL_URL_TEMPLATE="file://{tmp_path}/absent/kubectl"', text)
    pins.write_text(text)
    r = _install(tmp_path, env_file=pins)
    assert r.returncode == 0, r.stderr
    assert "download failed" in r.stdout and "building kind v0.30.0 from source instead" in r.stdout, r.stdout
    assert _versions(tmp_path) == (PINS.kind, PINS.kubectl)


def test_an_unknown_tool_is_refused():
    with pytest.raises(Exception, match="unknown tool"):
        kind_tools.build_tool("helm", "v3.0.0")
