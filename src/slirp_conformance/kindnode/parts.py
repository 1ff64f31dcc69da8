"""The Go programs of a kind node, as wrapper modules by version, and what kubeadm asks for.

* kubelet, kubeadm and the control-plane commands from ``k8s.io/kubernetes`` at the node's tag,
  kubectl (the one ``hack/install-tools.sh --from-source`` builds) beside them;
* etcd and CoreDNS at the versions ``kubeadm config images list`` names for that tag;
* crictl (``sigs.k8s.io/cri-tools``) and the CNI plugins kind's base carries
  (``github.com/containernetworking/plugins``: ptp, host-local, loopback, portmap);
* pause, compiled with the host's gcc from ``build/pause/linux/pause.c`` of the Kubernetes module
  (statically, as its Makefile does).
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from slirp_conformance import buildlog, gobuild, kind_tools, kubernetes_modules
from slirp_conformance.errors import SetupError
from slirp_conformance.gobuild import WrapperModule, upstream_command

NODE_COMMANDS = ("kubelet", "kubeadm", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy")
CNI_PLUGINS = {
    "ptp": "plugins/main/ptp",
    "host-local": "plugins/ipam/host-local",
    "loopback": "plugins/main/loopback",
    "portmap": "plugins/meta/portmap",
}


@dataclass(frozen=True)
class KubeadmImages:
    """``kubeadm config images list`` of one Kubernetes version: component -> image reference."""

    refs: dict[str, str]

    def tag(self, component: str) -> str:
        return self.refs[component].rsplit(":", 1)[1]

    @property
    def etcd_module_version(self) -> str:
        """``3.6.4-0`` -> ``v3.6.4`` (the image revision suffix is not part of etcd's version)."""
        return "v" + self.tag("etcd").split("-", 1)[0]

    @property
    def coredns_module_version(self) -> str:
        return self.tag("coredns")


def kubeadm_images(kubeadm: Path, kubernetes: str) -> KubeadmImages:
    r = subprocess.run(
        [str(kubeadm), "config", "images", "list", "--kubernetes-version", kubernetes],
        capture_output=True,
        text=True,
        timeout=60,
    )
    refs = {}
    for line in r.stdout.split():
        name = line.rsplit(":", 1)[0].rsplit("/", 1)[1]
        refs[name] = line
    wanted = {"kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy", "etcd", "coredns", "pause"}
    if r.returncode != 0 or not wanted <= refs.keys():
        raise SetupError(
            f"`kubeadm config images list --kubernetes-version {kubernetes}` gave {r.stdout.split()} "
            f"(exit {r.returncode}: {r.stderr.strip()[-200:]}); expected {sorted(wanted)}"
        )
    return KubeadmImages(refs)


def node_module(kubernetes: str, toolchain: str | None = None) -> WrapperModule:
    return kubernetes_modules.kubernetes_module(kubernetes, NODE_COMMANDS, name="kubernetes-node", toolchain=toolchain)


def kubectl_module(kubernetes: str) -> WrapperModule:
    """The same kubectl ``hack/install-tools.sh --from-source`` builds (one cache entry for both)."""
    return kind_tools.kubectl_module(kubernetes)


def etcd_module(version: str, toolchain: str | None = None) -> WrapperModule:
    return kubernetes_modules.etcd_module(version, toolchain=toolchain)


def coredns_module(version: str, toolchain: str | None = None) -> WrapperModule:
    """CoreDNS's command is its module's root package; its plugins are compiled in (core/plugin/zplugin.go)."""
    return upstream_command("coredns", "github.com/coredns/coredns", version, toolchain=toolchain)


def crictl_module(version: str, toolchain: str | None = None) -> WrapperModule:
    return upstream_command(
        "crictl",
        "sigs.k8s.io/cri-tools",
        version,
        package="sigs.k8s.io/cri-tools/cmd/crictl",
        ldflags=f"-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version={version}",
        toolchain=toolchain,
    )


def cni_plugins_module(version: str, toolchain: str | None = None) -> WrapperModule:
    prefix = "github.com/containernetworking/plugins/"
    return WrapperModule(
        name="cni-plugins",
        version=version,
        packages=tuple(prefix + p for p in CNI_PLUGINS.values()),
        requires=(f"github.com/containernetworking/plugins@{version}",),
        toolchain=toolchain,
        ldflags=f"-s -w -X {prefix}pkg/utils/buildversion.BuildVersion={version}",
    )


def kubernetes_source(kubernetes: str) -> Path:
    """The k8s.io/kubernetes module directory in the module cache (for build/pause/linux/pause.c)."""
    return gobuild.module_dir(f"k8s.io/kubernetes@{kubernetes}")


def build_pause(kubernetes: str, pause_tag: str, dest: Path, log: Path) -> Path:
    """``pause`` from the Kubernetes module's C source: ``gcc -Os -Wall -Werror -static`` as build/pause/Makefile."""
    source = kubernetes_source(kubernetes) / "build" / "pause" / "linux" / "pause.c"
    if not source.is_file():
        raise SetupError(f"k8s.io/kubernetes@{kubernetes} has no {source.relative_to(source.parents[3])}")
    if not re.fullmatch(r"[0-9.]+", pause_tag):
        raise SetupError(f"unexpected pause tag {pause_tag!r} from kubeadm")
    buildlog.run(
        ["gcc", "-Os", "-Wall", "-Werror", "-static", f"-DVERSION=v{pause_tag}-0", "-o", dest, source],
        log,
        "compiling pause (gcc; hack/setup.sh installs gcc and libc6-dev)",
        120,
    )
    return dest
