"""Preflight and the kind cluster lifecycle against RECORDING FAKES of docker, kind and kubectl.

The fakes are tiny /bin/sh scripts in a tmp dir that is the whole PATH (plus links to the few
system utilities they need, so the real /usr/bin/kubectl or /usr/local/bin/docker never leak in).
Each appends its argv, shell-quoted, to a log, and answers like the real tool for the calls the
suite makes.
"""

from __future__ import annotations

import os
import re
import shlex
import threading
import time
import tomllib
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
import yaml

from slirp_conformance import waits
from slirp_conformance.cluster import kind, preflight, runner
from slirp_conformance.cluster.versions import pins_for
from slirp_conformance.errors import SetupError
from tests import recording_tools
from tests.json_reply import reply_json

PINS = pins_for("v1.1.0")  # kind v0.19.0, kindest/node:v1.27.1, kubectl v1.27.1


@pytest.fixture
def fake_tools(tmp_path, monkeypatch):
    """Install the fakes; returns (bin dir, function returning the recorded calls as argv lists)."""
    bindir = tmp_path / "bin"
    recording_tools.install(bindir)
    log = tmp_path / "calls.log"
    log.touch()
    (tmp_path / "state").mkdir()
    monkeypatch.setenv("PATH", str(bindir))
    monkeypatch.setattr(runner, "TOOLS_DIR", tmp_path / "no-tools")  # a real .tools/bin must not shadow the fakes
    monkeypatch.setenv("FAKE_LOG", str(log))
    monkeypatch.setenv("FAKE_STATE", str(tmp_path / "state"))

    def calls(tool: str | None = None) -> list[list[str]]:
        parsed = [shlex.split(line) for line in log.read_text().splitlines() if line.strip()]
        return [c for c in parsed if tool is None or c[0] == tool]

    return bindir, calls


def _remove(bindir: Path, tool: str) -> None:
    (bindir / tool).unlink()


# --- preflight -------------------------------------------------------------------------------


def test_preflight_kind_target_passes_and_reports_versions(fake_tools):
    _, calls = fake_tools
    report = preflight.preflight("kind", kubevirt_version="v1.1.0", kvm_device="/nonexistent/kvm")
    assert report.tool_versions.pop("python-kubernetes") >= "37"
    assert report.tool_versions == {"docker": "27.3.1", "kind": "v0.19.0", "kubectl": "v1.27.1"}
    assert report.use_emulation and any("useEmulation" in n for n in report.notes), report.notes
    assert report.warnings == []
    assert ["docker", "info", "--format", "{{json .ServerVersion}}"] in calls("docker")


def test_preflight_without_docker_fails_fast_naming_docker(fake_tools):
    bindir, _ = fake_tools
    _remove(bindir, "docker")
    started = time.monotonic()
    with pytest.raises(SetupError, match=r"(?i)docker") as err:
        preflight.preflight("kind", kubevirt_version="v1.1.0")
    assert time.monotonic() - started < 5, "preflight must fail in seconds"
    assert "\n" not in str(err.value), "SetupError is one line"


def test_preflight_docker_daemon_down_names_the_fix(fake_tools, monkeypatch):
    monkeypatch.setenv("FAKE_DOCKER_DOWN", "1")
    with pytest.raises(SetupError, match=r"daemon does not answer.*Cannot connect to the Docker daemon"):
        preflight.preflight("kind", kubevirt_version="v1.1.0")


def test_preflight_hanging_docker_is_killed_within_budget(fake_tools, monkeypatch):
    monkeypatch.setenv("FAKE_DOCKER_HANG", "1")
    monkeypatch.setitem(waits.TIMEOUTS, "tool-probe", 1.0)
    started = time.monotonic()
    with pytest.raises(SetupError, match="did not finish within"):
        preflight.preflight("kind", kubevirt_version="v1.1.0")
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("missing", ["kind", "kubectl"])
def test_preflight_missing_tool_names_install_tools(fake_tools, missing):
    bindir, _ = fake_tools
    _remove(bindir, missing)
    with pytest.raises(SetupError, match=rf"{missing} is not installed.*hack/install-tools.sh"):
        preflight.preflight("kind", kubevirt_version="v1.1.0")


