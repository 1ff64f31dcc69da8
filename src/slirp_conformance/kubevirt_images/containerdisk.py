"""The VM disk of the kind path, built here.

The suite's VM boots ``quay.io/kubevirt/fedora-with-test-tooling-container-disk:<tag>``
(``vm_manifest.render_vm``): here that name carries the Fedora-like reference guest whose tools
match the release's Fedora test image (``fedora_like.flavour_for``; ``fedora_image`` builds it,
with the QEMU guest agent the real image has). KubeVirt boots a containerDisk from the disk
(SeaBIOS), where the reference target boots the kernel directly, so the disk is made bootable:
``grub-mkrescue`` writes a BIOS-bootable hybrid image (GRUB, Debian's kernel, the guest's
initramfs with an ``/init`` that mounts ``root=``: the reference guest's ``fedora_like_init.sh``)
and appends the flavour's ext4 root file system as partition 2. As KubeVirt's containerDisk images
are (``FROM scratch``, ``ADD --chown=107:107 <disk> /disk/``): one qcow2 in ``/disk``, owned by QEMU's 107.

The peer and client pods' busybox image is in ``peer_image``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from slirp_conformance import cache_dirs, image_archive
from slirp_conformance.cache_dirs import cache_root
from slirp_conformance.errors import SetupError
from slirp_conformance.image_archive import Image
from slirp_conformance.kubevirt_images import steps
from slirp_conformance.reference import cpio, fedora_image, image
from slirp_conformance.reference.fedora_like import flavour_for
from slirp_conformance.reference.reference_vm import _FAST_BOOT, GUEST_KERNEL_ARGS

RECIPE = "2"
INIT = fedora_image.INIT_SCRIPT  # the reference guest's /init: it mounts root= when the command line names it
NAME = "quay.io/kubevirt/fedora-with-test-tooling-container-disk"
QEMU = 107
# KubeVirt's VM: the containerDisk is the first disk (vda), cloud-init's NoCloud disk the second.
ROOT_PARTITION = "/dev/vda2"
GRUB_CFG = f"""set timeout=0
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
menuentry "Fedora-like reference guest" {{
  linux /boot/vmlinuz root={ROOT_PARTITION} console=ttyS0 net.ifnames=0 {_FAST_BOOT} {GUEST_KERNEL_ARGS}
  initrd /boot/initrd
}}
"""
# systemd's wait for a device unit (dev-ttyS0.device, which serial-getty@ttyS0 binds to) gives up
# after DefaultDeviceTimeoutSec, 90 s: under TCG on a loaded 2-core node udev's coldplug took longer
# (v1.1.0 on kind at load 200-400: "Timed out waiting for device dev-ttyS0.device", "Dependency
# failed for Serial Getty on ttyS0"), so the guest never offered a console login and the run had
# no console channel. The guest's root gets a manager drop-in with a longer wait (systemd 252 has no
# kernel command-line switch for it); a device that never comes still fails, later.
SYSTEM_CONF_DROPIN = (
    "etc/systemd/system.conf.d/50-slirp-conformance-tcg.conf",
    "# slirp-conformance's containerDisk: TCG guests on a loaded node\n"
    "# (src/slirp_conformance/kubevirt_images/containerdisk.py)\n"
    "[Manager]\nDefaultDeviceTimeoutSec=900\n",
)
HOST_TOOLS = {
    "grub-mkrescue": "grub-common",
    "xorriso": "xorriso",
    "qemu-img": "qemu-utils",
    "debugfs": "e2fsprogs",
}
GRUB_BIOS_DIR = Path("/usr/lib/grub/i386-pc")


@dataclass(frozen=True)
class Built:
    image: Image
    cold_seconds: float | None


def _check_tools() -> None:
    missing = sorted({pkg for tool, pkg in HOST_TOOLS.items() if shutil.which(tool) is None})
    if not GRUB_BIOS_DIR.is_dir():
        missing.append("grub-pc-bin")
    if missing:
        raise SetupError(f"the containerDisk needs Debian packages {', '.join(missing)}: run hack/setup.sh as root")


def _key(version: str, guest_key: str) -> str:
    h = hashlib.sha256(f"{RECIPE} {flavour_for(version).name} {guest_key} {GRUB_CFG} {SYSTEM_CONF_DROPIN}".encode())
    h.update(INIT.read_bytes())
    return h.hexdigest()[:16]


def _image(version: str, layer: Path) -> Image:
    return Image(tags=(f"{NAME}:{version}",), layers=(layer,), entrypoint=None, env=())


def containerdisk(version: str, cache: Path | None = None) -> Built:
    """The containerDisk image of ``version`` (built when absent; root)."""
    with steps.locked(steps.root(cache) / "containerdisk" / f".{flavour_for(version).name}.lock"):
        return _containerdisk(version, cache)


def _containerdisk(version: str, cache: Path | None) -> Built:
    flavour = flavour_for(version)
    home = steps.root(cache) / "containerdisk"
    # Keyed by the guest's recipe, not by a built guest: the containerDisk outlives the guest image
    # (fedora_image keeps only the newest recipe's, and other checkouts may build another).
    guest_key = fedora_image._content_key(image.kernel_deb(cache or cache_root()))
    final = home / f"{flavour.name}-{_key(version, guest_key)}"
    if (final / "layer.tar").is_file():
        steps.mark_used(final)
        return Built(_image(version, final / "layer.tar"), None)
    _check_tools()
    log = steps.log_path(version, "containerdisk", cache)
    log.write_text(f"# containerDisk of KubeVirt {version}: flavour {flavour}\n")
    t0 = time.monotonic()
    guest = fedora_image.build(cache, progress=lambda m: steps.note(log, m))  # cached, or built (minutes)
    if guest.key != guest_key:
        raise SetupError(f"the Fedora-like guest was built as {guest.key}, expected {guest_key} (log: {log})")
    stage = cache_dirs.staging_dir(home, final.name)
    try:
        iso = stage / "iso"
        (iso / "boot" / "grub").mkdir(parents=True)
        deb = image.kernel_deb(cache or cache_root())
        _extract_kernel(deb, iso / "boot" / "vmlinuz", log)
        with open(iso / "boot" / "initrd", "wb") as out:  # the guest's initramfs, its /init replaced
            out.write(guest.initrd.read_bytes())
            cpio.write(out, [cpio.file("init", INIT.read_bytes(), 0o755)])
        (iso / "boot" / "grub" / "grub.cfg").write_text(GRUB_CFG)
        root_fs = stage / "root.ext4"
        _root_with_dropin(guest.disk(flavour), root_fs, stage, log)
        raw = stage / "disk.img"
        steps.run(
            [
                "grub-mkrescue",
                "--directory",
                GRUB_BIOS_DIR,
                "-o",
                raw,
                iso,
                "--",
                "-append_partition",
                "2",
                "0x83",
                root_fs,
            ],
            log,
            "grub-mkrescue (BIOS-bootable disk with the root file system appended)",
            900,
        )
        root = stage / "root"
        disk_dir = root / "disk"
        disk_dir.mkdir(parents=True)
        steps.run(
            ["qemu-img", "convert", "-O", "qcow2", raw, disk_dir / "disk.qcow2"], log, "qemu-img convert to qcow2", 900
        )
        raw.unlink()
        root_fs.unlink()
        for path in (disk_dir, disk_dir / "disk.qcow2"):
            os.chown(path, QEMU, QEMU)
        image_archive.layer_from_dir(root, stage / "layer.tar")
        shutil.rmtree(root)
        shutil.rmtree(iso)
        seconds = round(time.monotonic() - t0, 1)
        (stage / "meta.json").write_text(
            json.dumps({"flavour": flavour.name, "guest": guest.key, "build_s": seconds}, indent=1)
        )
        os.rename(stage, final)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    steps.prune_others(home, final, prefix=f"{flavour.name}-")
    return Built(_image(version, final / "layer.tar"), seconds)


def _root_with_dropin(guest_root: Path, dest: Path, stage: Path, log: Path) -> None:
    """A copy of the guest's ext4 root with ``SYSTEM_CONF_DROPIN`` written in by debugfs (no mount;
    the cached guest image stays as the reference target boots it)."""
    steps.run(["cp", "--sparse=always", guest_root, dest], log, "copying the guest's root file system", 600)
    path, text = SYSTEM_CONF_DROPIN
    local = stage / "dropin.conf"
    local.write_text(text)
    local.chmod(0o644)
    parts = Path(path).parts
    commands = [f"mkdir /{'/'.join(parts[: i + 1])}" for i in range(len(parts) - 1)]  # "exists" is harmless
    commands += [f"write {local} /{path}", f"set_inode_field /{path} uid 0", f"set_inode_field /{path} gid 0"]
    script = stage / "debugfs.cmds"
    script.write_text("\n".join(commands) + "\n")
    steps.run(["debugfs", "-w", "-f", script, dest], log, f"debugfs: writing /{path} into the root", 300)
    r = subprocess.run(["debugfs", "-R", f"cat /{path}", str(dest)], capture_output=True, text=True, timeout=120)
    if r.stdout != text:
        raise SetupError(f"/{path} did not land in the containerDisk's root ({r.stderr.strip()[-200:]}; log: {log})")
    local.unlink()
    script.unlink()


def _extract_kernel(deb: Path, dest: Path, log: Path) -> None:
    """The bzImage of the guest's kernel package (GRUB loads it; the reference boots its ELF form)."""
    with open(dest, "wb") as out, open(log, "a") as err:
        with subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE, stderr=err) as dpkg:
            r = subprocess.run(
                ["tar", "--extract", "--to-stdout", "--wildcards", "./boot/vmlinuz-*"],
                stdin=dpkg.stdout,
                stdout=out,
                stderr=err,
                timeout=300,
            )
    if r.returncode != 0 or dpkg.returncode != 0 or dest.stat().st_size == 0:
        raise SetupError(f"extracting the kernel from {deb} failed: {steps.tail(log)} (log: {log})")
