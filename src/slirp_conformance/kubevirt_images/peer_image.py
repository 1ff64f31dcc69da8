"""The image of the suite's peer and client pods (``kubevirt.peers``): busybox with the applets the
peers run (``tcpsvd``, ``udpsvd``, ``cat``, ``ping``, ``nc``, ``sleep``, ``sh``).

Docker Hub's ``busybox`` is built from busybox's ``defconfig``; Debian's busybox packages are not
(neither has ``tcpsvd``/``udpsvd``). So busybox is compiled here: the source Debian ships
(``apt-get source --download-only busybox`` in the Debian minbase tree of ``debian``, the
upstream tarball of Debian's source package), ``make defconfig`` with ``CONFIG_STATIC=y``, one
static binary and a link per applet. Named ``slirp-conformance.local/busybox:<version>``, not
Docker Hub's name: it is not that build.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path

from slirp_conformance import cache_dirs, image_archive
from slirp_conformance.errors import SetupError
from slirp_conformance.image_archive import Image
from slirp_conformance.kubevirt_images import debian, steps

RECIPE = "1"
REGISTRY = "slirp-conformance.local/busybox"
NEEDED_APPLETS = ("sh", "tcpsvd", "udpsvd", "cat", "ping", "nc", "sleep")


def _home(cache: Path | None) -> Path:
    return steps.root(cache) / "busybox"


def _source(cache: Path | None, log: Path) -> Path:
    """Debian's busybox upstream tarball (``busybox_<v>.orig.tar.bz2``), downloaded once."""
    home = _home(cache) / "source"
    found = sorted(home.glob("busybox_*.orig.tar.*"))
    if found:
        return found[-1]
    stage = cache_dirs.staging_dir(home.parent, "source")
    try:
        tree = stage / "tree"
        tree.mkdir()
        steps.run(["tar", "--extract", "--file", debian.minbase(cache, log), "-C", tree], log, "unpacking minbase", 600)
        (tree / "etc/apt/sources.list.d/slirp-conformance-src.sources").write_text(
            f"Types: deb-src\nURIs: {debian.MIRROR}\nSuites: {debian.SUITE}\nComponents: main\n"
            "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
        )
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}
        steps.run(["chroot", tree, "apt-get", "update", "-qq"], log, "apt-get update (deb-src)", 600, env=env)
        (tree / "src").mkdir()
        steps.run(
            ["chroot", tree, "sh", "-c", "cd /src && apt-get source --download-only -qq busybox"],
            log,
            "apt-get source --download-only busybox",
            600,
            env=env,
        )
        orig = sorted((tree / "src").glob("busybox_*.orig.tar.*"))
        if not orig:
            raise SetupError(f"apt-get source busybox gave no upstream tarball (log: {log})")
        home.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(orig[-1], stage / orig[-1].name)
        os.replace(stage / orig[-1].name, home / orig[-1].name)
        return home / orig[-1].name
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _version(tarball: Path) -> str:
    m = re.match(r"busybox_([0-9.]+)\.orig", tarball.name)
    if not m:
        raise SetupError(f"cannot read busybox's version from {tarball.name}")
    return m.group(1)


def peer_image(cache: Path | None = None, version_for_logs: str = "peer") -> Image:
    """The busybox image (built when absent: about 2 min)."""
    home = _home(cache)
    with steps.locked(home / ".lock"):
        log = steps.log_path(version_for_logs, "busybox", cache)
        tarball = _source(cache, log)
        h = hashlib.sha256(RECIPE.encode() + tarball.name.encode())
        h.update(tarball.read_bytes())
        final = home / h.hexdigest()[:16]
        if not (final / "layer.tar").is_file():
            _build(tarball, home, final, log)
    return Image(tags=(f"{REGISTRY}:{_version(tarball)}",), layers=(final / "layer.tar",), cmd=("sh",))


def _build(tarball: Path, home: Path, final: Path, log: Path) -> None:
    if shutil.which("make") is None or shutil.which("gcc") is None:
        raise SetupError("make and gcc are needed to build busybox: run hack/setup.sh as root")
    stage = cache_dirs.staging_dir(home, final.name)
    try:
        steps.run(["tar", "--extract", "--file", tarball, "-C", stage], log, f"unpacking {tarball.name}", 300)
        src = next(p for p in stage.iterdir() if p.is_dir() and p.name.startswith("busybox"))
        steps.run(["make", "-C", src, "defconfig"], log, "busybox make defconfig", 300)
        config = src / ".config"
        config.write_text(config.read_text().replace("# CONFIG_STATIC is not set", "CONFIG_STATIC=y"))
        steps.run(["make", "-C", src, f"-j{os.cpu_count() or 2}", "busybox"], log, "busybox make", 1800)
        busybox = src / "busybox"
        applets = subprocess.run([str(busybox), "--list-full"], capture_output=True, text=True, timeout=60)
        names = applets.stdout.split()
        missing = [a for a in NEEDED_APPLETS if not any(n.rsplit("/", 1)[-1] == a for n in names)]
        if applets.returncode != 0 or missing:
            raise SetupError(f"the busybox built here lacks {missing or 'applets'} (log: {log})")
        root = stage / "root"
        (root / "bin").mkdir(parents=True)
        shutil.copyfile(busybox, root / "bin" / "busybox")
        (root / "bin" / "busybox").chmod(0o755)
        for applet in names:
            link = root / applet
            if applet != "bin/busybox" and not link.exists():
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to("/bin/busybox")
        (root / "etc").mkdir(exist_ok=True)
        (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/home:/bin/false\n")
        (root / "etc" / "group").write_text("root:x:0:\nnogroup:x:65534:\n")
        (root / "tmp").mkdir()
        (root / "tmp").chmod(0o1777)
        out = stage / "out"
        out.mkdir()
        image_archive.layer_from_dir(root, out / "layer.tar")
        os.rename(out, final)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