def test_preflight_kind_older_than_pin_fails_newer_warns(fake_tools, monkeypatch):
    monkeypatch.setenv("FAKE_KIND_VERSION", "v0.18.0")
    with pytest.raises(SetupError, match=re.escape("older than the pinned v0.19.0")):
        preflight.preflight("kind", kubevirt_version="v1.1.0")
    monkeypatch.setenv("FAKE_KIND_VERSION", "v0.30.0")
    report = preflight.preflight("kind", kubevirt_version="v1.1.0")
    assert any("differs from the pinned" in w for w in report.warnings), report.warnings


def test_preflight_kubectl_skew_warns(fake_tools, monkeypatch):
    monkeypatch.setenv("FAKE_KUBECTL_VERSION", "v1.32.4-dispatcher")
    report = preflight.preflight("kind", kubevirt_version="v1.1.0")
    assert any("kubectl v1.32.4" in w and "skew" in w for w in report.warnings), report.warnings


@pytest.mark.parametrize("bad", ["v1.10.0", "latest", "1.1"])
def test_preflight_rejects_bad_versions_before_running_tools(fake_tools, bad):
    _, calls = fake_tools
    with pytest.raises(SetupError, match=r"v1\.1\.0\.\.v1\.9\.x"):
        preflight.preflight("kind", kubevirt_version=bad)
    assert calls() == [], "version flags are checked before any tool runs"


class _VersionHandler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = b'{"major": "1", "minor": "30", "gitVersion": "v1.30.0"}'
        reply_json(self, 200 if self.path.rstrip("/") == "/version" else 404, body)

    def log_message(self, *args):
        pass


def _kubeconfig(path: Path, server: str) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "c",
                "clusters": [{"name": "k", "cluster": {"server": server}}],
                "users": [{"name": "u", "user": {"token": "TOPSECRET-TOKEN-VALUE"}}],
                "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
            }
        )
    )
    return path


