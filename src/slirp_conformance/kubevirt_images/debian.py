"""The OS part of virt-handler and virt-launcher: Debian trixie trees with the packages KubeVirt's
own build puts into those images.

KubeVirt builds them on CentOS Stream RPM sets (``rpm/BUILD.bazel`` at the tag: ``handlerbase``
and ``launcherbase``); here the same roles come from Debian trixie (libvirt 11.3, QEMU 10.0,
passt, swtpm, virtiofsd...), which this machine's package mirror serves. A ``debootstrap
--variant=minbase`` tree (cached as a tarball) gets each role's packages with ``apt-get install
--no-install-recommends`` in a chroot (``debootstrap --include`` of libvirt fails on trixie:
systemd's pre-dependency is not configured in time). The result is one layer tarball per role,
cached by suite, mirror and package list.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from slirp_conformance import cache_dirs
from slirp_conformance.errors import SetupError
from slirp_conformance.image_archive import NOT_IN_A_LAYER
from slirp_conformance.kubevirt_images import steps

SUITE = "trixie"
MIRROR = os.environ.get("SLIRP_DEBIAN_MIRROR", "http://deb.debian.org/debian")
RECIPE = "2"  # bump when the steps below change
# Debian packages for KubeVirt's package sets, by role (rpm/BUILD.bazel at v1.9.0, the CentOS
# Stream 10 sets; v1.1.0's are a subset). What has no Debian counterpart or no use here is left
# out: SELinux policy and tools (no SELinux on kind nodes), numad, CentOS release files.
PACKAGES = {
    # handlerbase: virt-handler runs qemu-img, nft/iptables, ip, mount tools, xorriso, and passt-repair.
    "handler": (
        "iproute2",
        "nftables",
        "iptables",
        "procps",
        "psmisc",
        "qemu-utils",
        "xorriso",
        "passt",
        "curl",
        "kmod",
    ),
    # launcherbase: libvirt's QEMU driver, virtlogd and virsh; QEMU for x86 with SeaBIOS, iPXE and OVMF;
    # qemu-img; passt, swtpm, virtiofsd; xorriso (virt-launcher makes the cloud-init ISO with it).
    "launcher": (
        "libvirt-daemon",
        "libvirt-daemon-driver-qemu",
        "libvirt-daemon-log",
        "libvirt-clients",
        "qemu-system-x86",
        "qemu-utils",
        "seabios",
        "ipxe-qemu",
        "ovmf",
        "iproute2",
        "nftables",
        "procps",
        "psmisc",
        "xorriso",
        "passt",
        "swtpm",
        "swtpm-tools",
        "dmidecode",
        "virtiofsd",
        "ncat",
        "curl",
        "kmod",
    ),
}
# What a container image does not carry (the runtime also provides resolv.conf and the hostname)
# and the rest of Debian's docs.
EXCLUDED = (
    *NOT_IN_A_LAYER,
    "./usr/share/info/*",
    "./usr/share/locale/*",
    "./var/log/apt",
    "./var/log/*.log",  # the installers' logs; /var/log/libvirt (libvirtd's log dirs) stays
    "./etc/resolv.conf",
    "./etc/hostname",
)
# KubeVirt's images carry a qemu user and group 107 (cmd/virt-{handler,launcher}/BUILD.bazel): QEMU
# runs as 107 and the containerDisk files are owned by it. Added beside Debian's own system users.
USER_STEPS = (
    "groupadd --gid 107 qemu",
    "useradd --uid 107 --gid 107 --home-dir /home/qemu --no-create-home --shell /bin/bash qemu",
)
_TAR = ("--numeric-owner", "--xattrs", "--xattrs-include=*")


@dataclass(frozen=True)
class RoleLayer:
    role: str
    layer: Path
    packages: dict[str, str]  # installed package -> version
    cold_seconds: float | None  # None: from the cache


def _home(cache: Path | None) -> Path:
    return steps.root(cache) / "debian"


def minbase(cache: Path | None, log: Path) -> Path:
    """``debootstrap --variant=minbase SUITE``, as a tarball kept between recipes."""
    with steps.locked(_home(cache) / ".minbase.lock"):
        return _minbase(cache, log)


def _minbase(cache: Path | None, log: Path) -> Path:
    key = hashlib.sha256(f"{SUITE} {MIRROR} {' '.join(_TAR)}".encode()).hexdigest()[:12]
    home = _home(cache)
    tarball = home / f"minbase-{SUITE}-{key}.tar"
    if tarball.is_file():
        return tarball
    stage = cache_dirs.staging_dir(home, tarball.name)
    try:
        debs = home / "debs"
        debs.mkdir(parents=True, exist_ok=True)
        steps.run(
            ["debootstrap", "--variant=minbase", f"--cache-dir={debs}", SUITE, stage / "tree", MIRROR],
            log,
            f"debootstrap {SUITE} (mirror {MIRROR}; SLIRP_DEBIAN_MIRROR overrides it)",
            1800,
        )
        steps.run(
            ["tar", "--create", "--file", stage / "minbase.tar", *_TAR, "-C", stage / "tree", "."],
            log,
            "archiving the debootstrap tree",
            900,
        )
        os.replace(stage / "minbase.tar", tarball)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return tarball


def recipe(role: str) -> dict:
    return {
        "recipe": RECIPE,
        "suite": SUITE,
        "mirror": MIRROR,
        "packages": PACKAGES[role],
        "users": USER_STEPS,
        "excluded": EXCLUDED,
    }


def key_of(role: str) -> str:
    return hashlib.sha256(json.dumps(recipe(role), sort_keys=True).encode()).hexdigest()[:16]


def _dpkg_versions(tree: Path) -> dict[str, str]:
    versions, package = {}, None
    for line in (tree / "var/lib/dpkg/status").read_text().splitlines():
        if line.startswith("Package: "):
            package = line.split(": ", 1)[1]
        elif line.startswith("Version: ") and package:
            versions[package] = line.split(": ", 1)[1]
    return versions


def role_layer(role: str, version: str, cache: Path | None = None) -> RoleLayer:
    """The cached layer of ``role`` ("handler" | "launcher"), built when absent (root: chroot)."""
    with steps.locked(_home(cache) / f".{role}.lock"):
        return _role_layer(role, version, cache)


def _role_layer(role: str, version: str, cache: Path | None) -> RoleLayer:
    home = _home(cache)
    final = home / f"{role}-{SUITE}-{key_of(role)}"
    if (final / "layer.tar").is_file():
        meta = json.loads((final / "meta.json").read_text())
        return RoleLayer(role, final / "layer.tar", meta["packages"], None)
    if os.geteuid() != 0:
        raise SetupError("building KubeVirt's images needs root (debootstrap, chroot): run as root")
    if shutil.which("debootstrap") is None:
        raise SetupError("debootstrap is missing: run hack/setup.sh as root")
    log = steps.log_path(version, f"debian-{role}", cache)
    log.write_text(f"# Debian {SUITE} tree of the {role} image: {recipe(role)}\n")
    t0 = time.monotonic()
    home.mkdir(parents=True, exist_ok=True)
    base = minbase(cache, log)
    stage = cache_dirs.staging_dir(home, final.name)
    tree = stage / "tree"
    try:
        tree.mkdir()
        steps.run(["tar", "--extract", "--file", base, *_TAR, "-C", tree], log, "unpacking the minbase tree", 600)
        policy = tree / "usr/sbin/policy-rc.d"  # no service starts in the chroot
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C"}
        steps.run(["chroot", tree, "apt-get", "update", "-qq"], log, f"apt-get update in the {role} tree", 600, env=env)
        steps.run(
            ["chroot", tree, "apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES[role]],
            log,
            f"apt-get install of the {role} packages",
            1800,
            env=env,
        )
        steps.run(["chroot", tree, "apt-get", "clean"], log, "apt-get clean", 120, env=env)
        for command in USER_STEPS:
            steps.run(["chroot", tree, "/bin/sh", "-ec", command], log, f"`{command}` in the {role} tree", 60, env=env)
        policy.unlink()
        packages = _dpkg_versions(tree)
        steps.note(log, "installed: " + " ".join(f"{p}={v}" for p, v in sorted(packages.items())))
        steps.run(
            [
                "tar",
                "--create",
                "--file",
                stage / "layer.tar",
                *_TAR,
                "--sort=name",
                *[f"--exclude={pattern}" for pattern in EXCLUDED],
                "-C",
                tree,
                ".",
            ],
            log,
            f"archiving the {role} tree",
            900,
        )
        shutil.rmtree(tree)
        seconds = round(time.monotonic() - t0, 1)
        (stage / "meta.json").write_text(
            json.dumps({"recipe": recipe(role), "packages": packages, "build_s": seconds}, indent=1)
        )
        os.rename(stage, final)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    for old in home.glob(f"{role}-{SUITE}-*"):  # older recipes (400-600 MB each)
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    return RoleLayer(role, final / "layer.tar", packages, seconds)
