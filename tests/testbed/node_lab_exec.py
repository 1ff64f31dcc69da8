"""Streaming exec into a lab's namespaces, for container exec with stdin and live output.

``ReferenceVM.exec_in_pod`` runs a command to completion without input; ``kubectl exec -i`` and
the suite's ``nc``-under-exec bridges need a live process. Its server (the
bed's node agent) runs as root, so it enters the lab's namespaces itself: the lab's network and
mount namespaces (the peer side; the lab process is the ``unshare`` child that ReferenceVM
started), and for the pod side additionally the pod network namespace the lab keeps bound at
``pod_netns`` inside its mount namespace.
Rootless labs (user namespaces) fall back to ``exec_in_pod``.
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import os
import shutil
import signal
import subprocess

from slirp_conformance.reference.reference_vm import ReferenceVM


def can_stream(vm: ReferenceVM) -> bool:
    return (
        os.geteuid() == 0
        and not vm.rootless
        and vm.lab_pid is not None
        and vm.run_dir is not None
        and shutil.which("nsenter") is not None
    )


@functools.cache
def _busybox_applets() -> frozenset[str]:
    busybox = shutil.which("busybox")
    if busybox is None:
        return frozenset()
    out = subprocess.run([busybox, "--list"], capture_output=True, text=True, timeout=10).stdout
    return frozenset(out.split())


def argv_for(vm: ReferenceVM, where: str, argv: list[str]) -> list[str]:
    lab_pid = str(vm.lab_pid)
    if where == "pod":
        return ["nsenter", "-t", lab_pid, "-m", "--", "nsenter", f"--net={vm.pod_netns}", "--", *argv]
    # The peer and client pods run the busybox image (src/slirp_conformance/kubevirt/peers.py): their `nc`,
    # `ping`... are busybox applets, which print e.g. "can't connect ... Connection refused"
    # where the host's netcat-openbsd stays silent.
    if argv and "/" not in argv[0] and argv[0] in _busybox_applets():
        argv = ["busybox", *argv]
    return ["nsenter", "-t", lab_pid, "-m", "-n", "--", *argv]


LIVE: set[asyncio.subprocess.Process] = set()  # killed at shutdown whatever their sessions do


def _die_with_parent() -> None:
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: no orphans if we are killed


async def start(vm: ReferenceVM, where: str, argv: list[str], stdin: bool) -> asyncio.subprocess.Process:
    """Raises FileNotFoundError/OSError like a failed container exec would."""
    proc = await asyncio.create_subprocess_exec(
        *argv_for(vm, where, argv),
        stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
        preexec_fn=_die_with_parent,
    )
    LIVE.add(proc)
    return proc


def kill_all() -> None:
    for proc in list(LIVE):
        kill(proc)


def kill(proc: asyncio.subprocess.Process) -> None:
    LIVE.discard(proc)
    if proc.returncode is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def exit_status(rc: int) -> dict:
    """The error-channel Status for an exit code (nsenter passes the command's code through;
    a command that cannot be run exits 126/127 with nsenter's message on stderr)."""
    if rc == 0:
        return {"metadata": {}, "status": "Success"}
    return {
        "metadata": {},
        "status": "Failure",
        "reason": "NonZeroExitCode",
        "message": f"command terminated with non-zero exit code: exit status {rc}",
        "details": {"causes": [{"reason": "ExitCode", "message": str(rc if rc > 0 else 128 - rc)}]},
    }
