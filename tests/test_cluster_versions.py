"""hack/versions.env and slirp_conformance.cluster.versions: one table, read the same by shell and Python."""

from __future__ import annotations

import re
import subprocess

import pytest

from slirp_conformance.cluster import versions
from slirp_conformance.errors import SetupError


def test_shell_and_python_read_the_same_values():
    keys = sorted(versions.parse_env_file())
    script = f'set -eu; . "{versions.VERSIONS_ENV}"; ' + "; ".join(f'printf "%s\\0" "${{{k}}}"' for k in keys)
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True, timeout=10).stdout
    assert dict(zip(keys, out.split("\0")[:-1], strict=True)) == versions.parse_env_file()


def test_every_supported_minor_has_pins_and_a_checksum_slot():
    minors = versions.supported_minors()
    assert minors == [f"1.{m}" for m in range(1, 10)]
    for minor in minors:
        latest = versions.latest_known_patch(minor)
        assert latest.minor_key == minor
        pins = versions.pins_for(latest)
        assert re.fullmatch(r"v0\.\d+\.\d+", pins.kind), pins
        assert re.fullmatch(r"kindest/node:v1\.\d+\.\d+@sha256:[0-9a-f]{64}", pins.node_image), pins
        assert pins.kubectl == pins.kubernetes, "kubectl is pinned to the node's Kubernetes version"
        env = versions.parse_env_file()
        for tool, version in (("KIND", pins.kind), ("KUBECTL", pins.kubectl)):
            key = f"{tool}_{version.replace('.', '_')}_SHA256_linux_amd64"
            assert key in env, f"{key} missing from hack/versions.env (fill it or leave it empty as a TODO)"
            assert env[key] == "" or re.fullmatch(r"[0-9a-f]{64}", env[key]), key


def test_v1_1_uses_kubevirts_own_ci_pair():
    pins = versions.pins_for("v1.1.0")
    assert (pins.kind, pins.node_image_tag) == ("v0.19.0", "kindest/node:v1.27.1")


@pytest.mark.parametrize(
    ("version", "needed"),
    [("v1.1.0", True), ("v1.2.2", True), ("v1.4.1", True), ("v1.5.0", False), ("v1.9.0", False), ("1.3.0", True)],
)
def test_feature_gate_needed_below_v1_5(version, needed):
    assert versions.needs_feature_gate(version) is needed


@pytest.mark.parametrize("bad", ["v1.10.0", "latest", "1.1", "v1.0.1", "v2.1.0", "v1.5.0-rc.1", "", "v1.5"])
def test_unknown_versions_name_the_supported_range(bad):
    with pytest.raises(SetupError, match=r"supported range v1\.1\.0\.\.v1\.9\.x"):
        versions.parse_kubevirt_version(bad)


def test_any_patch_of_a_supported_minor_is_accepted():
    assert str(versions.parse_kubevirt_version("1.9.7")) == "v1.9.7"


def test_empty_checksum_is_none_so_install_tools_refuses():
    assert versions.tool_sha256("kind", "v0.19.0") is None or len(versions.tool_sha256("kind", "v0.19.0")) == 64
    assert versions.tool_sha256("kind", "v9.9.9") is None


def test_release_urls_and_sidecar_image():
    urls = versions.release_manifest_urls("v1.5.3")
    assert (
        urls["kubevirt-operator.yaml"]
        == "https://github.com/kubevirt/kubevirt/releases/download/v1.5.3/kubevirt-operator.yaml"
    )
    assert versions.slirp_sidecar_image("v1.1.0") == "quay.io/kubevirt/network-slirp-binding:v1.1.0"


def test_nightly_matrix_is_oldest_middle_newest():
    nightly = versions.nightly_versions()
    assert str(nightly[0]) == "v1.1.0" and nightly == sorted(nightly) and len(nightly) == 3


