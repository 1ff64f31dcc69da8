"""KubeVirt's component images, laid out as its ``cmd/*/BUILD.bazel`` lays them out at the tag.

* virt-operator, virt-api, virt-controller, virt-exportproxy, the slirp sidecar: KubeVirt puts one
  static binary (virt-operator also ``csv-generator``) in ``/usr/bin`` (the sidecar in ``/``) over
  its ``passwd-image`` (distroless Debian 12 with a ``nonroot-user`` 1001) and ``/.version``; user
  1001. Here the base is the part of distroless a static binary uses: passwd/group, nsswitch.conf,
  the CA bundle, ``/tmp``.
* virt-handler: the handler package set (``debian``), ``virt-handler`` and ``virt-chroot`` in
  ``/usr/bin`` (v1.1 also ``container-disk``, which virt-handler copies to the node, and its
  SELinux policy ``/virt_launcher.cil``), its nsswitch.conf; root.
* virt-launcher: the launcher package set, ``virt-launcher`` (cgo, dlopens libvirt),
  ``virt-launcher-monitor`` (file capability cap_net_bind_service, as KubeVirt's ``setcaps``),
  ``virt-freezer``, ``virt-probe``, ``virt-tail``, ``container-disk`` (a static C program of the
  tag, ``cmd/container-disk-v2alpha/main.c``, compiled here), ``node-labeller.sh``, the libvirt
  hook client (v1.9), ``/etc/libvirt/{qemu,virtqemud}.conf`` and the qemu hook of the tag, the
  empty ``/usr/lib64/qemu-kvm``, ``/var/run -> ../run``; user 107. Plus what Debian lacks: the
  ``virtqemud`` stand-in (``hack/kubevirt-images/virtqemud``: libvirtd under that name).

Files of the tag (configs, scripts, the C source) are read from the Go module cache at build time.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import struct
from dataclasses import dataclass
from pathlib import Path

from slirp_conformance import image_archive
from slirp_conformance.checkout import REPO
from slirp_conformance.errors import SetupError
from slirp_conformance.image_archive import Image
from slirp_conformance.kubevirt_images import debian, steps
from slirp_conformance.kubevirt_images.gomodules import Binaries

REGISTRY = "quay.io/kubevirt"  # the release manifests' --container-prefix (hack/config-default.sh, release builds)
VIRTQEMUD_SHIM = REPO / "hack" / "kubevirt-images" / "virtqemud"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
PATH_ENV = image_archive.DEFAULT_PATH

NONROOT = 1001  # KubeVirt's nonroot-user (BUILD.bazel passwd_entry)
QEMU = 107

# component -> (binaries in /usr/bin, entrypoint); the static, one-binary images
STATIC = {
    "virt-operator": (("virt-operator", "csv-generator"), "/usr/bin/virt-operator"),
    "virt-api": (("virt-api",), "/usr/bin/virt-api"),
    "virt-controller": (("virt-controller",), "/usr/bin/virt-controller"),
    "virt-exportproxy": (("virt-exportproxy",), "/usr/bin/virt-exportproxy"),
}
SIDECAR = "network-slirp-binding"
LAUNCHER_BINARIES = ("virt-launcher", "virt-launcher-monitor", "virt-freezer", "virt-probe", "virt-tail")


def image_name(component: str, version: str) -> str:
    return f"{REGISTRY}/{component}:{version}"


def _write(root: Path, rel: str, data: bytes | str, mode: int = 0o644, owner: tuple[int, int] = (0, 0)) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    path.chmod(mode)
    os.chown(path, *owner)
    return path


def _copy(root: Path, rel: str, src: Path, mode: int = 0o755, owner: tuple[int, int] = (0, 0)) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, path)
    path.chmod(mode)
    os.chown(path, *owner)
    return path


def _dir(root: Path, rel: str, mode: int = 0o755, owner: tuple[int, int] = (0, 0)) -> Path:
    path = root / rel
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(mode)
    os.chown(path, *owner)
    return path


def set_file_capability(path: Path, capability_bit: int) -> None:
    """``setcap <cap>+ep`` without libcap's tools: a VFS_CAP_REVISION_2 ``security.capability``."""
    magic_effective = 0x02000000 | 0x1  # revision 2, effective flag
    low, high = (1 << capability_bit, 0) if capability_bit < 32 else (0, 1 << (capability_bit - 32))
    os.setxattr(path, "security.capability", struct.pack("<IIIII", magic_effective, low, 0, high, 0))


