"""What the bed's self-tests look at and do in a bed: kubectl against it, the slirp binding
registered as the suite registers it, and what of a stopped bed is still there."""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

from slirp_conformance.reference import reference_vm
from tests.testbed import bed, components, kubevirt, processes


def kubectl_binary() -> Path:
    """The bed's own kubectl build (cached by ``up``)."""
    return components.build_control_plane(components.Pins.from_versions_env()).kubectl


def kubectl(kubeconfig: Path, *args: str, input: str | None = None) -> str:
    """stdout of kubectl (the bed's own build); an AssertionError with its stderr when it fails."""
    out = subprocess.run(
        [str(kubectl_binary()), "--kubeconfig", str(kubeconfig), *args],
        capture_output=True,
        text=True,
        timeout=60,
        input=input,
    )
    assert out.returncode == 0, f"kubectl {' '.join(args)} exited {out.returncode}: {out.stderr[-2000:]}"
    return out.stdout


def slirp_image(kubevirt_version: str) -> str:
    return f"quay.io/kubevirt/network-slirp-binding:{kubevirt_version}"


def register_slirp_binding(kubeconfig: Path, kubevirt_version: str) -> None:
    """The feature gate and the slirp binding in the KubeVirt CR (as the suite's registration does)."""
    patch = {
        "spec": {
            "configuration": {
                "developerConfiguration": {"featureGates": ["NetworkBindingPlugins"]},
                "network": {"binding": {"slirp": {"sidecarImage": slirp_image(kubevirt_version)}}},
            }
        }
    }
    kubectl(
        kubeconfig, "patch", "kubevirt", "-n", kubevirt.NAMESPACE, "kubevirt", "--type=merge", "-p", json.dumps(patch)
    )


def processes_mentioning(text: str) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue  # exited meanwhile
        if any(text.encode() in arg for arg in argv):
            found.append(f"{cmdline.parent.name}: {argv[0].decode(errors='replace')}")
    return found


def vm_run_prefix(record: bed.BedRecord) -> str | None:
    """The prefix of the node agent's VM run dirs (``ReferenceVM`` names them by its pid)."""
    agent = next((p for p in record.processes if p.name == "node-agent"), None)
    return None if agent is None else f"{reference_vm.RUN_PREFIX}{agent.pid}-"


def leftovers(record: bed.BedRecord) -> dict[str, list]:
    """What of a stopped bed is still there: processes, listening ports, files, the agent's VMs."""
    kubeconfig = Path(record.kubeconfig)
    left = {
        "processes": [p.name for p in record.processes if processes.alive(p)],
        # also any process the record missed (started but not recorded): its argv names the state dir
        "unrecorded processes": processes_mentioning(record.state_dir),
        "ports": [f"{name}:{port}" for name, port in record.ports.items() if processes.listening(port)],
        "files": [str(p) for p in (kubeconfig, bed.record_path(kubeconfig), Path(record.state_dir)) if p.exists()],
    }
    vm_runs = vm_run_prefix(record)
    if vm_runs is not None:  # its VMs' QEMUs and labs
        left["VM processes"] = processes_mentioning(vm_runs)
        left["VM run dirs"] = [str(d) for d in Path(tempfile.gettempdir()).glob(vm_runs + "*")]
    return {k: v for k, v in left.items() if v}
