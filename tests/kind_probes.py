"""What the kind self-tests look at: a busybox image built here, pods from it, and what a cluster
may leave on the host (containers, volumes, networks, processes, mounts, the project's dockerd)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from slirp_conformance import docker_daemon, image_archive, mounts, waits
from slirp_conformance.checkout import REPO
from slirp_conformance.cluster import kind, runner, versions

# The pins the self-tests' clusters are built for: KUBEVIRT_DEFAULT_VERSION's, or SLIRP_KIND_SELFTEST_KUBEVIRT's
# (e.g. v1.1.0, whose Kubernetes 1.27 builds with an older Go: about 30 min cold, so not in CI).
KUBEVIRT = os.environ.get("SLIRP_KIND_SELFTEST_KUBEVIRT") or str(versions.default_version())

# What a suite run on kind skips, exactly, so an accidental skip is a failure of the self-test, not a
# quieter green. From v1.5 binding plugins are GA: no NetworkBindingPlugins gate to find or turn off.
GATE_CHECKS = {
    "test_slirp_kubevirt::test_feature_gate_present_where_needed",
    "test_slirp_kubevirt::test_binding_plugin_refused_while_the_feature_gate_is_off",
}


def kind_run_args(cluster_name: str) -> list[str]:
    """The options of a suite run on the self-tests' kind cluster, every image built here."""
    return [
        "--target=kind",
        "--images-from-source",
        "--kubevirt-version",
        KUBEVIRT,
        "--kind-cluster-name",
        cluster_name,
    ]


def skipped_on_kind(kubevirt: str = KUBEVIRT) -> set[str]:
    """The test ids a passing suite run on kind skips at release ``kubevirt``."""
    gated = versions.needs_feature_gate(versions.parse_kubevirt_version(kubevirt))
    return set() if gated else set(GATE_CHECKS)


KUBERNETES = versions.pins_for(KUBEVIRT).kubernetes
RUN = os.getpid() % 100000  # cluster names of concurrent runs on one machine differ

BUSYBOX_IMAGE = "slirp-conformance/selftest-busybox:1"
# Debian's static busybox: its wget segfaults with -T (on the host too), so HTTP goes through nc.
APPLETS = ("sh", "cat", "echo", "printf", "httpd", "nc", "nslookup", "ping", "sleep", "ip", "hostname", "tr")


def busybox_archive(work: Path) -> Path:
    """A busybox image (Debian's busybox-static and applet links), as an archive for `kind load image-archive`."""
    root = work / "busybox-root"
    (root / "bin").mkdir(parents=True)
    shutil.copyfile(docker_daemon.BUSYBOX, root / "bin/busybox")
    (root / "bin/busybox").chmod(0o755)
    for applet in APPLETS:
        (root / "bin" / applet).symlink_to("busybox")
    (root / "www").mkdir()
    (root / "www/hello").write_text("hello through the kubelet\n")
    layer = image_archive.layer_from_dir(root, work / "busybox-layer.tar")
    archive = work / "busybox.tar"
    image_archive.write_file([image_archive.Image((BUSYBOX_IMAGE,), (layer,), env=("PATH=/bin",))], archive)
    return archive


def tool(name: str) -> str:
    """kind or kubectl as hack/cluster-up.sh installs them (.tools/bin, absent in a clean clone until
    the first cluster is up, so not on PATH then), else whatever PATH has."""
    built = runner.TOOLS_DIR / name
    return str(built) if built.is_file() else name


def kubectl(
    kubeconfig: str, *args: str, input: str | None = None, timeout: float = 120, check: bool = True
) -> subprocess.CompletedProcess:
    r = subprocess.run(
        [tool("kubectl"), "--kubeconfig", kubeconfig, *args],
        capture_output=True,
        text=True,
        input=input,
        timeout=timeout,
    )
    if check and r.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} exited {r.returncode}: {r.stderr.strip()[-500:]}")
    return r


