"""The node image builder's parts that need no Docker: kind's contract as read from its module, the
adaptations to it, image archives, the base layer's package closure, the CNI config, the cluster config."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import tomllib

import pytest
import yaml

from slirp_conformance import image_archive
from slirp_conformance.cluster import kind
from slirp_conformance.errors import SetupError
from slirp_conformance.kindnode import cni, component_images, contract
from slirp_conformance.kindnode.contract import KindContract


@pytest.fixture(scope="module")
def kind_v0_30():
    return KindContract.fetch("v0.30.0")


def test_contract_is_read_from_the_kind_module(kind_v0_30):
    assert "/sigs.k8s.io/kind@v0.30.0" in str(kind_v0_30.root)
    packages = kind_v0_30.packages()
    assert {"systemd", "iptables", "conntrack", "containerd", "runc"} <= set(packages)
    assert not set(packages) & contract.DROPPED_PACKAGES
    assert any(
        cmd.startswith("rm -f /lib/systemd/system/multi-user.target.wants")
        for cmd in kind_v0_30.post_install_commands()
    )
    steps = {(s.verb, s.argument) for s in kind_v0_30.later_steps()}
    assert {
        ("enable", "kubelet.service"),
        ("enable", "containerd.service"),
        ("mask", "systemd-binfmt.service"),
        ("mkdir", "/etc/kubernetes/manifests"),
    } <= steps
    assert kind_v0_30.pinned("CNI_PLUGINS_VERSION") == "v1.7.1"
    files = kind_v0_30.files()
    assert files["usr/local/bin/entrypoint"][1] == 0o755 and files["etc/crictl.yaml"][1] == 0o644
    assert "etc/systemd/system/containerd-fuse-overlayfs.service" not in files


def test_containerd_config_is_adapted_and_still_toml(kind_v0_30):
    config = tomllib.loads(kind_v0_30.files()["etc/containerd/config.toml"][0].decode())
    cri = config["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["restrict_oom_score_adj"] is True
    for runtime in ("runc", "test-handler"):
        options = cri["containerd"]["runtimes"][runtime]["options"]
        assert options == {"SystemdCgroup": True, "BinaryName": contract.RUNC_WRAPPER_IN_NODE}
    assert "proxy_plugins" not in config
    assert cri["sandbox_image"].startswith("registry.k8s.io/pause:")
    unit = kind_v0_30.files()["etc/systemd/system/containerd.service"][0].decode()
    assert f"ExecStart={contract.DEBIAN_CONTAINERD}\n" in unit and "/usr/local/bin/containerd" not in unit


def test_adaptations_refuse_a_config_they_do_not_recognise():
    with pytest.raises(SetupError, match="restrict_oom_score_adj"):
        contract.adapt_containerd_config("version = 2\n")
    with pytest.raises(SetupError, match="ExecStart"):
        contract.adapt_containerd_unit("[Service]\nExecStart=/opt/other/runtime --flag\n")


def test_an_unknown_step_of_kinds_base_stops_the_build(tmp_path):
    base = tmp_path / "images" / "base"
    base.mkdir(parents=True)
    (base / "Dockerfile").write_text(
        "FROM debian AS base\nRUN clean-install systemd \\\n  && rm -f /x\n"
        "RUN systemctl enable kubelet.service && curl -o /usr/bin/x http://x\n"
    )
    fake = KindContract("v9.9.9", tmp_path)
    assert fake.packages() == ["containerd", "runc", "systemd"] and fake.post_install_commands() == ["rm -f /x"]
    with pytest.raises(SetupError, match=r"a step this builder does not know: 'curl -o /usr/bin/x"):
        fake.later_steps()


def _layer(tmp_path, name: str, files: dict[str, bytes]):
    root = tmp_path / f"{name}-root"
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return image_archive.layer_from_dir(root, tmp_path / f"{name}.tar")


def test_image_archive_is_a_docker_archive_with_shared_layers(tmp_path):
    base = _layer(tmp_path, "base", {"etc/passwd": b"root:x:0:0::/:/bin/sh\n"})
    one = _layer(tmp_path, "one", {"usr/local/bin/one": b"#!/bin/sh\n"})
    two = _layer(tmp_path, "two", {"pause": b"\x7fELF"})
    images = [
        image_archive.Image(("registry.k8s.io/one:v1",), (base, one), entrypoint=("/usr/local/bin/one",)),
        image_archive.Image(
            ("registry.k8s.io/pause:3.10", "registry.k8s.io/pause:3.10.1"), (base, two), stop_signal="SIGRTMIN+3"
        ),
    ]
    out = io.BytesIO()
    ids = image_archive.write(images, out)
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as tar:
        names = tar.getnames()
        manifest = json.load(tar.extractfile("manifest.json"))
        configs = [json.load(tar.extractfile(m["Config"])) for m in manifest]
        layer_bytes = {n: tar.extractfile(n).read() for n in names if n.endswith("layer.tar")}
    assert len(layer_bytes) == 3, names  # the base layer once
    assert [m["RepoTags"] for m in manifest] == [list(i.tags) for i in images]
    for m, config, image_id in zip(manifest, configs, ids, strict=True):
        assert config["rootfs"]["diff_ids"] == [
            f"sha256:{hashlib.sha256(layer_bytes[p]).hexdigest()}" for p in m["Layers"]
        ]
        assert m["Config"] == f"{image_id}.json"
    assert configs[0]["config"]["Entrypoint"] == ["/usr/local/bin/one"]
    assert configs[1]["config"]["StopSignal"] == "SIGRTMIN+3"
    with tarfile.open(fileobj=io.BytesIO(layer_bytes[manifest[0]["Layers"][1]])) as layer:
        member = layer.getmember("./usr/local/bin/one")
        assert (
            member.uid == 0 and member.mode & 0o777 == (tmp_path / "one-root/usr/local/bin/one").stat().st_mode & 0o777
        )


def test_package_closure_follows_depends_and_pre_depends_and_picks_installed_alternatives(tmp_path):
    status = tmp_path / "var/lib/dpkg/status"
    status.parent.mkdir(parents=True)
    status.write_text(
        "Package: iptables\nStatus: install ok installed\nDepends: libxtables12 (>= 1.8), netbase | other\n\n"
        "Package: libxtables12\nStatus: install ok installed\nPre-Depends: libc6:any\n\n"
        "Package: libc6\nStatus: install ok installed\nDepends: libgcc-s1\n\n"
        "Package: libgcc-s1\nStatus: install ok installed\n\n"
        "Package: netbase\nStatus: install ok installed\n\n"
        "Package: unrelated\nStatus: install ok installed\n\n"
        "Package: removed\nStatus: deinstall ok config-files\n\n"
    )
    assert component_images.closure(tmp_path, ("iptables",)) == [
        "iptables",
        "libc6",
        "libgcc-s1",
        "libxtables12",
        "netbase",
    ]
    with pytest.raises(SetupError, match="removed is not installed"):
        component_images.closure(tmp_path, ("removed",))


def test_cni_config_and_node_script():
    config = json.loads(cni.conflist("10.244.1.0/24"))
    ptp, portmap = config["plugins"]
    assert ptp["type"] == "ptp" and ptp["ipam"]["ranges"] == [[{"subnet": "10.244.1.0/24"}]]
    assert ptp["ipMasq"] is False and portmap["capabilities"] == {"portMappings": True}
    me = cni.Node("c-control-plane", "198.19.1.2", "10.244.0.0/24")
    other = cni.Node("c-worker", "198.19.1.3", "10.244.1.0/24")
    script = cni.node_script(me, [other], "10.244.0.0/16")
    assert "ip route replace 10.244.1.0/24 via 198.19.1.3" in script
    assert '"subnet": "10.244.0.0/24"' in script and script.count("10.244.1.0/24") == 1  # only as a route
    assert "-s 10.244.0.0/16 ! -d 10.244.0.0/16" in script and "MASQUERADE" in script


def test_cluster_config_for_node_images_built_here():
    config = yaml.safe_load(
        kind.render_config("c", "slirp-conformance/kind-node:v1.34.0-abc", kvm=False, nodes=2, own_cni=True)
    )
    assert [n["role"] for n in config["nodes"]] == ["control-plane", "worker"]
    assert {n["image"] for n in config["nodes"]} == {"slirp-conformance/kind-node:v1.34.0-abc"}
    assert config["networking"] == {"dnsSearch": [], "disableDefaultCNI": True, "podSubnet": kind.POD_SUBNET}
    assert "enable_unprivileged_icmp = false" in config["containerdConfigPatches"][0]
    default = yaml.safe_load(kind.render_config("c", "kindest/node:v1.34.0", kvm=False))
    assert default["networking"] == {"dnsSearch": []} and len(default["nodes"]) == 1
    with pytest.raises(SetupError, match="at least its control-plane"):
        kind.render_config("c", "x", kvm=False, nodes=0)


def test_cni_waits_for_every_node_before_writing_to_each():
    """``kind create cluster`` can return before the worker's kubelet registered its Node: the CNI
    is written only once every node is there, to each of them (a node left out stays NotReady)."""
    from types import SimpleNamespace

    def node(name: str, address: str, cidr: str) -> dict:
        return {
            "metadata": {"name": name},
            "spec": {"podCIDR": cidr},
            "status": {"addresses": [{"type": "InternalIP", "address": address}]},
        }

    control = node("c-control-plane", "198.19.1.2", "10.244.0.0/24")
    worker = node("c-worker", "198.19.1.3", "10.244.1.0/24")
    listings = iter([[control], [control, worker]])
    written = []

    def run(argv, **kwargs):
        if argv[:2] == ["kubectl", "--kubeconfig"]:
            return SimpleNamespace(stdout=json.dumps({"items": next(listings)}))
        written.append(argv[3])  # docker exec -i NODE sh -c sh
        return SimpleNamespace(stdout="")

    nodes = cni.install("kubeconfig", "10.244.0.0/16", 2, run=run)
    assert [n.name for n in nodes] == written == ["c-control-plane", "c-worker"]
