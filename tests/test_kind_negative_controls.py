"""Negative controls of the whole product path on the real stack (marker ``kind``): a kind cluster
built here with KubeVirt installed by its real operator from images built here, the suite run
against it as a user runs it (``--target=kind --images-from-source``).

One cluster carries the runs that can share it honestly (each cluster + KubeVirt costs minutes on
a 2-core TCG machine): ``hack/cluster-up.sh`` makes it and installs KubeVirt, so every suite run
below finds an existing KubeVirt and must put its CR back exactly as found, then

1. a passing run: CONFORMANT, the CR identical before and after, nothing left in the cluster
   (namespace, VMI) or on the host (processes, temp dirs, containers, networks, volumes);
2. the same cluster with containerd giving pods unprivileged ICMP (its pin flipped in the node,
   as containerd >= 2.0 does by default): exactly the ICMP checks go red, the CR is put back;
3. Ctrl-C while the run's VMI runs: exit 2, the CR put back, nothing left;
4. ``hack/cluster-down.sh``: the host as it was before the cluster.

Then a run that creates its own cluster (no ``--keep-cluster``) gets Ctrl-C while it installs
KubeVirt: the cluster, its network, its volumes and (when nobody else holds it) the project's
dockerd all go.

``SLIRP_KIND_SELFTEST_KUBEVIRT`` picks the release (default KUBEVIRT_DEFAULT_VERSION);
``SLIRP_KIND_SELFTEST_TIMEOUT_SCALE`` the runs' ``--timeout-scale`` (default 3: TCG guests on a
loaded 2-core machine).

Not in CI by default: a second cluster with KubeVirt and four more suite runs cost about 40 min on
this 2-core machine, beside tests/test_kind_kubevirt.py's cluster (whose passing and interrupted
runs check the CR and leaks too). Run them with ``SLIRP_SELFTEST_REAL_STACK_CONTROLS=1 hack/test.sh
tests/test_kind_negative_controls.py`` (README "KubeVirt and the slirp plugin on the kind cluster").
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from slirp_conformance import checkout, waits
from slirp_conformance.cluster import kind, runner
from tests import kind_probes, suite_runner
from tests.kind_probes import kubectl
from tests.test_reference_e2e import ALL_MODULES

pytestmark = [
    pytest.mark.kind,
    pytest.mark.skipif(
        os.environ.get("SLIRP_SELFTEST_REAL_STACK_CONTROLS") != "1",
        reason="about 40 min on 2 cores, not in CI by default: set SLIRP_SELFTEST_REAL_STACK_CONTROLS=1 to run them",
    ),
]
REPO = checkout.REPO
KUBEVIRT = kind_probes.KUBEVIRT
TIMEOUT_SCALE = os.environ.get("SLIRP_KIND_SELFTEST_TIMEOUT_SCALE") or "3"
RUN = os.getpid() % 100000
# The leak check attributes containers (and their volumes, shims, mounts) by name prefix: this
# module's own, so another self-test's cluster on the shared dockerd (tests/test_kind_cluster.py's,
# a concurrent CI run's "slirp-selftest-kv-*") is neither ours nor a leak.
PREFIX = f"{kind_probes.OURS}-neg"
NAME = f"{PREFIX}-{RUN}"
CHANNELS = ("console", "ssh")
ICMP_RED = {f"test_slirp_icmp::test_icmp_echo_to_peer_gets_no_reply[{c}]" for c in CHANNELS}
CONTRACT_MODULES = ALL_MODULES
ALLOWED_SKIPS = kind_probes.skipped_on_kind(KUBEVIRT)


@dataclass
class KubeVirtCluster:
    name: str
    workdir: Path
    kubeconfig: str
    docker_host: str | None
    before: kind_probes.KindHostState  # the host before the cluster
    lib_modules_existed: bool = False  # /lib/modules before the cluster (Docker makes it for kind's mount)
    down: bool = False

    def docker(self, *args: str) -> subprocess.CompletedProcess:
        argv = ["docker", *(["-H", self.docker_host] if self.docker_host else []), *args]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=180)
        if r.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} exited {r.returncode}: {r.stderr.strip()[-500:]}")
        return r

    @property
    def node(self) -> str:
        return f"{self.name}-control-plane"


def _env_without_project_docker_host() -> dict[str, str]:
    """cluster-up acquires the project's dockerd itself (and says where): an inherited DOCKER_HOST
    pointing at it would make it look like someone else's engine."""
    from slirp_conformance import docker_daemon

    if os.environ.get("DOCKER_HOST") == docker_daemon.project_host():
        return {k: v for k, v in os.environ.items() if k != "DOCKER_HOST"}
    return dict(os.environ)


