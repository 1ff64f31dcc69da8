"""The Fedora-like guest images: a Debian tree made to behave like KubeVirt's Fedora test VM.

``debootstrap`` (minbase) installs systemd, NetworkManager, systemd-resolved, cloud-init,
OpenSSH, sudo, bash, python3, iputils ping and the three nc tools; the files under
``fedora_like_root/`` make it Fedora-like (cloud-init's default user ``fedora`` with
passwordless sudo, NetworkManager's internal DHCP client, Fedora's bashrc and the image's
profile.d ``bind`` line). Debian's kernel (the cached .deb the busybox guest also uses) boots
as a PVH ELF with a tiny busybox initramfs that mounts the root disk. One ext4 image per
flavour (``fedora_like.FLAVOURS``) is made with ``mke2fs -d`` (no loop mount). Everything is
cached under a key that hashes the recipe; the build is atomic (temp dir + rename) and locked
against a concurrent build. Per-run state never enters the cache: each boot writes to a
qcow2 overlay, and its cloud-init data come on their own ISO (``cidata``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from slirp_conformance import file_lock, waits
from slirp_conformance.cache_dirs import cache_root
from slirp_conformance.errors import SetupError, refuse
from slirp_conformance.reference import cpio, image
from slirp_conformance.reference.fedora_like import FLAVOURS, Flavour

HERE = Path(__file__).parent
ROOT_FILES = HERE / "fedora_like_root"
INIT_SCRIPT = HERE / "fedora_like_init.sh"
SUITE = "bookworm"
MIRROR = os.environ.get("SLIRP_DEBIAN_MIRROR", "http://deb.debian.org/debian")
PACKAGES = (
    "systemd",
    "systemd-sysv",
    "systemd-resolved",
    "libpam-systemd",
    "udev",
    "dbus",
    "openssh-server",
    "sudo",
    "bash",
    "python3",
    "iputils-ping",
    "iproute2",
    "network-manager",
    "cloud-init",
    "procps",
    "kmod",
    "python3-cffi-backend",  # debootstrap cannot resolve python3-cryptography's virtual dependency alone
    "ncat",
    "netcat-openbsd",
    "busybox",  # the three nc tool sets; each flavour keeps its own
    # KubeVirt's Fedora test image runs the QEMU guest agent: the VMI's AgentConnected condition the
    # kind target waits for comes from it. It starts only where the VM has the agent's virtio port.
    "qemu-guest-agent",
)
# What the initramfs loads to mount the root disk, dependencies first (from modules.dep).
INITRAMFS_MODULES = ("virtio_pci", "virtio_blk", "crc32c_generic", "ext4")
# Units a test VM does not need at boot (measured: ../shared/fedora-like-guest-facts.md).
MASKED_UNITS = (
    "e2scrub_all.timer",
    "e2scrub_reap.service",
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "dpkg-db-backup.timer",
    "fstrim.timer",
    "sys-kernel-debug.mount",
    "sys-kernel-tracing.mount",
    "sys-kernel-config.mount",
    "sys-fs-fuse-connections.mount",
    "dev-hugepages.mount",
    "dev-mqueue.mount",
    "systemd-pstore.service",
    "modprobe@.service",
    "getty@tty1.service",
    "cloud-init-hotplugd.socket",
    "systemd-binfmt.service",
    "proc-sys-fs-binfmt_misc.automount",
    "proc-sys-fs-binfmt_misc.mount",
)
# Generators that find nothing to do in this VM (encrypted, verity, integrity or GPT auto-mounted
# disks, hibernation, rc.local, SysV scripts, offline updates, systemd.run=): systemd runs every
# generator before it starts any unit, about 0.1-0.5 s each under TCG. Kept: fstab, getty
# (serial-getty@ttyS0 from console=), debug (systemd.mask=) and cloud-init's own.
MASKED_GENERATORS = (
    "systemd-cryptsetup-generator",
    "systemd-veritysetup-generator",
    "systemd-integritysetup-generator",
    "systemd-gpt-auto-generator",
    "systemd-hibernate-resume-generator",
    "systemd-rc-local-generator",
    "systemd-sysv-generator",
    "systemd-system-update-generator",
    "systemd-run-generator",
)
# Device plugins that Debian's network-manager package carries and Fedora ships as separate
# packages (NetworkManager-wifi, -wwan, -bluetooth, -adsl, -team): NetworkManager loads every
# plugin it finds at start-up, on the path to DHCP.
NM_PLUGINS_DIR = "usr/lib/x86_64-linux-gnu/NetworkManager"
REMOVED_NM_PLUGINS = ("adsl", "bluetooth", "team", "wifi", "wwan")
# A dependency of cloud-init, removed again: cloud-init imports it only when it is
# present, and each of its four stages (separate Python processes) spent about 0.6 s of its
# ~4.5 s start-up under TCG importing jsonschema. Without it cloud-init skips validating the
# user data against its schema (the real image validates it and only warns).
REMOVED_PACKAGES = ("python3-jsonschema",)
DISK_SIZE = "2G"
HOST_TOOLS = {
    "debootstrap": "debootstrap",
    "mke2fs": "e2fsprogs",
    "xorriso": "xorriso",
    "qemu-img": "qemu-utils",
    "depmod": "kmod",
    "dpkg-deb": "dpkg",
}


@dataclass(frozen=True)
class FedoraLikeImage:
    kernel: Path  # PVH ELF
    initrd: Path  # the tiny initramfs
    disks: dict[str, Path]  # flavour name -> raw ext4 root disk (read-only base of the overlays)
    key: str
    kernel_version: str
    build_s: float  # how long the build took when it ran (cached images keep the figure)

    def disk(self, flavour: Flavour) -> Path:
        return self.disks[flavour.name]


def check_host_tools() -> None:
    missing = sorted({pkg for tool, pkg in HOST_TOOLS.items() if shutil.which(tool) is None})
    if missing:
        raise SetupError(
            f"the Fedora-like guest needs Debian packages {', '.join(missing)}: run "
            f"`apt-get install {' '.join(missing)}` (or hack/setup.sh as root)"
        )


def _progress(message: str) -> None:
    print(f"fedora-like guest: {message}", file=sys.stderr, flush=True)


def _content_key(deb: Path) -> str:
    h = hashlib.sha256()
    for path in sorted([HERE / "fedora_image.py", HERE / "fedora_like.py", INIT_SCRIPT, *ROOT_FILES.rglob("*")]):
        if path.is_file():
            h.update(str(path.relative_to(HERE)).encode() + path.read_bytes())
    h.update(f"{SUITE} {' '.join(PACKAGES)} {deb.name} {deb.stat().st_size}".encode())
    return h.hexdigest()[:20]


def _load(final: Path) -> FedoraLikeImage:
    meta = json.loads((final / "manifest.json").read_text())
    return FedoraLikeImage(
        final / "vmlinux",
        final / "initrd.cpio",
        {name: final / f"root-{name}.img" for name in meta["flavours"]},
        final.name,
        meta["kernel_version"],
        meta["build_s"],
    )


def _locked(path: Path) -> contextlib.AbstractContextManager[None]:
    """A concurrent build (another xdist worker, another run) finishes first; bounded."""
    return file_lock.held(
        path, "another build of the Fedora-like guest", waits.timeout("cached-build"), fix="stop that build"
    )


def cached(cache: Path | None = None) -> FedoraLikeImage | None:
    """The image for the current recipe if it is built, without building it."""
    cache = cache or cache_root()
    deb = image.kernel_deb(cache)
    final = cache / "fedora-like" / _content_key(deb)
    return _load(final) if (final / "manifest.json").is_file() else None


def build(cache: Path | None = None, progress: Callable[[str], None] = _progress) -> FedoraLikeImage:
    """Return the cached images for the current recipe, building them if needed (root only)."""
    check_host_tools()
    cache = cache or cache_root()
    deb = image.kernel_deb(cache)
    key = _content_key(deb)
    base = cache / "fedora-like"
    final = base / key
    if (final / "manifest.json").is_file():
        return _load(final)
    if os.geteuid() != 0:
        raise SetupError(
            "building the Fedora-like guest needs root (debootstrap): run once as root, e.g. "
            "`sudo .venv/bin/python -m slirp_conformance.reference.fedora_image`; the image is then cached"
        )
    base.mkdir(parents=True, exist_ok=True)
    with _locked(base / ".build.lock"):
        if (final / "manifest.json").is_file():
            return _load(final)
        work = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=base))
        try:
            t0 = time.monotonic()
            tree = work / "tree"
            _base_tree(tree, base, progress)
            progress(f"tree ready after {time.monotonic() - t0:.0f} s; kernel, configuration, initramfs")
            version, vmlinuz = _install_kernel(deb, tree, work / "kernel")
            image.elf_kernel(vmlinuz, work / "vmlinux")
            _configure(tree)
            _write_initramfs(tree, version, work / "initrd.cpio")
            for flavour in FLAVOURS.values():
                progress(f"root disk of flavour {flavour}")
                _make_disk(tree, flavour, work / f"root-{flavour.name}.img", work / "stash")
            shutil.rmtree(tree)
            for f in work.iterdir():
                os.chmod(f, 0o644)
            os.chmod(work, 0o755)  # QEMU runs as an unprivileged user and must read it
            build_s = round(time.monotonic() - t0, 1)
            (work / "manifest.json").write_text(
                json.dumps(
                    {
                        "kernel_version": version,
                        "deb": deb.name,
                        "flavours": list(FLAVOURS),
                        "build_s": build_s,
                        "suite": SUITE,
                        "packages": list(PACKAGES),
                    },
                    indent=1,
                )
            )
            os.rename(work, final)
            progress(f"built in {build_s:.0f} s: {final}")
            _prune(base, keep=final)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return _load(final)


def _prune(base: Path, keep: Path) -> None:
    """Drop images of older recipes (1.4 GB each). A VM still booted from one keeps its disk:
    the run dir holds a hard link (or a copy) of it."""
    for old in base.iterdir():
        if old.is_dir() and old != keep and not old.name.startswith(".") and (old / "manifest.json").is_file():
            shutil.rmtree(old, ignore_errors=True)


def _run(argv: list[str], what: str, timeout: float, **kwargs) -> subprocess.CompletedProcess:
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kwargs)
    except subprocess.TimeoutExpired:
        raise SetupError(f"{what} took more than {timeout:.0f} s: {' '.join(argv[:3])} ...") from None
    if r.returncode != 0:
        tail = " | ".join((r.stderr or r.stdout).strip().splitlines()[-3:])
        raise SetupError(f"{what} failed ({r.returncode}): {tail}")
    return r


# Every extended attribute, file capabilities (security.capability) included.
_TAR_FLAGS = ("--numeric-owner", "--xattrs", "--xattrs-include=*")


def _base_tree(tree: Path, base: Path, progress: Callable[[str], None]) -> None:
    """The debootstrap'd tree, kept as a tarball keyed by suite and packages, so a change to the
    Fedora-like configuration rebuilds in seconds instead of minutes."""
    key = hashlib.sha256(f"{SUITE} {' '.join(PACKAGES)} {' '.join(_TAR_FLAGS)}".encode()).hexdigest()[:16]
    tarball = base / f"debootstrap-{SUITE}-{key}.tar"
    if not tarball.is_file():
        for stale in base.glob(f"debootstrap-{SUITE}-*.tar"):
            stale.unlink()
        progress(f"debootstrap {SUITE} from {MIRROR} (about 1-3 min)")
        _debootstrap(tree, base.parent / "debootstrap-debs")
        partial = tarball.with_suffix(".tar.partial")
        try:
            _run(["tar", *_TAR_FLAGS, "-cpf", str(partial), "-C", str(tree), "."], "archiving the tree", 600)
            os.replace(partial, tarball)
        finally:
            partial.unlink(missing_ok=True)
        return
    tree.mkdir()
    _run(["tar", *_TAR_FLAGS, "-xpf", str(tarball), "-C", str(tree)], "unpacking the tree", 600)


def _debootstrap(tree: Path, debs: Path) -> None:
    debs.mkdir(parents=True, exist_ok=True)
    try:
        _run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--cache-dir={debs}",
                f"--include={','.join(PACKAGES)}",
                SUITE,
                str(tree),
                MIRROR,
            ],
            "debootstrap",
            1800,
        )
    except SetupError as e:
        log = tree / "debootstrap" / "debootstrap.log"
        detail = " | ".join(log.read_text(errors="replace").splitlines()[-5:]) if log.exists() else ""
        raise SetupError(f"{e} {detail} (check the mirror {MIRROR}; SLIRP_DEBIAN_MIRROR overrides it)") from None


def _install_kernel(deb: Path, tree: Path, scratch: Path) -> tuple[str, Path]:
    """Modules into the tree (udev loads e1000 from there), the kernel image out of it."""
    scratch.mkdir()
    _run(["dpkg-deb", "-x", str(deb), str(scratch)], f"unpacking {deb.name}", 300)
    modules = next((scratch / "lib" / "modules").iterdir())
    version = modules.name
    (tree / "usr" / "lib" / "modules").mkdir(exist_ok=True)
    shutil.move(str(modules), str(tree / "usr" / "lib" / "modules" / version))
    _run(["depmod", "-b", str(tree), version], "depmod", 120)
    vmlinuz = next((scratch / "boot").glob("vmlinuz-*"))
    return version, vmlinuz


def _configure(tree: Path) -> None:
    shutil.copytree(ROOT_FILES, tree, dirs_exist_ok=True, symlinks=True)
    systemd = tree / "etc" / "systemd" / "system"
    for unit in MASKED_UNITS:
        link = systemd / unit
        link.unlink(missing_ok=True)
        link.symlink_to("/dev/null")
    generators = tree / "etc" / "systemd" / "system-generators"
    generators.mkdir(parents=True, exist_ok=True)
    for name in MASKED_GENERATORS:
        (generators / name).unlink(missing_ok=True)
        (generators / name).symlink_to("/dev/null")
    for plugin in REMOVED_NM_PLUGINS:
        for so in (tree / NM_PLUGINS_DIR).glob(f"*/libnm-device-plugin-{plugin}.so"):
            so.unlink()
    _run(
        ["dpkg", f"--root={tree}", "--purge", "--force-depends", *REMOVED_PACKAGES],
        "removing " + ", ".join(REMOVED_PACKAGES),
        300,
    )
    for key in (tree / "etc" / "ssh").glob("ssh_host_*"):  # cloud-init makes one ed25519 key per instance
        key.unlink()
    (tree / "etc" / "machine-id").write_text("")  # one per boot, as in a cloud image
    (tree / "var" / "lib" / "dbus" / "machine-id").unlink(missing_ok=True)
    (tree / "etc" / "fstab").write_text("LABEL=root / ext4 rw,noatime 0 0\n")
    (tree / "etc" / "hostname").write_text("fedora\n")
    for cache in ("var/cache/apt", "var/lib/apt/lists"):
        for f in (tree / cache).glob("*"):
            if f.is_file():
                f.unlink()


def _module_order(tree: Path, version: str, wanted: tuple[str, ...]) -> list[Path]:
    """``wanted`` and their dependencies, each after what it needs (modules.dep)."""
    mdir = tree / "usr" / "lib" / "modules" / version
    deps: dict[str, list[str]] = {}
    for line in (mdir / "modules.dep").read_text().splitlines():
        mod, _, rest = line.partition(":")
        deps[mod] = rest.split()
    by_name = {Path(m).name.split(".ko")[0].replace("-", "_"): m for m in deps}
    order: list[str] = []

    def visit(mod: str) -> None:
        if mod in order:
            return
        for dep in deps[mod]:
            visit(dep)
        order.append(mod)

    for name in wanted:
        if name not in by_name:
            raise SetupError(f"the kernel {version} has no module {name}: it cannot mount the root disk")
        visit(by_name[name])
    return [mdir / m for m in order]


def _write_initramfs(tree: Path, version: str, out: Path) -> None:
    modules = _module_order(tree, version, INITRAMFS_MODULES)
    entries = [cpio.directory(d) for d in ("bin", "etc", "lib", "lib/modules", "dev", "proc", "sys", "newroot")]
    entries += [
        cpio.chardev("dev/console", 5, 1),
        cpio.file("bin/busybox", Path(image.BUSYBOX).read_bytes(), 0o755),
        cpio.file("init", INIT_SCRIPT.read_bytes(), 0o755),
    ]
    names = []
    for path in modules:
        name = path.name.split(".ko")[0]
        names.append(name)
        entries.append(cpio.file(f"lib/modules/{name}.ko", image.module_bytes(path)))
    entries.append(cpio.file("etc/modules-load", ("\n".join(names) + "\n").encode()))
    with open(out, "wb") as f:
        cpio.write(f, entries)


def _make_disk(tree: Path, flavour: Flavour, out: Path, stash: Path) -> None:
    """The flavour's tools in place (its /usr/bin/nc, the others moved out), then ``mke2fs -d``."""
    moved = []
    nc = tree / "usr" / "bin" / "nc"
    try:
        for rel in flavour.absent:
            src = tree / rel
            if src.exists() or src.is_symlink():
                dst = stash / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                os.rename(src, dst)
                moved.append((dst, src))
        (tree / "etc" / "alternatives" / "nc").unlink(missing_ok=True)
        nc.unlink(missing_ok=True)
        nc.symlink_to("/bin/busybox" if flavour.nc == "busybox" else flavour.nc)
        _run(
            ["mke2fs", "-q", "-F", "-t", "ext4", "-L", "root", "-d", str(tree), str(out), DISK_SIZE],
            f"mke2fs for {flavour.name}",
            600,
        )
    finally:
        for dst, src in moved:
            os.rename(dst, src)


def main() -> int:
    """Build (or find) the images and print where they are: a warm-up for CI and benchmarks."""
    try:
        img = build()
    except SetupError as e:
        return refuse("fedora-like guest", e, 1)
    print(
        json.dumps(
            {
                "key": img.key,
                "kernel_version": img.kernel_version,
                "build_s": img.build_s,
                "disks": {k: str(v) for k, v in img.disks.items()},
            },
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