def run_leftovers(kubeconfig: str) -> list[str]:
    """The suite's namespaces, and any VM or VMI, still in the cluster."""
    found = json.loads(kubectl(kubeconfig, "get", "namespaces,vms,vmis", "-A", "-o", "json").stdout)["items"]
    return [
        f"{o['kind']} {o['metadata'].get('namespace', '')}/{o['metadata']['name']}"
        for o in found
        if o["kind"] != "Namespace" or o["metadata"]["name"].startswith("slirp-conformance-")
    ]


def wait_no_run_leftovers(kubeconfig: str) -> list[str]:
    """What a run left in the cluster: it deletes its namespace and waits for it, so this only gives
    a slow namespace controller up to 120 s; whatever is still there then is returned."""
    try:
        return waits.wait_for(
            "the run's namespace, VM and VMI to be gone",
            lambda: run_leftovers(kubeconfig),
            120,
            accept=lambda left: not left,
            describe=lambda left: f"still there: {left}",
        )
    except waits.WaitTimeout:
        return run_leftovers(kubeconfig)


def pod_manifest(name: str, command: str, node: str | None = None) -> str:
    spec: dict = {
        "containers": [
            {
                "name": "main",
                "image": BUSYBOX_IMAGE,
                "imagePullPolicy": "Never",
                "command": ["/bin/sh", "-c", command],
                "ports": [{"containerPort": 8080}],
            }
        ],
        "terminationGracePeriodSeconds": 1,
    }
    if node:
        spec["nodeName"] = node  # past the scheduler (the control plane's NoSchedule taint)
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "labels": {"app": name}},
            "spec": spec,
        }
    )


SERVE = "echo started-$(hostname); exec httpd -f -p 8080 -h /www"


def run_pod(kubeconfig: str, name: str, command: str = SERVE, node: str | None = None) -> dict:
    kubectl(kubeconfig, "apply", "-f", "-", input=pod_manifest(name, command, node))
    kubectl(kubeconfig, "wait", "--for=condition=Ready", f"pod/{name}", "--timeout=180s", timeout=200)
    return json.loads(kubectl(kubeconfig, "get", "pod", name, "-o", "json").stdout)


def http_get(kubeconfig: str, pod: str, host: str, path: str = "/hello", port: int = 8080) -> str:
    """The body of ``GET path`` from ``host:port``, asked from inside ``pod`` (busybox nc)."""
    request = f"printf 'GET {path} HTTP/1.0\\r\\n\\r\\n' | nc -w 10 {host} {port}"
    out = kubectl(kubeconfig, "exec", pod, "--", "sh", "-c", request).stdout
    return out.split("\n\n", 1)[1] if "\n\n" in out else out  # text mode made the \r\n of HTTP \n


def http_get_through_new_service(kubeconfig: str, pod: str, service_ip: str, port: int, budget: float = 60) -> str:
    """``http_get`` through a Service just created: kube-proxy programs a new Service's rules some
    time after its EndpointSlice (asynchronously; under CI load a first request 10 s later still
    timed out), so ask again, bounded, until a body comes back. The last failure is in the timeout."""
    return waits.wait_for(
        f"an answer from {pod} through Service {service_ip}:{port} (kube-proxy's rules programmed)",
        lambda: http_get(kubeconfig, pod, service_ip, port=port),
        waits.scaled(budget),
        retry_on=(AssertionError,),
    )


def node_runner(docker_host: str | None):
    """A ``runner.run`` that talks to the docker engine a cluster was made on (its DOCKER_HOST)."""

    def run(argv, **kwargs):
        env = dict(os.environ)
        if docker_host:
            env["DOCKER_HOST"] = docker_host
        return runner.run(argv, env=env, **{k: v for k, v in kwargs.items() if k != "env"})

    return run


def ping_group_range(kubeconfig: str, pod: str) -> str:
    out = kubectl(kubeconfig, "exec", pod, "--", "cat", "/proc/sys/net/ipv4/ping_group_range").stdout
    return " ".join(out.split())


# -- leaks --------------------------------------------------------------------------------------
# Other runs on this machine (another engineer's clusters on the project's dockerd) are not leaks of
# ours: what belongs to a container is attributed by the container's name, what the daemon itself
# holds only counts while no other lease holds the daemon.

