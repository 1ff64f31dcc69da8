"""KubeVirt's images and release manifests built here (src/slirp_conformance/kubevirt_images).

The manifests are checked against the tag's own committed output of the same generators, the
images against the layout KubeVirt's BUILD files give them, and the launcher's virtqemud stand-in
by running KubeVirt's node-labeller.sh in the image (Docker). Builds are cached: a cold first run
takes 10-20 min (Go, Debian trees, the Fedora-like guest)."""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml

from slirp_conformance import docker_daemon
from slirp_conformance.kubevirt_images import build, containerdisk, gomodules, images, manifests, steps

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="building KubeVirt's images needs root (debootstrap)")


@pytest.fixture(scope="module", params=["v1.9.0", "v1.1.0"])
def release(request):
    return request.param


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def test_manifests_are_the_tags_own_generators_output(release, tmp_path):
    bins = gomodules.build(release)
    module = gomodules.module_dir(release)
    out = tmp_path / "manifests"
    manifests.generate(
        release, bins.path("resource-generator"), bins.path("manifest-templator"), module, out, tmp_path / "log"
    )
    # The tag's manifests/generated/ holds what its hack/generate.sh wrote with the same generators.
    committed = module / "manifests" / "generated"
    for generated in sorted((out / "generated").iterdir()):
        assert generated.read_text() == (committed / generated.name).read_text(), (
            f"{generated.name} differs from the tag's {committed / generated.name}"
        )
    operator = _docs(out / "kubevirt-operator.yaml")
    deployment = next(d for d in operator if d["kind"] == "Deployment" and d["metadata"]["name"] == "virt-operator")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert (
        container["image"] == images.image_name("virt-operator", release) == f"quay.io/kubevirt/virt-operator:{release}"
    )
    assert {"name": "KUBEVIRT_VERSION", "value": release} in container["env"]
    assert container["imagePullPolicy"] == "IfNotPresent"
    kv = next(d for d in _docs(out / "kubevirt-cr.yaml") if d["kind"] == "KubeVirt")
    template = kv["spec"]["configuration"].get("virtTemplateDeployment")
    if release == "v1.9.0":  # the field exists from v1.9: the virt-template stand-ins must stay unreached
        assert template == {"enabled": False}
    else:
        assert template is None, f"{release}'s CRD has no virtTemplateDeployment, the CR must not set it"


def test_generated_manifest_comparison_can_fail(tmp_path):
    """Negative control: the CR template generated without --hypervisor (the generator's default, kvm)
    is not the tag's file, so the comparison above sees a wrong invocation."""
    bins = gomodules.build("v1.9.0")
    committed = gomodules.module_dir("v1.9.0") / "manifests" / "generated" / "kubevirt-cr.yaml.in"
    wrong = steps.output(
        [bins.path("resource-generator"), "--type=kv-cr", "--namespace={{.Namespace}}",
         "--pullPolicy={{.ImagePullPolicy}}", "--featureGates={{.FeatureGates}}", "--infraReplicas={{.InfraReplicas}}"],
        tmp_path / "log", "resource-generator", 300,
    )  # fmt: skip
    assert wrong != committed.read_text() and "name: kvm" in wrong


def _layers(archive: Path) -> tuple[dict, list[tarfile.TarInfo]]:
    """(image config, every member of every layer, lowest layer first)."""
    members: list[tarfile.TarInfo] = []
    with tarfile.open(archive) as outer:
        manifest = json.load(outer.extractfile("manifest.json"))[0]
        config = json.load(outer.extractfile(manifest["Config"]))
        for layer in manifest["Layers"]:
            with tarfile.open(fileobj=outer.extractfile(layer)) as inner:
                members += inner.getmembers()
    return config, members


@pytest.fixture(scope="module")
def built_v1_9():
    return build.build("v1.9.0")


def _member(members: list[tarfile.TarInfo], path: str) -> tarfile.TarInfo:
    found = [m for m in members if m.name.removeprefix("./") == path]
    assert found, f"{path} is in no layer"
    return found[-1]  # the upper layer's wins


