"""The reference VM: QEMU ``-netdev user`` (libslirp) in a pod-like lab, booted from a VMSpec.

The VMSpec is rendered into QEMU arguments exactly as the slirp sidecar renders it; QEMU runs
in its own network namespace as an unprivileged user without CAP_NET_RAW, with a resolv.conf
and ping_group_range like a virt-launcher pod's. Peers (TCP/UDP echo, DNS, an ICMP-answering
host) live in a second namespace behind a veth. Used by the ``qemu`` target.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import errno
import functools
import json
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from slirp_conformance import redaction, waits
from slirp_conformance.cache_dirs import cache_root
from slirp_conformance.checkout import REPO
from slirp_conformance.errors import SetupError
from slirp_conformance.reference import cidata, fedora_image, image, sidecar_render
from slirp_conformance.reference.fedora_like import Flavour
from slirp_conformance.target import Endpoint, Peers, UdpSend
from slirp_conformance.vmspec import VMSpec

QEMU = os.environ.get("SLIRP_QEMU_BINARY", "qemu-system-x86_64")  # override: a custom QEMU build
POD_IP, PEER_IP, PREFIX = "198.18.0.2", "198.18.0.1", 24  # RFC 2544 test range, never routed out
QEMU_UID = QEMU_GID = 107  # the qemu user of virt-launcher
SEARCH_DOMAINS = ("slirp-conformance.svc.cluster.local", "svc.cluster.local", "cluster.local")
PEER_DNS_NAME = "peer-echo.slirp-conformance.svc.cluster.local"
ECHO_PORT = 9007  # not 7: libslirp falls back to UDP "pseudo-pings" to port 7
RUN_PREFIX = "slirp-conformance-run-"
# Like a containerd 1.x pod: the kernel default, which excludes every gid (no ping sockets).
DEFAULT_POD_SYSCTLS = {"net.ipv4.ping_group_range": "1 0"}
EVIDENCE_SYSCTLS = ("net.ipv4.ping_group_range", "net.ipv4.ip_unprivileged_port_start")
# Boot-time savers under TCG (measured: about 1.5 s); none touches networking. `norandmaps`: QEMU
# 7.2's TCG (bookworm's) finds translated code by the guest's virtual address, so with ASLR every
# process translates its program and libraries anew (measured on the Fedora-like boot to the suite's
# shell: 1.25 M translated blocks with ASLR, 0.56 M without; QEMU CPU 36-41 s -> 32-33 s).
_FAST_BOOT = "quiet panic=-1 mitigations=off cryptomgr.notests nowatchdog audit=0 norandmaps"
# The kernel's boot-time check that the IO-APIC timer ticks (arch/x86/kernel/apic/io_apic.c,
# timer_irq_works: a few ticks within a calibrated busy wait) fails when the host starves an
# emulated vCPU, and the guest panics ("IO-APIC + timer doesn't work!"): a Fedora-like soak run at
# load 57 lost its VM so, a false red. `no_timer_check` skips it, as Fedora's cloud images (the
# base of KubeVirt's Fedora test image) boot with it on their kernel command line.
GUEST_KERNEL_ARGS = "no_timer_check"


@dataclass
class QemuOptions:
    netdev_extra: str = ""
    sysctls: dict[str, str] = field(default_factory=dict)
    accel: str = "auto"  # auto | kvm | tcg
    keep_run_dir: bool = False
    # Where the QEMU network arguments come from (see sidecar_render.qemu_network_args):
    # auto | go (KubeVirt's own sidecar code) | python (vmspec.slirp_qemu_args). The CLI's
    # --sidecar-render defaults to auto; code that builds a VM directly gets the Python rendering.
    sidecar_render: str = "python"
    kubevirt_version: str | None = None  # the sidecar release for go/auto (None: versions.env default)


def parse_sysctl(text: str) -> tuple[str, str]:
    """``--qemu-sysctl KEY=VALUE``: only network sysctls are per namespace."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key or not value.strip():
        raise SetupError(
            f"--qemu-sysctl {text!r} is not KEY=VALUE: e.g. --qemu-sysctl net.ipv4.ping_group_range='0 2147483647'"
        )
    if not key.startswith("net.") or not all(
        part.replace("_", "").replace("-", "").isalnum() for part in key.split(".")
    ):
        raise SetupError(f"--qemu-sysctl {key!r}: only net.* sysctls belong to the pod's network namespace")
    if not Path("/proc/sys", *key.split(".")).exists():
        raise SetupError(f"--qemu-sysctl {key!r}: this kernel has no such sysctl (see /proc/sys/net)")
    return key, value.strip()


