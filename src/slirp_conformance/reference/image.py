"""The reference guest image: a Debian kernel and a busybox initramfs, cached by content.

Everything comes from Debian packages: the kernel (``linux-image-amd64``'s dependency, which
has the e1000 driver the slirp sidecar forces), busybox-static, dropbear and OpenBSD netcat.
The base image is cached under a key that hashes every input, so a changed package or a
changed builder rebuilds it. Per-run secrets (the SSH key, the console password) go into a
small second cpio archive appended at launch, like cloud-init user data: never into the cache.
"""

from __future__ import annotations

import hashlib
import json
import lzma
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from slirp_conformance import cache_dirs, progress
from slirp_conformance.cache_dirs import cache_root
from slirp_conformance.errors import SetupError
from slirp_conformance.reference import cpio

HERE = Path(__file__).parent
KERNEL_META_PACKAGE = "linux-image-amd64"
# The sidecar forces e1000 unless rtl8139 is asked for (its domain.go generateNetDeviceQemuArg);
# QEMU's rtl8139 is a C+ chip (revision 0x20), which 8139cp drives; mii is its one dependency.
# Loaded in this order.
NIC_MODULES = ("e1000", "mii", "8139cp")
BUSYBOX = "/bin/busybox"
GUEST_BINARIES = {  # host path -> guest path
    "/usr/sbin/dropbear": "usr/sbin/dropbear",
    "/usr/bin/dropbearkey": "usr/bin/dropbearkey",
    "/bin/nc.openbsd": "usr/bin/nc.openbsd",  # busybox's sh runs its own nc applet for plain `nc`
}
REQUIRED_PACKAGES = {
    BUSYBOX: "busybox-static",
    "/usr/sbin/dropbear": "dropbear-bin",
    "/usr/bin/dropbearkey": "dropbear-bin",
    "/bin/nc.openbsd": "netcat-openbsd",
}
_BUILDER_FILES = ("image.py", "cpio.py", "guest_init.sh", "udhcpc.script", "inittab")
GUEST_HOSTNAME = "slirp-ref"


@dataclass(frozen=True)
class GuestImage:
    kernel: Path
    initrd: Path  # base archive; append a per-run overlay (see ``overlay``)
    key: str
    kernel_version: str


def check_host_tools() -> None:
    missing = sorted({pkg for path, pkg in REQUIRED_PACKAGES.items() if not os.path.exists(path)})
    if missing:
        raise SetupError(
            f"the reference guest needs Debian packages {', '.join(missing)}: "
            f"run `apt-get install {' '.join(missing)}` (or hack/setup.sh as root)"
        )
    for tool in ("dpkg-deb", "tar", "ldd"):
        if shutil.which(tool) is None:
            raise SetupError(f"the reference guest builder needs `{tool}` on PATH (Debian/Ubuntu host)")


def _sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _libraries(binary: str) -> list[str]:
    out = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
    libs = []
    for line in out.splitlines():
        m = re.search(r"(/\S+)\s+\(0x", line)
        if m:
            libs.append(m.group(1))
    return libs


def _kernel_package(cache: Path) -> str:
    """The versioned kernel package behind the meta package; apt is asked at most once a day
    (``apt-cache`` costs about 2 s, more than the rest of a warm image lookup)."""
    memo = cache / "debs" / "kernel-package.json"
    try:
        known = json.loads(memo.read_text())
        if time.time() - known["checked"] < 86400:
            return known["package"]
    except (OSError, ValueError, KeyError):
        pass
    package = _ask_apt_for_kernel_package()
    memo.write_text(json.dumps({"package": package, "checked": time.time()}))
    return package


def _ask_apt_for_kernel_package() -> str:
    try:
        out = subprocess.run(
            ["apt-cache", "depends", KERNEL_META_PACKAGE], capture_output=True, text=True, timeout=60
        ).stdout
    except (OSError, subprocess.TimeoutExpired) as e:
        raise SetupError(f"cannot ask apt for the kernel package ({e}); run on Debian/Ubuntu") from e
    m = re.search(r"Depends:\s+(linux-image-\S+)", out)
    if not m:
        raise SetupError(
            f"apt knows no {KERNEL_META_PACKAGE}: run `apt-get update` (Debian/Ubuntu package lists needed)"
        )
    return m.group(1)


