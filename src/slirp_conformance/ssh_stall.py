"""The SSH "stall" on demand: the ICMP probe over SSH and the next command, in a loop, as JSON.

``python -m slirp_conformance.ssh_stall [--reference-guest fedora|busybox] [--kubevirt-version V]
[--iterations N] [--pause-vcpus S] [--ping-timeout S] [--timeout-scale F]`` (``hack/ssh-stall.sh``).

Boots one reference VM (``--target=qemu``'s, in its pod-like lab), connects over SSH as the suite
does, then repeats what the suite does over SSH around the ICMP check: the probe (the guest's
counters, route and ``ping`` to the peer and to slirp's gateway) and the next command (the TCP
echo through slirp). Every step has the suite's deadline, and a command that misses it fails with
the SSH client's own reason: the step waited for, what the guest's kernel, libslirp and the pod
show of the connection, and whether the guest answered after the deadline (slow) or never (stopped).

``--pause-vcpus S`` starves the guest on purpose: half a second into each ping to the peer it stops
the guest's vCPUs for S seconds through QEMU's monitor (``stop``/``cont``) while QEMU's main loop,
libslirp included, runs on; that is what a host too busy to schedule the vCPU threads does to a
guest. ``--ping-timeout S`` gives the ping command the deadline S instead of the suite's (e.g. 26, the
deadline it had until the stall was understood). Prints one JSON document; exit code 0 when every
iteration passed, 1 when one did not, 2 interrupted, 4 bad input (one line).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import threading
import time
from dataclasses import dataclass, field

from slirp_conformance import waits
from slirp_conformance.checks import icmp
from slirp_conformance.console import Result
from slirp_conformance.errors import SetupError, refuse
from slirp_conformance.reference.fedora_like import Flavour, flavour_for
from slirp_conformance.reference.qemu_target import QemuTarget
from slirp_conformance.reference.reference_vm import QemuOptions
from slirp_conformance.ssh_client import SSHClient, SSHTimeout
from slirp_conformance.vmspec import conformance_vm

PAUSE_AFTER = 0.5  # seconds into the ping command before the vCPUs stop
PAUSED_PING_REQUESTS = 10  # echo requests of a ping the vCPUs stop under (see iterate)


class BadInput(Exception):
    """One line naming the fix; exit 4."""


@dataclass
class VcpuPauser:
    """Stops the guest's vCPUs ``seconds`` long, ``PAUSE_AFTER`` s after ``start()``; QEMU's main
    loop (libslirp) keeps running. ``join()`` waits for the ``cont`` (always sent, even on failure)."""

    target: QemuTarget
    seconds: float
    events: list[str] = field(default_factory=list)
    _thread: threading.Thread | None = None
    _cancel: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._pause, name="vcpu-pauser", daemon=True)
        self._thread.start()

    def _pause(self) -> None:
        if self._cancel.wait(PAUSE_AFTER):
            return
        self.target.vm.monitor("stop")
        self.events.append(f"vCPUs stopped at {time.strftime('%H:%M:%S')}")
        try:
            self._cancel.wait(self.seconds)
        finally:
            self.target.vm.monitor("cont")
            self.events.append(f"vCPUs running again at {time.strftime('%H:%M:%S')}")

    def join(self) -> None:
        if self._thread is not None:
            self._thread.join(self.seconds + PAUSE_AFTER + 30)  # the monitor answers in well under 30 s


class _PausingShell:
    """The SSH client, but each ping to ``peer`` starts a vCPU pause beside it."""

    def __init__(self, ssh: SSHClient, target: QemuTarget, pause: float, peer: str) -> None:
        self.ssh, self.target, self.pause, self.peer = ssh, target, pause, peer
        self.pausers: list[VcpuPauser] = []

    def run(self, command: str, timeout: float | None = None) -> Result:
        if not (self.pause > 0 and " ping " in f" {command} " and self.peer in command):
            return self.ssh.run(command, timeout)
        pauser = VcpuPauser(self.target, self.pause)
        self.pausers.append(pauser)
        pauser.start()
        try:
            return self.ssh.run(command, timeout)
        finally:
            pauser.join()


def iterate(target: QemuTarget, pause: float = 0.0, ping_timeout: float | None = None) -> dict:
    """One iteration: the ICMP probe over SSH, then the next command (the TCP echo)."""
    ssh = target.ssh()
    shell = _PausingShell(ssh, target, pause, target.peers.icmp_host)
    profile, peers = target.profile, target.peers
    result: dict = {"outcome": "pass", "load_before": round(os.getloadavg()[0], 1)}
    t0 = time.monotonic()
    try:
        # With a pause, the ping must still run PAUSE_AFTER s into the command for the vCPUs to stop
        # under it: the suite's three requests 0.02 s apart, each answered by an ICMP error, end in
        # about 0.1 s on busybox. Ten outlast it: the peer's kernel answers six at once, then one a
        # second (reference-vm-facts), so the ping runs about four seconds.
        requests = PAUSED_PING_REQUESTS if pause > 0 else 3
        probe = icmp.ping(shell, profile, peers.icmp_host, requests, budget=ping_timeout)
        result["ping_to_peer"] = {
            "rc": probe.rc,
            "replies": probe.replies,
            "echo_requests_out": probe.echo_requests_out,
        }
        result["probe_s"] = round(time.monotonic() - t0, 2)
        icmp.ping(shell, profile, target.contract.gateway, 1, budget=ping_timeout)
        t1 = time.monotonic()
        echo = ssh.run(profile.tcp_echo_command(peers.tcp_echo.host, peers.tcp_echo.port, "after-the-probe"))
        result["next_command_s"] = round(time.monotonic() - t1, 2)
        if echo.output.strip() != "after-the-probe":
            result.update(outcome="fail", reason=f"the TCP echo after the probe returned {echo.output[-200:]!r}")
    except SSHTimeout as e:
        result.update(outcome="timeout", reason=str(e))
    result["wall_s"] = round(time.monotonic() - t0, 2)
    result["pauses"] = [event for p in shell.pausers for event in p.events]
    return result


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="hack/ssh-stall.sh", description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference-guest", default="fedora", help="fedora (default) or busybox")
    parser.add_argument("--kubevirt-version", default="v1.9.0", help="the Fedora-like flavour's release")
    parser.add_argument("--iterations", default="10")
    parser.add_argument("--pause-vcpus", default="0", help="seconds to stop the vCPUs during each ping")
    parser.add_argument("--ping-timeout", default=None, help="the ping command's deadline (default: the suite's)")
    parser.add_argument("--timeout-scale", default="1")
    args = parser.parse_args(argv)
    if args.reference_guest not in ("fedora", "busybox"):
        raise BadInput(f"--reference-guest {args.reference_guest!r}: choose fedora or busybox")
    args.iterations = _number("--iterations", args.iterations, int, minimum=1)
    args.pause_vcpus = _number("--pause-vcpus", args.pause_vcpus, float, minimum=0)
    args.timeout_scale = _number("--timeout-scale", args.timeout_scale, float, minimum=0, exclusive=True)
    if args.ping_timeout is not None:
        args.ping_timeout = _number("--ping-timeout", args.ping_timeout, float, minimum=0, exclusive=True)
    if args.reference_guest == "fedora":
        try:
            args.flavour = flavour_for(args.kubevirt_version)
        except (SetupError, ValueError) as e:
            raise BadInput(f"--kubevirt-version {args.kubevirt_version!r}: {e}") from None
    else:
        args.flavour = None
    return args


def _number(name: str, given: str, kind: type, minimum: float, exclusive: bool = False) -> float:
    try:
        value = kind(given)
    except ValueError:
        value = None
    if value is None or not math.isfinite(value) or value < minimum or (exclusive and value == minimum):
        bound = f"above {minimum:g}" if exclusive else f"at least {minimum:g}"
        raise BadInput(f"{name} {given!r}: give a {'whole ' if kind is int else ''}number {bound}")
    return value


def run(argv: list[str]) -> tuple[dict, int]:
    args = parse_args(argv)
    waits.set_timeout_scale(args.timeout_scale)
    flavour: Flavour | None = args.flavour
    target = QemuTarget(conformance_vm(), QemuOptions(), fedora_like=flavour)
    report: dict = {
        "guest": f"fedora-like {flavour}" if flavour else "busybox reference",
        "pause_vcpus_s": args.pause_vcpus,
        "ping_timeout_s": args.ping_timeout,
        "timeout_scale": args.timeout_scale,
        "iterations": [],
    }
    interrupted = False
    try:
        try:
            target.start()
        except (AssertionError, OSError, waits.WaitTimeout) as e:  # the guest never came up: said, not raised
            report["boot_failure"] = f"{type(e).__name__}: {str(e)[-1500:]}"
            print(f"ssh-stall: the VM did not come up: {type(e).__name__}: {str(e)[:300]}", file=sys.stderr)
            return report | {"summary": {"iterations_done": 0, "interrupted": False}}, 1
        report["describe"] = target.describe()
        for i in range(1, args.iterations + 1):
            result = {"iteration": i, **iterate(target, args.pause_vcpus, args.ping_timeout)}
            report["iterations"].append(result)
            print(
                f"ssh-stall: iteration {i}/{args.iterations}: {result['outcome']} in {result['wall_s']} s",
                file=sys.stderr,
            )
    except KeyboardInterrupt:
        interrupted = True
    finally:
        target.close()
    outcomes = [r["outcome"] for r in report["iterations"]]
    report["summary"] = {
        "iterations_done": len(outcomes),
        "passed": outcomes.count("pass"),
        "timeouts": outcomes.count("timeout"),
        "failed": outcomes.count("fail"),
        "load_at_end": [round(v, 1) for v in os.getloadavg()],
        "interrupted": interrupted,
    }
    return report, 2 if interrupted else (0 if outcomes and all(o == "pass" for o in outcomes) else 1)


def main(argv: list[str] | None = None) -> int:
    try:
        report, code = run(sys.argv[1:] if argv is None else argv)
    except (BadInput, SetupError) as e:
        return refuse("ssh-stall", e)
    print(json.dumps(report, indent=1))
    return code


if __name__ == "__main__":
    sys.exit(main())