@pytest.mark.parametrize(
    "component, entrypoint, user",
    [
        ("virt-operator", "/usr/bin/virt-operator", "1001"),
        ("virt-api", "/usr/bin/virt-api", "1001"),
        ("virt-controller", "/usr/bin/virt-controller", "1001"),
        ("virt-exportproxy", "/usr/bin/virt-exportproxy", "1001"),
        ("network-slirp-binding", "/network-slirp-binding", "1001"),
        ("virt-handler", "/usr/bin/virt-handler", ""),
        ("virt-launcher", "/usr/bin/virt-launcher", "107"),
    ],
)
def test_component_images_are_laid_out_as_kubevirts(built_v1_9, component, entrypoint, user):
    ref = images.image_name(component, "v1.9.0")
    config, members = _layers(built_v1_9.archives[ref])
    assert config["config"]["Entrypoint"] == [entrypoint]
    assert config["config"].get("User", "") == user
    assert _member(members, entrypoint.lstrip("/")).mode & 0o111
    assert _member(members, ".version").isfile()


def test_launcher_image_carries_libvirt_qemu_and_the_virtqemud_stand_in(built_v1_9):
    _, members = _layers(built_v1_9.archives[images.image_name("virt-launcher", "v1.9.0")])
    for path in ("usr/sbin/libvirtd", "usr/sbin/virtlogd", "usr/bin/qemu-system-x86_64", "usr/bin/virsh",
                 "usr/bin/xorriso", "usr/bin/container-disk", "usr/bin/node-labeller.sh",
                 "etc/libvirt/virtqemud.conf", "etc/libvirt/qemu.conf", "etc/libvirt/virtlogd.conf"):  # fmt: skip
        _member(members, path)
    shim = _member(members, "usr/sbin/virtqemud")
    assert shim.isfile() and shim.mode & 0o111
    named = _member(members, "usr/libexec/slirp-conformance/virtqemud")
    assert named.issym() and named.linkname == "/usr/sbin/libvirtd"
    assert _member(members, "var/run").linkname == "../run"
    hook = _member(members, "etc/libvirt/hooks/qemu")
    assert (hook.uid, hook.gid) == (107, 107)
    monitor = _member(members, "usr/bin/virt-launcher-monitor")
    assert "SCHILY.xattr.security.capability" in monitor.pax_headers, "no file capability on virt-launcher-monitor"


def test_containerdisk_is_one_qcow2_owned_by_qemu(built_v1_9):
    _, members = _layers(built_v1_9.archives[f"{containerdisk.NAME}:v1.9.0"])
    disk = _member(members, "disk/disk.qcow2")
    assert (disk.uid, disk.gid) == (107, 107)
    assert disk.size > 100 << 20


@pytest.mark.docker
def test_virtqemud_stand_in_runs_kubevirts_node_labeller(built_v1_9):
    """KubeVirt's node-labeller.sh (the virt-handler pod's init container) starts `virtqemud -d` and
    queries it with virsh: in the launcher image libvirtd answers under that name."""
    ref = images.image_name("virt-launcher", "v1.9.0")
    script = (
        "node-labeller.sh >/tmp/labeller.log 2>&1; echo rc=$?; "
        "grep -c '<domainCapabilities>' /var/lib/kubevirt-node-labeller/virsh_domcapabilities.xml; "
        "cat /proc/$(cat /run/libvirtd.pid)/comm; readlink /run/libvirt/virtqemud-sock; "
        "virsh -c qemu:///system version | grep -c 'Running hypervisor: QEMU'; "
        # negative control: the same query through a socket nobody serves finds no hypervisor
        "virsh -c 'qemu:///system?socket=/run/libvirt/absent-sock' version 2>/dev/null | grep -c 'Running hypervisor'"
    )
    with docker_daemon.engine("kubevirt-images-selftest") as docker:
        present = subprocess.run(docker.docker("image", "inspect", ref), capture_output=True, env=docker.env())
        subprocess.run(docker.docker("load", "-i", str(built_v1_9.archives[ref])), check=True, env=docker.env(),
                       capture_output=True, timeout=600)  # fmt: skip
        try:
            r = subprocess.run(
                docker.docker("run", "--rm", "--privileged", "--user", "0", "--network", "none",
                              "--tmpfs", "/var/lib/kubevirt-node-labeller", "--entrypoint", "/bin/sh", ref, "-c",
                              script),
                capture_output=True, text=True, env=docker.env(), timeout=300,
            )  # fmt: skip
        finally:
            if present.returncode != 0:  # leave Docker's images as they were
                subprocess.run(docker.docker("rmi", ref), capture_output=True, env=docker.env(), timeout=120)
    assert r.stdout.split() == ["rc=0", "1", "virtqemud", "libvirt-sock", "1", "0"], (r.stdout, r.stderr[-2000:])
