"""The project's Docker engine (src/slirp_conformance/docker_daemon.py) and its runc wrapper (hack/runc-wrapper).

The wrapper is checked against a recording stand-in for runc, with a capability dropped from the
bounding set of the process that runs it (so the premise holds on any host, not only on this
project's machines, which lack CAP_SYS_RESOURCE). The daemon tests start the real dockerd
(marker ``docker``): where none can run they are skipped with the reason.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from slirp_conformance import docker_daemon, runc_wrapper
from slirp_conformance.errors import SetupError

PR_CAPBSET_DROP = 24
CAP_SYS_TIME = 25
CAP_SYS_RESOURCE = 24
ROOT = os.geteuid() == 0


def _bounding_missing(pid: int | str = "self") -> set[str]:
    names = [
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_DAC_READ_SEARCH",
        "CAP_FOWNER",
        "CAP_FSETID",
        "CAP_KILL",
        "CAP_SETGID",
        "CAP_SETUID",
        "CAP_SETPCAP",
        "CAP_LINUX_IMMUTABLE",
        "CAP_NET_BIND_SERVICE",
        "CAP_NET_BROADCAST",
        "CAP_NET_ADMIN",
        "CAP_NET_RAW",
        "CAP_IPC_LOCK",
        "CAP_IPC_OWNER",
        "CAP_SYS_MODULE",
        "CAP_SYS_RAWIO",
        "CAP_SYS_CHROOT",
        "CAP_SYS_PTRACE",
        "CAP_SYS_PACCT",
        "CAP_SYS_ADMIN",
        "CAP_SYS_BOOT",
        "CAP_SYS_NICE",
        "CAP_SYS_RESOURCE",
        "CAP_SYS_TIME",
    ]
    line = next(ln for ln in Path(f"/proc/{pid}/status").read_text().splitlines() if ln.startswith("CapBnd:"))
    bounding = int(line.split()[1], 16)
    return {name for number, name in enumerate(names) if not bounding & (1 << number)}


def _drop_sys_time() -> None:
    """preexec_fn: the wrapper's process loses CAP_SYS_TIME from its bounding set."""
    if ctypes.CDLL(None, use_errno=True).prctl(PR_CAPBSET_DROP, CAP_SYS_TIME, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


@pytest.fixture
def wrapper_run(tmp_path):
    """Run the wrapper with CAP_SYS_TIME dropped, against a runc stand-in that records its argv."""
    wrapper = runc_wrapper.binary()
    fake = tmp_path / "fake-runc"
    record = tmp_path / "runc-argv"
    fake.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {record}\n')
    fake.chmod(0o755)

    def run(*args: str) -> list[str]:
        env = dict(os.environ, SLIRP_RUNC_WRAPPER_REAL=str(fake))
        subprocess.run([str(wrapper), *args], env=env, check=True, preexec_fn=_drop_sys_time, timeout=30)
        return record.read_text().splitlines()

    return run


CAPS = ["CAP_CHOWN", "CAP_NET_RAW", "CAP_SYS_TIME", "CAP_SYS_RESOURCE", "CAP_SYS_ADMIN"]


@pytest.mark.skipif(not ROOT, reason="dropping a capability from the bounding set needs CAP_SETPCAP (root)")
def test_runc_wrapper_drops_exactly_the_capabilities_outside_the_bounding_set(wrapper_run, tmp_path):
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    spec = {
        "ociVersion": "1.0.2",
        "process": {
            "args": ["sh"],
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 18446744073709551615, "soft": 1024}],
            "capabilities": {s: list(CAPS) for s in ("bounding", "effective", "permitted", "inheritable", "ambient")},
        },
        "root": {"path": "rootfs"},
        "linux": {"uidMappings": []},
    }
    (bundle / "config.json").write_text(json.dumps(spec))
    argv = ["--root", "/run/x", "--log", "/run/x.log", "create", "--bundle", str(bundle), "--pid-file", "p", "ctr1"]
    assert wrapper_run(*argv) == argv  # the real runc gets exactly runc's arguments
    missing = _bounding_missing() | {"CAP_SYS_TIME"}  # what the wrapper's process could not have
    edited = json.loads((bundle / "config.json").read_text())
    expected = [c for c in CAPS if c not in missing]
    assert "CAP_SYS_TIME" not in expected and "CAP_NET_RAW" in expected  # the premise and the control
    assert edited["process"]["capabilities"] == {s: expected for s in spec["process"]["capabilities"]}, edited
    # the rest of the spec is untouched: a 64-bit rlimit survives exactly, other keys too
    assert edited["process"]["rlimits"] == spec["process"]["rlimits"]
    assert {k: v for k, v in edited.items() if k != "process"} == {k: v for k, v in spec.items() if k != "process"}