def kernel_deb(cache: Path) -> Path:
    """The kernel .deb, downloaded with apt once and kept in the cache."""
    explicit = os.environ.get("SLIRP_REF_KERNEL_DEB")
    if explicit:
        if not Path(explicit).is_file():
            raise SetupError(f"SLIRP_REF_KERNEL_DEB={explicit} is not a file: point it at a linux-image .deb")
        return Path(explicit)
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    pkg = _kernel_package(cache)
    found = sorted(debs.glob(f"{pkg}_*.deb"))
    if found:
        return found[-1]
    with (
        progress.phase(f"downloading the guest kernel ({pkg}, once; cached)"),
        tempfile.TemporaryDirectory(dir=debs) as tmp,
    ):
        os.chmod(tmp, 0o777)  # apt's _apt user downloads into it when we are root
        r = subprocess.run(["apt-get", "download", pkg], cwd=tmp, capture_output=True, text=True, timeout=600)
        got = list(Path(tmp).glob("*.deb"))
        if r.returncode != 0 or not got:
            raise SetupError(
                f"`apt-get download {pkg}` failed ({r.stderr.strip().splitlines()[-1:] or r.returncode}): "
                "run `apt-get update` and check the Debian mirror is reachable"
            )
        target = debs / got[0].name
        os.replace(got[0], target)
    return target


def _extract_kernel(deb: Path, into: Path) -> tuple[Path, dict[str, Path], str]:
    patterns = ["*/boot/vmlinuz-*"] + [f"*/{m}.ko*" for m in NIC_MODULES]
    with subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE) as dpkg:
        subprocess.run(["tar", "-x", "-C", str(into), "--wildcards", *patterns], stdin=dpkg.stdout, check=True)
    if dpkg.returncode != 0:
        raise SetupError(f"{deb} is not a readable .deb: delete it and run again")
    vmlinuz = next(into.glob("boot/vmlinuz-*"), None)
    if vmlinuz is None:
        raise SetupError(f"{deb} holds no boot/vmlinuz: it is not a kernel image package")
    modules = {}
    for m in NIC_MODULES:
        hit = next((p for p in into.rglob(f"{m}.ko*")), None)
        if hit is None:
            raise SetupError(f"{deb} has no {m} driver: use linux-image-amd64, not the cloud kernel")
        modules[m] = hit
    return vmlinuz, modules, vmlinuz.name.removeprefix("vmlinuz-")


def module_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    if path.name.endswith(".xz"):
        return lzma.decompress(data)
    return data


def elf_kernel(vmlinuz: Path, out: Path) -> Path:
    """Unpack the XZ payload of a bzImage into an ELF vmlinux that QEMU boots by PVH.

    Saves about 3 s of in-guest decompression under TCG. Falls back to the bzImage when
    the payload is not XZ or the ELF has no PVH entry note.
    """
    blob = vmlinuz.read_bytes()
    start = blob.find(b"\xfd7zXZ\x00")
    if start >= 0:
        try:
            elf = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(blob[start:])
        except lzma.LZMAError:
            elf = b""
        # XEN_ELFNOTE_PHYS32_ENTRY (18) lives in a "Xen" note; without it QEMU cannot PVH-boot.
        if elf.startswith(b"\x7fELF") and b"Xen\0" in elf:
            out.write_bytes(elf)
            return out
    shutil.copyfile(vmlinuz, out)
    return out


def _content_key(deb: Path) -> str:
    h = hashlib.sha256()
    for name in _BUILDER_FILES:
        h.update(name.encode() + (HERE / name).read_bytes())
    h.update(deb.name.encode() + str(deb.stat().st_size).encode())
    for binary in [BUSYBOX, *GUEST_BINARIES]:
        h.update(binary.encode() + _sha256(binary).encode())
        for lib in _libraries(binary) if binary != BUSYBOX else []:
            h.update(lib.encode() + _sha256(lib).encode())
    return h.hexdigest()[:20]


