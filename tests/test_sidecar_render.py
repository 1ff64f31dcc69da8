"""Where the reference VM's network arguments come from (--sidecar-render), without building Go."""

from __future__ import annotations

import subprocess
import sys

import pytest

from slirp_conformance import gobuild
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
    assert source == {
        "sidecar_render": "python",
        "sidecar_render_mode": "python",
        "sidecar_args_from": sidecar_render.PYTHON_MODEL,
    }
    assert go_renders == []


def test_go_never_falls_back_to_the_python_model(go_fails):
    """The false green of issue 15: a release the program cannot render used to be checked with the
    Python model instead, and the run said CONFORMANT for a release nobody checked."""
    with pytest.raises(SetupError, match="Go toolchain is missing"):
        sidecar_render.qemu_network_args(conformance_vm(), SEARCH, "go", None)


@pytest.fixture
def go_cache(monkeypatch, tmp_path):
    """``gobuild.cached`` answers from a list (a Built, None, or an exception); no Go is run."""
    answers: list = []

    def cached(spec, cache=None):
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(sidecar_render.gobuild, "cached", cached)
    monkeypatch.setattr(sidecar_render, "_choices", {})
    return answers


def built(tmp_path) -> gobuild.Built:
    return gobuild.Built(tmp_path, "k", False, 0.0)


def test_auto_takes_kubevirts_code_once_its_build_is_cached(go_cache, go_renders, tmp_path):
    go_cache.append(built(tmp_path))
    args, source = sidecar_render.qemu_network_args(conformance_vm(), SEARCH, "auto", "v1.5.3")
    assert args == GO_ARGS and go_renders == ["v1.5.3"]
    assert source["sidecar_render"] == "go" and source["sidecar_render_mode"] == "auto"


def test_auto_on_a_first_run_renders_with_the_golden_held_model_and_says_why(go_cache, go_renders):
    go_cache.append(None)
    args, source = sidecar_render.qemu_network_args(conformance_vm(), SEARCH, "auto", "v1.9.0")
    assert args == slirp_qemu_args(conformance_vm(), SEARCH) and go_renders == []
    assert source["sidecar_render"] == "python" and source["sidecar_render_mode"] == "auto"
    assert (
        "tests/test_sidecar_golden.py holds byte for byte to KubeVirt v1.9.0's slirp sidecar"
        in (source["sidecar_args_from"])
    )
    assert "no Go build of KubeVirt v1.9.0's sidecar code is cached yet" in source["sidecar_args_from"]
    assert sidecar_render.choose("auto", "v1.9.0").build_after_verdict  # one answer per process
    assert not sidecar_render.choose("python", "v1.9.0").build_after_verdict


def test_auto_never_stands_in_for_a_build_that_fails(go_cache, go_fails, tmp_path):
    """Cached but failing to render is an error, as with go: the model only replaces a build not made yet."""
    go_cache.append(built(tmp_path))
    with pytest.raises(SetupError, match="Go toolchain is missing"):
        sidecar_render.qemu_network_args(conformance_vm(), SEARCH, "auto", "v1.9.0")


def test_auto_builds_before_the_run_a_release_the_golden_does_not_hold(go_cache, monkeypatch):
    monkeypatch.setattr(sidecar_render, "golden_releases", lambda: ("v1.1.0",))
    assert sidecar_render.choose("auto", "v1.9.0") == sidecar_render.Choice(
        "go", "v1.9.0", "auto", "the golden self-test does not cover v1.9.0"
    )
    assert go_cache == []  # not even looked for: it is built before the run, as with go


def test_the_golden_holds_the_model_to_every_release_the_program_builds():
    assert set(sidecar_render.EXTRA_REPLACES) == set(sidecar_render.golden_releases())


def test_the_option_offers_the_modes_the_renderer_knows():
    assert sidecar_render.MODES == ("auto", "go", "python")
    with pytest.raises(SetupError, match=r"^--sidecar-render 'fallback': choose one of auto, go, python$"):
        sidecar_render.check("fallback", "v1.9.0")


@pytest.mark.parametrize(
    ("outcome", "said"),
    [
        (None, "sidecar-render: built in 3 s; the next run renders with KubeVirt v1.9.0's code"),
        (SetupError("`go build` failed"), "sidecar-render: not built (`go build` failed); the next run renders"),
        (KeyboardInterrupt(), "sidecar-render: build interrupted; the next run renders with the model again"),
    ],
    ids=["built", "failed", "interrupted"],
)
def test_the_build_after_the_verdict_says_how_it_ended(monkeypatch, tmp_path, outcome, said):
    def build(version):
        if outcome is not None:
            raise outcome
        return gobuild.Built(tmp_path, "k", True, 3.0)

    monkeypatch.setattr(sidecar_render, "build", build)
    lines: list[str] = []
    sidecar_render.build_for_next_run(sidecar_render.Choice("python", "v1.9.0", "auto", "why"), lines.append)
    assert lines[0].startswith("sidecar-render: building KubeVirt v1.9.0's sidecar code for the next run")
    assert len(lines) == 2 and lines[1].startswith(said), lines


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


@pytest.mark.parametrize("args", [[], ["--sidecar-render=go"]], ids=["default-auto", "go"])
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
    monkeypatch.setattr(sidecar_render, "_choices", {})
    monkeypatch.setattr(sidecar_render.gobuild, "cached", lambda spec, cache=None: None)
    sidecar_render.prepare("python", "v1.9.0")
    assert sidecar_render.prepare("auto", "v1.9.0").build_after_verdict  # a first run: built after the verdict
    assert calls == []
    for _ in range(2):
        with pytest.raises(SetupError, match="failed"):
            sidecar_render.prepare("go", "v1.9.0")
    assert calls == ["v1.9.0"]  # a failed build is not retried within the process
