"""The control-plane images the node preloads, each one binary on a shared base layer.

Names and tags are exactly those of ``kubeadm config images list`` (plus the sandbox image
kind's containerd config names), so nothing is ever pulled. Upstream ships the Go components
on distroless bases; here every image shares one small base layer of Debian files taken from
the node's own tree: the package closure of ``iptables`` and ``conntrack`` (kube-proxy runs
``iptables-restore`` and ``conntrack``; the node's iptables is the same nft variant), a passwd,
group and nsswitch.conf. The binary is the image's second layer, at the path the upstream image
has it (``/usr/local/bin/<name>``, ``/coredns``, ``/pause``), which is what kubeadm's static pod
manifests and kube-proxy's DaemonSet run.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from slirp_conformance import buildlog, image_archive
from slirp_conformance.errors import SetupError
from slirp_conformance.image_archive import Image

BASE_PACKAGES = ("iptables", "conntrack")
# Debian files an image does not need.
_SKIPPED = re.compile(r"^/usr/share/(doc|man|locale|lintian|info|bug)/")
ETC_FILES = {
    "etc/passwd": "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
    "etc/group": "root:x:0:\nnogroup:x:65534:\n",
    "etc/nsswitch.conf": "hosts: files dns\nnetworks: files\n",
}
# component -> path in the image and whether it is the entrypoint (kubeadm's manifests give a command)
BINARY_PATHS = {
    "kube-apiserver": "usr/local/bin/kube-apiserver",
    "kube-controller-manager": "usr/local/bin/kube-controller-manager",
    "kube-scheduler": "usr/local/bin/kube-scheduler",
    "kube-proxy": "usr/local/bin/kube-proxy",
    "etcd": "usr/local/bin/etcd",
    "coredns": "coredns",
    "pause": "pause",
}


def _status(tree: Path) -> dict[str, str]:
    """Installed package -> its Depends and Pre-Depends, from the tree's dpkg status file."""
    deps: dict[str, str] = {}
    package: str | None = None
    fields: dict[str, str] = {}
    for line in [*(tree / "var/lib/dpkg/status").read_text().splitlines(), ""]:
        if not line:
            if package and "installed" in fields.get("Status", ""):
                deps[package] = ", ".join(filter(None, (fields.get("Pre-Depends"), fields.get("Depends"))))
            package, fields = None, {}
        elif line[0] not in " \t" and ":" in line:
            key, value = line.split(":", 1)
            fields[key] = value.strip()
            if key == "Package":
                package = value.strip()
    return deps


def closure(tree: Path, roots: tuple[str, ...]) -> list[str]:
    """The installed packages ``roots`` need, following Depends and Pre-Depends in the tree."""
    deps = _status(tree)
    seen, todo = set(), list(roots)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        if name not in deps:
            raise SetupError(f"package {name} is not installed in the node's tree {tree}")
        seen.add(name)
        for clause in filter(None, (c.strip() for c in deps[name].split(","))):
            for alternative in clause.split("|"):
                candidate = re.split(r"[\s(:]", alternative.strip(), maxsplit=1)[0]
                if candidate in deps:
                    todo.append(candidate)
                    break
    return sorted(seen)


def _package_files(tree: Path, package: str) -> list[str]:
    info = tree / "var/lib/dpkg/info"
    for name in (f"{package}.list", f"{package}:amd64.list"):
        if (info / name).is_file():
            return [p for p in (info / name).read_text().splitlines() if p and p != "/." and not _SKIPPED.match(p)]
    raise SetupError(f"no file list for package {package} in {info}")


def _alternatives(tree: Path, paths: set[str]) -> list[str]:
    """The update-alternatives links of those files, which no package's file list names:
    /usr/sbin/iptables -> /etc/alternatives/iptables -> /usr/sbin/iptables-nft."""
    found = []
    for alternative in sorted((tree / "etc/alternatives").iterdir()):
        if not alternative.is_symlink() or os.readlink(alternative).lstrip("/") not in paths:
            continue
        found.append(f"etc/alternatives/{alternative.name}")
        for folder in ("usr/sbin", "usr/bin"):
            link = tree / folder / alternative.name
            if link.is_symlink() and os.readlink(link) == f"/etc/alternatives/{alternative.name}":
                found.append(f"{folder}/{alternative.name}")
    return found


def base_layer(tree: Path, work: Path, log: Path) -> Path:
    """The shared base layer: the closure of BASE_PACKAGES from ``tree``, and ETC_FILES."""
    packages = closure(tree, BASE_PACKAGES)
    buildlog.note(log, f"base layer packages: {' '.join(packages)}")
    root = work / "base"
    root.mkdir()
    links = set()
    for top in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):  # merged /usr: the tree's top-level links
        if (tree / top).is_symlink():
            target = os.readlink(tree / top)
            (root / top).symlink_to(target)
            (root / top).resolve().mkdir(parents=True, exist_ok=True)  # usr/lib... exists before files go there
            links.add(top)
    paths = sorted({p.lstrip("/") for pkg in packages for p in _package_files(tree, pkg)} - links)
    alternatives = _alternatives(tree, set(paths))
    listing = work / "base-files.txt"
    listing.write_text(
        "\n".join(p for p in paths + alternatives if (tree / p).exists() or (tree / p).is_symlink()) + "\n"
    )
    with subprocess.Popen(
        [
            "tar",
            "--create",
            "--no-recursion",
            "--numeric-owner",
            "--xattrs",
            "--xattrs-include=*",
            "-C",
            str(tree),
            "--files-from",
            str(listing),
        ],
        stdout=subprocess.PIPE,
    ) as pack:
        buildlog.run(
            [
                "tar",
                "--extract",
                "--keep-directory-symlink",
                "--numeric-owner",
                "--xattrs",
                "--xattrs-include=*",
                "-C",
                root,
            ],
            log,
            "copying the base layer's Debian files",
            300,
            stdin=pack.stdout,
        )
    if pack.returncode != 0:
        raise SetupError(f"reading the base layer's files from {tree} failed (log: {log})")
    for rel, text in ETC_FILES.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    tmp = root / "tmp"
    tmp.mkdir(exist_ok=True)
    tmp.chmod(0o1777)
    return image_archive.layer_from_dir(root, work / "base.tar")


def binary_layer(name: str, binary: Path, work: Path) -> Path:
    root = work / f"{name}-root"
    dest = root / BINARY_PATHS[name]
    dest.parent.mkdir(parents=True)
    shutil.copyfile(binary, dest)
    dest.chmod(0o755)
    return image_archive.layer_from_dir(root, work / f"{name}.tar")


def images(
    refs: dict[str, str], extra_tags: dict[str, list[str]], binaries: dict[str, Path], base: Path, work: Path
) -> list[Image]:
    """One Image per kubeadm component: ``refs`` component -> image reference, ``extra_tags`` more names."""
    out = []
    for component, ref in sorted(refs.items()):
        if component not in BINARY_PATHS:
            raise SetupError(f"kubeadm asks for an image this builder does not make: {ref}")
        layer = binary_layer(component, binaries[component], work)
        out.append(
            Image(
                tags=(ref, *extra_tags.get(component, ())),
                layers=(base, layer),
                entrypoint=("/" + BINARY_PATHS[component],),
            )
        )
    return out
