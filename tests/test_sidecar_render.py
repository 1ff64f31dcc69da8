"""Where the reference VM's network arguments come from (--sidecar-render), without building Go."""

from __future__ import annotations

import subprocess
import sys

import pytest

from slirp_conformance.errors import SetupError
from slirp_conformance.reference import sidecar_render
from slirp_conformance.vmspec import conformance_vm, slirp_qemu_args
from tests.suite_runner import REPO

SEARCH = ("ns.svc.cluster.local",)
GO_ARGS = ["-netdev", "user,id=default,net=10.0.2.0/24,from-go", "-device", "{}"]


@pytest.fixture
def go_renders(monkeypatch):
    calls = []

    def render(spec, search, version):
        calls.append(version)
        return sidecar_render.Rendering(GO_ARGS, search, version)

    monkeypatch.setattr(sidecar_render, "render", render)
    return calls


@pytest.fixture
def go_fails(monkeypatch):
    def render(spec, search, version):
        raise SetupError("the Go toolchain is missing: install Go")

    monkeypatch.setattr(sidecar_render, "render", render)


def test_go_takes_the_programs_arguments_and_says_which_release(go_renders):
    args, source = sidecar_render.qemu_network_args(conformance_vm(), SEARCH, "go", "v1.5.3")
    assert args == GO_ARGS and go_renders == ["v1.5.3"]
    assert source["sidecar_render"] == "go" and source["sidecar_kubevirt_version"] == "v1.5.3"
    assert "KubeVirt v1.5.3's converter and slirp sidecar code" in source["sidecar_args_from"]


def test_without_a_version_the_pinned_default_release_is_used(go_renders):
    sidecar_render.qemu_network_args(conformance_vm(), SEARCH, "go", None)
    assert go_renders == [sidecar_render.default_version()]


def test_python_never_runs_the_program_and_says_it_is_the_suites_model(go_renders):
    args, source = sidecar_render.qemu_network_args(conformance_vm(), SEARCH, "python", None)
    assert args == slirp_qemu_args(conformance_vm(), SEARCH)
    assert source == {"sidecar_render": "python", "sidecar_args_from": sidecar_render.PYTHON_MODEL}
    assert go_renders == []


def test_go_never_falls_back_to_the_python_model(go_fails):
    """The false green of issue 15: a release the program cannot render used to be checked with the
    Python model instead, and the run said CONFORMANT for a release nobody checked."""
    with pytest.raises(SetupError, match="Go toolchain is missing"):
        sidecar_render.qemu_network_args(conformance_vm(), SEARCH, "go", None)


def test_there_is_no_mode_that_falls_back():
    assert sidecar_render.MODES == ("go", "python")
    with pytest.raises(SetupError, match=r"^--sidecar-render 'auto': choose one of go, python$"):
        sidecar_render.check("auto", "v1.9.0")


def test_a_release_without_glue_is_refused_in_one_line():
    with pytest.raises(
        SetupError,
        match=r"^sidecar-render builds KubeVirt v1.1.0, v1.5.3, v1.9.0, not 'v1.7.4': "
        r"use one of those, or --sidecar-render python",
    ):
        sidecar_render.check("go", "v1.7.4")


def test_without_go_the_fix_names_the_python_model(monkeypatch):
    def no_go():
        raise SetupError("the Go toolchain is missing: install Go")

    monkeypatch.setattr(sidecar_render.gobuild, "go_binary", no_go)
    with pytest.raises(SetupError, match=r"install Go; or pass --sidecar-render python"):
        sidecar_render.check("go", "v1.9.0")


def test_the_vmi_is_the_kubevirt_targets_template():
    vmi = sidecar_render.vmi_json(conformance_vm("x"))
    iface = vmi["spec"]["domain"]["devices"]["interfaces"][0]
    assert vmi["kind"] == "VirtualMachineInstance" and iface["binding"] == {"name": "slirp"}
    assert iface["macAddress"] == "02:5c:1a:00:00:01" and [(p["port"], p["protocol"]) for p in iface["ports"]] == [
        (22, "TCP"),
        (8080, "TCP"),
        (8082, "UDP"),
    ]
    assert "sidecar-render-placeholder" in str(vmi)  # no run's secret: placeholders only


def test_resolv_conf_has_a_search_line_only_when_there_are_domains():
    assert sidecar_render.resolv_conf(("a.test", "b.test")).startswith("search a.test b.test\n")
    assert "search" not in sidecar_render.resolv_conf(())


@pytest.mark.parametrize("args", [[], ["--sidecar-render=go"]], ids=["default", "go"])
def test_a_release_without_glue_stops_the_run_in_one_line(args):
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-k", "slirp", "--target=qemu", *args, "--kubevirt-version=v1.7.4"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    text = r.stdout + r.stderr
    assert r.returncode == 4 and "Traceback" not in text, text
    errors = [line for line in text.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 1 and errors[0].startswith(
        "ERROR: sidecar-render builds KubeVirt v1.1.0, v1.5.3, v1.9.0, not 'v1.7.4': use one of those, or "
        "--sidecar-render python"
    ), text


def test_prepare_builds_once_and_a_failed_build_stops_the_run(monkeypatch):
    calls = []

    def failing_build(spec, cache=None):
        calls.append(spec.version)
        raise SetupError("`go build` of sidecar-render v1.9.0 failed")

    monkeypatch.setattr(sidecar_render.gobuild, "build", failing_build)
    monkeypatch.setattr(sidecar_render, "_outcomes", {})
    sidecar_render.prepare("python", "v1.9.0")
    assert calls == []
    for _ in range(2):
        with pytest.raises(SetupError, match="failed"):
            sidecar_render.prepare("go", "v1.9.0")
    assert calls == ["v1.9.0"]  # a failed build is not retried within the process
