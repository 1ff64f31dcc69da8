"""The ``qemu`` target: the conformance VM as a local reference VM (see ``reference_vm``).

Adds what a user of any target gets: a logged-in serial console with a transcript, and SSH
with the per-run key through a port-forward, the host key read over the console and pinned.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from dataclasses import replace
from pathlib import Path

from slirp_conformance import progress, redaction, waits
from slirp_conformance.console import Credentials
from slirp_conformance.errors import SetupError
from slirp_conformance.guest_profiles import FEDORA, REFERENCE
from slirp_conformance.reference import sidecar_render
from slirp_conformance.reference.fedora_like import Flavour
from slirp_conformance.reference.reference_vm import QemuOptions, ReferenceVM
from slirp_conformance.ssh_client import generate_keypair
from slirp_conformance.target import Contract, Target, UdpSend, ss_summary
from slirp_conformance.vmspec import VMSpec, sidecar_search_domains

PASSWORD_ENV = "SLIRP_CONFORMANCE_GUEST_PASSWORD"


class QemuTarget(Target):
    name = "qemu"

    def __init__(
        self, spec: VMSpec, opts: QemuOptions, fedora_like: Flavour | None = None, yields_cpu: bool = False
    ) -> None:
        """``fedora_like``: boot that Fedora-like flavour and drive it with the Fedora profile,
        logging in as cloud-init's ``fedora`` user, like KubeVirt's test image."""
        self.spec = spec
        self._fedora_like = fedora_like
        # A per-run password unless the user picks one (to log in by hand on a kept VM).
        password = os.environ.get(PASSWORD_ENV) or secrets.token_urlsafe(12)
        redaction.register(password)
        self._key = generate_keypair()
        self.vm = ReferenceVM(
            spec,
            opts,
            authorized_key=self._key.public_openssh,
            password=password,
            fedora_like=fedora_like,
            yields_cpu=yields_cpu,
        )
        self.peers = self.vm.peers
        self.contract = Contract.from_spec(spec, sidecar_search_domains(self.vm.search_domains))
        if fedora_like is None:
            self.profile = replace(REFERENCE, credentials=Credentials("root", password))
        else:
            self.profile = replace(FEDORA, credentials=Credentials("fedora", password, become_root="sudo -i"))
        self.timings = self.vm.timings
        # A variant is a second ReferenceVM with a pod lab of its own, so it boots beside this one
        # from the moment this one's QEMU runs, at the lowest CPU priority (``yields_cpu``): this
        # VM's boot and checks keep the CPU they want, the variants take what is left (busybox:
        # warm run 34.7 -> 28.4 s; Fedora-like busybox-nc: 95.6 -> 73.0 s, 2026-12-07, README).
        self.variants_boot_aside = True
        self.probes_ahead = not yields_cpu  # a variant's clauses run on its console only

    def _start(self) -> None:
        with progress.phase(f"reference VM {self.spec.name}: guest image, pod lab, QEMU ({self.vm.opts.accel} accel)"):
            self.vm.start()
        self._launched()
        self._open_console(
            self.vm.console_socket(), self.vm.work_dir / "console-transcript.log", f"{self.spec.name} serial console"
        )
        self.timings["boot_to_console_prompt_s"] = time.monotonic() - self.timings["launched_at"]
        login_prompt_seen_at = self.console().login_prompt_seen_at
        if login_prompt_seen_at is not None:
            self.timings["boot_to_login_prompt_s"] = login_prompt_seen_at - self.timings["launched_at"]

    def _login_budget(self) -> float:
        # A VM that yields the CPU boots on what the others leave: bounded like a variant's whole start.
        return waits.timeout("variant-vm-start" if self.vm.yields_cpu else "console-login")

    def ssh(self):
        t0 = time.monotonic()
        connected = self._ssh is not None
        client = super().ssh()
        if not connected:
            self.timings["ssh_ready_s"] = time.monotonic() - t0
        return client

    def _ssh_path_state(self) -> list[str]:
        """libslirp's entries for port 22 (QEMU's monitor: state, RecvQ from the client, SendQ to the
        guest) and the pod namespace's sockets of the port-forward (the client's and QEMU's ends)."""
        parts = []
        try:
            rows = [line for line in self.vm.monitor("info usernet").splitlines() if " 22 " in f" {line} "]
            parts.append("libslirp (info usernet): " + " | ".join(" ".join(r.split()) for r in rows))
        except (OSError, TimeoutError) as e:
            parts.append(f"libslirp: QEMU's monitor did not answer ({e})")
        try:
            rc, out, err = self.vm.exec_in_pod(["ss", "-tni", "( sport = :22 or dport = :22 )"], timeout=10)
            parts.append("the pod's TCP on port 22 (client and QEMU): " + (ss_summary(out) if rc == 0 else err))
        except (OSError, KeyError, ValueError) as e:
            parts.append(f"the pod's TCP on port 22: unreadable ({e})")
        return parts

    def dial_guest_port(self, port: int, timeout: float = 5) -> socket.socket:
        return self.vm.dial_guest_port(port, timeout)

    def port_forward(self, port: int, timeout: float = 5) -> socket.socket:
        return self.vm.port_forward(port, timeout)

    def variant(self, spec: VMSpec) -> QemuTarget:
        """A second reference VM of ``spec`` with this one's options and guest, yielding the CPU to it."""
        return QemuTarget(spec, self.vm.opts, fedora_like=self._fedora_like, yields_cpu=True)

    def attempt_start(self, spec: VMSpec) -> str | None:
        """The reference VM's start renders the network with the sidecar of the release under test,
        as virt-launcher would; a QEMU that refuses its arguments exits at once."""
        vm = ReferenceVM(
            spec,
            self.vm.opts,
            authorized_key="ssh-ed25519 AAAA start-attempt",
            password=secrets.token_urlsafe(12),
            fedora_like=self._fedora_like,
        )
        try:
            vm.start()
            # The lab reports ready once QEMU is launched: a QEMU that refuses its arguments exits at once.
            if not vm.qemu_stays_up(waits.scaled(3)):
                return f"QEMU exited: {vm.qemu_log_tail()}"
        except SetupError as e:
            return str(e)
        finally:
            vm.close()
        return None

    def listen_on_pod_loopback(self, host: str, port: int, token: str) -> None:
        self.vm.listen_on_pod_loopback(host, port, token)

    def pod_global_ipv6(self) -> list[str] | None:
        rc, out, _ = self.vm.exec_in_pod(["ip", "-6", "-o", "addr", "show", "scope", "global"], timeout=10)
        return [w for line in out.splitlines() for w in line.split()[3:4]] if rc == 0 else None

    def pod_loopback_clients(self, host: str, port: int) -> list[str]:
        return self.vm.pod_loopback_clients(host, port)

    def send_udp_to_pod(self, port: int, payload: bytes, wait: float = 2) -> UdpSend:
        return self.vm.send_udp_to_pod(port, payload, wait)

    def ping_peer_directly(self) -> dict:
        return self.vm.ping_peer_directly()

    def icmp_evidence(self) -> dict:
        return self.vm.icmp_evidence()

    def sidecar_args(self) -> list[str] | None:
        return list(self.vm.network_args) if self.vm.network_args is not None else None

    def describe(self) -> dict:
        boot = self.timings.get("boot_to_console_prompt_s")
        return {
            "target": self.name,
            "kubevirt_version": self.vm.opts.kubevirt_version or sidecar_render.default_version(),
            **self.vm.describe(),
            **({"boot_to_console_prompt_s": f"{boot:.2f}"} if boot is not None else {}),
        }

    def collect_artifacts(self, into: Path) -> None:
        super().collect_artifacts(into)
        self.vm.collect_artifacts(into)

    def _teardown(self) -> None:
        self.vm.close()
