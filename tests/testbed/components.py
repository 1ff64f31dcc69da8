"""What the test bed runs, as Go wrapper modules built by version (``slirp_conformance.gobuild``).

Nothing upstream is copied here: each component is a module path and version from the module
proxy. Kubernetes and etcd come from ``slirp_conformance.kubernetes_modules`` (shared with the kind
node image). KubeVirt replaces its in-repo staging modules in its own go.mod; the wrapper takes
that replace block over and points ``kubevirt.io/{api,client-go}`` at the KubeVirt tag.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from slirp_conformance import kubernetes_modules
from slirp_conformance.cluster import versions
from slirp_conformance.gobuild import Built, WrapperModule, build

KUBEVIRT_MANIFESTS_SOURCE = Path(__file__).resolve().parent / "kubevirt_manifests"


@dataclass(frozen=True)
class Pins:
    kubernetes: str
    etcd: str
    kwok: str

    @classmethod
    def from_versions_env(cls) -> Pins:
        return cls(
            kubernetes=versions.env("TESTBED_KUBERNETES_VERSION"),
            etcd=versions.env("TESTBED_ETCD_VERSION"),
            kwok=versions.env("TESTBED_KWOK_VERSION"),
        )


def kubernetes_module(version: str) -> WrapperModule:
    """kube-apiserver, kube-controller-manager and a kubectl of the same version."""
    return kubernetes_modules.kubernetes_module(version, ("kube-apiserver", "kube-controller-manager", "kubectl"))


def kube_scheduler_module(version: str) -> WrapperModule:
    """kube-scheduler alone, so the Kubernetes build above keeps its cache entry."""
    return dataclasses.replace(
        kubernetes_module(version), name="kube-scheduler", packages=("k8s.io/kubernetes/cmd/kube-scheduler",)
    )


etcd_module = kubernetes_modules.etcd_module


def kwok_module(version: str) -> WrapperModule:
    """kwok itself (no replace directives); the version stamp as its hack/releases.sh sets it."""
    return WrapperModule(
        name="kwok",
        version=version,
        packages=("sigs.k8s.io/kwok/cmd/kwok",),
        requires=(f"sigs.k8s.io/kwok@{version}",),
        ldflags=f"-s -w -X sigs.k8s.io/kwok/pkg/consts.Version={version}",
    )


def _kubevirt_module(
    name: str, kubevirt_version: str, packages: tuple[str, ...], source: Path | None = None
) -> WrapperModule:
    """A wrapper of kubevirt.io/kubevirt at a tag: its replace block, api/client-go at the tag."""
    return WrapperModule(
        name=name,
        version=kubevirt_version,
        packages=packages,
        source=source,
        requires=(f"kubevirt.io/kubevirt@{kubevirt_version}",),
        replace_from=f"kubevirt.io/kubevirt@{kubevirt_version}",
        local_replace_version=kubevirt_version,
        ldflags="-s -w",
    )


def kubevirt_manifests_module(kubevirt_version: str) -> WrapperModule:
    """Our small program printing KubeVirt's CRDs, plus KubeVirt's own resource-generator (the CR)."""
    return _kubevirt_module(
        "kubevirt-manifests",
        kubevirt_version,
        (".", "kubevirt.io/kubevirt/tools/resource-generator"),
        KUBEVIRT_MANIFESTS_SOURCE,
    )


def kubevirt_components_module(kubevirt_version: str) -> WrapperModule:
    """virt-api, virt-controller and virtctl (no cgo; virt-handler needs cgo and stays out).

    Version-stamped as KubeVirt's release build does (hack/version.sh ``kubevirt::version::ldflags``
    at the tag): unstamped, virt-api reports v0.0.0-master and virtctl prints a semver error on
    every command (its client/server version check, pkg/virtctl/version/version.go).
    """
    stamps = " ".join(
        f"-X kubevirt.io/client-go/version.{key}={value}"
        for key, value in (
            ("gitVersion", kubevirt_version),
            ("gitTreeState", "clean"),
            ("buildDate", "1970-01-01T00:00:00Z"),
        )
    )
    return dataclasses.replace(
        _kubevirt_module(
            "kubevirt-components",
            kubevirt_version,
            (
                "kubevirt.io/kubevirt/cmd/virt-api",
                "kubevirt.io/kubevirt/cmd/virt-controller",
                "kubevirt.io/kubevirt/cmd/virtctl",
            ),
        ),
        ldflags=f"-s -w {stamps}",
    )


@dataclass(frozen=True)
class Binaries:
    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path
    kube_scheduler: Path
    kubectl: Path
    kwok: Path
    builds: dict[str, Built]


def build_control_plane(pins: Pins) -> Binaries:
    """Build (or find in the cache) etcd, the Kubernetes binaries and kwok."""
    built = {
        "etcd": build(etcd_module(pins.etcd)),
        "kubernetes": build(kubernetes_module(pins.kubernetes)),
        "kube-scheduler": build(kube_scheduler_module(pins.kubernetes)),
        "kwok": build(kwok_module(pins.kwok)),
    }
    return Binaries(
        etcd=built["etcd"].binary("server"),
        kube_apiserver=built["kubernetes"].binary("kube-apiserver"),
        kube_controller_manager=built["kubernetes"].binary("kube-controller-manager"),
        kube_scheduler=built["kube-scheduler"].binary("kube-scheduler"),
        kubectl=built["kubernetes"].binary("kubectl"),
        kwok=built["kwok"].binary("kwok"),
        builds=built,
    )


def build_kubevirt_manifests(kubevirt_version: str) -> Built:
    return build(kubevirt_manifests_module(kubevirt_version))


def build_kubevirt_components(kubevirt_version: str) -> Built:
    return build(kubevirt_components_module(kubevirt_version))
