"""Every option value and environment setting a conformance run reads, checked before anything
boots or builds: one line naming the fix (pytest exits 4), never a traceback, a hang, or a
verdict for something other than what was asked.

What is checked here is the *shape* of each input and whether it applies to the chosen target;
what needs the host or the cluster (tools, docker, the kubeconfig's server) is the targets'
preflight, which runs next. ``release_under_test`` is the one answer to "which KubeVirt release
does this run check": the option when given, else ``KUBEVIRT_DEFAULT_VERSION``.
"""

from __future__ import annotations

import os
import re
import string
from dataclasses import dataclass
from pathlib import Path

from slirp_conformance import cache_dirs
from slirp_conformance.cluster import versions
from slirp_conformance.errors import SetupError

# Options that mean something on one kind of target only. A value given for another target would
# be ignored silently, and the run would check something the user did not ask for.
QEMU_ONLY = ("qemu_netdev_extra", "qemu_sysctl", "sidecar_render", "reference_guest", "qemu_accel")
CLUSTER_ONLY = (
    "kubeconfig",
    "context",
    "kubevirt_manifests",
    "slirp_sidecar_image",
    "vm_image",
    "peer_image",
    "guest_profile",
)
KIND_ONLY = ("kind_cluster_name", "keep_cluster", "preload_images", "images_from_source", "kind_nodes")
KIND_NODES_MAX = 10  # a control plane and nine workers: far beyond what a laptop or CI runner holds
EXISTING_CLUSTER_ONLY = ("install_kubevirt",)

# An image reference as the container runtimes take it: [registry[:port]/]path[:tag][@sha256:hex].
_IMAGE = re.compile(
    r"^(?:[a-z0-9.-]+(?::\d+)?/)?[a-z0-9]+(?:[._/-][a-z0-9]+)*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[0-9a-f]{64})?$"
)
# kind's own rule for cluster names (sigs.k8s.io/kind v0.30.0 pkg/internal/apis/config/validate.go
# validNameRE, and clusterNameMax = 50 in pkg/cluster/internal/create/create.go).
_KIND_NAME = re.compile(r"^[a-z0-9.-]+$")
_KIND_NAME_MAX = 50
# `-netdev user,...` suboptions: comma-separated key=value (key alone for booleans).
_NETDEV_OPTION = re.compile(r"^[a-z0-9][a-z0-9_-]*(=[^,\s]+)?$")
# What the slirp sidecar itself sets; a run that overrode them would check another network.
_NETDEV_OWNED = ("id", "net", "hostfwd", "dnssearch", "type")


@dataclass(frozen=True)
class ReleaseUnderTest:
    version: versions.KubeVirtVersion
    source: str  # "--kubevirt-version" or "KUBEVIRT_DEFAULT_VERSION (hack/versions.env)"


def release_under_test(option_value: str | None) -> ReleaseUnderTest:
    """The KubeVirt release a run checks (strictly parsed; SetupError names the range)."""
    if option_value:
        return ReleaseUnderTest(versions.parse_kubevirt_version(option_value), "--kubevirt-version")
    return ReleaseUnderTest(versions.default_version(), "KUBEVIRT_DEFAULT_VERSION (hack/versions.env)")


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def check_run(get, default, env=os.environ) -> None:
    """All of a run's inputs; ``get(dest)`` / ``default(dest)``: an option's value and its default."""
    target = get("target")
    check_options(get, default, target)
    check_environment(env)
    if target == "qemu":
        from slirp_conformance.reference import reference_vm, sidecar_render

        for text in get("qemu_sysctl"):
            reference_vm.parse_sysctl(text)
        sidecar_render.check(get("sidecar_render"), str(release_under_test(get("kubevirt_version")).version))


def check_options(get, default, target: str) -> None:
    """Each option's shape, and that it applies to ``target``."""
    if get("kubevirt_version") is not None:
        versions.parse_kubevirt_version(get("kubevirt_version"))
    groups = {"qemu": QEMU_ONLY, "kind": CLUSTER_ONLY + KIND_ONLY, "cluster": CLUSTER_ONLY + EXISTING_CLUSTER_ONLY}
    wrong = [
        d
        for d in QEMU_ONLY + CLUSTER_ONLY + KIND_ONLY + EXISTING_CLUSTER_ONLY
        if d not in groups[target] and get(d) != default(d)
    ]
    if wrong:
        where = {
            d: t for t, ds in (("qemu", QEMU_ONLY), ("kind", KIND_ONLY), ("cluster", EXISTING_CLUSTER_ONLY)) for d in ds
        }
        first = wrong[0]
        applies = f"--target={where[first]}" if first in where else "--target=kind and --target=cluster"
        raise SetupError(
            f"{_flag(first)} applies to {applies} only, and this run is --target={target}: "
            f"drop it (or choose that target)"
        )
    for option in ("artifacts", "report_dir"):
        if get(option):
            check_writable_dir(f"{_flag(option)} {get(option)}", Path(get(option)), fix="pass another directory")
    _check_netdev_extra(get("qemu_netdev_extra"))
    for image_option in ("slirp_sidecar_image", "vm_image", "peer_image"):
        if get(image_option) is not None:
            check_image_reference(_flag(image_option), get(image_option))
    for image in get("preload_images"):
        check_image_reference("--preload-images", image)
    name = get("kind_cluster_name")
    if not _KIND_NAME.match(name) or len(name) > _KIND_NAME_MAX:
        raise SetupError(
            f"--kind-cluster-name {name!r}: kind takes lower-case letters, digits, '.' and '-', "
            f"at most {_KIND_NAME_MAX} of them, e.g. slirp-conformance"
        )
    if not 1 <= get("kind_nodes") <= KIND_NODES_MAX:
        raise SetupError(
            f"--kind-nodes {get('kind_nodes')}: a cluster has 1 to {KIND_NODES_MAX} nodes; pass e.g. --kind-nodes 2"
        )
    manifests = get("kubevirt_manifests")
    if manifests is not None:
        missing = [n for n in ("kubevirt-operator.yaml", "kubevirt-cr.yaml") if not (Path(manifests) / n).is_file()]
        if missing:
            raise SetupError(
                f"--kubevirt-manifests {manifests}: {', '.join(missing)} not found there; pass the "
                f"directory holding the release's kubevirt-operator.yaml and kubevirt-cr.yaml"
            )