CAP_NET_BIND_SERVICE = 10


def distroless_base(version: str, work: Path) -> Path:
    """The layer under the static images (see the module docstring)."""
    root = _dir(work, "static-base")
    _write(
        root,
        "etc/passwd",
        f"root:x:0:0:root:/root:/sbin/nologin\nnonroot-user:x:{NONROOT}:{NONROOT}::/home/nonroot-user:/bin/bash\n",
    )
    _write(root, "etc/group", f"root:x:0:\nnonroot-user:x:{NONROOT}:\n")
    _write(root, "etc/nsswitch.conf", "passwd: files\ngroup: files\nhosts: files dns\n")
    if not CA_BUNDLE.is_file():
        raise SetupError(f"{CA_BUNDLE} is missing (Debian's ca-certificates): run hack/setup.sh as root")
    _copy(root, "etc/ssl/certs/ca-certificates.crt", CA_BUNDLE, 0o644)
    _dir(root, "tmp", 0o1777)
    _dir(root, "home/nonroot-user", 0o755, (NONROOT, NONROOT))
    _write(root, ".version", f"{version}\n")
    return image_archive.layer_from_dir(root, work / "static-base.tar")


def _binary_layer(name: str, files: dict[str, Path], work: Path) -> Path:
    root = _dir(work, f"{name}-root")
    for rel, src in files.items():
        _copy(root, rel, src)
    return image_archive.layer_from_dir(root, work / f"{name}.tar")


def handler_layer(version: str, bins: Binaries, container_disk: Path, module: Path, work: Path) -> Path:
    root = _dir(work, "virt-handler-root")
    src = module / "cmd/virt-handler"
    for name in ("virt-handler", "virt-chroot"):
        _copy(root, f"usr/bin/{name}", bins.path(name))
    build = (src / "BUILD.bazel").read_text()
    if "//cmd/container-disk-v2alpha:container-disk" in build:  # v1.1: virt-handler copies it to the node
        _copy(root, "usr/bin/container-disk", container_disk)
    if (src / "virt_launcher.cil").is_file() and ":virt_launcher.cil" in build:  # v1.1: its SELinux policy, in /
        _copy(root, "virt_launcher.cil", src / "virt_launcher.cil", 0o644)
    _copy(root, "etc/nsswitch.conf", src / "nsswitch.conf", 0o644)
    _write(root, ".version", f"{version}\n")
    return image_archive.layer_from_dir(root, work / "virt-handler.tar")


def launcher_layer(version: str, bins: Binaries, container_disk: Path, module: Path, work: Path) -> Path:
    root = _dir(work, "virt-launcher-root")
    src = module / "cmd/virt-launcher"
    for name in LAUNCHER_BINARIES:
        _copy(root, f"usr/bin/{name}", bins.path(name))
    set_file_capability(root / "usr/bin/virt-launcher-monitor", CAP_NET_BIND_SERVICE)
    _copy(root, "usr/bin/container-disk", container_disk)
    _copy(root, "usr/bin/node-labeller.sh", src / "node-labeller/node-labeller.sh")
    if (src / "libvirt-hook-client").is_dir():  # v1.9: the LibvirtHooksServerAndClient hook
        _copy(root, "usr/bin/libvirt-hook-client", bins.path("libvirt-hook-client"))
    for conf in ("qemu.conf", "virtqemud.conf"):
        _copy(root, f"etc/libvirt/{conf}", src / conf, 0o644)
    if (src / "qemu").is_file():  # v1.9: the qemu hook and its directory owned by 107 (qemu-hook-tar):
        # with LibvirtHooksServerAndClient (Beta) the non-root launcher replaces the hook at run time.
        _dir(root, "etc/libvirt/hooks", 0o755, (QEMU, QEMU))
        _copy(root, "etc/libvirt/hooks/qemu", src / "qemu", 0o755, (QEMU, QEMU))
    _copy(root, "etc/nsswitch.conf", src / "nsswitch.conf", 0o644)
    _dir(root, "usr/lib64/qemu-kvm")
    (root / "var").mkdir()
    (root / "var/run").symlink_to("../run")
    _write(root, ".version", f"{version}\n")
    _copy(root, "usr/sbin/virtqemud", VIRTQEMUD_SHIM)
    _dir(root, "usr/libexec/slirp-conformance")
    (root / "usr/libexec/slirp-conformance/virtqemud").symlink_to("/usr/sbin/libvirtd")
    return image_archive.layer_from_dir(root, work / "virt-launcher.tar")