def test_preflight_cluster_target_reads_server_version(fake_tools, tmp_path):
    server = HTTPServer(("127.0.0.1", 0), _VersionHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        kubeconfig = _kubeconfig(tmp_path / "kc", f"http://127.0.0.1:{server.server_port}")
        report = preflight.preflight("cluster", kubevirt_version=None, kubeconfig=kubeconfig)
    finally:
        server.shutdown()
    assert report.server_version == "v1.30.0"


def test_preflight_unreachable_cluster_fails_fast_without_leaking_the_token(fake_tools, tmp_path):
    with socket_closed_port() as port:
        kubeconfig = _kubeconfig(tmp_path / "kc", f"https://127.0.0.1:{port}")
        started = time.monotonic()
        with pytest.raises(SetupError, match="not reachable") as err:
            preflight.preflight("cluster", kubevirt_version=None, kubeconfig=kubeconfig)
    assert time.monotonic() - started < 10
    assert "TOPSECRET" not in str(err.value)


def test_preflight_cluster_target_needs_a_readable_kubeconfig(fake_tools, tmp_path, monkeypatch):
    with pytest.raises(SetupError, match=r"kubeconfig .*absent does not exist"):
        preflight.preflight("cluster", kubevirt_version=None, kubeconfig=tmp_path / "absent")
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(SetupError, match="no kubeconfig: pass --kubeconfig PATH, set KUBECONFIG, or create"):
        preflight.preflight("cluster", kubevirt_version=None, kubeconfig=None)


class socket_closed_port:
    """A localhost port nobody listens on (bound then closed)."""

    def __enter__(self) -> int:
        import socket

        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        return port

    def __exit__(self, *exc):
        return False


# --- kind ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kvm", [True, False], ids=["kvm", "no-kvm"])
def test_render_config_pins_containerd_and_mounts_kvm_only_when_usable(kvm):
    config = yaml.safe_load(kind.render_config("slirp", "kindest/node:v1.27.1", kvm=kvm))
    assert config["kind"] == "Cluster" and config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    assert [n["role"] for n in config["nodes"]] == ["control-plane"]
    node = config["nodes"][0]
    assert node["image"] == "kindest/node:v1.27.1"
    mounts = node.get("extraMounts", [])
    assert (mounts == [{"hostPath": "/dev/kvm", "containerPath": "/dev/kvm"}]) if kvm else (mounts == [])
    (patch,) = config["containerdConfigPatches"]
    cri = tomllib.loads(patch)["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri == {"enable_unprivileged_icmp": False, "enable_unprivileged_ports": False}


def test_kvm_usable_is_false_for_missing_or_non_kvm_devices():
    assert not kind.kvm_usable("/nonexistent/kvm")
    assert not kind.kvm_usable(os.devnull)


def test_kind_creates_exports_loads_and_deletes_what_it_created(fake_tools, tmp_path):
    _, calls = fake_tools
    work = tmp_path / "work"
    with kind.KindCluster(PINS, work, name="slirp-t", kvm=False, preload_images=["example.org/sidecar:1"]) as cl:
        assert cl.created
        assert cl.kubeconfig_path.stat().st_mode & 0o777 == 0o600
        config = yaml.safe_load(cl.config_path.read_text())
        assert config["nodes"][0]["image"] == PINS.node_image
    kind_calls = [c[1:] for c in calls("kind")]
    create = next(c for c in kind_calls if c[:2] == ["create", "cluster"])
    assert create[2:8] == [
        "--name",
        "slirp-t",
        "--config",
        str(work / "kind-config.yaml"),
        "--kubeconfig",
        str(work / "kubeconfig"),
    ]
    assert create[8] == "--wait" and create[9].endswith("s")
    assert ["export", "kubeconfig", "--name", "slirp-t", "--kubeconfig", str(work / "kubeconfig")] in kind_calls
    assert ["load", "docker-image", "example.org/sidecar:1", "--name", "slirp-t"] in kind_calls
    assert kind_calls[-1] == ["delete", "cluster", "--name", "slirp-t", "--kubeconfig", str(work / "kubeconfig")]


def test_kind_reuses_an_existing_cluster_and_never_deletes_it(fake_tools, tmp_path):
    _, calls = fake_tools
    (Path(os.environ["FAKE_STATE"]) / "kind-clusters").write_text("slirp-t\n")
    with kind.KindCluster(PINS, tmp_path / "work", name="slirp-t", kvm=False) as cl:
        assert not cl.created
    verbs = [c[1:3] for c in calls("kind")]
    assert ["create", "cluster"] not in verbs and ["delete", "cluster"] not in verbs, verbs
    assert ["export", "kubeconfig"] in verbs


def test_kind_keep_leaves_a_created_cluster(fake_tools, tmp_path):
    _, calls = fake_tools
    with kind.KindCluster(PINS, tmp_path / "work", name="slirp-t", kvm=False, keep=True):
        pass
    assert ["delete", "cluster"] not in [c[1:3] for c in calls("kind")]


def test_kind_failure_is_one_line_without_stdout_secrets(fake_tools, tmp_path):
    bindir, _ = fake_tools
    (bindir / "kind").write_text(
        recording_tools.PRELUDE + 'case "$1" in get) exit 0;; esac\n'
        'echo "token: SECRET-TOKEN in stdout"; echo "ERROR: failed to create cluster: '
        'node(s) already exist; Authorization: Bearer abcdefghijklmnop" >&2; exit 1\n'
    )
    with pytest.raises(SetupError, match="exited with 1") as err:
        kind.KindCluster(PINS, tmp_path / "work", name="slirp-t", kvm=False).up()
    message = str(err.value)
    assert "SECRET-TOKEN" not in message and "abcdefghijklmnop" not in message and "already exist" in message


def test_effective_containerd_settings_reads_the_node(fake_tools):
    _, calls = fake_tools
    assert kind.effective_containerd_settings("slirp-t-control-plane") == kind.PINNED_CONTAINERD_SETTINGS
    assert calls("docker")[-1][1:] == ["exec", "slirp-t-control-plane", "containerd", "config", "dump"]


def test_invalid_cluster_name_is_rejected():
    with pytest.raises(SetupError, match="invalid"):
        kind.KindCluster(PINS, Path("/tmp/x"), name="Bad_Name", kvm=False)


def test_reused_cluster_on_another_node_image_is_reported(fake_tools, tmp_path, monkeypatch, caplog):
    (Path(os.environ["FAKE_STATE"]) / "kind-clusters").write_text("slirp-t\n")
    monkeypatch.setenv("FAKE_NODE_IMAGE", "kindest/node:v1.34.0")
    with kind.KindCluster(PINS, tmp_path / "work", name="slirp-t", kvm=False) as cl:
        assert cl.reused_node_image == "kindest/node:v1.34.0"
    assert "not the pinned kindest/node:v1.27.1" in caplog.text


def test_failed_create_inside_with_still_deletes_the_partial_cluster(fake_tools, tmp_path, monkeypatch):
    _, calls = fake_tools
    monkeypatch.setenv("FAKE_KIND_CREATE_FAILS", "1")
    with (
        pytest.raises(SetupError, match="failed to create cluster"),
        kind.KindCluster(PINS, tmp_path / "work", name="slirp-t", kvm=False),
    ):
        pytest.fail("the body must not run")
    assert calls("kind")[-1][1:3] == ["delete", "cluster"]


# --- hack/cluster-up.sh / cluster-down.sh (slirp_conformance.cluster.cli) -------------------------------


def test_cli_down_deletes_only_what_up_created(fake_tools, tmp_path):
    from slirp_conformance.cluster import cli

    _, calls = fake_tools
    work = tmp_path / "work"
    assert (
        cli.main(["up", "--kubevirt-version", "v1.1.0", "--name", "slirp-t", "--workdir", str(work), "--no-kubevirt"])
        == 0
    )
    assert (work / "state.json").exists() and "SECRET" not in (work / "state.json").read_text()
    assert cli.main(["down", "--name", "slirp-t", "--workdir", str(work)]) == 0
    assert calls("kind")[-1][1:5] == ["delete", "cluster", "--name", "slirp-t"]

    # reused: up finds it, down leaves it
    (Path(os.environ["FAKE_STATE"]) / "kind-clusters").write_text("slirp-t\n")
    assert (
        cli.main(["up", "--kubevirt-version", "v1.1.0", "--name", "slirp-t", "--workdir", str(work), "--no-kubevirt"])
        == 0
    )
    before = len(calls("kind"))
    assert cli.main(["down", "--name", "slirp-t", "--workdir", str(work)]) == 0
    assert all(c[1:3] != ["delete", "cluster"] for c in calls("kind")[before:])


def test_cli_up_reports_setup_errors_as_one_line(fake_tools, capsys):
    from slirp_conformance.cluster import cli

    bindir, _ = fake_tools
    _remove(bindir, "docker")
    assert cli.main(["up", "--kubevirt-version", "v1.1.0", "--no-kubevirt"]) == 4
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("cluster-up: error: no Docker engine answers"), err
    assert "hack/setup.sh" in err[-1] or "needs root" in err[-1], err


def test_cli_up_refuses_a_docker_that_cannot_run_privileged_containers(fake_tools, capsys, monkeypatch):
    from slirp_conformance.cluster import cli

    _, calls = fake_tools
    monkeypatch.setenv("FAKE_DOCKER_NOT_PRIVILEGED", "1")
    assert cli.main(["up", "--kubevirt-version", "v1.1.0", "--no-kubevirt"]) == 4
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        err[-1].startswith("cluster-up: error: Docker cannot run privileged containers") and "runc wrapper" in err[-1]
    ), err
    assert not any(c[1:3] == ["create", "cluster"] for c in calls("kind"))


def test_cli_up_refuses_a_version_without_pins_before_docker(fake_tools, capsys):
    from slirp_conformance.cluster import cli

    _, calls = fake_tools
    assert cli.main(["up", "--kubevirt-version", "v1.10.0", "--no-kubevirt"]) == 4
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "outside the supported range" in err[0], err
    assert calls() == []


@pytest.mark.parametrize("project_dockerd_answers", [True, False])
def test_cli_down_force_without_state_finds_the_cluster_on_the_projects_dockerd(
    fake_tools, tmp_path, monkeypatch, project_dockerd_answers
):
    """A cluster the suite kept (--keep-cluster) has no cluster-up state: down --force must look for it
    where acquire() would have put it, the project's dockerd when the environment's docker does not
    answer. The control: with no engine answering anywhere it is gone with the engine, no delete."""
    from slirp_conformance import docker_daemon
    from slirp_conformance.cluster import cli

    _, calls = fake_tools
    monkeypatch.setenv("DOCKER_HOST", "unset-below")  # so that down's own setting is undone after the test
    monkeypatch.delenv("DOCKER_HOST")
    monkeypatch.setattr(
        docker_daemon,
        "server_version",
        lambda host: "27.3.1" if host == docker_daemon.project_host() and project_dockerd_answers else None,
    )
    monkeypatch.setattr(docker_daemon, "release", lambda holder: False)
    (Path(os.environ["FAKE_STATE"]) / "kind-clusters").write_text("slirp-kept\n")
    (tmp_path / "none").mkdir()  # as kind delete --kubeconfig makes it
    assert cli.main(["down", "--name", "slirp-kept", "--workdir", str(tmp_path / "none"), "--force"]) == 0
    assert not (tmp_path / "none").exists(), "down left the empty workdir of a cluster up never made"
    deleted = [c for c in calls("kind") if c[1:5] == ["delete", "cluster", "--name", "slirp-kept"]]
    assert bool(deleted) is project_dockerd_answers, calls("kind")
    assert (os.environ.get("DOCKER_HOST") == docker_daemon.project_host()) is project_dockerd_answers


def test_a_node_container_that_appears_after_kind_delete_is_removed_too():
    """A `kind create` stopped by Ctrl-C can leave dockerd finishing a node container after `kind delete`
    listed the cluster's (a node left in state Created): the sweep removes what shows up, until two
    sweeps in a row find nothing."""
    from types import SimpleNamespace

    appearing = [["abc123"], [], ["late456"], [], []]
    calls: list[list[str]] = []

    def fake_run(argv, **kwargs):
        calls.append(argv)
        if argv[:2] == ["docker", "ps"]:
            return SimpleNamespace(stdout="\n".join(appearing.pop(0)), returncode=0)
        return SimpleNamespace(stdout="", returncode=0)

    removed = kind.remove_stray_nodes("c1", run=fake_run)
    assert removed == ["abc123", "late456"]
    assert ["docker", "rm", "-f", "-v", "late456"] in calls
    assert all("label=io.x-k8s.kind.cluster=c1" in c for c in calls if c[:2] == ["docker", "ps"])
    assert appearing == []  # it kept looking after the first empty sweep: the late one was found


def test_no_stray_node_means_two_quiet_sweeps_and_nothing_removed():
    from types import SimpleNamespace

    calls: list[list[str]] = []

    def fake_run(argv, **kwargs):
        calls.append(argv)
        return SimpleNamespace(stdout="", returncode=0)

    assert kind.remove_stray_nodes("c1", run=fake_run) == []
    assert [c[:2] for c in calls] == [["docker", "ps"], ["docker", "ps"]]