@pytest.mark.skipif(not ROOT, reason="dropping a capability from the bounding set needs CAP_SETPCAP (root)")
def test_runc_wrapper_edits_the_exec_process_file_and_leaves_clean_specs_alone(wrapper_run, tmp_path):
    process = tmp_path / "process.json"
    process.write_text(json.dumps({"args": ["ls"], "capabilities": {"bounding": ["CAP_SYS_TIME", "CAP_KILL"]}}))
    wrapper_run("exec", "--process", str(process), "--detach", "ctr1")
    assert json.loads(process.read_text())["capabilities"] == {"bounding": ["CAP_KILL"]}

    clean = tmp_path / "clean"
    clean.mkdir()
    text = '{"process": {"capabilities": {"bounding": ["CAP_KILL"]}},  "ociVersion": "1.0.2"}'
    (clean / "config.json").write_text(text)
    inode = (clean / "config.json").stat().st_ino
    wrapper_run("run", "-b", str(clean), "ctr2")
    assert (clean / "config.json").read_text() == text and (clean / "config.json").stat().st_ino == inode
    # commands that start nothing are passed through without reading any spec
    (clean / "config.json").write_text('{"process": {"capabilities": {"bounding": ["CAP_SYS_TIME"]}}}')
    assert wrapper_run("--root", "/x", "state", "ctr2") == ["--root", "/x", "state", "ctr2"]
    assert "CAP_SYS_TIME" in (clean / "config.json").read_text()


# -- bad input: one line naming the fix ---------------------------------------------------------


@pytest.fixture
def no_engine(tmp_path, monkeypatch):
    """No Docker answers anywhere; the project's run dir is a private one."""
    monkeypatch.setenv("SLIRP_CONFORMANCE_RUN_DIR", str(tmp_path / "run"))
    monkeypatch.setattr(docker_daemon, "server_version", lambda host: None)
    monkeypatch.delenv("DOCKER_HOST", raising=False)


