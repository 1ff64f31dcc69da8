"""Build (or find in the cache) everything the kind path needs from KubeVirt at one release.

``build(version)`` returns the docker-archive of each image (kind loads them with ``kind load
image-archive``), the names in them, the release manifests naming them, and how long each part
took when it was built. The whole set lives in ``<cache>/kubevirt-images/<version>/<key>``, made in
a staging directory and renamed into place; ``<key>`` hashes the inputs of every part (the Go
builds' keys, the Debian layers' recipes, the containerDisk's, our files), so any change makes a
new set. The parts keep their own caches, so a changed part rebuilds alone.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from slirp_conformance import cache_dirs, image_archive, progress
from slirp_conformance.errors import SetupError
from slirp_conformance.kubevirt_images import containerdisk, debian, gomodules, images, manifests, peer_image, steps

RECIPE = "1"


@dataclass(frozen=True)
class KubeVirtImages:
    version: str
    home: Path
    archives: dict[str, Path]  # image reference -> its docker-archive
    manifests_dir: Path  # kubevirt-operator.yaml, kubevirt-cr.yaml
    peer_image: str
    vm_image: str
    sidecar_image: str
    timings: dict[str, float]  # part -> seconds, for the parts built cold (by this or an earlier call)
    cold: bool

    @property
    def names(self) -> list[str]:
        return sorted(self.archives)


def _load(home: Path, cold: bool) -> KubeVirtImages:
    steps.mark_used(home)  # kept from pruning while a run may load it (steps.prune_others)
    meta = json.loads((home / "images.json").read_text())
    return KubeVirtImages(
        meta["version"],
        home,
        {k: home / v for k, v in meta["archives"].items()},
        home / "manifests",
        meta["peer_image"],
        meta["vm_image"],
        meta["sidecar_image"],
        meta["timings"],
        cold,
    )


def build(version: str, cache: Path | None = None) -> KubeVirtImages:
    gomodules.release(version)  # an unknown release: one line before anything is built
    if os.geteuid() != 0:
        raise SetupError("building KubeVirt's images needs root (debootstrap, chroot, file ownership): run as root")
    base = steps.root(cache) / version
    with steps.locked(base / ".lock"):  # a concurrent build of the same release finishes first
        return _build_locked(version, base, cache)


def _build_locked(version: str, base: Path, cache: Path | None) -> KubeVirtImages:
    timings: dict[str, float] = {}

    def part(name: str, what: str):
        return progress.phase(f"KubeVirt {version} images: {what}")

    with part("go", "Go programs from kubevirt.io/kubevirt (cold: 5-15 min on 2 cores)"):
        bins = gomodules.build(version)
    timings.update({f"go-{k}": v for k, v in bins.timings().items()})
    module = gomodules.module_dir(version)
    roles = {}
    for role in ("handler", "launcher"):
        with part(role, f"Debian {debian.SUITE} packages of virt-{role} (cold: 2-4 min)"):
            roles[role] = debian.role_layer(role, version, cache)
        cold = roles[role].cold_seconds
        if cold is not None:
            timings[f"debian-{role}"] = cold
    with part("containerdisk", "Fedora-like containerDisk (cold: 5-10 min with the guest image)"):
        disk = containerdisk.containerdisk(version, cache)
    if disk.cold_seconds is not None:
        timings["containerdisk"] = disk.cold_seconds
    with part("peer", "busybox for the peer pods, compiled from Debian's source (cold: about 2 min)"):
        peer = peer_image.peer_image(cache, version)
    key = hashlib.sha256(
        json.dumps(
            {
                "recipe": RECIPE,
                "go": bins.go.key,
                "cgo": bins.cgo.key,
                "images": images.recipe_digest(),
                "handler": roles["handler"].layer.parent.name,
                "launcher": roles["launcher"].layer.parent.name,
                "containerdisk": disk.image.layers[0].parent.name,
                "peer": peer.layers[0].parent.name,
                "manifests": hashlib.sha256(Path(manifests.__file__).read_bytes()).hexdigest(),
            },
            sort_keys=True,
        ).encode()
    ).hexdigest()[:16]
    final = base / key
    if (final / "images.json").is_file():
        return _load(final, cold=False)
    log = steps.log_path(version, "images", cache)
    log.write_text(f"# KubeVirt {version} images and manifests, set {key}\n")
    stage = cache_dirs.staging_dir(base, key)
    try:
        with part("manifests", "release manifests from resource-generator and manifest-templator"):
            t0 = time.monotonic()
            manifests.generate(
                version,
                bins.path("resource-generator"),
                bins.path("manifest-templator"),
                module,
                stage / "manifests",
                log,
            )
            timings["manifests"] = round(time.monotonic() - t0, 1)
        with part("archives", "image layers and docker-archives"):
            t0 = time.monotonic()
            work = stage / "work"
            work.mkdir()
            comps = images.components(version, bins, module, roles, work, log)
            (stage / "archives").mkdir()
            archives = {}
            for comp in [*comps, images.Component("containerdisk", disk.image), images.Component("peer", peer)]:
                dest = stage / "archives" / f"{comp.name}.tar"
                image_archive.write_file([comp.image], dest)
                archives[comp.image.tags[0]] = f"archives/{comp.name}.tar"
            shutil.rmtree(work)
            timings["archives"] = round(time.monotonic() - t0, 1)
        (stage / "images.json").write_text(
            json.dumps(
                {
                    "version": version,
                    "archives": archives,
                    "peer_image": peer.tags[0],
                    "vm_image": disk.image.tags[0],
                    "sidecar_image": images.image_name(images.SIDECAR, version),
                    "timings": timings,
                },
                indent=1,
            )
        )
        os.rename(stage, final)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    steps.prune_others(base, final)  # older sets of this release (2-3 GB each) nobody used lately
    return _load(final, cold=True)
