"""Where the reference VM's network arguments come from (--sidecar-render), without building Go."""

from __future__ import annotations

import subprocess
import sys

import pytest

from fixtures.errors import SetupError
from fixtures.reference import sidecar_render
from fixtures.vmspec import conformance_vm, slirp_qemu_args
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


@pytest.mark.parametrize("mode", ["auto", "go"])
def test_go_and_auto_take_the_programs_arguments_and_say_so(go_renders, mode):
    args, source = sidecar_render.qemu_network_args(conformance_vm(), SEARCH, mode, "v1.5.3")
    assert args == GO_ARGS and go_renders == ["v1.5.3"]
    assert source == {"sidecar_render": "go", "sidecar_kubevirt_version": "v1.5.3"}


def test_without_a_version_the_pinned_default_release_is_used(go_renders):
    sidecar_render.qemu_network_args(conformance_vm(), SEARCH, "go", None)
    assert go_renders == [sidecar_render.default_version()]


def test_python_never_runs_the_program(go_renders):
    args, source = sidecar_render.qemu_network_args(conformance_vm(), SEARCH, "python", None)
    assert args == slirp_qemu_args(conformance_vm(), SEARCH) and source == {"sidecar_render": "python"}
    assert go_renders == []


def test_auto_falls_back_to_python_and_records_why(go_fails, capfd):
    args, source = sidecar_render.qemu_network_args(conformance_vm(), SEARCH, "auto", None)
    assert args == slirp_qemu_args(conformance_vm(), SEARCH)
    assert source == {"sidecar_render": "python", "sidecar_render_fallback": "the Go toolchain is missing: install Go"}
    assert "using the Python rendering" in capfd.readouterr().err


def test_go_does_not_fall_back(go_fails):
    with pytest.raises(SetupError, match="Go toolchain is missing"):
        sidecar_render.qemu_network_args(conformance_vm(), SEARCH, "go", None)


def test_a_release_without_glue_is_refused_in_one_line():
    with pytest.raises(SetupError, match=r"^sidecar-render builds KubeVirt v1.1.0, v1.5.3, v1.9.0, not 'v1.7.4': "
                                         r"use one of those or --sidecar-render python$"):
        sidecar_render.check("go", "v1.7.4")


def test_the_vmi_is_the_kubevirt_targets_template():
    vmi = sidecar_render.vmi_json(conformance_vm("x"))
    iface = vmi["spec"]["domain"]["devices"]["interfaces"][0]
    assert vmi["kind"] == "VirtualMachineInstance" and iface["binding"] == {"name": "slirp"}
    assert iface["macAddress"] == "02:5c:1a:00:00:01" and [p["port"] for p in iface["ports"]] == [22, 8080]
    assert "sidecar-render-placeholder" in str(vmi)  # no run's secret: placeholders only


def test_resolv_conf_has_a_search_line_only_when_there_are_domains():
    assert sidecar_render.resolv_conf(("a.test", "b.test")).startswith("search a.test b.test\n")
    assert "search" not in sidecar_render.resolv_conf(())


def test_go_for_a_release_without_glue_stops_the_run_in_one_line():
    r = subprocess.run([sys.executable, "-m", "pytest", "-k", "slirp", "--target=qemu", "--sidecar-render=go",
                        "--kubevirt-version=v1.7.4"], cwd=REPO, capture_output=True, text=True, timeout=60)
    text = r.stdout + r.stderr
    assert r.returncode == 4 and "Traceback" not in text, text
    errors = [line for line in text.splitlines() if line.startswith("ERROR")]
    assert errors == ["ERROR: sidecar-render builds KubeVirt v1.1.0, v1.5.3, v1.9.0, not 'v1.7.4': "
                      "use one of those or --sidecar-render python"], text


def test_prepare_builds_once_and_only_go_insists(monkeypatch):
    calls = []

    def failing_build(spec, cache=None):
        calls.append(spec.version)
        raise SetupError("`go build` of sidecar-render v1.9.0 failed")
    monkeypatch.setattr(sidecar_render.gobuild, "build", failing_build)
    monkeypatch.setattr(sidecar_render, "_outcomes", {})
    sidecar_render.prepare("python", "v1.9.0")
    assert calls == []
    sidecar_render.prepare("auto", "v1.9.0")  # the VM falls back later, with the reason
    with pytest.raises(SetupError, match="failed"):
        sidecar_render.prepare("go", "v1.9.0")
    assert calls == ["v1.9.0"]  # a failed build is not retried within the process