def test_no_docker_and_not_root_names_the_fix(no_engine, monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(SetupError, match=r"needs root: run as root.*make `docker version` work") as err:
        docker_daemon.acquire("t")
    assert "\n" not in str(err.value)
    assert docker_daemon.unusable_reason() == str(err.value)


def test_no_dockerd_names_setup(no_engine, monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    real_which = docker_daemon.shutil.which
    monkeypatch.setattr(docker_daemon.shutil, "which", lambda tool: None if tool == "dockerd" else real_which(tool))
    with pytest.raises(SetupError, match=r"dockerd is not installed; run hack/setup.sh as root"):
        docker_daemon.acquire("t")


def test_unwritable_cache_names_the_variable(no_engine, monkeypatch, tmp_path):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(docker_daemon.shutil, "which", lambda tool: f"/usr/bin/{tool}")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("SLIRP_CONFORMANCE_CACHE", str(blocker / "cache"))
    with pytest.raises(SetupError, match=r"a-file/cache/docker is not writable.*set SLIRP_CONFORMANCE_CACHE"):
        docker_daemon.acquire("t")
    # the probe made nothing: only the lock of the project's dockerd is there
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == [
        "a-file",
        "run",
        "run/docker.lock",
    ]


def test_a_first_start_makes_the_logs_folder_and_a_later_one_keeps_the_last_log(monkeypatch, tmp_path):
    """A fresh machine's cache has no docker/ folder: the first start used to end in a traceback
    (FileNotFoundError for dockerd.log, seen in a cold .ci/run)."""
    monkeypatch.setenv("SLIRP_CONFORMANCE_CACHE", str(tmp_path / "fresh" / "cache"))
    first = docker_daemon.fresh_log()
    assert first == tmp_path / "fresh" / "cache" / "docker" / "dockerd.log" and first.parent.is_dir()
    first.write_text("the first start\n")
    assert docker_daemon.fresh_log() == first and not first.exists()
    assert first.with_suffix(".log.1").read_text() == "the first start\n"


def test_leases_of_dead_processes_are_swept_and_persistent_ones_stay(tmp_path, monkeypatch):
    monkeypatch.setenv("SLIRP_CONFORMANCE_RUN_DIR", str(tmp_path))
    docker_daemon._write_lease("cluster:a", persistent=True)
    docker_daemon._write_lease("me", persistent=False)
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = docker_daemon._lease_file("gone")
    dead.write_text(json.dumps({"holder": "gone", "pid": int(child.stdout), "start_time": "1"}))
    assert docker_daemon.live_leases() == ["cluster:a", "me"]
    assert not dead.exists()


# -- the real dockerd ---------------------------------------------------------------------------


def _host_state() -> dict:
    rules = subprocess.run(["iptables-save"], capture_output=True, text=True).stdout
    return {
        "links": sorted(p.name for p in Path("/sys/class/net").iterdir()),
        "rules": sorted(ln for ln in rules.splitlines() if ln.startswith(("-A", ":")) and "[" not in ln),
        "ip_forward": Path("/proc/sys/net/ipv4/ip_forward").read_text(),
        "processes": docker_daemon.processes_of((str(docker_daemon.run_dir()),)),
        "run_dir": docker_daemon.run_dir().exists(),
    }


@pytest.fixture
def project_dockerd_stopped():
    """The premise of a start/stop test: no engine answers, so the project starts its own."""
    if docker_daemon.server_version(None):
        pytest.skip("a Docker engine of the environment answers: the project uses it and starts none")
    if docker_daemon.server_version(docker_daemon.project_host()):
        pytest.skip(f"the project's dockerd is up for another holder ({docker_daemon.live_leases()})")
    return _host_state()


@pytest.mark.docker
def test_engine_starts_dockerd_runs_privileged_and_leaves_nothing(project_dockerd_stopped):
    before = project_dockerd_stopped
    with docker_daemon.engine("selftest") as docker:
        assert docker.project_started and os.environ["DOCKER_HOST"] == docker_daemon.project_host()
        docker_daemon.check_privileged(docker)
        info = subprocess.run(
            docker.docker("info", "--format", "{{.DefaultRuntime}}"), capture_output=True, text=True, check=True
        ).stdout.strip()
        assert info == docker_daemon.RUNTIME_NAME
        with docker_daemon.engine("nested") as again:  # a second holder shares it and does not stop it
            assert again.host == docker.host
        assert docker.server_version == docker_daemon.server_version(docker.host)
        if "CAP_SYS_RESOURCE" in _bounding_missing():
            # the control: without the wrapper this host cannot run a privileged container
            with pytest.raises(SetupError, match=r"cannot run privileged containers.*unable to apply caps"):
                docker_daemon.check_privileged(docker, runtime="runc")
    assert "DOCKER_HOST" not in os.environ or os.environ["DOCKER_HOST"] != docker_daemon.project_host()
    assert docker_daemon.server_version(docker_daemon.project_host()) is None
    assert _host_state() == before


@pytest.mark.docker
def test_a_persistent_lease_outlives_its_process_until_released(project_dockerd_stopped):
    before = project_dockerd_stopped
    code = (
        "from slirp_conformance import docker_daemon as d; "
        "print(d.acquire('kind-cluster:selftest', persistent=True).host)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert out.returncode == 0, out.stderr
    try:
        assert docker_daemon.server_version(out.stdout.strip()), "dockerd went away with the process that started it"
        assert docker_daemon.live_leases() == ["kind-cluster:selftest"]
    finally:
        assert docker_daemon.release("kind-cluster:selftest")
    assert _host_state() == before