def pod_resolv_conf(search_domains: tuple[str, ...], nameserver: str) -> str:
    """The pod's /etc/resolv.conf as kubelet writes it for a ClusterFirst pod; the cluster DNS is the
    lab's peer side."""
    return f"search {' '.join(search_domains)}\nnameserver {nameserver}\noptions ndots:5\n"


def _userns_works() -> bool:
    try:
        return (
            subprocess.run(
                ["unshare", "--user", "--map-root-user", "--net", "--mount", "true"], capture_output=True, timeout=10
            ).returncode
            == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        return False


def preflight(opts: QemuOptions) -> bool:
    """Fail early with the fix named. Returns True when the lab must run rootless."""
    if shutil.which(QEMU) is None:
        raise SetupError(f"{QEMU} not found: run `apt-get install qemu-system-x86` (or hack/setup.sh as root)")
    for tool, pkg in (
        ("unshare", "util-linux"),
        ("nsenter", "util-linux"),
        ("setpriv", "util-linux"),
        ("ip", "iproute2"),
        ("ping", "iputils-ping"),
    ):
        if shutil.which(tool) is None:
            raise SetupError(f"`{tool}` not found: run `apt-get install {pkg}`")
    image.check_host_tools()
    sidecar_render.check(opts.sidecar_render, opts.kubevirt_version)
    if opts.accel not in ("auto", "kvm", "tcg"):
        raise SetupError(f"--qemu-accel {opts.accel!r}: choose auto, kvm or tcg")
    if opts.accel == "kvm" and os.geteuid() == 0:
        _check_kvm_for_qemu_user()
    elif opts.accel == "kvm" and not os.access("/dev/kvm", os.R_OK | os.W_OK):  # rootless: QEMU runs as us
        raise SetupError("--qemu-accel kvm: /dev/kvm is missing or not accessible to you; use --qemu-accel tcg")
    if os.geteuid() == 0:
        return False
    if not _userns_works():
        raise SetupError(
            "the qemu target needs root or unprivileged user namespaces: run as root, or enable "
            "them (sysctl kernel.unprivileged_userns_clone=1 / user.max_user_namespaces>0)"
        )
    return True


def _check_kvm_for_qemu_user() -> None:
    """``--qemu-accel kvm``: QEMU runs as uid/gid 107 (as in virt-launcher), not as the caller,
    so /dev/kvm must admit that user, not just us."""
    try:
        st = os.stat("/dev/kvm")
    except OSError:
        raise SetupError("--qemu-accel kvm: /dev/kvm does not exist on this host; use --qemu-accel tcg") from None
    mode = st.st_mode
    usable = (
        mode & 0o006 == 0o006
        or (st.st_gid == QEMU_GID and mode & 0o060 == 0o060)
        or (st.st_uid == QEMU_UID and mode & 0o600 == 0o600)
    )
    if not usable:
        raise SetupError(
            f"--qemu-accel kvm: /dev/kvm (mode {mode & 0o777:04o}, uid {st.st_uid}, gid {st.st_gid}) "
            f"does not admit QEMU, which runs as uid/gid {QEMU_UID} like virt-launcher's; "
            f"`chmod 0666 /dev/kvm` (or chgrp it to gid {QEMU_GID}), or use --qemu-accel tcg"
        )


def _end_lab(unshare: subprocess.Popen) -> None:
    """The lab ended, and nothing of it left to reap. The lab is PID 1 of the VM's PID namespace:
    with it the kernel ends QEMU, the peers and the namespaces. It is killed itself, so unshare, its
    parent, reaps it and then exits. unshare ignores SIGTERM while it waits, and killing unshare
    instead (its --kill-child then kills the lab) leaves the lab a zombie that only the host's init
    reaps (about a second later in this project's containers: a run's process group outlived it)."""
    try:
        children = Path(f"/proc/{unshare.pid}/task/{unshare.pid}/children").read_text().split()
    except OSError:  # unshare has ended, or the kernel has no children file
        children = []
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)
    try:
        unshare.wait(timeout=5 if children else 0)
    except subprocess.TimeoutExpired:
        unshare.kill()
        unshare.wait()


def _die_with_parent() -> None:
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _die_with_parent_yielding() -> None:
    """``_die_with_parent``, and the lowest CPU priority (nice 19) for the lab and its QEMU."""
    _die_with_parent()
    os.nice(19)


