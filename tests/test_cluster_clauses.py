"""Issue 20's cluster-only clauses against stand-ins of the cluster (no cluster needed): each passes on
KubeVirt's behaviour as its source has it, and a fault of the stack turns exactly that clause red.

The real stack runs them in tests/test_kind_kubevirt.py (KubeVirt v1.9.0 on kind, built here).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from dataclasses import replace
from types import SimpleNamespace

import pytest
from kubernetes import client

from slirp_conformance import waits
from slirp_conformance.checks.ports import GuestService
from slirp_conformance.cluster import versions
from slirp_conformance.evidence import VoidCheck
from slirp_conformance.target import ClusterService, NotOnThisTarget
from slirp_conformance.vmspec import conformance_vm, slirp_qemu_args
from suites import test_slirp_kubevirt, test_slirp_ports

SEARCH = ("ns.svc.cluster.local", "svc.cluster.local", "cluster.local")
IMAGE = "quay.io/kubevirt/network-slirp-binding:v1.9.0"
# virt-handler's SyncFailed event when the sidecar refuses the interface (v1.1.0 server.go + domain.go)
SIDECAR_REFUSAL = (
    'server error. command SyncVMI failed: "LibvirtError(...)": failed to create slirp configurator: '
    'iface "default" is not set with slirp network binding plugin'
)


def _record(ev):
    return ev


# -- registration under another name ---------------------------------------------------------------
class _KubeVirt:
    """KubeVirt at ``version`` as its source has it: from v1.9.0 virt-controller passes the binding's
    name to the sidecar, which then serves it; before, the sidecar serves only ``slirp`` and the VM
    fails with its refusal. ``fault`` names a defect of the stack."""

    def __init__(self, version: str, fault: str | None = None) -> None:
        self.version = versions.parse_kubevirt_version(version)
        self.sidecar_image = IMAGE
        self.spec = conformance_vm("vm-net-binding-slirp")
        self.contract = SimpleNamespace(search_domains=SEARCH)
        self.fault = fault
        self.bindings: dict[str, dict] = {"slirp": {"sidecarImage": IMAGE}}
        self.created: list[tuple[str, str | None, bool]] = []
        self.deleted: list[str] = []

    # what the clause reads and does
    def kubevirt_cr(self) -> dict:
        return {"spec": {"configuration": {"network": {"binding": dict(self.bindings)}}}}

    @contextlib.contextmanager
    def binding_registered_as(self, name: str, sidecar_image: str):
        before = dict(self.bindings)
        if self.fault != "not-registered":
            self.bindings[name] = {"sidecarImage": sidecar_image}
        try:
            yield SimpleNamespace(propagation="verified")
        finally:
            self.bindings = before

    def create_vm(self, name: str, *, binding: str | None = None, bootable: bool = False) -> None:
        self.created.append((name, binding, bootable))

    def _plugin_name(self) -> str | None:
        """The NETWORK_BINDING_PLUGIN_NAME the sidecar gets (None: not set, the sidecar serves `slirp`)."""
        passes_name = versions.binding_name_configurable(self.version) and self.fault != "name-not-passed"
        return self.created[-1][1] if passes_name else None

    def _starts(self) -> bool:
        binding = self.created[-1][1]
        if binding not in self.bindings:
            return False
        return self.fault == "sidecar-serves-any-name" or (self._plugin_name() or "slirp") == binding

    def event_messages(self, involved: str, reason: str) -> list[str]:
        if self.created[-1][1] not in self.bindings:
            msg = f"failed to render launch manifest: couldn't find configuration for network binding: {involved}"
            return [msg] if reason == "FailedCreate" else []
        return [SIDECAR_REFUSAL] if reason == "SyncFailed" and not self._starts() else []

    def read_vmi(self, name: str) -> dict:
        if self.created[-1][1] not in self.bindings:
            raise client.ApiException(status=404, reason="Not Found")
        return {"metadata": {"name": name}, "status": {"phase": "Running" if self._starts() else "Scheduled"}}

    def launcher_pod_of(self, vmi: dict) -> client.V1Pod:
        env = [client.V1EnvVar(name="NETWORK_BINDING_PLUGIN_NAME", value=self._plugin_name())]
        return client.V1Pod(
            metadata=client.V1ObjectMeta(name=f"virt-launcher-{vmi['metadata']['name']}-abcde"),
            spec=client.V1PodSpec(
                containers=[
                    client.V1Container(name="compute"),
                    client.V1Container(name="hook-sidecar-0", env=env if self._plugin_name() else None),
                ]
            ),
        )

    def exec_in_pod(self, pod: str, argv: list[str]) -> tuple[int, str]:
        name = self.created[-1][0]
        args = slirp_qemu_args(replace(self.spec, name=name), SEARCH)
        if self.fault == "no-slirp-args":
            args = []
        return 0, "\n".join(["/usr/libexec/qemu-kvm", "-name", name, *args])

    def delete_vm(self, name: str) -> None:
        self.deleted.append(name)


def _renamed(vm: _KubeVirt) -> None:
    test_slirp_kubevirt.test_binding_under_another_name_works_from_v1_9_and_is_refused_before(vm, record=_record)


@pytest.mark.parametrize("version", ["v1.9.0", "v1.1.0", "v1.5.3"])
def test_renamed_binding_clause_passes_on_kubevirts_behaviour(version):
    vm = _KubeVirt(version)
    _renamed(vm)
    assert [(b, boot) for _, b, boot in vm.created] == [("slirp-renamed", True)], "a bootable VM naming the other name"
    assert vm.deleted == [vm.created[0][0]], "the VM it created is deleted"
    assert vm.bindings == {"slirp": {"sidecarImage": IMAGE}}, "the second registration is undone"


@pytest.mark.parametrize("fault", ["name-not-passed", "no-slirp-args"])
def test_renamed_binding_clause_is_red_on_v1_9_when_the_name_is_not_served(fault):
    """name-not-passed: virt-controller stops passing NETWORK_BINDING_PLUGIN_NAME (v1.8's behaviour);
    no-slirp-args: the VM runs but QEMU has no slirp from the sidecar."""
    with pytest.raises(AssertionError, match="binding-renamed"):
        _renamed(_KubeVirt("v1.9.0", fault))


def test_renamed_binding_clause_is_red_below_v1_9_when_a_sidecar_serves_any_name():
    with pytest.raises(AssertionError, match="binding-renamed: started: expected False"):
        _renamed(_KubeVirt("v1.1.0", "sidecar-serves-any-name"))


def test_renamed_binding_refusal_is_void_when_the_name_was_never_registered():
    """Premise of the refusal below v1.9: the name was registered; a refusal as an unregistered
    binding proves nothing about the sidecar."""
    with pytest.raises(VoidCheck, match="was not registered"):
        _renamed(_KubeVirt("v1.1.0", "not-registered"))


def test_binding_name_is_configurable_from_v1_9_only():
    # cmd/sidecars/network-slirp-binding/main.go at v1.9.0 reads NETWORK_BINDING_PLUGIN_NAME; domain.go
    # at v1.1.0 and v1.5.3 compares the binding with the constant SlirpPluginName = "slirp".
    assert versions.binding_name_configurable("v1.9.0")
    assert not versions.binding_name_configurable("v1.8.4")
    assert not versions.binding_name_configurable("v1.1.0")


# -- a ClusterIP Service in front of the VM --------------------------------------------------------
TOKEN = "slirp-port-8080-abc"


class _ServiceCluster:
    """A cluster whose client reaches the guest's HTTP service through the Service: by its cluster IP
    while it has endpoints, by its DNS name while that resolves too."""

    name = "kind"

    def __init__(self, endpoints: tuple[str, ...] = ("10.244.0.9",), dns: bool = True) -> None:
        self.service = ClusterService(
            name="slirp-guest",
            cluster_ip="10.96.0.50",
            dns_name="slirp-guest.ns.svc.cluster.local",
            selector={"kubevirt.io/created-by": "uid"},
            ports=(22, 8080),
            launcher_pod_ip="10.244.0.9",
            endpoints=endpoints,
        )
        self.dns = dns
        self.dialled: list[tuple[str, int]] = []

    def guest_service(self) -> ClusterService:
        return self.service

    def dial_from_cluster_client(self, host: str, port: int) -> socket.socket:
        self.dialled.append((host, port))
        if host == self.service.dns_name and not self.dns:
            raise ConnectionError(f"nc: bad address '{host}'")
        if not self.service.endpoints or port not in self.service.ports:
            raise ConnectionRefusedError(111, f"{host}:{port}: Connection refused")
        ours, theirs = socket.socketpair()

        def serve() -> None:
            with theirs:
                theirs.recv(4096)
                theirs.sendall(f"HTTP/1.0 200 OK\r\nContent-Length: {len(TOKEN)}\r\n\r\n{TOKEN}".encode())

        threading.Thread(target=serve, daemon=True).start()
        return ours


@pytest.fixture(autouse=True)
def _short_waits(monkeypatch):
    """The Service clause retries for kube-proxy (30 s, scaled): a stand-in answers at once or never."""
    monkeypatch.setattr(waits, "_scale", 0.05)


def _service_clause(target, via: str) -> None:
    services = {8080: GuestService(8080, TOKEN, TOKEN)}
    contract = SimpleNamespace(listed_tcp_ports=(22, 8080))
    test_slirp_ports.test_cluster_ip_service_reaches_guest_service(target, services, contract, record=_record, via=via)


@pytest.mark.parametrize("via", ["cluster-ip", "dns-name"])
def test_service_clause_passes_when_the_service_reaches_the_guest(via):
    cluster = _ServiceCluster()
    _service_clause(cluster, via)
    wanted = cluster.service.cluster_ip if via == "cluster-ip" else cluster.service.dns_name
    assert cluster.dialled == [(wanted, 8080)]


def test_service_clause_retries_while_kube_proxy_has_not_programmed_the_service():
    cluster = _ServiceCluster()
    dial = cluster.dial_from_cluster_client
    calls = []

    def first_hangs(host: str, port: int) -> socket.socket:
        calls.append(host)
        if len(calls) == 1:
            raise TimeoutError("nc: timed out")
        return dial(host, port)

    cluster.dial_from_cluster_client = first_hangs  # type: ignore[method-assign]
    _service_clause(cluster, "cluster-ip")
    assert len(calls) == 2


@pytest.mark.parametrize("via", ["cluster-ip", "dns-name"])
def test_service_clause_is_red_when_the_service_has_nothing_behind_it(via):
    """A launcher pod without KubeVirt's created-by label: the Service selects nothing."""
    with pytest.raises(AssertionError, match="ingress-service: body: expected"):
        _service_clause(_ServiceCluster(endpoints=()), via)


def test_service_clause_by_name_alone_is_red_when_cluster_dns_does_not_answer():
    _service_clause(_ServiceCluster(dns=False), "cluster-ip")
    with pytest.raises(AssertionError, match="ingress-service: body: expected"):
        _service_clause(_ServiceCluster(dns=False), "dns-name")


def test_service_clause_is_skipped_with_the_reason_where_there_is_no_service():
    class _Qemu:
        name = "qemu"

        def guest_service(self):
            raise NotOnThisTarget("a Kubernetes Service in front of the VM exists only on cluster targets")

    with pytest.raises(pytest.skip.Exception, match="only on cluster targets"):
        _service_clause(_Qemu(), "cluster-ip")


# -- a ResourceQuota and the sidecar's resources ---------------------------------------------------
QUOTA_REFUSED = (
    'Error creating pod: pods "virt-launcher-vm-quota-bare-1a2b-x7k2p" is forbidden: failed quota: slirp-quota: '
    "must specify limits.cpu for: hook-sidecar-0; limits.memory for: hook-sidecar-0; requests.cpu for: "
    "hook-sidecar-0; requests.memory for: hook-sidecar-0"
)


class _QuotaCluster:
    """KubeVirt's sidecar resources as renderresources.go has them: a burstable VM's hook sidecar gets
    the supportContainerResources `sidecar` entry, else nothing, and the quota then refuses the pod."""

    def __init__(self, fault: str | None = None, configured: dict | None = None) -> None:
        self.version = versions.parse_kubevirt_version("v1.9.0")
        self.spec = conformance_vm("vm-net-binding-slirp")
        self.fault = fault
        self.support: list[dict] = [configured] if configured else []
        self.found = list(self.support)
        self.created: dict[str, dict] = {}
        self.deleted: list[str] = []
        self.namespaces: list[str] = []

    def kubevirt_cr(self) -> dict:
        return {"spec": {"configuration": {"supportContainerResources": list(self.support)}}}

    @contextlib.contextmanager
    def quota_namespace(self, hard):
        self.namespaces.append("ns-quota")
        hard = {k: v for k, v in hard.items() if not (self.fault == "quota-without-limits" and k.startswith("limits"))}
        yield SimpleNamespace(
            name="ns-quota",
            quota=lambda: {"hard": dict(hard), "status": {}},
            create_vm=self._create,
            read_vmi=self._read_vmi,
            event_messages=self._events,
            launcher_pod_of=self._pod,
            delete_vm=self.deleted.append,
        )
        self.namespaces.remove("ns-quota")

    @contextlib.contextmanager
    def sidecar_resources_set(self, resources):
        before = list(self.support)
        if self.fault != "sidecar-resources-ignored":
            self.support = [*(e for e in before if e["type"] != "sidecar"), {"type": "sidecar", "resources": resources}]
        try:
            yield "verified"
        finally:
            self.support = before

    def _sidecar(self) -> dict:
        entry = next((e for e in self.support if e["type"] == "sidecar"), None)
        return dict(entry["resources"]) if entry else {}

    def _create(self, name: str, resources: dict) -> None:
        self.created[name] = self._sidecar()

    def _admitted(self, name: str) -> bool:
        sidecar = self.created[name]
        return self.fault == "quota-without-limits" or bool(sidecar.get("requests") and sidecar.get("limits"))

    def _events(self, involved: str, reason: str) -> list[str]:
        return [QUOTA_REFUSED] if reason == "FailedCreate" and not self._admitted(involved) else []

    def _read_vmi(self, name: str) -> dict:
        return {"metadata": {"name": name}, "status": {"phase": "Running" if self._admitted(name) else "Pending"}}

    def _pod(self, vmi: dict) -> client.V1Pod:
        sidecar = self.created[vmi["metadata"]["name"]]
        return client.V1Pod(
            spec=client.V1PodSpec(
                containers=[
                    client.V1Container(name="compute"),
                    client.V1Container(
                        name="hook-sidecar-0",
                        resources=client.V1ResourceRequirements(
                            requests=sidecar.get("requests"), limits=sidecar.get("limits")
                        ),
                    ),
                ]
            )
        )


def _quota_clauses(cluster: _QuotaCluster) -> dict[str, str]:
    """Both quota clauses on one pair of VMs; each clause's verdict."""
    from slirp_conformance.checks import kubevirt

    evidence = kubevirt.quota_vms(cluster)
    verdicts = {}
    for clause in (
        test_slirp_kubevirt.test_vm_under_a_resource_quota_starts_once_sidecar_resources_are_configured,
        test_slirp_kubevirt.test_vm_under_a_resource_quota_without_sidecar_resources_fails_with_the_reason,
    ):
        try:
            clause(evidence, record=_record)
            verdicts[clause.__name__] = "pass"
        except VoidCheck:
            verdicts[clause.__name__] = "void"
        except AssertionError:
            verdicts[clause.__name__] = "fail"
    assert not cluster.namespaces and cluster.support == cluster.found, "the quota namespace and configuration undone"
    assert sorted(cluster.deleted) == sorted(cluster.created), "every VM it created is deleted"
    return verdicts


STARTS = "test_vm_under_a_resource_quota_starts_once_sidecar_resources_are_configured"
REFUSED = "test_vm_under_a_resource_quota_without_sidecar_resources_fails_with_the_reason"


def test_quota_clauses_pass_on_kubevirts_behaviour():
    assert _quota_clauses(_QuotaCluster()) == {STARTS: "pass", REFUSED: "pass"}


def test_quota_clause_is_red_when_kubevirt_ignores_the_sidecar_resources():
    assert _quota_clauses(_QuotaCluster("sidecar-resources-ignored")) == {STARTS: "fail", REFUSED: "pass"}


def test_quota_refusal_is_void_without_a_quota_on_limits():
    """A quota that does not cover limits admits the sidecar anyway: the refusal proves nothing."""
    assert _quota_clauses(_QuotaCluster("quota-without-limits"))[REFUSED] == "void"


def test_quota_refusal_is_void_where_the_cluster_already_configures_sidecar_resources():
    configured = {
        "type": "sidecar",
        "resources": {"requests": {"cpu": "5m", "memory": "8Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}},
    }
    assert _quota_clauses(_QuotaCluster(configured=configured))[REFUSED] == "void"