def _down(cluster: KubeVirtCluster) -> subprocess.CompletedProcess | None:
    if cluster.down:
        return None
    cluster.down = True
    r, _ = kind_probes.cluster_down(cluster.name, cluster.workdir)
    return r


@pytest.fixture(scope="module", autouse=True)
def _only_this_module_counts_as_ours():
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(kind_probes, "OURS", PREFIX)  # read by kind_probes.snapshot at each call
        yield


@pytest.fixture(scope="module")
def kv_cluster(tmp_path_factory):
    """A kind cluster with KubeVirt installed (hack/cluster-up.sh --images-from-source, KubeVirt's
    images built here or found in the cache); deleted at the end (cluster-down) if a test did not."""
    runner.prepend_tools_dir()
    before = kind_probes.snapshot()
    lib_modules_existed = kind.LIB_MODULES.exists()
    workdir = tmp_path_factory.mktemp("kv-cluster")
    r = subprocess.run(
        ["bash", str(REPO / "hack/cluster-up.sh"), "--images-from-source", "--name", NAME, "--workdir", str(workdir),
         "--kubevirt-version", KUBEVIRT],
        capture_output=True,
        text=True,
        timeout=3 * 3600,
        env=_env_without_project_docker_host(),
    )  # fmt: skip
    cluster = KubeVirtCluster(
        NAME,
        workdir,
        kind_probes.printed(r.stdout, "KUBECONFIG") or "",
        kind_probes.printed(r.stdout, "DOCKER_HOST"),
        before,
        lib_modules_existed,
    )
    try:
        assert r.returncode == 0, f"hack/cluster-up.sh exited {r.returncode}:\n{r.stderr[-4000:]}"
        yield cluster
    finally:
        _down(cluster)


# -- what the cluster and the host hold ----------------------------------------------------------
def _kubevirt_crs(kubeconfig: str) -> list[dict]:
    """What the suite may change and must put back: every KubeVirt CR's spec, labels, annotations,
    finalizers (metadata.resourceVersion/generation move with any write and are not compared)."""
    items = json.loads(kubectl(kubeconfig, "get", "kubevirt", "-A", "-o", "json").stdout)["items"]
    return [
        {
            "ref": f"{cr['metadata']['namespace']}/{cr['metadata']['name']}",
            "spec": cr.get("spec"),
            "labels": cr["metadata"].get("labels"),
            "annotations": cr["metadata"].get("annotations"),
            "finalizers": cr["metadata"].get("finalizers"),
        }
        for cr in items
    ]


def _host_processes_of(marker: str) -> list[str]:
    """Processes on the host (the kind node's too: they share the kernel) whose command line names
    ``marker``: the child run itself, QEMU (libvirt names the domain <namespace>_<vm>)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline:
            found.append(f"{proc.name}: {cmdline[:160]}")
    return found


def _run_namespaces(output: str) -> set[str]:
    """The run's namespace(s), as its progress lines name them (``slirp-conformance-<hex>/<vm>``)."""
    import re

    return set(re.findall(r"(slirp-conformance-[0-9a-f]{6})/", output))


def _suite_args(cluster_name: str, *extra: str) -> list[str]:
    return [
        *kind_probes.kind_run_args(cluster_name),
        "--timeout-scale",
        TIMEOUT_SCALE,
        *extra,
    ]


