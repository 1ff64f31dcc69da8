"""The containerDisk's guest root gets systemd's longer device wait (kubevirt_images.containerdisk):
written into a copy of an ext4 image with debugfs, root-owned, byte for byte; the source stays as it
was. And the KubeVirt image caches keep a sibling set another run used lately (steps.prune_others)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from slirp_conformance.kubevirt_images import containerdisk

pytestmark = pytest.mark.skipif(
    subprocess.run(["sh", "-c", "command -v mke2fs && command -v debugfs"], capture_output=True).returncode != 0,
    reason="needs e2fsprogs (hack/setup.sh)",
)


def _ext4(path: Path, tree: Path) -> Path:
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", "-d", str(tree), str(path), "16M"], check=True, timeout=60)
    return path


def _stat(image: Path, path: str) -> str:
    return subprocess.run(["debugfs", "-R", f"stat {path}", str(image)], capture_output=True, text=True).stdout


def _cat(image: Path, path: str) -> str:
    return subprocess.run(["debugfs", "-R", f"cat {path}", str(image)], capture_output=True, text=True).stdout


def test_the_dropin_lands_in_a_copy_root_owned(tmp_path):
    tree = tmp_path / "tree"
    (tree / "etc" / "systemd").mkdir(parents=True)  # as in the guest: /etc/systemd exists, system.conf.d not
    source = _ext4(tmp_path / "guest.ext4", tree)
    log = tmp_path / "build.log"
    log.touch()
    dest = tmp_path / "root.ext4"
    containerdisk._root_with_dropin(source, dest, tmp_path, log)
    path, text = containerdisk.SYSTEM_CONF_DROPIN
    assert _cat(dest, f"/{path}") == text
    assert "DefaultDeviceTimeoutSec=900" in text and text.startswith("#")
    stat = _stat(dest, f"/{path}")
    assert "User:     0   Group:     0" in stat and "Mode:  0644" in stat, stat
    # the control: the cached guest image is untouched, the file is not in it
    assert _cat(source, f"/{path}") == ""
    assert (
        "File not found"
        in subprocess.run(["debugfs", "-R", f"stat /{path}", str(source)], capture_output=True, text=True).stderr
    )


def test_a_dropin_that_does_not_land_stops_the_build(tmp_path, monkeypatch):
    """debugfs reports success even when a command inside fails: the build reads the file back."""
    from slirp_conformance.errors import SetupError

    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "etc").write_text("a file where the directory must go\n")  # mkdir /etc/systemd fails, write too
    source = _ext4(tmp_path / "guest.ext4", tree)
    log = tmp_path / "build.log"
    log.touch()
    with pytest.raises(SetupError, match="did not land"):
        containerdisk._root_with_dropin(source, tmp_path / "root.ext4", tmp_path, log)


def test_pruning_keeps_what_another_run_used_lately(tmp_path):
    """Two checkouts with different recipes share the cache: a sibling set used within the hour stays
    (a run may be loading it), one unused for longer goes; the control: the stale one does go."""
    import os
    import time

    from slirp_conformance.kubevirt_images import steps

    keep, recent, stale, hidden = (tmp_path / n for n in ("a-new", "a-recent", "a-stale", ".a-staging"))
    for d in (keep, recent, stale, hidden):
        d.mkdir()
    old = time.time() - steps.IN_USE_FOR_S - 60
    for d in (stale, hidden):
        os.utime(d, (old, old))
    steps.prune_others(tmp_path, keep, prefix="a-")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".a-staging", "a-new", "a-recent"]
    os.utime(recent, (old, old))
    steps.mark_used(recent)  # a run found it in the cache just now
    steps.prune_others(tmp_path, keep, prefix="a-")
    assert recent.exists()


def test_the_containerdisk_kernel_skips_the_io_apic_timer_check_as_the_reference_boots_do():
    """A starved vCPU fails the kernel's boot-time timer check and the guest panics (a soak false red
    on --target=qemu); the containerDisk's GRUB line has the same ``no_timer_check`` as the reference
    boots (reference_vm.GUEST_KERNEL_ARGS)."""
    from slirp_conformance.reference.reference_vm import GUEST_KERNEL_ARGS

    linux = next(line for line in containerdisk.GRUB_CFG.splitlines() if line.strip().startswith("linux "))
    assert GUEST_KERNEL_ARGS == "no_timer_check" and GUEST_KERNEL_ARGS in linux.split(), linux