def _base_entries(modules: dict[str, Path]) -> list[cpio.Entry]:
    d, f, s = cpio.directory, cpio.file, cpio.symlink
    entries = [
        d(p)
        for p in (
            "bin",
            "sbin",
            "usr",
            "usr/bin",
            "usr/sbin",
            "etc",
            "etc/init.d",
            "etc/dropbear",
            "lib",
            "lib64",
            "lib/modules",
            "proc",
            "sys",
            "dev",
            "run",
            "var",
            "tmp",
        )
    ]
    entries += [
        cpio.directory("root", 0o700),
        cpio.chardev("dev/console", 5, 1),
        cpio.chardev("dev/null", 1, 3, 0o666),
        s("var/run", "/run"),
    ]
    entries.append(f("bin/busybox", Path(BUSYBOX).read_bytes(), 0o755))
    applets = subprocess.run([BUSYBOX, "--list-full"], capture_output=True, text=True, check=True).stdout.split()
    ours = set(GUEST_BINARIES.values())
    for applet in applets:
        if applet != "bin/busybox" and applet not in ours:
            entries.append(s(applet, "/bin/busybox"))
    libs: dict[str, str] = {}
    for host, guest in GUEST_BINARIES.items():
        entries.append(f(guest, Path(host).read_bytes(), 0o755))
        for lib in _libraries(host):
            libs[lib] = lib
    lib_dirs = sorted({str(Path(lib).parent).lstrip("/") for lib in libs} - {"lib", "lib64"})
    for ld in lib_dirs:
        parts = Path(ld).parts
        for i in range(1, len(parts) + 1):
            p = "/".join(parts[:i])
            if not any(e.path == p for e in entries):
                entries.append(d(p))
    for lib in sorted(libs):
        entries.append(f(lib.lstrip("/"), Path(os.path.realpath(lib)).read_bytes(), 0o755))
    for name, path in modules.items():
        entries.append(f(f"lib/modules/{name}.ko", module_bytes(path)))
    entries += [
        f("etc/modules-load", "\n".join(modules).encode() + b"\n"),
        f("etc/hostname", GUEST_HOSTNAME.encode() + b"\n"),
        # "fedora" is root under another name, so the Fedora test image's login (fedora, then
        # sudo -i) also works here.
        f("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nfedora:x:0:0:fedora:/root:/bin/sh\n"),
        f(
            "usr/bin/sudo",
            b"#!/bin/sh\n# Every user of the reference guest is root: sudo -i is a login shell.\n"
            b'[ "$1" = "-i" ] && exec /bin/sh -l\nexec "$@"\n',
            0o755,
        ),
        f("etc/os-release", b'ID=slirp-reference\nNAME="slirp-conformance reference guest"\n'),
        f("etc/group", b"root:x:0:\n"),
        f("etc/inittab", (HERE / "inittab").read_bytes()),
        f("etc/init.d/rcS", (HERE / "guest_init.sh").read_bytes(), 0o755),
        f("etc/udhcpc.script", (HERE / "udhcpc.script").read_bytes(), 0o755),
        f("etc/profile", b"export PATH=/usr/sbin:/usr/bin:/sbin:/bin\n"),
    ]
    return entries


def build(cache: Path | None = None) -> GuestImage:
    """Return the cached guest image for the current packages, building it if needed."""
    check_host_tools()
    cache = cache or cache_root()
    deb = kernel_deb(cache)
    key = _content_key(deb)
    final = cache / "guest" / key
    manifest = final / "manifest.json"
    if manifest.is_file():
        meta = json.loads(manifest.read_text())
        return GuestImage(final / meta["kernel"], final / "base.cpio", key, meta["kernel_version"])
    with progress.phase("building the reference guest image (first run; cached by content)"):
        work = cache_dirs.staging_dir(cache / "guest", key)
        try:
            unpacked = work / "deb"
            unpacked.mkdir()
            vmlinuz, modules, version = _extract_kernel(deb, unpacked)
            kernel = elf_kernel(vmlinuz, work / "vmlinux")
            with open(work / "base.cpio", "wb") as out:
                cpio.write(out, _base_entries(modules))
            shutil.rmtree(unpacked)
            os.chmod(work, 0o755)  # QEMU runs as an unprivileged user and must read it
            (work / "manifest.json").write_text(
                json.dumps({"kernel": kernel.name, "kernel_version": version, "deb": deb.name}, indent=1)
            )
            try:
                os.rename(work, final)
            except OSError:  # another worker finished first: theirs is identical
                pass
        finally:
            shutil.rmtree(work, ignore_errors=True)
    meta = json.loads(manifest.read_text())
    return GuestImage(final / meta["kernel"], final / "base.cpio", key, meta["kernel_version"])


def overlay(authorized_key: str, password_hash: str) -> bytes:
    """The per-run archive: root's authorized key and console password hash."""
    import io

    buf = io.BytesIO()
    cpio.write(
        buf,
        [
            cpio.directory("root", 0o700),
            cpio.directory("root/.ssh", 0o700),
            cpio.file("root/.ssh/authorized_keys", authorized_key.encode() + b"\n", 0o600),
            cpio.file(
                "etc/shadow",
                "".join(f"{user}:{password_hash}:19000:0:99999:7:::\n" for user in ("root", "fedora")).encode(),
                0o600,
            ),
        ],
    )
    return buf.getvalue()


def password_hash(password: str) -> str:
    """SHA-512 crypt of ``password`` via busybox (no deprecated ``crypt`` module)."""
    r = subprocess.run(
        [BUSYBOX, "mkpasswd", "-m", "sha512", "-P", "0"], input=password, capture_output=True, text=True, check=True
    )
    return r.stdout.strip()
