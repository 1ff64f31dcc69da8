"""The Go programs of KubeVirt's images, built from ``kubevirt.io/kubevirt`` at the release tag.

One wrapper module per release and build kind (``slirp_conformance.gobuild``): it requires the module at
the tag and takes its go.mod's replace block (``kubevirt.io/api`` and ``client-go``, staging
directories there, come as the modules published at the same tag). Two builds per release:

* ``kubevirt-images-go``: every program KubeVirt builds without cgo (virt-operator and its
  ``csv-generator``, virt-api, virt-controller, virt-exportproxy, the slirp sidecar, virt-chroot,
  the launcher's helpers) plus ``resource-generator`` and ``manifest-templator`` for the manifests;
* ``kubevirt-images-cgo``: virt-handler (``<linux/kvm.h>``) and virt-launcher, built with
  ``-tags libvirt_dlopen`` so it links only libc and loads the image's libvirt (Debian trixie's
  11.3) at run time: built against older headers, every libvirt API newer than them would be a
  stub that fails.

Tags and version stamps as KubeVirt's own build (``.bazelrc`` ``gotags=selinux``;
``hack/version.sh``: ``kubevirt.io/client-go/version``), so components report the release.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from slirp_conformance import gobuild
from slirp_conformance.checkout import GO_SHIMS
from slirp_conformance.errors import SetupError


@dataclass(frozen=True)
class Release:
    """What one KubeVirt release needs beyond its own go.mod to build here."""

    static: tuple[str, ...]  # import paths under kubevirt.io/kubevirt, CGO_ENABLED=0
    cgo: tuple[str, ...]
    replaces: tuple[tuple[str, str], ...] = ()
    toolchain: str | None = None  # a Go toolchain for releases today's Go does not compile


_COMMON_STATIC = (
    "cmd/virt-operator",
    "tools/csv-generator",  # in the virt-operator image (cmd/virt-operator/BUILD.bazel)
    "cmd/virt-api",
    "cmd/virt-controller",
    "cmd/virt-exportproxy",
    "cmd/sidecars/network-slirp-binding",
    "cmd/virt-chroot",
    "cmd/virt-launcher-monitor",
    "cmd/virt-freezer",
    "cmd/virt-probe",
    "cmd/virt-tail",
    "tools/resource-generator",
    "tools/manifest-templator",
)

RELEASES = {
    # v1.9.0's go.mod pins modules the proxy refuses (hack/go-shims/README.md).
    "v1.9.0": Release(
        static=(*_COMMON_STATIC, "cmd/virt-launcher/libvirt-hook-client"),
        cgo=("cmd/virt-handler", "cmd/virt-launcher"),
        replaces=(
            ("kubevirt.io/virt-template-api", "./shims/virt-template-api"),
            ("kubevirt.io/virt-template-client-go", "./shims/virt-template-client-go"),
            ("libguestfs.org/libnbd", "./shims/libnbd"),
        ),
    ),
    # v1.1.0 replaces github.com/golang/glog with a directory of its repository (a redirect to
    # klog, a nested module absent from the module zip): the release its go.mod requires instead.
    "v1.1.0": Release(
        static=_COMMON_STATIC,
        cgo=("cmd/virt-handler", "cmd/virt-launcher"),
        replaces=(("github.com/golang/glog", "github.com/golang/glog v1.0.0"),),
    ),
}


def release(version: str) -> Release:
    try:
        return RELEASES[version]
    except KeyError:
        raise SetupError(
            f"--images-from-source builds KubeVirt {', '.join(RELEASES)}, not {version}: pick one of those "
            "(src/slirp_conformance/kubevirt_images/gomodules.py RELEASES lists what each release needs to build here)"
        ) from None


def _stamps(version: str) -> str:
    return " ".join(
        f"-X kubevirt.io/client-go/version.{key}={value}"
        for key, value in (("gitVersion", version), ("gitTreeState", "clean"), ("buildDate", "1970-01-01T00:00:00Z"))
    )


def wrapper(version: str, kind: str) -> gobuild.WrapperModule:
    """``kind``: ``"go"`` or ``"cgo"``."""
    rel = release(version)
    packages = rel.static if kind == "go" else rel.cgo
    return gobuild.WrapperModule(
        name=f"kubevirt-images-{kind}",
        version=version,
        packages=tuple(f"kubevirt.io/kubevirt/{p}" for p in packages),
        shims=GO_SHIMS,
        requires=(f"kubevirt.io/kubevirt@{version}",),
        replace_from=f"kubevirt.io/kubevirt@{version}",
        local_replace_version=version,
        replaces=rel.replaces,
        tags=("selinux", "libvirt_dlopen") if kind == "cgo" else ("selinux",),
        ldflags=f"-s -w {_stamps(version)}",
        cgo=kind == "cgo",
        toolchain=rel.toolchain,
    )


@dataclass(frozen=True)
class Binaries:
    version: str
    go: gobuild.Built
    cgo: gobuild.Built

    def path(self, name: str) -> Path:
        for built in (self.go, self.cgo):
            if (built.bin_dir / name).is_file():
                return built.bin_dir / name
        return self.go.binary(name)  # raises, naming what there is

    def timings(self) -> dict[str, float]:
        """Seconds of the builds this process ran cold (cached ones are not listed)."""
        return {name: round(b.seconds, 1) for name, b in (("go", self.go), ("cgo", self.cgo)) if b.cold}


def build(version: str) -> Binaries:
    go = gobuild.build(wrapper(version, "go"))
    cgo = gobuild.build(wrapper(version, "cgo"))
    return Binaries(version, go, cgo)


def module_dir(version: str) -> Path:
    """The release's module source in the Go module cache (its manifests/, cmd/*/ files are read
    from there at build time, never copied into this repo)."""
    return gobuild.module_dir(f"kubevirt.io/kubevirt@{version}")
