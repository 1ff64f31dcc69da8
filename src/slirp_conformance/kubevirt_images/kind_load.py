"""Put KubeVirt's images built here into a kind cluster's nodes (``kind load image-archive``).

Every node gets every image: kind imports each archive into each node's containerd
(``ctr -n k8s.io images import``). The release manifests pull ``IfNotPresent``, so nothing is
ever pulled. A node that already has an image of the same id (a kept cluster) is skipped.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

from slirp_conformance import progress
from slirp_conformance.errors import SetupError
from slirp_conformance.kubevirt_images.build import KubeVirtImages

LOAD_TIMEOUT = 1200.0  # one archive (the containerDisk is about 1 GB) into every node


def _archive_ids(archive: Path) -> dict[str, str]:
    """image reference -> config digest, read from the archive's manifest.json (no extraction)."""
    import tarfile

    with tarfile.open(archive) as tar:
        member = tar.extractfile("manifest.json")
        manifest = json.load(member) if member else []
    return {tag: "sha256:" + entry["Config"].removesuffix(".json") for entry in manifest for tag in entry["RepoTags"]}


def _node_images(cluster: str) -> dict[str, set[str]]:
    """node -> the image ids its containerd has (``crictl images``)."""
    nodes = subprocess.run(["kind", "get", "nodes", "--name", cluster], capture_output=True, text=True, timeout=60)
    if nodes.returncode != 0:
        raise SetupError(f"`kind get nodes --name {cluster}` failed: {nodes.stderr.strip()[-300:]}")
    have = {}
    for node in nodes.stdout.split():
        r = subprocess.run(
            ["docker", "exec", node, "crictl", "images", "-o", "json"], capture_output=True, text=True, timeout=120
        )
        ids = set()
        if r.returncode == 0:
            ids = {img["id"] for img in json.loads(r.stdout or "{}").get("images", [])}
        have[node] = ids
    return have


def load(images: KubeVirtImages, cluster: str) -> dict[str, float]:
    """Load every archive of ``images`` into kind cluster ``cluster``; seconds per loaded archive."""
    if shutil.which("kind") is None:
        raise SetupError("kind is not on PATH: run hack/install-tools.sh (or hack/setup.sh)")
    have = _node_images(cluster)
    loaded: dict[str, float] = {}
    for ref, archive in sorted(images.archives.items()):
        ids = _archive_ids(archive)
        missing = [node for node, present in have.items() if not set(ids.values()) <= present]
        if not missing:
            continue
        t0 = time.monotonic()
        with progress.phase(
            f"kind load image-archive {ref} ({archive.stat().st_size >> 20} MiB) into {', '.join(missing)}"
        ):
            argv = ["kind", "load", "image-archive", str(archive), "--name", cluster, "--nodes", ",".join(missing)]
            try:
                r = subprocess.run(argv, capture_output=True, text=True, timeout=LOAD_TIMEOUT)
            except subprocess.TimeoutExpired:
                raise SetupError(f"`kind load image-archive {archive}` took over {LOAD_TIMEOUT:.0f} s") from None
            if r.returncode != 0:
                raise SetupError(
                    f"`kind load image-archive {archive} --name {cluster}` failed: {' '.join(r.stderr.split())[-300:]}"
                )
        loaded[ref] = round(time.monotonic() - t0, 1)
    return loaded
