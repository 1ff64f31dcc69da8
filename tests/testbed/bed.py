"""The cluster test bed's control plane: real etcd, kube-apiserver, kube-controller-manager,
kube-scheduler and kwok (one simulated node) on loopback. KubeVirt's parts: tests/testbed/kubevirt.py.

``up`` starts each component as a detached local process with its own certificates in a state
directory under the temp dir, writes an admin kubeconfig to the path given, and records what it
started in ``<kubeconfig>.testbed.json``; ``down`` stops exactly that and removes the state
directory, the record and the kubeconfig. An ``up`` that fails or is interrupted stops what it
had started before it re-raises.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import ssl
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from slirp_conformance import waits
from slirp_conformance.cluster import runner
from slirp_conformance.errors import SetupError
from slirp_conformance.reference.reference_vm import RUN_PREFIX
from tests.testbed import processes
from tests.testbed.components import Binaries
from tests.testbed.pki import CertificateAuthority, KeyPair, write_signing_key
from tests.testbed.service_address import NEEDS_ROOT  # the one part that needs more than a user has

log = logging.getLogger("slirp.testbed")

STATE_DIR_PREFIX = "slirp-testbed-"
NODE_NAME = "testbed-node"
LOOPBACK = "127.0.0.1"
SERVICE_CIDR = "10.96.0.0/16"  # only allocated from (ClusterIPs): no traffic is ever routed to it
POD_CIDR = "10.244.0.0/16"  # kwok hands out pod IPs from it; the node agent's labs hold those it backs
POD_IP_START = "10.244.0.1"  # kwok's --cidr names the first address it hands out (else .0, the network's)
KUBELET_CLIENT_CN = "kube-apiserver-kubelet-client"  # who the API server is to a kubelet (the node agent)
EXEC_NAMESPACE = "testbed-exec"  # `kubectl exec` into its pods runs on this host (kwok ClusterExec)
FORWARDED_POD_PORT = 8080  # port-forward to it, in EXEC_NAMESPACE, reaches ports["port-forward-target"]


def unusable_reason() -> str | None:
    """Why the bed cannot run on this machine, or None."""
    return NEEDS_ROOT if os.geteuid() != 0 else None


def record_path(kubeconfig: Path) -> Path:
    return kubeconfig.with_name(kubeconfig.name + ".testbed.json")


@dataclass
class BedRecord:
    """What ``up`` started: enough for ``down`` (in another process) to stop it all."""

    kubeconfig: str
    state_dir: str
    kubernetes_version: str
    ports: dict[str, int] = field(default_factory=dict)
    processes: list[processes.Proc] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def save(self) -> None:
        path = record_path(Path(self.kubeconfig))
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps({**self.__dict__, "processes": [p.to_json() for p in self.processes]}, indent=2))
        os.replace(tmp, path)

    @classmethod
    def load(cls, kubeconfig: Path) -> BedRecord:
        path = record_path(kubeconfig)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise SetupError(
                f"no test bed is recorded for {kubeconfig} ({path} is missing): "
                f"nothing to stop, or pass the --kubeconfig that `up` was given"
            ) from None
        except (OSError, ValueError) as e:
            raise SetupError(
                f"cannot read the test-bed record {path} ({e}): stop its processes by hand (see `ps`), then delete it"
            ) from None
        data["processes"] = [processes.Proc(**p) for p in data.get("processes", [])]
        return cls(**data)


def _kubeconfig(server: str, ca: bytes, client: KeyPair, user: str) -> dict:
    import base64

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    return {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "testbed",
        "clusters": [{"name": "testbed", "cluster": {"server": server, "certificate-authority-data": b64(ca)}}],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": b64(client.cert.read_bytes()),
                    "client-key-data": b64(client.key.read_bytes()),
                },
            }
        ],
        "contexts": [{"name": "testbed", "context": {"cluster": "testbed", "user": user}}],
    }


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


class TestBed:
    """One bed. ``up()`` once; ``down()`` (or ``stop(kubeconfig)`` from another process)."""

    __test__ = False  # not a pytest test class

    def __init__(self, binaries: Binaries, kubernetes_version: str, kubeconfig: Path) -> None:
        self.bin = binaries
        self.kubeconfig = kubeconfig.resolve()
        self.record = BedRecord(kubeconfig=str(self.kubeconfig), state_dir="", kubernetes_version=kubernetes_version)

    # -- public ---------------------------------------------------------------------------------
    def up(self) -> BedRecord:
        if record_path(self.kubeconfig).exists():
            raise SetupError(
                f"a test bed is already recorded for {self.kubeconfig}: run "
                f"`hack/testbed.sh down --kubeconfig {self.kubeconfig}` first"
            )
        if self.kubeconfig.exists():
            raise SetupError(f"{self.kubeconfig} exists and is not a test bed's: pass a new path to --kubeconfig")
        self.kubeconfig.parent.mkdir(parents=True, exist_ok=True)
        self.state = Path(tempfile.mkdtemp(prefix=STATE_DIR_PREFIX))
        self.record.state_dir = str(self.state)
        self.record.save()
        try:
            self._pki()
            self.phase("etcd", self._start_etcd)
            self.phase("kube-apiserver", self._start_apiserver)
            self.phase("kube-controller-manager", self._start_controller_manager)
            self.phase("kube-scheduler", self._start_scheduler)
            self.phase("kwok", self._start_kwok)
        except BaseException:
            print("testbed: start failed or interrupted: stopping what was started", file=sys.stderr, flush=True)
            stop(self.kubeconfig)
            raise
        return self.record

    def kubectl(
        self, *args: str, timeout: float | None = None, input: str | None = None, check: bool = True
    ) -> runner.Result:
        return runner.run(
            [str(self.bin.kubectl), "--kubeconfig", str(self.kubeconfig), *args],
            timeout=timeout or waits.timeout("api-probe") * 6,
            input=input,
            check=check,
        )

    # -- phases ---------------------------------------------------------------------------------
    def phase(self, name: str, start) -> None:
        """Run one start step, record and print how long it took."""
        started = time.monotonic()
        start()
        self.record.timings[name] = round(time.monotonic() - started, 2)
        self.record.save()
        print(f"testbed: {name} ready ({self.record.timings[name]:.1f} s)", file=sys.stderr, flush=True)

    def _pki(self) -> None:
        pki = self.state / "pki"
        pki.mkdir()
        self.ca = CertificateAuthority(pki)
        hosts = (
            LOOPBACK,
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
            "10.96.0.1",
        )
        self.apiserver_pair = self.ca.issue("kube-apiserver", "kube-apiserver", hosts=hosts, server=True)
        self.kubelet_client = self.ca.issue(
            "apiserver-kubelet-client", KUBELET_CLIENT_CN, organization="system:masters", client=True
        )
        self.front_proxy = self.ca.issue("front-proxy-client", "front-proxy-client", client=True)
        self.admin = self.ca.issue("admin", "testbed-admin", organization="system:masters", client=True)
        # Controller-manager as kubeadm runs it: its own identity, one service account per controller.
        self.kcm = self.ca.issue("kube-controller-manager", "system:kube-controller-manager", client=True)
        self.scheduler = self.ca.issue("kube-scheduler", "system:kube-scheduler", client=True)
        self.scheduler_serving = self.ca.issue(
            "kube-scheduler-serving", "kube-scheduler", hosts=(LOOPBACK, "localhost"), server=True
        )
        self.kwok_client = self.ca.issue("kwok", "kwok-controller", organization="system:masters", client=True)
        self.kwok_serving = self.ca.issue("kwok-serving", NODE_NAME, hosts=(LOOPBACK, "localhost"), server=True)
        self.sa_key = pki / "service-account.key"
        self.sa_pub = write_signing_key(self.sa_key)

    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> processes.Proc:
        """Start a component detached and record it (``down`` stops it)."""
        with processes.signals_deferred():
            proc = processes.start(name, argv, self.state / f"{name}.log", env=env)
            self.record.processes.append(proc)
            self.record.save()
        return proc

    def _port(self, name: str) -> int:
        self.record.ports[name] = processes.free_port()
        return self.record.ports[name]

    def wait_ready(self, proc: processes.Proc, what: str, probe) -> None:
        """Wait (bounded) for ``probe()``; fail early with the log tail when the component exits."""

        def check():
            if not processes.alive(proc):
                raise SetupError(
                    f"{proc.name} exited during start-up; last lines of {proc.log}:\n{processes.log_tail(proc)}"
                )
            return probe()

        try:
            waits.wait_for(
                what,
                check,
                waits.timeout("testbed-component"),
                retry_on=(OSError, urllib.error.URLError, runner.CommandFailed),
            )
        except waits.WaitTimeout as e:
            raise SetupError(f"{e}; last lines of {proc.log}:\n{processes.log_tail(proc)}") from None

    def _start_etcd(self) -> None:
        client, peer = self._port("etcd-client"), self._port("etcd-peer")
        self.etcd_url = f"http://{LOOPBACK}:{client}"
        proc = self.spawn(
            "etcd",
            [
                str(self.bin.etcd),
                "--name=testbed",
                f"--data-dir={self.state / 'etcd'}",
                f"--listen-client-urls={self.etcd_url}",
                f"--advertise-client-urls={self.etcd_url}",
                f"--listen-peer-urls=http://{LOOPBACK}:{peer}",
                f"--initial-advertise-peer-urls=http://{LOOPBACK}:{peer}",
                f"--initial-cluster=testbed=http://{LOOPBACK}:{peer}",
                "--unsafe-no-fsync=true",  # a throw-away store: durability only costs time
                "--log-level=warn",
            ],
        )

        def healthy() -> bool:
            with urllib.request.urlopen(self.etcd_url + "/health", timeout=waits.timeout("api-probe")) as r:
                return json.loads(r.read()).get("health") == "true"

        self.wait_ready(proc, f"etcd at {self.etcd_url}/health", healthy)

    def _apiserver_get(self, path: str) -> str:
        ctx = ssl.create_default_context(cafile=str(self.ca.pair.cert))
        ctx.load_cert_chain(str(self.admin.cert), str(self.admin.key))
        with urllib.request.urlopen(self.server + path, context=ctx, timeout=waits.timeout("api-probe")) as r:
            return r.read().decode()

    def _start_apiserver(self) -> None:
        port = self._port("kube-apiserver")
        self.server = f"https://{LOOPBACK}:{port}"
        pki = self.state / "pki"
        proc = self.spawn(
            "kube-apiserver",
            [
                str(self.bin.kube_apiserver),
                f"--etcd-servers={self.etcd_url}",
                f"--bind-address={LOOPBACK}",
                f"--advertise-address={LOOPBACK}",
                f"--secure-port={port}",
                f"--tls-cert-file={self.apiserver_pair.cert}",
                f"--tls-private-key-file={self.apiserver_pair.key}",
                f"--client-ca-file={self.ca.pair.cert}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={self.sa_pub}",
                f"--service-account-signing-key-file={self.sa_key}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--authorization-mode=Node,RBAC",
                "--allow-privileged=true",
                # Endpoints refuse loopback addresses: nothing in the bed reaches the API through the
                # `kubernetes` Service, so its endpoints are not reconciled.
                "--endpoint-reconciler-type=none",
                f"--kubelet-client-certificate={self.kubelet_client.cert}",
                f"--kubelet-client-key={self.kubelet_client.key}",
                # Aggregation (KubeVirt's subresources API service) and the
                # kube-system/extension-apiserver-authentication ConfigMap that virt-api reads.
                f"--requestheader-client-ca-file={self.ca.pair.cert}",
                "--requestheader-allowed-names=front-proxy-client",
                "--requestheader-username-headers=X-Remote-User",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                f"--proxy-client-cert-file={self.front_proxy.cert}",
                f"--proxy-client-key-file={self.front_proxy.key}",
                "--enable-aggregator-routing=true",
                f"--cert-dir={pki}",
                "--profiling=false",
            ],
        )
        self.wait_ready(proc, f"kube-apiserver at {self.server}/readyz", lambda: self._apiserver_get("/readyz") == "ok")
        _write_private(
            self.kubeconfig,
            json.dumps(_kubeconfig(self.server, self.ca.cert_pem, self.admin, "testbed-admin"), indent=2),
        )

    def _component_kubeconfig(self, name: str, pair: KeyPair) -> Path:
        path = self.state / f"{name}.kubeconfig"
        _write_private(path, json.dumps(_kubeconfig(self.server, self.ca.cert_pem, pair, name)))
        return path

    def _start_controller_manager(self) -> None:
        proc = self.spawn(
            "kube-controller-manager",
            [
                str(self.bin.kube_controller_manager),
                f"--kubeconfig={self._component_kubeconfig('kube-controller-manager', self.kcm)}",
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={self.sa_key}",
                f"--root-ca-file={self.ca.pair.cert}",
                "--leader-elect=false",
                "--secure-port=0",  # nothing scrapes its metrics; readiness is judged by its work below
                "--controllers=*,-nodeipam",
            ],
        )
        # The service-account controller creating `default` in `default` proves the manager runs
        # with working credentials (its /healthz would only prove it started).
        self.wait_ready(
            proc,
            "kube-controller-manager to create the default service account",
            lambda: bool(
                self.kubectl("get", "serviceaccount", "default", "-n", "default", "-o", "name").stdout.strip()
            ),
        )

    def _start_scheduler(self) -> None:
        port = self._port("kube-scheduler")
        kubeconfig = self._component_kubeconfig("kube-scheduler", self.scheduler)
        proc = self.spawn(
            "kube-scheduler",
            [
                str(self.bin.kube_scheduler),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                f"--bind-address={LOOPBACK}",
                f"--secure-port={port}",
                "--leader-elect=false",
                f"--tls-cert-file={self.scheduler_serving.cert}",
                f"--tls-private-key-file={self.scheduler_serving.key}",
            ],
        )
        ctx = ssl.create_default_context(cafile=str(self.ca.pair.cert))

        def healthy() -> bool:  # /healthz is on the scheduler's always-allowed paths
            with urllib.request.urlopen(
                f"https://{LOOPBACK}:{port}/healthz", context=ctx, timeout=waits.timeout("api-probe")
            ) as r:
                return r.read().decode() == "ok"

        self.wait_ready(proc, f"kube-scheduler at https://{LOOPBACK}:{port}/healthz", healthy)

    def _start_kwok(self) -> None:
        port = self._port("kwok")
        # The node's kubelet endpoint is the node agent's (tests/testbed/node_kubelet.py): it serves
        # exec/port-forward into the pods whose network it provides and passes the rest to kwok.
        kubelet_port = self._port("node-kubelet")
        config = self.state / "kwok.yaml"
        forward_target = self._port("port-forward-target")  # nothing listens until a test does
        exec_dir = self.state / "exec"
        exec_dir.mkdir()
        # An explicit config with no stages: kwok then uses its built-in default stages and never
        # reads ~/.kwok/kwok.yaml (sigs.k8s.io/kwok pkg/config/flags.go). `kubectl exec` into a pod
        # of namespace EXEC_NAMESPACE runs the command on this host, in the bed's exec dir
        # (kwok's ClusterExec, local target): the API server proxies a real exec stream to kwok.
        config.write_text(
            json.dumps({"apiVersion": "config.kwok.x-k8s.io/v1alpha1", "kind": "KwokConfiguration", "options": {}})
            + "\n---\n"
            + json.dumps(
                {
                    "apiVersion": "kwok.x-k8s.io/v1alpha1",
                    "kind": "ClusterExec",
                    "metadata": {"name": "testbed-local"},
                    "spec": {
                        "selector": {"matchNamespaces": [EXEC_NAMESPACE]},
                        "execs": [{"local": {"workDir": str(exec_dir)}}],
                    },
                }
            )
            + "\n---\n"
            +
            # `kubectl port-forward` to port FORWARDED_POD_PORT of such a pod reaches
            # the bed's recorded port "port-forward-target" on loopback.
            json.dumps(
                {
                    "apiVersion": "kwok.x-k8s.io/v1alpha1",
                    "kind": "ClusterPortForward",
                    "metadata": {"name": "testbed-local"},
                    "spec": {
                        "selector": {"matchNamespaces": [EXEC_NAMESPACE]},
                        "forwards": [
                            {"ports": [FORWARDED_POD_PORT], "target": {"address": LOOPBACK, "port": forward_target}}
                        ],
                    },
                }
            )
            + "\n"
        )
        proc = self.spawn(
            "kwok",
            [
                str(self.bin.kwok),
                f"--config={config}",
                f"--kubeconfig={self._component_kubeconfig('kwok', self.kwok_client)}",
                f"--manage-single-node={NODE_NAME}",
                f"--node-ip={LOOPBACK}",
                f"--node-port={kubelet_port}",
                f"--server-address={LOOPBACK}:{port}",
                f"--tls-cert-file={self.kwok_serving.cert}",
                f"--tls-private-key-file={self.kwok_serving.key}",
                f"--cidr={POD_IP_START}/{POD_CIDR.split('/')[1]}",
                "--node-lease-duration-seconds=40",
            ],
        )
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": NODE_NAME,
                "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
                "labels": {
                    "kubernetes.io/hostname": NODE_NAME,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "type": "kwok",
                    # What virt-handler sets on a node it serves; launcher pods
                    # select it (virt-controller's template service).
                    "kubevirt.io/schedulable": "true",
                },
            },
        }
        self.kubectl("apply", "-f", "-", input=json.dumps(node))

        def node_ready() -> bool:
            out = self.kubectl(
                "get", "node", NODE_NAME, "-o", "jsonpath={.status.conditions[?(@.type=='Ready')].status}"
            ).stdout
            return out.strip() == "True"

        self.wait_ready(proc, f"kwok to report node {NODE_NAME} Ready", node_ready)


def stop(kubeconfig: Path) -> BedRecord:
    """Stop every process recorded for ``kubeconfig`` (newest first) and remove all the bed's files."""
    kubeconfig = kubeconfig.resolve()
    record = BedRecord.load(kubeconfig)
    errors = []
    for proc in reversed(record.processes):
        try:
            processes.stop(proc)
        except (waits.WaitTimeout, OSError) as e:
            errors.append(f"{proc.name} (pid {proc.pid}): {e}")
    for proc in record.processes:  # the node agent's VM run dirs (its labs died with it; a SIGKILL leaves the dirs)
        if proc.name == "node-agent" and not processes.alive(proc):
            for run_dir in Path(tempfile.gettempdir()).glob(f"{RUN_PREFIX}{proc.pid}-*"):
                shutil.rmtree(run_dir, ignore_errors=True)
    state_dir = Path(record.state_dir) if record.state_dir else None
    if state_dir and state_dir.name.startswith(STATE_DIR_PREFIX):
        shutil.rmtree(state_dir, ignore_errors=True)
    if errors:
        raise SetupError("could not stop: " + "; ".join(errors) + f" (record kept: {record_path(kubeconfig)})")
    kubeconfig.unlink(missing_ok=True)
    record_path(kubeconfig).unlink(missing_ok=True)
    return record