def compile_container_disk(module: Path, work: Path, log: Path) -> Path:
    """``cmd/container-disk-v2alpha``: KubeVirt's ``cc_binary`` with ``-static``."""
    if shutil.which("gcc") is None:
        raise SetupError("gcc is missing (it compiles KubeVirt's container-disk helper): run hack/setup.sh as root")
    out = work / "container-disk"
    steps.run(
        ["gcc", "-static", "-O2", "-o", out, module / "cmd/container-disk-v2alpha/main.c"],
        log,
        "compiling cmd/container-disk-v2alpha/main.c",
        300,
    )
    return out


_RULE = re.compile(r'(?:oci_image|container_image)\(\s*name = "(?P<name>[^"]+)"(?P<body>.*?)\n\)', re.S)


def bazel_image_user(module: Path, package: str, rule: str) -> str:
    """The ``user`` an image rule of the tag's BUILD.bazel gives its image, following ``base`` within
    the package and to ``//:passwd-image`` ("" = root: v1.1.0's launcher image has none, v1.9.0's 107;
    v1.1.0's node-labeller init container sets no runAsUser and needs root)."""
    build = module / package / "BUILD.bazel"
    rules = {m["name"]: m["body"] for m in _RULE.finditer(build.read_text())}
    if rule not in rules:
        raise SetupError(f"{build} has no image rule {rule!r}: this release lays out its images differently")
    body = rules[rule]
    user = re.search(r'\buser = "([^"]*)"', body)
    if user:
        return user[1]
    base = re.search(r'\bbase = "([^"]+)"', body)
    if base and base[1].startswith(":"):
        return bazel_image_user(module, package, base[1][1:])
    if base and base[1] == "//:passwd-image":
        return bazel_image_user(module, "", "passwd-image")
    return ""  # a distroless or RPM base


@dataclass(frozen=True)
class Component:
    name: str  # image name without registry and tag: virt-api
    image: Image


def components(
    version: str, bins: Binaries, module: Path, roles: dict[str, debian.RoleLayer], work: Path, log: Path
) -> list[Component]:
    """Every component image of ``version`` (layers written under ``work``); ``roles``: the Debian
    layers of virt-handler and virt-launcher. Entrypoints and users as the tag's image rules."""
    base = distroless_base(version, work)
    layers: dict[str, tuple[tuple[Path, ...], str, str]] = {}  # name -> (layers, entrypoint, BUILD package)
    for name, (binaries, entrypoint) in STATIC.items():
        binary = _binary_layer(name, {f"usr/bin/{b}": bins.path(b) for b in binaries}, work)
        layers[name] = ((base, binary), entrypoint, f"cmd/{name}")
    sidecar = _binary_layer(SIDECAR, {SIDECAR: bins.path(SIDECAR)}, work)
    layers[SIDECAR] = ((base, sidecar), f"/{SIDECAR}", f"cmd/sidecars/{SIDECAR}")
    container_disk = compile_container_disk(module, work, log)
    layers["virt-handler"] = (
        (roles["handler"].layer, handler_layer(version, bins, container_disk, module, work)),
        "/usr/bin/virt-handler",
        "cmd/virt-handler",
    )
    layers["virt-launcher"] = (
        (roles["launcher"].layer, launcher_layer(version, bins, container_disk, module, work)),
        "/usr/bin/virt-launcher",
        "cmd/virt-launcher",
    )
    return [
        Component(
            name,
            Image(
                tags=(image_name(name, version),),
                layers=image_layers,
                entrypoint=(entrypoint,),
                user=bazel_image_user(module, package, f"{name}-image"),
            ),
        )
        for name, (image_layers, entrypoint, package) in layers.items()
    ]


def recipe_digest() -> str:
    """Our files that shape the images (this module, the shim): part of the cache key."""
    h = hashlib.sha256()
    for path in (Path(__file__), VIRTQEMUD_SHIM):
        h.update(path.name.encode() + path.read_bytes())
    h.update(str(stat.S_IMODE(VIRTQEMUD_SHIM.stat().st_mode)).encode())
    return h.hexdigest()[:16]
