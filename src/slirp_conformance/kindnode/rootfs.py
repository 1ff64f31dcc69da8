"""The node's Debian base: debootstrap (minbase) with kind's packages and post-install steps.

kind builds its base ``FROM debian:bookworm-slim`` with ``clean-install <packages>`` and then
removes systemd units a container must not start, turns off journald's kmsg reading and links
/sbin/init to systemd (``contract.KindContract.post_install_commands``). Here the same packages
(plus Debian's containerd and runc) come from ``debootstrap --variant=minbase`` and the same
shell steps run chrooted in the tree. The result is cached by suite, packages and steps: the
tree (other parts read files from it) and its layer tarball.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from slirp_conformance import buildlog, cache_dirs, mounts
from slirp_conformance.errors import SetupError
from slirp_conformance.image_archive import NOT_IN_A_LAYER
from slirp_conformance.kindnode.contract import KindContract

MIRROR = os.environ.get("SLIRP_DEBIAN_MIRROR", "http://deb.debian.org/debian")
RECIPE = "1"  # bump when the steps below change
KEEP = 3  # bases kept in the cache
# What a container image does not carry, and what kind's clean-install removes after installing.
EXCLUDED = (*NOT_IN_A_LAYER, "./var/log/*")


@dataclass(frozen=True)
class Rootfs:
    tree: Path  # the extracted tree (read-only use)
    layer: Path  # its layer tarball
    key: str
    cold: bool


def recipe(contract: KindContract, suite: str) -> dict:
    return {
        "recipe": RECIPE,
        "suite": suite,
        "mirror": MIRROR,
        "packages": contract.packages(),
        "post_install": contract.post_install_commands(),
        "excluded": EXCLUDED,
    }


def key_of(contract: KindContract, suite: str) -> str:
    return hashlib.sha256(repr(sorted(recipe(contract, suite).items())).encode()).hexdigest()[:16]


def build(contract: KindContract, suite: str, cache: Path, log: Path) -> Rootfs:
    """The cached base for ``contract`` on Debian ``suite``; debootstrap (2-4 min) when absent."""
    key = key_of(contract, suite)
    home = cache / "kind-node" / "rootfs"
    final = home / f"{suite}-{key}"
    if (final / "layer.tar").is_file():
        return Rootfs(final / "tree", final / "layer.tar", key, cold=False)
    if os.geteuid() != 0:
        raise SetupError("building the kind node image needs root (debootstrap, chroot, containerd): run as root")
    if shutil.which("debootstrap") is None:
        raise SetupError("debootstrap is missing: run hack/setup.sh as root")
    stage = cache_dirs.staging_dir(home, final.name)
    tree = stage / "tree"
    try:
        log.write_text(f"# kind node base: {recipe(contract, suite)}\n")
        debs = cache / "kind-node" / "debs"
        debs.mkdir(parents=True, exist_ok=True)
        try:
            buildlog.run(
                [
                    "debootstrap",
                    "--variant=minbase",
                    f"--cache-dir={debs}",
                    f"--include={','.join(contract.packages())}",
                    suite,
                    tree,
                    MIRROR,
                ],
                log,
                f"debootstrap {suite} (mirror {MIRROR}; SLIRP_DEBIAN_MIRROR overrides it)",
                1800,
            )
        finally:
            mounts.unmount_under(tree)  # debootstrap mounts /proc and /sys in the tree; a failure can leave them
        for command in contract.post_install_commands():
            buildlog.run(["chroot", tree, "/bin/sh", "-ec", command], log, f"kind's base step {command!r}", 120)
        exclude = [f"--exclude={pattern}" for pattern in EXCLUDED]
        buildlog.run(
            [
                "tar",
                "--create",
                "--file",
                stage / "layer.tar",
                "--numeric-owner",
                "--xattrs",
                "--xattrs-include=*",
                "--sort=name",
                *exclude,
                "-C",
                tree,
                ".",
            ],
            log,
            "archiving the node's base",
            900,
        )
        os.rename(stage, final)
    finally:
        if stage.exists():
            mounts.unmount_under(tree)
            shutil.rmtree(stage, ignore_errors=True)
    # Older recipes (600-800 MB each): the newest KEEP stay (kind versions differ in their packages,
    # so the node images of two KubeVirt pins need two bases).
    entries = sorted((p for p in home.glob(f"{suite}-*") if p != final), key=lambda p: p.stat().st_mtime)
    for old in entries[: max(0, len(entries) - (KEEP - 1))]:
        shutil.rmtree(old, ignore_errors=True)
    return Rootfs(final / "tree", final / "layer.tar", key, cold=True)
