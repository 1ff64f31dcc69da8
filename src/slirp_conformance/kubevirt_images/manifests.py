"""``kubevirt-operator.yaml`` and ``kubevirt-cr.yaml`` of a release, made by KubeVirt's own code.

As the release build does (``hack/generate.sh`` and ``hack/build-manifests.sh`` at the tag):
``tools/resource-generator`` writes the generated parts (the KubeVirt CRD, the operator's RBAC,
the CR template, the priority class), then ``tools/manifest-templator`` fills the tag's
``manifests/release/*.yaml.in`` in two passes (``--process-files``, ``--process-vars``) with the
release's values: ``--container-prefix=quay.io/kubevirt --container-tag=<tag>``, namespace
``kubevirt``, ``IfNotPresent``. The templates are read from the Go module cache.

One change to the release's CR where a release has it: ``virtTemplateDeployment.enabled: false``
(v1.9), so virt-operator deploys no virt-template and nothing reaches the build stand-ins of the
virt-template modules (``hack/go-shims/README.md``). ``useEmulation`` is the
installer's (``slirp_conformance.cluster.kubevirt_install``): it sets it when the nodes have no KVM.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

from slirp_conformance.errors import SetupError
from slirp_conformance.kubevirt_images import steps
from slirp_conformance.kubevirt_images.images import REGISTRY

NAMESPACE = "kubevirt"
# Feature gates a release turns on by default that the kind clusters built here cannot serve; off
# in the CR where the release has them as Beta.
DISABLED_GATES = {
    # v1.7+: containerDisks as Kubernetes image volumes. Kubernetes 1.34 ships its ImageVolume gate
    # off (the API server drops the pod's image volumes, and the containerDisk container then finds
    # no container-disk binary) and Debian's containerd (1.6/1.7) cannot mount image volumes.
    "ImageVolume": "Kubernetes 1.34's ImageVolume is off and Debian's containerd has no image volumes",
}
FILES = ("kubevirt-operator.yaml", "kubevirt-cr.yaml")


def generate(version: str, resource_generator: Path, templator: Path, module: Path, out: Path, log: Path) -> None:
    """Write FILES of ``version`` into ``out``."""
    generated = out / "generated"
    generated.mkdir(parents=True)
    gen = [
        ("kubevirt-priority-class.yaml", ["--type=priorityclass"]),
        ("kv-resource.yaml", ["--type=kv"]),
        (
            "kubevirt-cr.yaml.in",
            [
                "--type=kv-cr",
                "--namespace={{.Namespace}}",
                "--pullPolicy={{.ImagePullPolicy}}",
                "--featureGates={{.FeatureGates}}",
                "--infraReplicas={{.InfraReplicas}}",
            ],
        ),
        ("rbac-operator.authorization.k8s.yaml.in", ["--type=operator-rbac", "--namespace={{.Namespace}}"]),
    ]
    hypervisor = _has_flag(resource_generator, "hypervisor")  # v1.9; older generators have no such flag
    for name, args in gen:
        extra = ["--hypervisor={{.Hypervisor}}"] if name == "kubevirt-cr.yaml.in" and hypervisor else []
        text = steps.output([resource_generator, *args, *extra], log, f"resource-generator {args[0]}", 300)
        (generated / name).write_text(text)
    values = [
        f"--container-prefix={REGISTRY}",
        f"--container-tag={version}",
        f"--namespace={NAMESPACE}",
        "--image-pull-policy=IfNotPresent",
        "--verbosity=2",
        "--feature-gates=",
        "--infra-replicas=0",
        f"--kubevirt-logo-path={module / 'assets/kubevirt_logo.png'}",
        "--csv-namespace=placeholder",
        "--cdi-namespace=cdi",
        f"--csv-version={version.lstrip('v')}",
        "--package-name=kubevirt-dev",
        "--test-image-replicas=0",
        "--hypervisor=",
    ]  # flags a release's templator lacks are ignored (pflag)
    for name in FILES:
        template = module / "manifests" / "release" / f"{name}.in"
        if not template.is_file():
            raise SetupError(f"the KubeVirt {version} module has no {template.relative_to(module)}")
        included = out / f"{name}.in.tmp"
        included.write_text(
            steps.output(
                [templator, "--process-files", f"--generated-manifests-dir={generated}", f"--input-file={template}"],
                log,
                f"manifest-templator {name} (files)",
                300,
            )
        )
        text = steps.output(
            [templator, "--process-vars", *values, f"--input-file={included}"],
            log,
            f"manifest-templator {name} (vars)",
            300,
        )
        included.unlink()
        (out / name).write_text(text.rstrip("\n") + "\n")
    _edit_cr(out / "kubevirt-cr.yaml", out / "kubevirt-operator.yaml", module, log)


def _has_flag(binary: Path, flag: str) -> bool:
    r = subprocess.run([str(binary), "--help"], capture_output=True, text=True, timeout=60)
    return any(f"{dashes}{flag} " in r.stdout + r.stderr for dashes in ("-", "--"))  # Go's flag or pflag


def _kubevirt_crd_has(operator: Path, field: str) -> bool:
    for doc in yaml.safe_load_all(operator.read_text()):
        if doc and doc.get("kind") == "CustomResourceDefinition" and doc["metadata"]["name"] == "kubevirts.kubevirt.io":
            for v in doc["spec"]["versions"]:
                props = v["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["configuration"][
                    "properties"
                ]
                if field in props:
                    return True
    return False


def _beta_gates(module: Path) -> set[str]:
    """Feature gates the release turns on by default (State: Beta in pkg/virt-config/featuregate)."""
    gates = set()
    for source in (module / "pkg" / "virt-config" / "featuregate").glob("*.go"):
        text = source.read_text()
        constants = dict(re.findall(r'^\s*(\w+)\s*(?:featuregate\.)?\w*\s*=\s*"(\w+)"', text, re.M))
        for name in re.findall(r"RegisterFeatureGate\(FeatureGate\{Name: (\w+), State: Beta", text):
            gates.add(constants.get(name, name))
    return gates


def _edit_cr(cr_path: Path, operator: Path, module: Path, log: Path) -> None:
    docs = [d for d in yaml.safe_load_all(cr_path.read_text()) if d]
    kv = next((d for d in docs if d.get("kind") == "KubeVirt"), None)
    if kv is None:
        raise SetupError(f"{cr_path} has no KubeVirt object (log: {log})")
    developer = kv["spec"].setdefault("configuration", {}).setdefault("developerConfiguration", {})
    for gate, reason in DISABLED_GATES.items():
        if gate in _beta_gates(module):
            developer.setdefault("disabledFeatureGates", []).append(gate)
            steps.note(log, f"kubevirt-cr.yaml: feature gate {gate} disabled ({reason})")
    if _kubevirt_crd_has(operator, "virtTemplateDeployment"):
        kv["spec"].setdefault("configuration", {})["virtTemplateDeployment"] = {"enabled": False}
        steps.note(
            log,
            "kubevirt-cr.yaml: configuration.virtTemplateDeployment.enabled=false (virt-template "
            "modules are build stand-ins here)",
        )
    cr_path.write_text("---\n" + yaml.safe_dump_all(docs, sort_keys=False))