def _check_netdev_extra(value: str) -> None:
    if not value:
        return
    for part in value.split(","):
        if not _NETDEV_OPTION.match(part):
            raise SetupError(
                f"--qemu-netdev-extra {value!r}: {part!r} is not a `-netdev user` suboption "
                f"(key or key=value, comma-separated, no spaces), e.g. restrict=on"
            )
        key = part.split("=", 1)[0]
        if key in _NETDEV_OWNED:
            raise SetupError(
                f"--qemu-netdev-extra {value!r}: {key}= is the slirp sidecar's to set; "
                f"a run that overrides it checks another network: drop it"
            )


def check_image_reference(option: str, value: str) -> None:
    if not _IMAGE.match(value) or len(value) > 255:
        raise SetupError(
            f"{option} {value!r} is not an image reference like quay.io/kubevirt/network-slirp-binding:v1.9.0"
        )


# -- environment settings ---------------------------------------------------------------------
def check_environment(env: dict[str, str] | os._Environ[str] = os.environ) -> None:
    """The environment variables the suite reads (README "Environment")."""
    _check_cache_root(env)
    deb = env.get("SLIRP_REF_KERNEL_DEB")
    if deb and not (deb.endswith(".deb") and Path(deb).is_file()):
        raise SetupError(
            f"SLIRP_REF_KERNEL_DEB={deb}: not a readable .deb file; point it at a "
            f"linux-image-*.deb or unset it (the kernel is then downloaded with apt-get)"
        )
    mirror = env.get("SLIRP_DEBIAN_MIRROR")
    if mirror and not re.match(r"^https?://[^\s/]+(/\S*)?$", mirror):
        raise SetupError(
            f"SLIRP_DEBIAN_MIRROR={mirror!r}: give an http(s) URL of a Debian mirror, "
            f"e.g. http://deb.debian.org/debian, or unset it"
        )
    qemu = env.get("SLIRP_QEMU_BINARY")
    if qemu and not _executable(qemu):
        raise SetupError(
            f"SLIRP_QEMU_BINARY={qemu}: no such executable; point it at a qemu-system-x86_64 "
            f"or unset it (Debian's: apt-get install qemu-system-x86)"
        )
    password = env.get("SLIRP_CONFORMANCE_GUEST_PASSWORD")
    if password is not None and (not password or any(c not in _PASSWORD_CHARS for c in password) or len(password) > 64):
        # Typed on a serial console and into cloud-init's YAML: printable ASCII without spaces.
        raise SetupError(
            "SLIRP_CONFORMANCE_GUEST_PASSWORD: use 1-64 printable ASCII characters without "
            "spaces or quotes, or unset it (a random one is made per run)"
        )


_PASSWORD_CHARS = set(string.ascii_letters + string.digits + "!#%&()*+,-./:;<=>?@[]^_{|}~")


def _executable(name: str) -> bool:
    from shutil import which

    return which(name) is not None


def _check_cache_root(env) -> None:
    root = cache_dirs.cache_root(env)
    name = (
        "SLIRP_CONFORMANCE_CACHE"
        if env.get("SLIRP_CONFORMANCE_CACHE")
        else ("XDG_CACHE_HOME" if env.get("XDG_CACHE_HOME") else "the cache directory ~/.cache")
    )
    check_writable_dir(f"{name} ({root})", root, fix="point SLIRP_CONFORMANCE_CACHE at a directory you can write")


def check_writable_dir(what: str, path: Path, *, fix: str) -> None:
    """The directory exists and is writable, or can be created (its nearest existing ancestor is a
    writable directory)."""
    path = Path(path).absolute()
    existing = next((p for p in (path, *path.parents) if p.exists() or p.is_symlink()), Path("/"))
    if not existing.is_dir():
        raise SetupError(f"{what}: {existing} is a file, not a directory; {fix}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise SetupError(f"{what}: {existing} is not writable by this user; {fix}")