OURS = "slirp-selftest"  # the name prefix of every cluster and container these self-tests make


def ours(name: str) -> bool:
    """A cluster, container or lease of THIS run: the prefix and the run's id (``-<RUN>``). Another
    self-test run on the shared dockerd (another engineer's checkout) uses the same prefix; its
    clusters coming and going are not this run's leaks."""
    return OURS in name and re.search(rf"-{RUN}(-|$)", name) is not None


@dataclass(frozen=True)
class KindHostState:
    containers: frozenset[str]  # our containers (name) in the project's dockerd
    volumes: frozenset[str]  # volumes no other container uses
    networks: frozenset[str]  # bridges (docker0, br-*) of networks no other container is on
    processes: frozenset[int]  # shims of our containers; the daemon's own while nobody else holds it
    mounts: frozenset[str]  # mounts under the daemon's dirs not of another container
    dockerd_running: bool  # the project's dockerd up with no other holder
    lib_modules: bool

    def leaked_since(self, before: KindHostState) -> dict[str, object]:
        leaks: dict[str, object] = {}
        for name in ("containers", "volumes", "networks", "processes", "mounts"):
            extra = set(getattr(self, name)) - set(getattr(before, name))
            if extra:
                leaks[name] = sorted(extra)
        for name in ("dockerd_running", "lib_modules"):
            if getattr(self, name) and not getattr(before, name):
                leaks[name] = True
        return leaks


def _containers(data_root: Path) -> dict[str, dict]:
    """Container id -> its name, volumes, network ids, sandbox and overlay mount (from the data-root)."""
    found = {}
    for folder in (data_root / "containers").glob("*") if (data_root / "containers").is_dir() else ():
        try:
            config = json.loads((folder / "config.v2.json").read_text())
        except (OSError, ValueError):
            continue
        mount_id = data_root / "image/overlay2/layerdb/mounts" / folder.name / "mount-id"
        found[folder.name] = {
            "name": config.get("Name", "").lstrip("/"),
            "volumes": {m.get("Name") for m in (config.get("MountPoints") or {}).values() if m.get("Name")},
            "bridges": {
                f"br-{n['NetworkID'][:12]}"
                for n in (config.get("NetworkSettings", {}).get("Networks") or {}).values()
                if n.get("NetworkID")
            },
            "mounts": {config.get("NetworkSettings", {}).get("SandboxKey") or ""}
            | ({str(data_root / "overlay2" / mount_id.read_text().strip() / "merged")} if mount_id.exists() else set()),
        }
    return found


def _entries(folder: Path, skip: tuple[str, ...] = ()) -> frozenset[str]:
    return frozenset(p.name for p in folder.iterdir() if p.name not in skip) if folder.is_dir() else frozenset()


def snapshot() -> KindHostState:
    data_root = docker_daemon.state_dir() / "data-root"
    containers = _containers(data_root)
    mine = {cid: c for cid, c in containers.items() if ours(c["name"])}
    foreign = [c for cid, c in containers.items() if cid not in mine]
    foreign_volumes = set().union(*(c["volumes"] for c in foreign)) if foreign else set()
    foreign_bridges = set().union(*(c["bridges"] for c in foreign)) if foreign else set()
    foreign_mounts = set().union(*(c["mounts"] for c in foreign)) if foreign else set()
    others_hold = any(not (ours(h) or h.startswith("selftest")) for h in docker_daemon.live_leases())
    running = docker_daemon.server_version(docker_daemon.project_host()) is not None
    daemon_processes = frozenset(docker_daemon.processes_of((str(docker_daemon.run_dir()), str(data_root))))
    shims = frozenset(pid for pid in daemon_processes if any(cid in _cmdline(pid) for cid in mine))
    bridges = {p.name for p in Path("/sys/class/net").iterdir() if p.name == "docker0" or p.name.startswith("br-")}
    return KindHostState(
        containers=frozenset(c["name"] for c in mine.values()),
        volumes=_entries(data_root / "volumes", skip=("metadata.db", "backingFsBlockDev")) - foreign_volumes,
        networks=frozenset(bridges - foreign_bridges - ({"docker0"} if others_hold else set())),
        processes=shims if others_hold else daemon_processes,
        mounts=frozenset(
            m
            for m in mounts.mounted_under(data_root, docker_daemon.run_dir())
            if m not in foreign_mounts and not (others_hold and m == str(data_root))
        ),
        dockerd_running=running and not others_hold,
        lib_modules=kind.LIB_MODULES.exists() and not foreign,
    )


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def wait_no_leaks(before: KindHostState, budget: float = 30) -> KindHostState:
    return waits.wait_for(
        "the host to be as it was before the cluster",
        snapshot,
        budget,
        accept=lambda s: not s.leaked_since(before),
        describe=lambda s: f"left behind: {s.leaked_since(before)}",
    )


