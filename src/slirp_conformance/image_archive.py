"""Container images without a registry or a Dockerfile: docker-archive tarballs written here.

An image is a list of layer tarballs (uncompressed, made with GNU tar from a directory so
owners, modes, links and file capabilities survive) plus a config (entrypoint, env, stop
signal). ``write`` streams a ``docker save``-format archive (``manifest.json``, one config per
image, the layers), which ``docker load``, ``kind load image-archive`` and ``ctr images import``
all read. Images in one archive share layer files, and so their layers' digests.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from slirp_conformance.errors import SetupError

DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# What a layer made from a Debian tree leaves out (``tar --exclude`` patterns): what the container
# runtime provides (/dev, /proc, /sys, /run, /tmp), apt's caches and lists, and the docs. Part of the
# build recipes' keys: the order counts.
NOT_IN_A_LAYER = (
    "./dev/*",
    "./proc/*",
    "./sys/*",
    "./run/*",
    "./tmp/*",
    "./var/tmp/*",
    "./var/cache/apt/*",
    "./var/lib/apt/lists/*",
    "./usr/share/doc/*",
    "./usr/share/man/*",
)
EPOCH = "1970-01-01T00:00:00Z"  # fixed, so the same inputs give the same image id


@dataclass(frozen=True)
class Image:
    tags: tuple[str, ...]  # "registry.k8s.io/kube-apiserver:v1.34.0"
    layers: tuple[Path, ...]  # uncompressed layer tarballs, lowest first
    entrypoint: tuple[str, ...] | None = None
    cmd: tuple[str, ...] | None = None
    env: tuple[str, ...] = (DEFAULT_PATH,)
    stop_signal: str | None = None
    working_dir: str = "/"
    user: str = ""
    labels: dict[str, str] = field(default_factory=dict)


def layer_from_dir(directory: Path, dest: Path) -> Path:
    """``dest``: a layer tarball of everything under ``directory`` (numeric owners, xattrs, sorted)."""
    r = subprocess.run(
        [
            "tar",
            "--create",
            "--file",
            str(dest),
            "--numeric-owner",
            "--xattrs",
            "--xattrs-include=*",
            "--sort=name",
            "-C",
            str(directory),
            ".",
        ],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if r.returncode != 0:
        raise SetupError(f"making a layer of {directory} failed: {r.stderr.strip()[-300:]}")
    return dest


def _digest(path: Path, cache: dict[Path, str]) -> str:
    if path not in cache:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        cache[path] = h.hexdigest()
    return cache[path]


def config_of(image: Image, diff_ids: Sequence[str]) -> dict:
    config: dict = {"Env": list(image.env), "WorkingDir": image.working_dir}
    if image.entrypoint is not None:
        config["Entrypoint"] = list(image.entrypoint)
    if image.cmd is not None:
        config["Cmd"] = list(image.cmd)
    if image.stop_signal:
        config["StopSignal"] = image.stop_signal
    if image.user:
        config["User"] = image.user
    if image.labels:
        config["Labels"] = dict(image.labels)
    return {
        "architecture": "amd64",
        "os": "linux",
        "created": EPOCH,
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{d}" for d in diff_ids]},
        "history": [
            {"created": EPOCH, "created_by": "slirp-conformance (slirp_conformance/image_archive.py)"} for _ in diff_ids
        ],
    }


def write(images: Sequence[Image], out: IO[bytes]) -> list[str]:
    """Stream a docker-archive of ``images`` to ``out``; returns each image's id (sha256 of its config)."""
    digests: dict[Path, str] = {}
    manifest, ids, members = [], [], {}
    for image in images:
        diff_ids = [_digest(layer, digests) for layer in image.layers]
        config = json.dumps(config_of(image, diff_ids), sort_keys=True).encode()
        image_id = hashlib.sha256(config).hexdigest()
        ids.append(image_id)
        members[f"{image_id}.json"] = config
        manifest.append(
            {"Config": f"{image_id}.json", "RepoTags": list(image.tags), "Layers": [f"{d}/layer.tar" for d in diff_ids]}
        )
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        written = set()
        for image in images:
            for layer in image.layers:
                name = f"{digests[layer]}/layer.tar"
                if name not in written:
                    written.add(name)
                    info = tar.gettarinfo(str(layer), arcname=name)
                    info.uid = info.gid = 0
                    info.uname = info.gname = ""
                    with open(layer, "rb") as f:
                        tar.addfile(info, f)
        for name, data in [*members.items(), ("manifest.json", json.dumps(manifest).encode())]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return ids


def write_file(images: Sequence[Image], dest: Path) -> list[str]:
    tmp = dest.with_name(f".{dest.name}.partial")
    try:
        with open(tmp, "wb") as out:
            ids = write(images, out)
        tmp.replace(dest)
    finally:
        tmp.unlink(missing_ok=True)
    return ids
