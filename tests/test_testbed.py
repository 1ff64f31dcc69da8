"""The cluster test bed end to end: `hack/testbed.sh up`, the real server and CRDs, `down`, no leftovers.

Marked ``testbed``: run by default, skipped with the reason where the bed cannot run (not
root), left out with ``-m "not testbed"``. hack/test.sh builds the bed's parts before pytest
starts (cold: about 9 min on 2 idle cores, cached by version; README "Measured"), so a cold
build never runs inside a test's budget.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from slirp_conformance import waits
from slirp_conformance.checks import kubevirt as kubevirt_checks
from slirp_conformance.evidence import contains_run
from slirp_conformance.guest_profiles import FEDORA, REFERENCE
from slirp_conformance.reference import sidecar_render
from tests import testbed_cli, testbed_probes
from tests.suite_runner import run_suite
from tests.test_reference_e2e import ALL_MODULES, PING_GROUP_RED
from tests.testbed import bed, components, kubevirt, node_layout, processes
from tests.testbed_probes import kubectl, kubectl_binary, leftovers, processes_mentioning

pytestmark = pytest.mark.testbed

KUBEVIRT_VERSION = testbed_cli.KUBEVIRT_VERSION
START_TIMEOUT = testbed_cli.DOWN_TIMEOUT


@pytest.fixture(scope="module")
def testbed(tmp_path_factory):
    """A bed of KUBEVIRT_VERSION of the module's own (its tests change the CR and take it down)."""
    with testbed_cli.bed_up(tmp_path_factory.mktemp("testbed") / "kubeconfig", KUBEVIRT_VERSION) as running:
        print(f"testbed up: {running.summary}")
        yield running.kubeconfig, running.record, running.summary


def test_kubectl_version_shows_the_real_pinned_server(testbed):
    kubeconfig, _, summary = testbed
    version = json.loads(kubectl(kubeconfig, "version", "-o", "json"))
    server = version.get("serverVersion", {})
    pinned = components.Pins.from_versions_env().kubernetes
    assert server.get("gitVersion") == pinned and server.get("minor") == pinned.split(".")[1], (
        f"expected the API server to report {pinned}, got {server}"
    )
    assert summary["kubernetes"] == pinned, summary


