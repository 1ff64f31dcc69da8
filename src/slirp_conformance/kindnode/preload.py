"""Images preloaded into a node's containerd: imported into its ``/var/lib/containerd`` at build time.

kind's own node-image build starts containerd inside a build container and runs ``ctr images
import`` there (``pkg/build/nodeimage/imageimporter.go``: ``--label=io.cri-containerd.pinned=pinned
--all-platforms --no-unpack --digests``). Here the host's containerd (Debian's, the same version
as the node's) runs as a private instance whose root is the node image's ``var/lib/containerd``
(socket and state in a temp dir, the CRI and opt plugins off), with the same import flags. Docker
seeds each kind node's ``/var`` volume from the image, so every node starts with the images;
CRI unpacks an image on first use.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from slirp_conformance import buildlog, mounts, waits
from slirp_conformance.errors import SetupError

IMPORT_FLAGS = ("--label=io.cri-containerd.pinned=pinned", "--all-platforms", "--no-unpack", "--digests")
DISABLED_PLUGINS = (
    "io.containerd.grpc.v1.cri",
    "io.containerd.internal.v1.opt",
    "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.zfs",
    "io.containerd.snapshotter.v1.devmapper",
    "io.containerd.snapshotter.v1.aufs",
)


@contextlib.contextmanager
def private_containerd(root: Path, log: Path) -> Iterator[str]:
    """A containerd of our own whose root is ``root``; yields its socket; stopped (bounded) on exit."""
    for tool in ("containerd", "ctr"):
        if shutil.which(tool) is None:
            raise SetupError(f"{tool} is missing (Debian's containerd, installed with docker.io): run hack/setup.sh")
    state = Path(tempfile.mkdtemp(prefix="slirp-ctrd-", dir="/run" if os.access("/run", os.W_OK) else None))
    sock = state / "containerd.sock"
    config = state / "config.toml"
    disabled = ", ".join(f'"{p}"' for p in DISABLED_PLUGINS)
    config.write_text(
        f'version = 2\nroot = "{root}"\nstate = "{state / "state"}"\ndisabled_plugins = [{disabled}]\n'
        f'[grpc]\n  address = "{sock}"\n[ttrpc]\n  address = "{sock}.ttrpc"\n'
    )
    root.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as out:
        proc = subprocess.Popen(
            ["containerd", "--config", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:

        def answers() -> bool:
            if proc.poll() is not None:
                raise SetupError(
                    f"the build's containerd exited with {proc.returncode}: {buildlog.tail(log)} (log: {log})"
                )
            return (
                subprocess.run(["ctr", "--address", str(sock), "version"], capture_output=True, timeout=10).returncode
                == 0
            )

        waits.wait_for(f"the build's containerd to answer on {sock}", answers, 60)
        yield str(sock)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        mounts.unmount_under(state)
        shutil.rmtree(state, ignore_errors=True)


def import_images(archive: Path, root: Path, log: Path) -> list[str]:
    """Import a docker-archive into the containerd root ``root`` (namespace k8s.io); returns the image names."""
    with private_containerd(root, log) as sock:
        ctr = ["ctr", "--address", sock, "--namespace", "k8s.io"]
        buildlog.run([*ctr, "images", "import", *IMPORT_FLAGS, archive], log, "importing the node's images", 600)
        listed = subprocess.run([*ctr, "images", "list", "--quiet"], capture_output=True, text=True, timeout=60)
    return [name for name in listed.stdout.split() if "@sha256:" not in name]