def _private_tmp(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """The child run's TMPDIR: everything it makes with tempfile lands here, so "no temp dir left"
    is checkable on a machine where other runs write to /tmp too."""
    tmp = tmp_path / "child-tmp"
    tmp.mkdir()
    return tmp, {"TMPDIR": str(tmp)}


def _assert_nothing_left(cluster: KubeVirtCluster, namespaces: set[str], tmp: Path, host_before) -> None:
    left = kind_probes.wait_no_run_leftovers(cluster.kubeconfig)
    assert not left, f"the run left {left} in the cluster"
    assert namespaces, "premise: the run's namespace is known (else no QEMU of it could be looked for)"
    processes = [p for ns in namespaces for p in _host_processes_of(f"guest={ns}_")]
    assert not processes, f"the run's QEMU still runs: {processes}"
    assert not list(tmp.iterdir()), f"the run left temp files: {sorted(p.name for p in tmp.iterdir())}"
    # the cluster (and so /lib/modules, which kind mounts) is there before and after the run
    host = _host_leaks_since(host_before, lib_modules_existed=True)
    assert host == {}, f"the run left on the host: {host}"


def _outcome_summary(run: suite_runner.SuiteRun) -> str:
    return f"exit {run.returncode}; failed {sorted(run.failed)}; skipped {sorted(run.ids('skipped'))}"


# -- the runs on the shared cluster ---------------------------------------------------------------
def test_a_passing_run_puts_the_kubevirt_cr_back_and_leaves_nothing(kv_cluster, tmp_path):
    """The whole contract and the KubeVirt-only suite pass on the real stack; the run registers the
    binding in the CR (seen by a poller: the premise that there was something to restore) and puts
    the CR back exactly."""
    before = _kubevirt_crs(kv_cluster.kubeconfig)
    assert before and "slirp" not in json.dumps(before), f"premise: a CR without the slirp binding: {before}"
    host_before = kind_probes.snapshot()
    seen_registered: list[bool] = []
    done = threading.Event()

    def watch_cr() -> None:
        while not done.wait(2):
            try:
                if "network-slirp-binding" in json.dumps(_kubevirt_crs(kv_cluster.kubeconfig)):
                    seen_registered.append(True)
            except (AssertionError, subprocess.SubprocessError):
                pass  # an API hiccup under load: the next poll

    poller = threading.Thread(target=watch_cr, daemon=True)
    poller.start()
    tmp, env = _private_tmp(tmp_path)
    try:
        run = suite_runner.run_suite(tmp_path, *_suite_args(kv_cluster.name, "--keep-cluster"), timeout=3600, env=env)
    finally:
        done.set()
        poller.join(30)
    assert run.returncode == 0 and (run.report or {}).get("outcome") == "CONFORMANT", (
        f"{_outcome_summary(run)}:\n{run.output[-4000:]}"
    )
    assert run.ids("skipped") == ALLOWED_SKIPS, _outcome_summary(run)
    passed_modules = {t.split("::")[0] for t in run.ids("passed")}
    assert passed_modules == CONTRACT_MODULES | {"test_slirp_kubevirt"}, passed_modules
    assert seen_registered, "premise: the run never registered the binding in the CR"
    assert _kubevirt_crs(kv_cluster.kubeconfig) == before, "the CR changed across the passing run"
    _assert_nothing_left(kv_cluster, _run_namespaces(run.output), tmp, host_before)


def _set_unprivileged_icmp(cluster: KubeVirtCluster, enabled: bool) -> None:
    """containerd's CRI setting in the node (kind's config.toml, which the suite pins false), applied
    by restarting containerd: running pods keep their containers, new pods get the new range."""
    config = "/etc/containerd/config.toml"
    old, new = ("false", "true") if enabled else ("true", "false")
    cluster.docker(
        "exec",
        cluster.node,
        "sh",
        "-c",
        f"sed -i 's/enable_unprivileged_icmp = {old}/enable_unprivileged_icmp = {new}/' {config} "
        "&& systemctl restart containerd",
    )
    waits.wait_for(
        f"containerd on {cluster.node} to run with enable_unprivileged_icmp = {new}",
        lambda: kind.effective_containerd_settings(cluster.node, run=kind_probes.node_runner(cluster.docker_host)),
        120,
        accept=lambda s: s.get("enable_unprivileged_icmp") is enabled,
        describe=str,
    )


def _run_busybox_pod(kubeconfig: str, name: str) -> None:
    """A pod from the peer busybox KubeVirt's images brought into the node (no other image there)."""
    from slirp_conformance.kubevirt_images import build

    peer = build.build(KUBEVIRT).peer_image  # cached: cluster-up built it and loaded it into the node
    manifest = kind_probes.pod_manifest(name, "exec sleep 3600").replace(kind_probes.BUSYBOX_IMAGE, peer)
    kubectl(kubeconfig, "apply", "-f", "-", input=manifest)
    kubectl(kubeconfig, "wait", "--for=condition=Ready", f"pod/{name}", "--timeout=300s", timeout=320)


def test_unprivileged_icmp_in_pods_turns_exactly_the_icmp_checks_red(kv_cluster, tmp_path):
    """containerd >= 2.0's default (enable_unprivileged_icmp = true): QEMU in the launcher pod may
    open ping sockets, so slirp forwards the guest's echo requests and they are answered. Exactly the
    ICMP checks (both channels) fail; every other clause as in a passing run; the CR is put back."""
    before = _kubevirt_crs(kv_cluster.kubeconfig)
    host_before = kind_probes.snapshot()
    _set_unprivileged_icmp(kv_cluster, True)
    tmp, env = _private_tmp(tmp_path)
    try:
        # premise: a new pod on this node gets the open range (the pin, not something else, decides)
        kubectl(kv_cluster.kubeconfig, "delete", "pod", "icmp-open", "--ignore-not-found", "--wait=true")
        _run_busybox_pod(kv_cluster.kubeconfig, "icmp-open")
        assert kind_probes.ping_group_range(kv_cluster.kubeconfig, "icmp-open") == "0 2147483647"
        kubectl(kv_cluster.kubeconfig, "delete", "pod", "icmp-open", "--wait=true", timeout=180)
        run = suite_runner.run_suite(tmp_path, *_suite_args(kv_cluster.name, "--keep-cluster"), timeout=3600, env=env)
    finally:
        _set_unprivileged_icmp(kv_cluster, False)
    assert run.returncode == 1 and run.failed == ICMP_RED, (
        f"unexpected red {sorted(run.failed - ICMP_RED)}, unexpected green {sorted(ICMP_RED - run.failed)}; "
        f"{_outcome_summary(run)}:\n{run.output[-3000:]}"
    )
    assert run.ids("skipped") == ALLOWED_SKIPS, _outcome_summary(run)
    assert (run.report or {}).get("outcome") == "NOT CONFORMANT", (run.report or {}).get("outcome")
    assert _kubevirt_crs(kv_cluster.kubeconfig) == before, "the CR changed across the failing run"
    _assert_nothing_left(kv_cluster, _run_namespaces(run.output), tmp, host_before)


def test_ctrl_c_while_the_vmi_runs_puts_the_cr_back_and_leaves_nothing(kv_cluster, tmp_path):
    """SIGINT once the run's VMI is Running (binding registered, namespace, peers and VM made)."""
    before = _kubevirt_crs(kv_cluster.kubeconfig)
    host_before = kind_probes.snapshot()

    namespaces: set[str] = set()

    def vmi_running(_pid: int) -> bool:
        try:
            vmis = json.loads(kubectl(kv_cluster.kubeconfig, "get", "vmis", "-A", "-o", "json").stdout)["items"]
        except (AssertionError, subprocess.SubprocessError):
            return False
        running = {
            v["metadata"]["namespace"]
            for v in vmis
            if v["metadata"]["namespace"].startswith("slirp-conformance-")
            and v.get("status", {}).get("phase") == "Running"
        }
        namespaces.update(running)
        return bool(running)

    tmp, env = _private_tmp(tmp_path)
    code, output = suite_runner.interrupt_suite(
        tmp_path,
        *_suite_args(kv_cluster.name, "--keep-cluster"),
        when="the run's VMI Running on the kind cluster",
        ready=vmi_running,
        timeout=1800,
        env=env,
    )
    assert code == 2, f"expected exit 2 (interrupted), got {code}:\n{output[-3000:]}"
    assert "interrupted; cleaning up" in output, output[-2000:]
    assert _kubevirt_crs(kv_cluster.kubeconfig) == before, (
        f"the CR changed across the interrupted run:\n{output[-2000:]}"
    )
    _assert_nothing_left(kv_cluster, namespaces, tmp, host_before)


def test_cluster_down_leaves_the_host_as_before_the_cluster(kv_cluster):
    r = _down(kv_cluster)
    assert r is not None and r.returncode == 0, r.stderr[-3000:] if r else "already down"

    assert _host_leaks_since(kv_cluster.before, kv_cluster.lib_modules_existed) == {}
    from slirp_conformance import docker_daemon

    # cluster-down stops the project's dockerd when this cluster was its last user: gone with it then
    if docker_daemon.server_version(kv_cluster.docker_host) is not None:
        assert kv_cluster.name not in kind.existing_clusters(run=kind_probes.node_runner(kv_cluster.docker_host))


def _host_leaks_since(before: kind_probes.KindHostState, lib_modules_existed: bool) -> dict[str, object]:
    """What is on the host now that was not ``before`` (waiting up to 120 s for it to go)."""

    def leaks() -> dict[str, object]:
        found = kind_probes.snapshot().leaked_since(before)
        # KindHostState counts /lib/modules only while no other run's container is there: with other
        # clusters up before and none after, a /lib/modules someone else's cluster made (here one
        # from 09:09, before any of these) looked like ours. Ours only when it was not there before.
        if lib_modules_existed:
            found.pop("lib_modules", None)
        return found

    return waits.wait_for(
        "the host to be as it was before", leaks, 120, accept=lambda f: not f, describe=lambda f: f"left: {f}"
    )


# -- a run that made its own cluster ---------------------------------------------------------------
def test_ctrl_c_while_installing_kubevirt_removes_the_cluster_the_run_made(tmp_path):
    """No --keep-cluster: the run creates the cluster, loads KubeVirt's images, and gets SIGINT while
    it waits for KubeVirt to be Available. Exit 2; the cluster, its network and volumes, and the
    project's dockerd (when this run started it) are gone; no temp dir of the run left."""
    runner.prepend_tools_dir()
    name = f"{PREFIX}-own-{RUN}"
    before = kind_probes.snapshot()
    lib_modules_existed = kind.LIB_MODULES.exists()
    tmp, env = _private_tmp(tmp_path)
    code, output = suite_runner.interrupt_suite(
        tmp_path,
        *_suite_args(name),
        when="the run to start installing KubeVirt on its cluster",
        ready=lambda _pid: _operator_deployed(name),
        timeout=3600,
        env=env,
    )
    assert code == 2, f"expected exit 2 (interrupted), got {code}:\n{output[-3000:]}"
    assert not list(tmp.iterdir()), f"the run left temp files: {sorted(p.name for p in tmp.iterdir())}"
    assert _host_leaks_since(before, lib_modules_existed) == {}


def _operator_deployed(name: str) -> bool:
    """KubeVirt's operator Deployment exists in the run's cluster: the install has begun."""
    from slirp_conformance import docker_daemon

    r = subprocess.run(
        ["docker", "-H", docker_daemon.project_host(), "exec", f"{name}-control-plane", "kubectl",
         "--kubeconfig", "/etc/kubernetes/admin.conf", "get", "deployment", "-n", "kubevirt", "virt-operator"],
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    return r.returncode == 0
