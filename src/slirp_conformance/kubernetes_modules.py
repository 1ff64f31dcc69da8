"""Kubernetes, etcd and the other Go programs of a cluster, as wrapper modules (``slirp_conformance.gobuild``).

Nothing upstream is copied here: each program is a module path and version from the module
proxy. ``k8s.io/kubernetes`` replaces its in-repo staging modules in its own go.mod; the wrapper
takes that replace block over and points each staging module at its published tag
(``k8s.io/X v0.<minor>.<patch>``). The kind node image (``slirp_conformance.kindnode``) builds
from here.
"""

from __future__ import annotations

from slirp_conformance.errors import SetupError
from slirp_conformance.gobuild import WrapperModule, upstream_command
from slirp_conformance.version import VersionError
from slirp_conformance.version import parse as parse_version

KUBERNETES_TAGS = ("selinux", "notest")  # hack/lib/golang.sh at the tags: what release builds use


def staging_version(kubernetes: str) -> str:
    """k8s.io/kubernetes v1.X.Y publishes its staging modules as v0.X.Y."""
    try:
        release = parse_version(kubernetes)
    except VersionError as e:
        raise SetupError(f"Kubernetes version: {e}; fix hack/versions.env") from None
    if release.major != 1:
        raise SetupError(f"Kubernetes version {kubernetes!r} is not v1.X.Y: fix hack/versions.env")
    return f"v0.{release.minor}.{release.patch}"


def version_ldflags(package: str, version: str) -> str:
    """``-X`` stamps of a ``gitVersion``/``gitMajor``/``gitMinor`` package (component-base, client-go)."""
    release = parse_version(version)
    major, minor = str(release.major), str(release.minor)
    return " ".join(
        f"-X {package}.{key}={value}"
        for key, value in (
            ("gitVersion", version),
            ("gitMajor", major),
            ("gitMinor", minor),
            ("gitTreeState", "clean"),
            ("buildDate", "1970-01-01T00:00:00Z"),
        )
    )


def kubernetes_module(
    version: str, commands: tuple[str, ...], *, name: str = "kubernetes", toolchain: str | None = None
) -> WrapperModule:
    """``k8s.io/kubernetes/cmd/<command>`` for each command, at ``version``.

    Tags and version stamps as Kubernetes' own build sets them (hack/lib/golang.sh and
    hack/lib/version.sh at the tag): without the stamps the binaries call themselves v0.0.0, and
    kubeadm would pick the control-plane image tags of v0.0.0.
    """
    staging = staging_version(version)  # validates the version first
    ldflags = " ".join(
        [
            "-s -w",
            version_ldflags("k8s.io/component-base/version", version),
            version_ldflags("k8s.io/client-go/pkg/version", version),
        ]
    )
    return WrapperModule(
        name=name,
        version=version,
        packages=tuple(f"k8s.io/kubernetes/cmd/{c}" for c in commands),
        requires=(f"k8s.io/kubernetes@{version}",),
        replace_from=f"k8s.io/kubernetes@{version}",
        local_replace_version=staging,
        tags=KUBERNETES_TAGS,
        ldflags=ldflags,
        toolchain=toolchain,
    )


def etcd_module(version: str, *, toolchain: str | None = None) -> WrapperModule:
    """etcd's server module has ``package main`` at its root; its binary is named ``server``."""
    return upstream_command("etcd", "go.etcd.io/etcd/server/v3", version, toolchain=toolchain)