def sweep_stale_run_dirs() -> None:
    """Remove run dirs of suite processes that were killed outright (SIGKILL leaves them)."""
    for d in Path(tempfile.gettempdir()).glob(RUN_PREFIX + "*"):
        try:
            pid = int(d.name[len(RUN_PREFIX) :].split("-")[0])
        except ValueError:
            continue
        if not Path(f"/proc/{pid}").exists():
            shutil.rmtree(d, ignore_errors=True)


def _kvm_works(img: image.GuestImage, run_dir: Path) -> bool:
    """Does KVM really run a guest here? Remembered per host boot and QEMU build."""
    qemu = shutil.which(QEMU)
    if qemu is None or not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False  # (a missing QEMU is preflight's to report)
    try:
        boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot_id = "unknown"
    memo = cache_root() / f"kvm-probe-{boot_id}-{os.stat(qemu).st_mtime_ns}.json"
    try:
        return json.loads(memo.read_text())["kvm_works"]
    except (OSError, ValueError, KeyError):
        pass
    works = _probe_kvm(img, run_dir)
    memo.parent.mkdir(parents=True, exist_ok=True)
    memo.write_text(json.dumps({"kvm_works": works}))
    return works


def kvm_runs_guests() -> bool:
    """Whether KVM really runs a guest on this host (the reference guest booted once with
    ``-accel kvm``; remembered per host boot and QEMU build). The kind path asks it too: a
    /dev/kvm that creates VMs can still abort every guest, and KubeVirt then needs useEmulation."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    with tempfile.TemporaryDirectory(prefix="slirp-kvm-probe-") as tmp:
        return _kvm_works(image.build(), Path(tmp))


def _probe_kvm(img: image.GuestImage, run_dir: Path) -> bool:
    """Boot the image with KVM and wait for its login prompt.

    /dev/kvm can exist and still fail (nested "PVM" devices abort stock kernels), so only
    a guest that actually prints through KVM counts.
    """
    log = run_dir / "kvm-probe.log"
    argv = [
        QEMU,
        "-machine",
        "q35",
        "-accel",
        "kvm",
        "-cpu",
        "host",
        "-m",
        "128",
        "-nodefaults",
        "-display",
        "none",
        "-no-reboot",
        "-kernel",
        str(img.kernel),
        "-initrd",
        str(img.initrd),
        "-append",
        "console=ttyS0 rdinit=/sbin/init panic=-1",
        "-serial",
        f"file:{log}",
    ]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_die_with_parent)
    try:
        waits.wait_for(
            "the KVM probe guest to print its login prompt",
            lambda: proc.poll() is not None or (log.exists() and b"login:" in log.read_bytes()),
            waits.timeout("kvm-probe"),
        )
        return log.exists() and b"login:" in log.read_bytes()
    except waits.WaitTimeout:
        return False
    finally:
        proc.kill()
        proc.wait()


@functools.cache
def _tool_version(*argv: str) -> str:
    """First line a tool prints about its version; asked once per process (reports ask per test)."""
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout.strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "unknown"


class ReferenceVM:
    """One VM in its own lab. ``start()`` returns once QEMU runs; the guest boots on its own."""

    def __init__(
        self,
        spec: VMSpec,
        opts: QemuOptions,
        *,
        authorized_key: str,
        password: str,
        search_domains: tuple[str, ...] = SEARCH_DOMAINS,
        dns_records: dict[str, str] | None = None,
        echo_port: int = ECHO_PORT,
        fedora_like: Flavour | None = None,
        yields_cpu: bool = False,
    ) -> None:
        """``search_domains``: the pod resolv.conf's search list (the sidecar passes it as dnssearch);
        ``dns_records``: names the peer DNS answers (default: the reference peer's name);
        ``fedora_like``: boot that Fedora-like flavour instead of the busybox reference guest (its
        cloud-init data: the VM manifest's, from ``authorized_key`` and ``password``);
        ``yields_cpu``: a VM booting beside another (a variant): its lab and QEMU run at nice 19,
        and a Fedora-like guest gets one vCPU (see ``_fedora_like_boot``)."""
        self.spec = spec
        self.fedora_like = fedora_like
        self.yields_cpu = yields_cpu
        # close() may come from another thread while start() runs (a variant's boot cut short at the
        # session's teardown): what start makes is made under this lock, and not once closed.
        self._close_lock = threading.Lock()
        self._closed = False
        self.opts = opts
        self.pod_ip, self.peer_ip, self.prefix = POD_IP, PEER_IP, PREFIX
        self.search_domains = search_domains
        self.dns_records = dns_records if dns_records is not None else {PEER_DNS_NAME: self.peer_ip}
        self.echo_port = echo_port
        self.peers = Peers(
            tcp_echo=Endpoint(self.peer_ip, echo_port),
            udp_echo=Endpoint(self.peer_ip, echo_port),
            dns_name=next(iter(self.dns_records)),
            dns_address=self.peer_ip,
            icmp_host=self.peer_ip,
        )
        self._authorized_key = authorized_key
        self._password = password
        self._lab: subprocess.Popen | None = None
        self.run_dir: Path | None = None
        self._left_to_remove: Path | None = None  # a run dir a close could not remove whole (see _close)
        self.accel = "tcg"
        self.rootless = False
        self.image: image.GuestImage | None = None
        self.fedora_image: fedora_image.FedoraLikeImage | None = None
        self.timings: dict[str, float] = {}
        self.network_args: list[str] | None = None  # the sidecar's QEMU arguments, set by start()
        self.network_args_source: dict[str, str] = {}

    @property
    def work_dir(self) -> Path:
        """The run directory of the started VM (its lab, QEMU, logs and sockets)."""
        if self.run_dir is None:
            raise RuntimeError("the reference VM is not started: it has no run directory")
        return self.run_dir

    def start(self) -> ReferenceVM:
        t0 = time.monotonic()
        self.rootless = preflight(self.opts)
        sweep_stale_run_dirs()
        with self._close_lock:
            self._refuse_if_closed()
            self.run_dir = Path(tempfile.mkdtemp(prefix=f"{RUN_PREFIX}{os.getpid()}-"))
        os.chmod(self.run_dir, 0o755)
        try:
            self._start(t0)
        except BaseException:
            self.close()
            raise
        return self

    def _start(self, t0: float) -> None:
        img = self.image = image.build()  # also the KVM probe's guest
        if self.fedora_like is not None:
            self.fedora_image = fedora_image.build()
        self.timings["image_build_s"] = time.monotonic() - t0
        t1 = time.monotonic()
        self.network_args, self.network_args_source = sidecar_render.qemu_network_args(
            self.spec, self.search_domains, self.opts.sidecar_render, self.opts.kubevirt_version
        )
        self.timings["network_args_s"] = time.monotonic() - t1
        self.accel = (
            self.opts.accel if self.opts.accel != "auto" else ("kvm" if _kvm_works(img, self.work_dir) else "tcg")
        )
        qemu_dir = self.work_dir / "qemu"
        qemu_dir.mkdir()
        if not self.rootless:
            os.chown(qemu_dir, QEMU_UID, QEMU_GID)
        boot = (
            self._fedora_like_boot(self.fedora_image, self.fedora_like)
            if self.fedora_image is not None and self.fedora_like is not None
            else self._busybox_boot(img)
        )
        (self.work_dir / "resolv.conf").write_text(pod_resolv_conf(self.search_domains, self.peer_ip))
        sysctls = {**DEFAULT_POD_SYSCTLS, **self.opts.sysctls}
        cfg = {
            "run_dir": str(self.run_dir),
            "pod_netns": str(self.work_dir / "pod.netns"),
            "pod_ip": self.pod_ip,
            "peer_ip": self.peer_ip,
            "prefix": self.prefix,
            "pod_sysctls": sysctls,
            "rootless": self.rootless,
            "evidence_sysctls": list(dict.fromkeys([*EVIDENCE_SYSCTLS, *sysctls])),
            "resolv_conf": str(self.work_dir / "resolv.conf"),
            "dns_records": self.dns_records,
            "tcp_echo_port": self.echo_port,
            "udp_echo_port": self.echo_port,
            "control_socket": str(self.work_dir / "control.sock"),
            "qemu_log": str(self.work_dir / "qemu.log"),
            "qemu_argv": self._qemu_identity() + self.qemu_argv(boot, qemu_dir),
        }
        (self.work_dir / "lab.json").write_text(json.dumps(cfg, indent=1))
        userns = ["--user", "--map-root-user"] if self.rootless else []
        self.timings["launched_at"] = time.monotonic()
        # The child gets its own copy of the log's descriptor; the parent's closes with the block.
        with open(self.work_dir / "lab.log", "wb") as lab_log, self._close_lock:
            self._refuse_if_closed()
            self._lab = subprocess.Popen(
                [
                    "unshare",
                    *userns,
                    "--mount",
                    "--net",
                    "--pid",
                    "--fork",
                    "--kill-child",
                    "--mount-proc",
                    sys.executable,
                    "-m",
                    "slirp_conformance.reference.pod_lab",
                    str(self.work_dir / "lab.json"),
                ],
                cwd=REPO,
                env={**os.environ, "PYTHONPATH": str(REPO / "src")},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=lab_log,
                preexec_fn=_die_with_parent_yielding if self.yields_cpu else _die_with_parent,
            )
        self._await_lab()

    def _for_qemu(self, cached: Path, name: str) -> Path:
        """``cached`` in the run dir: the cache may sit in a home QEMU's user cannot enter."""
        here = self.work_dir / name
        try:
            os.link(cached, here)
        except OSError:  # another file system
            shutil.copyfile(cached, here)
        os.chmod(here, 0o644)
        return here

    def _qemu_owns(self, path: Path, mode: int) -> None:
        os.chmod(path, mode)
        if not self.rootless:
            os.chown(path, QEMU_UID, QEMU_GID)

    def _busybox_boot(self, img: image.GuestImage) -> list[str]:
        """Kernel and initramfs; the run's key and password hash in a second cpio appended to it."""
        kernel = self._for_qemu(img.kernel, "vmlinux")
        initrd = self.work_dir / "initrd.cpio"
        with open(initrd, "wb") as out, open(img.initrd, "rb") as base:
            shutil.copyfileobj(base, out)
            out.write(image.overlay(self._authorized_key, image.password_hash(self._password)))
        os.chmod(initrd, 0o644)
        return [
            "-smp",
            "1",
            "-kernel",
            str(kernel),
            "-initrd",
            str(initrd),
            "-append",
            f"console=ttyS0 rdinit=/sbin/init {_FAST_BOOT} {GUEST_KERNEL_ARGS} nosmp",
        ]

    def _fedora_like_boot(self, img: fedora_image.FedoraLikeImage, flavour: Flavour) -> list[str]:
        """The flavour's root disk under a per-run qcow2 overlay, the run's cloud-init on a cidata
        ISO, a virtio RNG as KubeVirt's Fedora test VMs have (tests/libvmifact/factory.go,
        NewFedora: WithRng), and two vCPUs: 12 s faster to login than one under TCG, and less QEMU
        CPU in all (alone, 2026-12-07, to the suite's shell: 24.0 s of wall time and 36.2 s of QEMU
        CPU; with one vCPU 40.6 s and 41.1 s). A VM that yields the CPU gets one: three Fedora-like VMs of two vCPUs
        on two cores spent their time waiting on each other (warm busybox-nc run 80.5 s, against
        73.0 s with the two variants on one vCPU each)."""
        kernel = self._for_qemu(img.kernel, "vmlinux")
        initrd = self._for_qemu(img.initrd, "initrd.cpio")
        base = self._for_qemu(img.disk(flavour), "root-base.img")
        overlay = self.work_dir / "root.qcow2"
        r = subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(base), str(overlay)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if r.returncode != 0:
            raise SetupError(f"qemu-img could not create the root disk overlay: {r.stderr.strip()[-300:]}")
        self._qemu_owns(overlay, 0o600)
        iso = cidata.write_iso(
            self.work_dir / "cidata.iso",
            vm_name=self.spec.name,
            authorized_key=self._authorized_key,
            password=self._password,
        )
        self._qemu_owns(iso, 0o600)  # it holds the console password
        return [
            "-smp",
            "1" if self.yields_cpu else "2",
            "-kernel",
            str(kernel),
            "-initrd",
            str(initrd),
            "-append",
            f"console=ttyS0 net.ifnames=0 {_FAST_BOOT} {GUEST_KERNEL_ARGS}",
            "-drive",
            f"file={overlay},if=virtio,format=qcow2,cache=unsafe",
            "-drive",
            f"file={iso},if=virtio,format=raw,readonly=on",
            "-object",
            "rng-random,id=rng0,filename=/dev/urandom",
            "-device",
            "virtio-rng-pci,rng=rng0",
        ]

    def _qemu_identity(self) -> list[str]:
        """Like virt-launcher: an unprivileged QEMU that keeps only CAP_NET_BIND_SERVICE."""
        caps = [
            "--inh-caps=-all,+net_bind_service",
            "--ambient-caps=-all,+net_bind_service",
            "--bounding-set=-all,+net_bind_service",
        ]
        if self.rootless:  # only uid 0 is mapped: make it powerless instead
            return ["setpriv", *caps, "--securebits=+noroot,+noroot_locked", "--"]
        return ["setpriv", f"--reuid={QEMU_UID}", f"--regid={QEMU_GID}", "--clear-groups", *caps, "--"]

    def qemu_argv(self, boot: list[str], qemu_dir: Path) -> list[str]:
        """``boot``: the guest's own arguments (vCPUs, kernel, initramfs, command line, disks)."""
        if self.network_args is None:
            raise RuntimeError("qemu_argv() before start(): the network arguments are not rendered yet")
        net_args = list(self.network_args)
        if self.opts.netdev_extra:
            net_args[1] += "," + self.opts.netdev_extra.lstrip(",")
        accel = ["-accel", "kvm", "-cpu", "host"] if self.accel == "kvm" else ["-accel", "tcg", "-cpu", "max"]
        return [
            QEMU,
            "-name",
            self.spec.name,
            "-machine",
            "q35",
            *accel,
            "-m",
            str(self.spec.memory_mib),
            "-nodefaults",
            "-display",
            "none",
            "-no-reboot",
            *boot,
            "-chardev",
            f"socket,id=serial0,path={qemu_dir / 'console.sock'},server=on,wait=off,logfile={qemu_dir / 'console.log'}",
            "-serial",
            "chardev:serial0",
            *net_args,
            "-global",
            "e1000.autonegotiation=off",  # link up at once (not a network-stack setting)
            # The human monitor, for evidence only (libslirp's connection table: `info usernet`).
            "-monitor",
            f"unix:{qemu_dir / 'monitor.sock'},server=on,wait=off",
        ]

    def _await_lab(self) -> None:
        assert self._lab and self._lab.stdout
        sel = selectors.DefaultSelector()
        sel.register(self._lab.stdout, selectors.EVENT_READ)
        budget = waits.timeout("lab-ready")
        if not sel.select(budget):
            raise SetupError(
                f"the reference lab did not report ready within {budget:.0f} s; see {self.run_dir}/lab.log"
            )
        line = self._lab.stdout.readline().decode(errors="replace").strip()
        try:
            msg = json.loads(line)
        except ValueError:
            msg = {"error": line or f"exited with {self._lab.poll()}: {self._tail('lab.log')}"}
        if "error" in msg:
            raise SetupError(f"the reference lab failed: {msg['error']}")

    def _tail(self, name: str, lines: int = 5) -> str:
        try:
            return " | ".join((self.work_dir / name).read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def _refuse_if_closed(self) -> None:
        if self._closed:
            raise SetupError(f"reference VM {self.spec.name}: closed while it was starting")

    def _connect_console(self) -> socket.socket:
        self._refuse_if_closed()
        if self._lab and self._lab.poll() is not None:
            raise SetupError(f"the reference lab exited ({self._lab.returncode}): {self._tail('qemu.log')}")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(str(self.work_dir / "qemu" / "console.sock"))
        except OSError:
            s.close()
            raise
        return s

    @property
    def lab_pid(self) -> int | None:
        """A process inside the lab's mount and network (peer) namespaces, for ``nsenter -t``;
        None when the lab is not running."""
        return self._lab.pid if self._lab is not None and self._lab.poll() is None else None

    @property
    def pod_netns(self) -> Path | None:
        """The pod's network namespace file; it exists only inside the lab's mount namespace."""
        return self.work_dir / "pod.netns" if self.run_dir is not None else None

    def console_socket(self) -> socket.socket:
        """A new connection to the serial console (waits for QEMU to create the socket)."""
        return waits.wait_for(
            "the QEMU serial console socket",
            self._connect_console,
            waits.timeout("lab-ready"),
            retry_on=(FileNotFoundError, ConnectionRefusedError),
        )

    def close(self) -> None:
        # Two threads may close at once: a variant's boot that fails as the session's teardown
        # closes it under that boot (fixtures/slirp_vm.py VariantTargets.close).
        with self._close_lock:
            self._closed = True
            self._close()

    def _close(self) -> None:
        if self._lab is not None:
            _end_lab(self._lab)
            if self._lab.stdout:
                self._lab.stdout.close()
            self._lab = None
        if self.run_dir is not None and not self.opts.keep_run_dir:
            self._left_to_remove = self.run_dir
        self.run_dir = None  # work_dir raises from now on: a start under way makes nothing more here
        if self._left_to_remove is not None:
            self._remove_run_dir(self._left_to_remove)

    def _remove_run_dir(self, path: Path) -> None:
        """``path`` removed, within a short bound. A file added as the tree goes (by a start under way
        in another thread: a variant's boot cut short at the session's teardown) leaves the directory
        not empty at its rmdir, and rmtree, told to ignore errors, then leaves it behind: CI once
        found an interrupted Fedora-like run's directory so. So it is removed again until it is gone;
        still there after the bound, it stays to remove for the next close (that start's own, as it
        fails on its next step)."""

        def gone() -> bool:
            shutil.rmtree(path, ignore_errors=True)
            return not path.exists()

        try:
            waits.wait_for(f"the run directory {path} to be removed", gone, 3, max_interval=0.2)
        except waits.WaitTimeout:
            return
        self._left_to_remove = None

    def collect_artifacts(self, into: Path) -> None:
        """Copy the logs worth reading after a failure; never the private key (it is not on disk).
        With them, libslirp's connection table as QEMU's monitor shows it then."""
        if self.run_dir is None:
            return
        into.mkdir(parents=True, exist_ok=True)
        # Redacted as they are copied: QEMU's own log of the serial console is raw, and a guest slow to
        # turn its echo off prints the password typed at its login (seen once in a loaded CI run).
        for name in ("lab.json", "lab.log", "peer.log", "qemu.log", "qemu/console.log", "resolv.conf"):
            src = self.work_dir / name
            if src.is_file():
                (into / name.replace("/", "-")).write_text(redaction.redact(src.read_text(errors="replace")))
        try:
            (into / "qemu-info-usernet.txt").write_text(self.monitor("info usernet"))
        except (OSError, TimeoutError) as e:
            (into / "qemu-info-usernet.txt").write_text(f"(QEMU's monitor did not answer: {e})\n")

    def monitor(self, command: str, timeout: float = 10) -> str:
        """One command of QEMU's human monitor (e.g. ``info usernet``), its output without the echo."""
        if self.run_dir is None:
            raise OSError("the VM is not running")
        prompt = b"(qemu) "
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(self.run_dir / "qemu" / "monitor.sock"))
            deadline = time.monotonic() + timeout

            def until_prompt() -> bytes:
                got = b""
                while not got.endswith(prompt):
                    s.settimeout(max(deadline - time.monotonic(), 0.01))
                    chunk = s.recv(65536)
                    if not chunk:
                        raise OSError(f"QEMU's monitor closed the connection during `{command}`")
                    got += chunk
                return got

            until_prompt()  # the banner
            s.sendall(command.encode() + b"\n")
            text = until_prompt()[: -len(prompt)].decode(errors="replace")
        # The monitor echoes the command line (with terminal escapes) before the output.
        lines = text.replace("\r", "").split("\n")
        return "\n".join(lines[1:]).rstrip() + "\n"

    # -- Target API ---------------------------------------------------------------------------------
    def _control(self, request: dict, timeout: float = 15) -> tuple[dict, socket.socket]:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        s.connect(str(self.work_dir / "control.sock"))
        s.sendall(json.dumps(request).encode() + b"\n")
        line = b""
        while not line.endswith(b"\n"):  # byte by byte: what follows belongs to the caller
            chunk = s.recv(1)
            if not chunk:
                s.close()
                raise ConnectionError(f"the reference lab closed the control socket during {request['op']}")
            line += chunk
        return json.loads(line), s

    def _dial(self, where: str, host: str, port: int, timeout: float) -> socket.socket:
        request = {"op": "dial", "from": where, "host": host, "port": port, "timeout": timeout}
        reply, s = self._control(request, timeout + 5)
        if reply.get("ok"):
            s.settimeout(None)
            return s
        s.close()
        what = f"{host}:{port} from the {where}: {reply.get('error', '')}"
        code = reply.get("errno")
        if code == "ECONNREFUSED":
            raise ConnectionRefusedError(errno.ECONNREFUSED, what)
        if code == "ETIMEDOUT":
            raise TimeoutError(errno.ETIMEDOUT, what)
        raise ConnectionError(getattr(errno, code or "EIO", errno.EIO), what)

    def dial_guest_port(self, port: int, timeout: float = 5) -> socket.socket:
        """From the peer namespace to the pod's address: a client pod elsewhere in the cluster."""
        return self._dial("peer", self.pod_ip, port, timeout)

    def port_forward(self, port: int, timeout: float = 5) -> socket.socket:
        """From inside the pod to its loopback, as ``kubectl port-forward`` to the pod does."""
        return self._dial("pod", "127.0.0.1", port, timeout)

    def listen_on_pod_loopback(self, host: str, port: int, token: str) -> None:
        """A TCP service on the pod's loopback (``host`` 127.0.0.1 or ::1) that answers ``token``."""
        r = self._ask({"op": "loopback-listen", "host": host, "port": port, "token": token})
        if not r.get("ok"):
            raise SetupError(str(r.get("error")))

    def pod_loopback_clients(self, host: str, port: int) -> list[str]:
        return self._ask({"op": "loopback-seen", "host": host, "port": port}).get("seen", [])

    def qemu_stays_up(self, seconds: float) -> bool:
        """Whether QEMU is still running after ``seconds`` (False as soon as it has exited)."""

        def exited() -> bool:
            if self._lab is None or self._lab.poll() is not None:
                return True
            try:
                return not self._ask({"op": "evidence"})["qemu_running"]
            except OSError:  # the lab is going away with its QEMU
                return True

        try:
            waits.wait_for("QEMU to exit (it should not)", exited, seconds, max_interval=0.5)
        except waits.WaitTimeout:
            return True
        return False

    def qemu_log_tail(self) -> str:
        return self._tail("qemu.log", 3)

    def send_udp_to_pod(self, port: int, payload: bytes, wait: float = 2) -> UdpSend:
        """From the peer namespace to the pod's address (a client pod's datagram), on a connected
        socket: an ICMP port unreachable from the pod comes back as ECONNREFUSED."""
        r = self._ask(
            {
                "op": "udp",
                "host": self.pod_ip,
                "port": port,
                "payload": base64.b64encode(payload).decode(),
                "timeout": wait,
            }
        )
        if r.get("ok"):
            return UdpSend("answered", reply=base64.b64decode(r["payload"]).decode(errors="replace"))
        error = str(r.get("error", ""))
        if error == "timed out":
            return UdpSend("sent", f"no reply and no ICMP error within {wait:g} s")
        if "refused" in error.lower() or str(errno.ECONNREFUSED) in error:
            return UdpSend("refused", f"ICMP port unreachable from the pod ({error})")
        return UdpSend("error", error)

    def _ask(self, request: dict) -> dict:
        reply, s = self._control(request)
        s.close()
        return reply

    def ping_peer_directly(self) -> dict:
        r = self._ask({"op": "ping-from-pod", "host": self.peers.icmp_host})
        return {
            "ok": r.get("rc") == 0,
            "from": f"pod network namespace ({self.pod_ip}), as root",
            "output": r.get("output", "").strip(),
        }

    def icmp_evidence(self) -> dict:
        r = self._ask({"op": "evidence"})
        return {
            "ping_group_range": " ".join(r["pod_sysctls"].get("net.ipv4.ping_group_range", "").split()),
            "qemu_uid": r.get("qemu_uid"),
            "qemu_gid": r.get("qemu_gid"),
            "qemu_cap_eff": r.get("qemu_cap_eff"),
            "qemu_cap_bnd": r.get("qemu_cap_bnd"),
        }

    def exec_in_pod(self, argv: list[str], timeout: float = 30, where: str = "pod") -> tuple[int, str, str]:
        """Run argv inside the pod's network namespace (``where="peer"``: the peer namespace)."""
        r = self._ask({"op": "exec", "argv": argv, "timeout": timeout, "where": where})
        return r["rc"], r["stdout"], r["stderr"]

    def peer_seen(self) -> list[dict]:
        return self._ask({"op": "seen"})["seen"]

    def qemu_cmdline(self) -> list[str]:
        return self._ask({"op": "evidence"}).get("qemu_cmdline", [])

    def qemu_nice(self) -> int | None:
        """QEMU's nice value (19 for a VM that yields the CPU); None when QEMU is not running."""
        return self._ask({"op": "evidence"}).get("qemu_nice")

    def describe(self) -> dict:
        return {
            "qemu": _tool_version(QEMU, "--version"),
            "accel": self.accel,
            "libslirp": _tool_version("dpkg-query", "-W", "-f", "${Version}", "libslirp0"),
            "guest_kernel": self.image.kernel_version if self.image else "unknown",
            "guest": f"fedora-like {self.fedora_like}" if self.fedora_like else "busybox reference",
            "rootless": str(self.rootless),
            "netdev_extra": self.opts.netdev_extra,
            "pod_sysctls": json.dumps({**DEFAULT_POD_SYSCTLS, **self.opts.sysctls}),
            **self.network_args_source,
        }