def test_env_parser_refuses_shell_expansions(tmp_path):
    bad = tmp_path / "v.env"
    bad.write_text('A="$(curl evil)"\n')
    with pytest.raises(SetupError, match="not a plain KEY=VALUE"):
        versions.parse_env_file(bad)


# --- hack/install-tools.sh: sha256-verified or nothing -----------------------------------------


def _pins_file(tmp_path, kind_sum: str, kubectl_sum: str):
    """A copy of hack/versions.env whose download URLs point at local files, with given sums."""
    import hashlib
    import platform

    srv = tmp_path / "srv"
    srv.mkdir(exist_ok=True)
    (srv / "kind").write_text("#!/bin/sh\necho kind v0.19.0\n")
    (srv / "kubectl").write_text("#!/bin/sh\necho kubectl\n")
    sums = {
        "kind": hashlib.sha256((srv / "kind").read_bytes()).hexdigest(),
        "kubectl": hashlib.sha256((srv / "kubectl").read_bytes()).hexdigest(),
    }
    arch = {"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64"}[platform.machine()]
    text = versions.VERSIONS_ENV.read_text()
    text = re.sub(r'KIND_URL_TEMPLATE=".*"', f'KIND_URL_TEMPLATE="file://{srv}/kind"', text)
    text = re.sub(r'KUBECTL_URL_TEMPLATE=".*"', f'KUBECTL_URL_TEMPLATE="file://{srv}/kubectl"', text)
    fill = {
        "kind": sums["kind"] if kind_sum == "right" else kind_sum,
        "kubectl": sums["kubectl"] if kubectl_sum == "right" else kubectl_sum,
    }
    text += (
        f'\nKIND_v0_19_0_SHA256_linux_{arch}="{fill["kind"]}"\n'
        f'KUBECTL_v1_27_1_SHA256_linux_{arch}="{fill["kubectl"]}"\n'
    )
    env_file = tmp_path / "versions.env"
    env_file.write_text(text)
    return env_file


def _install_tools(tmp_path, env_file):
    import os

    script = versions.REPO / "hack" / "install-tools.sh"
    return subprocess.run(
        ["bash", str(script), "--kubevirt-version", "v1.1.0", "--dir", str(tmp_path / "tools")],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SLIRP_VERSIONS_ENV": str(env_file)},
    )


@pytest.mark.skipif(
    subprocess.run(["uname", "-s"], capture_output=True, text=True).stdout.strip() != "Linux",
    reason="pins file written for linux",
)
def test_install_tools_verifies_refuses_and_installs(tmp_path):
    missing = _install_tools(tmp_path, _pins_file(tmp_path, "", "right"))
    assert missing.returncode != 0 and "Refusing to install an unverified binary" in missing.stderr, missing.stderr
    assert not (tmp_path / "tools" / "bin" / "kind").exists()

    wrong = _install_tools(tmp_path, _pins_file(tmp_path, "0" * 64, "right"))
    assert wrong.returncode != 0 and "sha256 mismatch for kind v0.19.0" in wrong.stderr, wrong.stderr
    assert not list((tmp_path / "tools" / "dist").glob("kind-*")), "a mismatching download must not stay"

    ok = _install_tools(tmp_path, _pins_file(tmp_path, "right", "right"))
    assert ok.returncode == 0, ok.stderr
    out = subprocess.run([str(tmp_path / "tools" / "bin" / "kind")], capture_output=True, text=True, timeout=10)
    assert out.stdout.strip() == "kind v0.19.0"


def test_the_kubevirt_version_option_defaults_to_none():
    """The version under test is the cluster's unless named (tests/test_kind_kubevirt.py reads it from a
    real cluster's CR)."""
    from slirp_conformance.plugin import options as plugin_options

    seen = {}

    class Group:
        def addoption(self, *names, **kw):
            seen.update({n: kw for n in names})

    class Parser:
        def getgroup(self, *_a, **_k):
            return Group()

    plugin_options.pytest_addoption(Parser())
    assert seen["--kubevirt-version"]["default"] is None