def cluster_up(
    name: str, workdir: Path, *extra: str, timeout: float = 3600, kubevirt: bool = False
) -> tuple[subprocess.CompletedProcess, float]:
    """``hack/cluster-up.sh --images-from-source``; ``kubevirt``: KubeVirt installed too (its images built
    here, loaded into the nodes, installed through virt-operator), else ``--no-kubevirt``."""
    repo = REPO
    started = time.monotonic()
    env = (
        {k: v for k, v in os.environ.items() if k != "DOCKER_HOST"}
        if os.environ.get("DOCKER_HOST") == docker_daemon.project_host()
        else dict(os.environ)
    )
    r = subprocess.run(
        [
            "bash",
            str(repo / "hack/cluster-up.sh"),
            "--images-from-source",
            *([] if kubevirt else ["--no-kubevirt"]),
            "--name",
            name,
            "--workdir",
            str(workdir),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    return r, time.monotonic() - started


def cluster_down(name: str, workdir: Path, timeout: float = 600) -> tuple[subprocess.CompletedProcess, float]:
    repo = REPO
    started = time.monotonic()
    r = subprocess.run(
        ["bash", str(repo / "hack/cluster-down.sh"), "--name", name, "--workdir", str(workdir)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return r, time.monotonic() - started


def printed(output: str, key: str) -> str | None:
    return next((line.split("=", 1)[1] for line in output.splitlines() if line.startswith(f"{key}=")), None)


@dataclass
class Cluster:
    """A kind cluster one of the self-tests made with hack/cluster-up.sh (deleted by ``down``)."""

    name: str
    workdir: Path
    kubeconfig: str
    docker_host: str | None
    before: KindHostState
    up_seconds: float
    down: bool = False

    def docker(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        argv = ["docker", *(["-H", self.docker_host] if self.docker_host else []), *args]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        if check and r.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} exited {r.returncode}: {r.stderr.strip()[-500:]}")
        return r

    def env(self) -> dict[str, str]:
        """The environment kind and docker need to reach this cluster's engine."""
        return {**os.environ, **({"DOCKER_HOST": self.docker_host} if self.docker_host else {})}


def up(name: str, workdir: Path, *extra: str, kubevirt: bool = False) -> Cluster:
    """hack/cluster-up.sh for cluster ``name``; on failure it is deleted again and the test fails with
    cluster-up's own words."""
    import pytest

    before = snapshot()
    r, seconds = cluster_up(name, workdir, *extra, kubevirt=kubevirt)
    cluster = Cluster(
        name, workdir, printed(r.stdout, "KUBECONFIG") or "", printed(r.stdout, "DOCKER_HOST"), before, seconds
    )
    if r.returncode != 0:
        down(cluster)
        pytest.fail(f"hack/cluster-up.sh exited {r.returncode}:\n{r.stderr[-4000:]}")
    assert Path(cluster.kubeconfig).is_file(), r.stdout
    return cluster


def down(cluster: Cluster) -> subprocess.CompletedProcess | None:
    """hack/cluster-down.sh, once (None when it already ran)."""
    if cluster.down:
        return None
    cluster.down = True
    r, _ = cluster_down(cluster.name, cluster.workdir)
    return r