def test_virtualmachine_crd_is_kubevirts_own_schema(testbed):
    kubeconfig, _, _ = testbed
    served = json.loads(kubectl(kubeconfig, "get", "crd", "virtualmachines.kubevirt.io", "-o", "json"))
    crds, _ = kubevirt.generate(components.build_kubevirt_manifests(KUBEVIRT_VERSION))
    generated = next(d for d in json.loads(crds)["items"] if d["metadata"]["name"] == "virtualmachines.kubevirt.io")
    problems = kubevirt.served_schema_differences(served, generated)
    assert not problems, f"the served VirtualMachine CRD is not KubeVirt {KUBEVIRT_VERSION}'s: {problems}"
    spec_props = served["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    assert {"runStrategy", "template", "dataVolumeTemplates"} <= set(spec_props), sorted(spec_props)


def test_schema_comparison_fails_on_a_permissive_stand_in(testbed):
    """Negative control: a CRD that accepts anything (as a home-made fake would) is told apart."""
    kubeconfig, _, _ = testbed
    served = json.loads(kubectl(kubeconfig, "get", "crd", "virtualmachines.kubevirt.io", "-o", "json"))
    stand_in = json.loads(json.dumps(served))
    for version in stand_in["spec"]["versions"]:
        version["schema"] = {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}
    problems = kubevirt.served_schema_differences(stand_in, served)
    assert problems and all("openAPIV3Schema differs" in p for p in problems), problems


def test_kubevirt_cr_and_simulated_node_are_there(testbed):
    kubeconfig, _, _ = testbed
    cr = json.loads(kubectl(kubeconfig, "get", "kubevirt", "-n", kubevirt.NAMESPACE, "kubevirt", "-o", "json"))
    assert cr["spec"].get("configuration") is not None, cr["spec"]
    node = json.loads(kubectl(kubeconfig, "get", "node", bed.NODE_NAME, "-o", "json"))
    ready = [c["status"] for c in node["status"]["conditions"] if c["type"] == "Ready"]
    assert ready == ["True"], f"expected kwok's node Ready, conditions: {node['status']['conditions']}"


def _kubevirt_cr_specs(kubeconfig: Path) -> list[dict]:
    return [cr["spec"] for cr in json.loads(kubectl(kubeconfig, "get", "kubevirt", "-A", "-o", "json"))["items"]]


def test_kubevirt_cr_is_identical_before_and_after_a_passing_suite_run(testbed, tmp_path):
    """The whole contract and the KubeVirt-only suite pass against the real components, the console
    through the API server's aggregator, virt-api and the bed's virt-handler endpoint; the suite
    registers the slirp binding in the CR for its run and puts the CR back exactly.

    Runs before any test here registers the binding, so the run has to change the CR (its
    premise, seen by a poller during the run).
    """
    kubeconfig, _, _ = testbed
    before = _kubevirt_cr_specs(kubeconfig)
    assert before and not ((before[0].get("configuration") or {}).get("network") or {}).get("binding"), (
        f"premise: the bed's CR starts without a binding registration: {before}"
    )
    seen_registered, done = [], threading.Event()

    def watch_cr() -> None:
        while not done.wait(1):
            specs = _kubevirt_cr_specs(kubeconfig)
            if any(
                "slirp" in ((spec.get("configuration") or {}).get("network") or {}).get("binding", {}) for spec in specs
            ):
                seen_registered.append(specs)

    poller = threading.Thread(target=watch_cr, daemon=True)
    poller.start()
    try:
        run = run_suite(
            tmp_path, "--target=cluster", f"--kubeconfig={kubeconfig}", "--timeout-scale", "3", timeout=1800
        )
    finally:
        done.set()
        poller.join(30)
    assert seen_registered, f"premise: the run never registered the binding; its output:\n{run.output[-3000:]}"
    assert run.returncode == 0 and (run.report or {}).get("outcome") == "CONFORMANT", (
        f"exit {run.returncode}, failed {sorted(run.failed)}:\n{run.output[-4000:]}"
    )
    assert {t.split("::")[0] for t in run.ids("passed")} >= ALL_MODULES | {"test_slirp_kubevirt"}, run.outcomes
    # The control of tests/test_testbed_fedora_like.py's check `run.guest_profile == FEDORA.name`:
    # a busybox bed's run meets the reference profile, so that check fails here.
    assert run.guest_profile == REFERENCE.name != FEDORA.name, (run.report or {}).get("versions")
    assert _kubevirt_cr_specs(kubeconfig) == before, "the CR changed across the passing run"
    assert not _run_leftovers(kubeconfig), (
        f"the run left {_run_leftovers(kubeconfig)} (VMI deletion must complete through the node agent)"
    )


def test_kubevirt_cr_is_identical_before_and_after_a_failing_suite_run(testbed, tmp_path):
    """The node agent boots the VM with an open ping_group_range in its pod (as --qemu-sysctl does on
    --target=qemu): exactly the ICMP checks go red, the run fails, and the CR is put back."""
    kubeconfig, record, _ = testbed
    before = _kubevirt_cr_specs(kubeconfig)
    sysctls = node_layout.pod_sysctls_file(Path(record.state_dir))
    sysctls.parent.mkdir(parents=True, exist_ok=True)
    sysctls.write_text(json.dumps({"net.ipv4.ping_group_range": "0 2147483647"}))
    try:
        run = run_suite(
            tmp_path, "--target=cluster", f"--kubeconfig={kubeconfig}", "--timeout-scale", "3", timeout=1800
        )
    finally:
        sysctls.unlink()
    assert run.returncode == 1 and run.failed == PING_GROUP_RED, (
        f"exit {run.returncode}; unexpected red {sorted(run.failed - PING_GROUP_RED)}, unexpected green "
        f"{sorted(PING_GROUP_RED - run.failed)}:\n{run.output[-3000:]}"
    )
    assert _kubevirt_cr_specs(kubeconfig) == before, "the CR changed across the failing run"
    assert not _run_leftovers(kubeconfig), f"the failing run left {_run_leftovers(kubeconfig)}"


def _run_leftovers(kubeconfig: Path) -> list[str]:
    """VMIs and the suite's namespaces still in the bed."""
    left = json.loads(kubectl(kubeconfig, "get", "vmis,namespaces", "-A", "-o", "json"))["items"]
    return [
        f"{o['kind']} {o['metadata']['name']}"
        for o in left
        if o["kind"] == "VirtualMachineInstance" or o["metadata"]["name"].startswith("slirp-conformance-")
    ]


def test_kubevirt_cr_is_identical_before_and_after_an_interrupted_suite_run(testbed, tmp_path):
    """Ctrl-C as soon as the suite's VMI exists (the VM starting on the node agent): the CR is put
    back, the VM deleted."""
    from tests.suite_runner import interrupt_suite

    kubeconfig, _, _ = testbed
    before = _kubevirt_cr_specs(kubeconfig)

    def vmi_created(_pid: int) -> bool:
        vmis = json.loads(kubectl(kubeconfig, "get", "vmis", "-A", "-o", "json"))["items"]
        return any(v["metadata"]["namespace"].startswith("slirp-conformance-") for v in vmis)

    code, output = interrupt_suite(
        tmp_path,
        "--target=cluster",
        f"--kubeconfig={kubeconfig}",
        "--timeout-scale",
        "3",
        when="the suite's VMI on the bed",
        ready=vmi_created,
        timeout=600,
    )
    assert code == 2, f"expected exit 2 (interrupted), got {code}:\n{output[-3000:]}"
    assert _kubevirt_cr_specs(kubeconfig) == before, f"the CR changed across the interrupted run:\n{output[-2000:]}"
    assert not _run_leftovers(kubeconfig), f"the interrupted run left {_run_leftovers(kubeconfig)}"


SLIRP_IMAGE = testbed_probes.slirp_image(KUBEVIRT_VERSION)


def _vmi(name: str, interface: dict) -> str:
    return json.dumps(
        {
            "apiVersion": "kubevirt.io/v1",
            "kind": "VirtualMachineInstance",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {
                "domain": {
                    "devices": {"interfaces": [{"name": "default", **interface}]},
                    "resources": {"requests": {"memory": "128Mi"}},
                },
                "networks": [{"name": "default", "pod": {}}],
            },
        }
    )


def _launcher_containers(kubeconfig: Path, vmi: str) -> dict[str, dict]:
    """The containers of the virt-launcher pod virt-controller rendered for ``vmi`` (waits for it)."""

    def pods() -> list:
        return json.loads(
            kubectl(kubeconfig, "get", "pods", "-n", "default", "-l", f"vm.kubevirt.io/name={vmi}", "-o", "json")
        )["items"]

    try:
        found = waits.wait_for(
            f"virt-controller to render the launcher pod of {vmi}",
            pods,
            60 * 3,
            describe=lambda items: f"{len(items)} pods",
        )
    except waits.WaitTimeout as e:
        status = kubectl(kubeconfig, "get", "vmi", vmi, "-o", "jsonpath={.status.conditions}")
        pytest.fail(f"{e}; VMI conditions: {status}")
    return {c["name"]: c for c in found[0]["spec"]["containers"]}


def _create(kubeconfig: Path, manifest: str) -> subprocess.CompletedProcess:
    kubectl_bin = kubectl_binary()
    return subprocess.run(
        [str(kubectl_bin), "--kubeconfig", str(kubeconfig), "create", "-f", "-"],
        input=manifest,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_virt_api_admission_refuses_a_binding_while_the_feature_gate_is_off(testbed):
    """virt-api's own validating webhook answers (the bed starts with no feature gate)."""
    kubeconfig, _, _ = testbed
    refused = _create(kubeconfig, _vmi("gate-off-vmi", {"binding": {"name": "slirp"}}))
    assert refused.returncode != 0 and "Binding plugins feature gate is not enabled" in refused.stderr, (
        f"expected virt-api's refusal, got exit {refused.returncode}: {refused.stdout} {refused.stderr}"
    )
    # Negative control: a VMI without a binding plugin is admitted, and virt-api's mutating
    # webhook filled in its defaults (the machine type), so both webhooks are live.
    admitted = _create(kubeconfig, _vmi("admitted-vmi", {"masquerade": {}}))
    assert admitted.returncode == 0, admitted.stderr
    machine = kubectl(kubeconfig, "get", "vmi", "admitted-vmi", "-o", "jsonpath={.spec.domain.machine.type}")
    assert machine, "virt-api's mutating webhook did not default spec.domain.machine.type"


def test_virt_controller_renders_the_slirp_sidecar_from_the_binding_registration(testbed):
    kubeconfig, _, _ = testbed
    testbed_probes.register_slirp_binding(kubeconfig, KUBEVIRT_VERSION)
    kubectl(
        kubeconfig,
        "create",
        "-f",
        "-",
        input=_vmi("slirp-vmi", {"binding": {"name": "slirp"}, "ports": [{"port": 22}]}),
    )
    containers = _launcher_containers(kubeconfig, "slirp-vmi")
    sidecars = {name: c["image"] for name, c in containers.items() if name.startswith("hook-sidecar-")}
    assert list(sidecars.values()) == [SLIRP_IMAGE], (
        f"expected one sidecar of {SLIRP_IMAGE}, pod has {containers.keys()}: {sidecars}"
    )
    compute = containers.get("compute", {})
    assert compute.get("image") == kubevirt.launcher_image(KUBEVIRT_VERSION), compute.get("image")
    assert {"containerPort": 22, "protocol": "TCP"} in (compute.get("ports") or []), compute.get("ports")

    # The real scheduler places it on kwok's node (which carries what virt-handler would
    # advertise) and kwok runs it.
    def placed() -> dict:
        pod = json.loads(
            kubectl(kubeconfig, "get", "pods", "-n", "default", "-l", "vm.kubevirt.io/name=slirp-vmi", "-o", "json")
        )["items"][0]
        return {"node": pod["spec"].get("nodeName"), "phase": pod["status"].get("phase")}

    waits.wait_for(
        "the launcher pod to be scheduled on the kwok node and Running",
        placed,
        60,
        accept=lambda p: p == {"node": bed.NODE_NAME, "phase": "Running"},
    )

    # Negative control: the same VMI without the binding gets no sidecar, so the check above can fail.
    kubectl(kubeconfig, "create", "-f", "-", input=_vmi("masquerade-vmi", {"masquerade": {}}))
    plain = _launcher_containers(kubeconfig, "masquerade-vmi")
    assert not [n for n in plain if n.startswith("hook-sidecar-")], f"unexpected sidecar: {list(plain)}"


def test_kubectl_exec_is_a_real_stream_through_the_api_server_to_kwok(testbed):
    kubeconfig, record, _ = testbed
    kubectl_bin = kubectl_binary()

    def exec_in(namespace: str) -> subprocess.CompletedProcess:
        if namespace != "default":
            kubectl(kubeconfig, "create", "namespace", namespace)
        kubectl(kubeconfig, "run", "-n", namespace, "exec-probe", "--image=busybox", "--restart=Never")
        waits.wait_for(
            f"kwok to run exec-probe in {namespace}",
            lambda: kubectl(kubeconfig, "get", "pod", "-n", namespace, "exec-probe", "-o", "jsonpath={.status.phase}"),
            60,
            accept=lambda phase: phase == "Running",
        )
        return subprocess.run(
            [
                str(kubectl_bin),
                "--kubeconfig",
                str(kubeconfig),
                "exec",
                "-n",
                namespace,
                "exec-probe",
                "--",
                "/bin/sh",
                "-c",
                "echo exec-marker-$((6*7)) in $(pwd)",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )

    ran = exec_in(bed.EXEC_NAMESPACE)
    expected = f"exec-marker-42 in {Path(record.state_dir) / 'exec'}"
    assert ran.returncode == 0 and ran.stdout.strip() == expected, (
        f"expected {expected!r} from the command kwok ran, got exit {ran.returncode}: {ran.stdout!r} {ran.stderr!r}"
    )
    # Negative control: outside the namespace kwok serves exec for (and the namespaces where the
    # node agent runs a VM), the stream is refused.
    refused = exec_in("no-exec")
    assert refused.returncode != 0 and "no exec found" in refused.stderr, (refused.returncode, refused.stderr)


def test_kubectl_port_forward_is_a_real_stream_through_the_api_server_to_kwok(testbed):
    """Needs the exec test's pod in EXEC_NAMESPACE; bytes go kubectl -> API server -> kwok -> loopback."""
    kubeconfig, record, _ = testbed
    kubectl_bin = kubectl_binary()
    with socket.create_server((bed.LOOPBACK, record.ports["port-forward-target"])) as server:

        def echo_once():
            conn, _ = server.accept()
            with conn:
                conn.sendall(b"echo:" + conn.recv(100))

        threading.Thread(target=echo_once, daemon=True).start()
        local = processes.free_port()
        forward = subprocess.Popen(
            [
                str(kubectl_bin),
                "--kubeconfig",
                str(kubeconfig),
                "port-forward",
                "-n",
                bed.EXEC_NAMESPACE,
                "pod/exec-probe",
                f"{local}:{bed.FORWARDED_POD_PORT}",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            # Its own word, not a probe connection: a probe would be forwarded and use up the echo.
            first = forward.stdout.readline()  # bounded: kubectl exits (EOF) if it cannot forward
            assert first.startswith("Forwarding from"), f"kubectl port-forward: {first}{forward.stdout.read()}"
            with socket.create_connection((bed.LOOPBACK, local), timeout=10) as client:
                client.sendall(b"ping")
                reply = client.recv(100)
        finally:
            forward.terminate()
            out, _ = forward.communicate(timeout=30)
    assert reply == b"echo:ping", f"expected the loopback server's echo through the pod's port, got {reply!r}; {out}"


AGENT_NAMESPACE = "agent-run"


@pytest.fixture(scope="module")
def agent_vm(testbed):
    """The conformance VM (the suite's own manifest, its peer pods) run by the node agent: waits
    for Running and AgentConnected. Yields (kubeconfig, VMI, launcher pod, key pair)."""
    from kubernetes import client, config

    from slirp_conformance.kubevirt import peers
    from slirp_conformance.kubevirt.vm_manifest import render_vm
    from slirp_conformance.ssh_client import generate_keypair
    from slirp_conformance.vmspec import conformance_vm

    kubeconfig, _, _ = testbed
    testbed_probes.register_slirp_binding(kubeconfig, KUBEVIRT_VERSION)
    kubectl(kubeconfig, "create", "namespace", AGENT_NAMESPACE)
    api = config.new_client_from_config(str(kubeconfig))
    peers.deploy(client.CoreV1Api(api), AGENT_NAMESPACE)
    key = generate_keypair()
    spec = conformance_vm()
    kubectl(
        kubeconfig,
        "create",
        "-f",
        "-",
        input=json.dumps(
            render_vm(
                spec,
                namespace=AGENT_NAMESPACE,
                image="quay.io/containerdisks/unused:bed",
                authorized_key=key.public_openssh,
                password="bed-password",
            )
        ),
    )

    def vmi() -> dict:
        return json.loads(kubectl(kubeconfig, "get", "vmi", "-n", AGENT_NAMESPACE, spec.name, "-o", "json"))

    def agent_connected(v: dict) -> bool:
        return v["status"].get("phase") == "Running" and any(
            c["type"] == "AgentConnected" and c["status"] == "True" for c in v["status"].get("conditions") or []
        )

    found = waits.wait_for(
        f"VMI {AGENT_NAMESPACE}/{spec.name} Running with AgentConnected",
        vmi,
        waits.timeout("vmi-agent-connected"),
        accept=agent_connected,
        retry_on=(AssertionError,),
        describe=lambda v: f"phase {v['status'].get('phase')}, conditions {v['status'].get('conditions')}",
    )
    pod = json.loads(
        kubectl(
            kubeconfig,
            "get",
            "pods",
            "-n",
            AGENT_NAMESPACE,
            "-l",
            f"kubevirt.io/created-by={found['metadata']['uid']}",
            "-o",
            "json",
        )
    )["items"][0]
    yield kubeconfig, found, pod, key


def _exec(kubeconfig: Path, pod: str, *argv: str, container: str | None = None) -> subprocess.CompletedProcess:
    kubectl_bin = kubectl_binary()
    where = ["-c", container] if container else []
    return subprocess.run(
        [str(kubectl_bin), "--kubeconfig", str(kubeconfig), "exec", "-n", AGENT_NAMESPACE, pod, *where, "--", *argv],
        capture_output=True,
        text=True,
        errors="replace",
        timeout=120,
    )


def test_vmi_runs_with_the_real_sidecars_arguments_for_the_cluster_vmi(agent_vm):
    """QEMU in the launcher pod (seen by the suite's own ps-like script through `kubectl exec`)
    carries what KubeVirt's slirp sidecar renders for the VMI as the cluster holds it, with the
    pod's resolv.conf as kubelet writes it for a ClusterFirst pod."""
    kubeconfig, vmi, pod, _ = agent_vm
    name = pod["metadata"]["name"]
    resolv = _exec(kubeconfig, name, "cat", "/etc/resolv.conf", container="compute")
    assert resolv.returncode == 0, resolv.stderr
    search = [line.split()[1:] for line in resolv.stdout.splitlines() if line.startswith("search")]
    assert search == [[f"{AGENT_NAMESPACE}.svc.cluster.local", "svc.cluster.local", "cluster.local"]], resolv.stdout
    qemu = kubevirt_checks.qemu_command_line(_Launcher(kubeconfig, name))  # the KubeVirt suite's own check
    argv = qemu.argv
    assert qemu.rc == 0 and "-netdev" in argv, f"no QEMU with -netdev in the compute container: {qemu}"
    (expected,) = sidecar_render.render_vmis(KUBEVIRT_VERSION, [(vmi, resolv.stdout)])
    assert isinstance(expected, sidecar_render.Rendering), expected
    assert contains_run(expected.args).accepts(argv), f"QEMU runs {argv}, not the sidecar's {expected.args}"
    # Negative control: the rendering of a VMI with one port less is told apart.
    other = json.loads(json.dumps(vmi))
    other["spec"]["domain"]["devices"]["interfaces"][0]["ports"] = other["spec"]["domain"]["devices"]["interfaces"][0][
        "ports"
    ][:1]
    (changed,) = sidecar_render.render_vmis(KUBEVIRT_VERSION, [(other, resolv.stdout)])
    assert changed.args != expected.args and not contains_run(changed.args).accepts(argv), changed.args
    conditions = {c["type"]: c for c in vmi["status"]["conditions"]}
    assert (
        conditions["LiveMigratable"]["status"] == "False"
        and conditions["LiveMigratable"]["reason"] == "InterfaceNotLiveMigratable"
    ), conditions
    assert conditions["Ready"]["status"] == "True", conditions  # virt-controller's, from the pod
    assert vmi["status"]["nodeName"] == bed.NODE_NAME, vmi["status"]
    node = json.loads(kubectl(kubeconfig, "get", "node", bed.NODE_NAME, "-o", "json"))["metadata"]
    assert "kubevirt.io/heartbeat" in node["annotations"] and node["labels"]["kubevirt.io/schedulable"] == "true", (
        f"no virt-handler heartbeat on the node: {node['annotations']}, {node['labels']}"
    )


class _Launcher:
    """What src/slirp_conformance/checks/kubevirt.py needs of a target: exec in the launcher's compute container."""

    def __init__(self, kubeconfig: Path, pod: str) -> None:
        self.kubeconfig, self.pod = kubeconfig, pod

    def exec_in_launcher(self, argv: list[str]) -> tuple[int, str]:
        ran = _exec(self.kubeconfig, self.pod, *argv, container="compute")
        return ran.returncode, ran.stdout


def _kubectl_port_forward_banner(kubeconfig: Path, pod: str, port: int) -> bytes:
    """What one connection through `kubectl port-forward` to the pod's ``port`` reads first."""
    kubectl_bin = kubectl_binary()
    local = processes.free_port()
    forward = subprocess.Popen(
        [
            str(kubectl_bin),
            "--kubeconfig",
            str(kubeconfig),
            "port-forward",
            "-n",
            AGENT_NAMESPACE,
            f"pod/{pod}",
            f"{local}:{port}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        first = forward.stdout.readline()  # bounded: kubectl exits (EOF) if it cannot forward
        assert first.startswith("Forwarding from"), f"kubectl port-forward: {first}{forward.stdout.read()}"
        with socket.create_connection((bed.LOOPBACK, local), timeout=30) as conn:
            try:
                return conn.recv(8)
            except (TimeoutError, ConnectionError):
                return b""
    finally:
        forward.terminate()
        forward.communicate(timeout=30)


def test_python_client_exec_into_the_launcher_pod_keeps_streams_apart_and_streams_stdin(agent_vm):
    """The official client's websocket exec (what the suite's src/slirp_conformance/kubevirt/pod_streams.py uses)
    through the real API server to the node agent: stdout, stderr and a non-zero exit code kept
    apart, and input reaching a command that is still running (the suite's nc-under-exec bridges).
    Moved here from the fake cluster, which no longer runs pods."""
    from kubernetes import client, config
    from kubernetes.stream import stream

    kubeconfig, _, pod, _ = agent_vm
    core = client.CoreV1Api(config.new_client_from_config(str(kubeconfig)))
    name, pod_ip = pod["metadata"]["name"], pod["status"]["podIP"]
    ran = stream(
        core.connect_get_namespaced_pod_exec,
        name,
        AGENT_NAMESPACE,
        container="compute",
        command=["sh", "-c", "ip -4 -o addr show; echo oops >&2; exit 3"],
        stderr=True,
        stdin=False,
        stdout=True,
        tty=False,
        _preload_content=False,
    )
    ran.run_forever(timeout=60)
    out, err = ran.read_stdout(), ran.read_stderr()
    assert (pod_ip in out, err.strip(), ran.returncode) == (True, "oops", 3), (out, err, ran.returncode)

    live = stream(
        core.connect_get_namespaced_pod_exec,
        name,
        AGENT_NAMESPACE,
        container="compute",
        command=["sh", "-c", "read line; echo got:$line; sleep 0.5; echo done"],
        stdin=True,
        stdout=True,
        stderr=True,
        tty=False,
        _preload_content=False,
    )
    try:
        live.write_stdin("hello\n")

        def read_more() -> str:
            live.update(timeout=1)
            read.append(live.read_stdout() or "")
            return "".join(read)

        read: list[str] = []
        got = waits.wait_for(
            "the command to echo its stdin while it runs",
            read_more,
            30,
            accept=lambda text: "got:hello" in text,
            max_interval=0.2,
        )
        assert live.is_open(), f"the command ended before its output was read: {got!r}"
        live.run_forever(timeout=30)
        assert "done" in got + (live.read_stdout() or "") and live.returncode == 0, (got, live.returncode)
    finally:
        live.close()


def test_kubectl_port_forward_and_ssh_into_the_guest_and_the_peers_from_it(agent_vm):
    """`kubectl port-forward` to the launcher pod's listed port 22 reaches the guest's SSH server
    (slirp's hostfwd in the pod namespace), an unlisted port does not; SSH as the suite makes it
    (the Python client's port-forward); from the guest, the peer pod answers TCP echo and its DNS
    name resolves through slirp; a client pod reaches the guest at the pod's IP, listed ports only."""
    import paramiko
    from kubernetes import config

    from slirp_conformance.kubevirt import pod_streams

    kubeconfig, _, pod, key = agent_vm
    name = pod["metadata"]["name"]
    assert _kubectl_port_forward_banner(kubeconfig, name, 22).startswith(b"SSH-2.0"), "no SSH banner on port 22"
    assert not _kubectl_port_forward_banner(kubeconfig, name, 2222).startswith(b"SSH-2.0"), (
        "negative control: port 2222 is not listed, yet it answered with SSH"
    )

    def attempt() -> paramiko.SSHClient:
        ssh = paramiko.SSHClient()
        ssh.set_missing_host_key_policy(paramiko.AutoAddPolicy())  # the guest's identity is not under test
        sock = pod_streams.port_forward(
            lambda: config.new_client_from_config(str(kubeconfig)), AGENT_NAMESPACE, name, 22
        )
        try:
            ssh.connect(
                bed.LOOPBACK,
                sock=sock,
                username="fedora",
                pkey=key.private,
                allow_agent=False,
                look_for_keys=False,
                timeout=15,
                banner_timeout=15,
                auth_timeout=15,
            )
        except BaseException:
            ssh.close()
            sock.close()
            raise
        return ssh

    ssh = waits.wait_for(
        "SSH through the launcher pod's port-forward",
        attempt,
        waits.timeout("ssh-ready"),
        retry_on=(paramiko.ssh_exception.SSHException, ConnectionError, EOFError, socket.timeout),
    )
    try:

        def guest(command: str) -> str:
            _, out, _ = ssh.exec_command(command, timeout=60)
            return out.read().decode(errors="replace")

        peer_ip = json.loads(kubectl(kubeconfig, "get", "pod", "-n", AGENT_NAMESPACE, "slirp-peer", "-o", "json"))[
            "status"
        ]["podIP"]
        echoed = guest(f"echo bed-echo-$((6*7)) | timeout 10 nc -w 3 {peer_ip} 9007")
        assert "bed-echo-42" in echoed, f"no echo from the peer pod {peer_ip}:9007 through slirp: {echoed!r}"
        dns_name = f"peer-echo.{AGENT_NAMESPACE}.svc.cluster.local"
        resolved = guest(f"timeout 10 nslookup {dns_name} 10.0.2.3")
        assert peer_ip in resolved, f"{dns_name} did not resolve to {peer_ip} through slirp's DNS: {resolved!r}"
        # Negative control: a name the cluster DNS does not hold does not resolve to it.
        assert peer_ip not in guest(f"timeout 10 nslookup nothing.{AGENT_NAMESPACE}.svc.cluster.local 10.0.2.3")
    finally:
        ssh.close()
    pod_ip = pod["status"]["podIP"]
    listed = _exec(kubeconfig, "slirp-client", "sh", "-c", f"echo | nc -w 5 {pod_ip} 22")
    assert "SSH-2.0" in listed.stdout, f"the client pod did not reach the guest at {pod_ip}:22: {listed}"
    unlisted = _exec(kubeconfig, "slirp-client", "sh", "-c", f"echo | nc -w 5 {pod_ip} 2222")
    assert "SSH-2.0" not in unlisted.stdout and unlisted.returncode != 0, (
        f"port 2222 is not listed, yet {pod_ip}:2222 answered: {unlisted}"
    )


def test_vmi_deletion_completes_and_stops_its_vm(agent_vm, testbed):
    kubeconfig, vmi, _, _ = agent_vm
    _, record, _ = testbed
    name = vmi["metadata"]["name"]
    link = node_layout.console_socket(Path(record.state_dir), AGENT_NAMESPACE, name)
    assert link.is_symlink() and link.resolve().is_socket(), f"premise: the console socket is published at {link}"
    run_dir = str(link.resolve().parents[1])
    assert processes_mentioning(run_dir), f"premise: QEMU of {name} runs from {run_dir}"
    kubectl(kubeconfig, "delete", "vm", "-n", AGENT_NAMESPACE, name, "--wait=false")

    def remaining() -> list[str]:
        items = json.loads(
            kubectl(kubeconfig, "get", "vmis,pods", "-n", AGENT_NAMESPACE, "-l", f"kubevirt.io/vm={name}", "-o", "json")
        )["items"]
        return [f"{o['kind']} {o['metadata']['name']}" for o in items]

    waits.wait_for(
        f"VMI {name} and its launcher pod to be gone",
        remaining,
        waits.timeout("resource-deleted"),
        accept=lambda left: not left,
        describe=lambda left: f"still there: {left}",
    )
    waits.wait_for(
        f"the VM of {name} to stop",
        lambda: not processes_mentioning(run_dir) and not link.exists(),
        waits.timeout("lab-ready"),
    )
    assert not Path(run_dir).exists(), f"{run_dir} left behind"


def test_down_leaves_nothing(testbed):
    kubeconfig, record, _ = testbed
    running = [p.name for p in record.processes if processes.alive(p)]
    assert running and running == [p.name for p in record.processes], (
        f"premise: every recorded process runs before down; running: {running} of {record.processes}"
    )
    # slirp-vmi (test_virt_controller_renders_...) still runs on the node agent: down must stop its VM.
    assert leftovers(record).get("VM processes"), f"premise: a VM runs before down: {leftovers(record)}"
    down = testbed_cli.run("down", "--kubeconfig", str(kubeconfig), timeout=START_TIMEOUT)
    assert down.returncode == 0, down.stderr
    assert not leftovers(record), f"left after down: {leftovers(record)}"
    assert not _go_temp_files_since(_MODULE_LOADED), (
        f"KubeVirt's Go programs left temp files: {_go_temp_files_since(_MODULE_LOADED)}"
    )


_MODULE_LOADED = time.time()
# What KubeVirt's Go programs leave in the temp dir unless theirs is the bed's (testbed/kubevirt.py):
# virt-api's certsdir, glog's log files.
_GO_TEMP_PATTERNS = ("certsdir*", "kubevirt-manifests.*", "resource-generator.*", "virt-api.*", "virt-controller.*")


def _go_temp_files_since(when: float) -> list[str]:
    tmp = Path(tempfile.gettempdir())
    return sorted(str(p) for pattern in _GO_TEMP_PATTERNS for p in tmp.glob(pattern) if p.lstat().st_mtime >= when)


def test_interrupted_up_leaves_nothing(tmp_path):
    """Ctrl-C once the API server is up: `up` stops what it started and exits 130."""
    kubeconfig = tmp_path / "kubeconfig"
    before = set(Path(tempfile.gettempdir()).glob(bed.STATE_DIR_PREFIX + "*"))
    record, returncode, seen, err = testbed_cli.interrupt_up(
        kubeconfig, KUBEVIRT_VERSION, "testbed: kube-apiserver ready", START_TIMEOUT
    )
    assert returncode == 130, f"expected exit 130 after Ctrl-C, got {returncode}: {err[-2000:]}"
    assert record.processes, "the record named no process: the check would prove nothing"
    assert not leftovers(record), f"left after an interrupted up: {leftovers(record)}"
    new_dirs = set(Path(tempfile.gettempdir()).glob(bed.STATE_DIR_PREFIX + "*")) - before
    assert not new_dirs, f"state dirs left: {new_dirs}"
    print(seen, err, file=sys.stderr)
