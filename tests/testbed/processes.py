"""Long-running local processes of the test bed: started detached, stopped for sure.

Each component runs in its own session (process group) so that ``hack/testbed.sh up`` can exit and
leave the bed running; ``down`` (or an interrupted ``up``) stops every group it recorded. A process
is identified by pid *and* its kernel start time, so a recycled pid is never signalled.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar

from slirp_conformance import waits

log = logging.getLogger("slirp.testbed.processes")

STOP_GRACE = 15.0  # seconds between SIGTERM and SIGKILL (etcd and the API server flush quickly)


@dataclass(frozen=True)
class Proc:
    name: str
    pid: int
    start_time: str  # field 22 of /proc/<pid>/stat: with the pid, names one process for sure
    log: str

    def to_json(self) -> dict:
        return asdict(self)


def _start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm (field 2) may hold spaces and parentheses: split after its closing parenthesis.
    return stat.rsplit(")", 1)[1].split()[19]


def alive(proc: Proc) -> bool:
    """The very process we started is still there (not a zombie, not a recycled pid)."""
    if _start_time(proc.pid) != proc.start_time:
        return False
    try:
        state = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def start(name: str, argv: list[str], log_path: Path, *, env: dict[str, str] | None = None) -> Proc:
    """Start ``argv`` detached (own session), output to ``log_path``."""
    log.info("start %s: %s", name, " ".join(argv))
    with open(log_path, "ab") as out:
        popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            close_fds=True,
            preexec_fn=_unblock_stop_signals,
        )
    started = _start_time(popen.pid)
    # The Popen object is dropped on purpose: the process outlives this one (`up` exits). A child
    # that dies early becomes a zombie of ours until we exit; `alive` treats zombies as dead.
    return Proc(name=name, pid=popen.pid, start_time=started or "", log=str(log_path))


def _unblock_stop_signals() -> None:
    """In the child: undo ``signals_deferred``'s mask, which a child would inherit (and a Go
    program keeps: SIGTERM would then be ignored until SIGKILL)."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, signals_deferred._SIGNALS)


class signals_deferred:
    """Hold SIGINT/SIGTERM back while a process is started *and* recorded: a Ctrl-C between the
    two would leave a process nobody knows to stop (seen: a kube-controller-manager outliving `up`)."""

    _SIGNALS: ClassVar[frozenset[signal.Signals]] = frozenset({signal.SIGINT, signal.SIGTERM})

    def __enter__(self) -> None:
        self._old = signal.pthread_sigmask(signal.SIG_BLOCK, self._SIGNALS)

    def __exit__(self, *exc) -> None:
        signal.pthread_sigmask(signal.SIG_SETMASK, self._old)  # a held signal is delivered now


def stop(proc: Proc) -> None:
    """SIGTERM the process group, wait (bounded) for the process to go, then SIGKILL the group."""
    if not alive(proc):
        _reap(proc.pid)
        return
    _signal_group(proc.pid, signal.SIGTERM)
    try:
        waits.wait_for(f"{proc.name} (pid {proc.pid}) to exit after SIGTERM", lambda: _reaped_or_gone(proc), STOP_GRACE)
    except waits.WaitTimeout:
        log.warning("%s (pid %d) ignored SIGTERM for %.0f s: SIGKILL", proc.name, proc.pid, STOP_GRACE)
        _signal_group(proc.pid, signal.SIGKILL)
        waits.wait_for(f"{proc.name} (pid {proc.pid}) to exit after SIGKILL", lambda: _reaped_or_gone(proc), STOP_GRACE)
    _signal_group(proc.pid, signal.SIGKILL)  # anything the component forked and left behind


def _reaped_or_gone(proc: Proc) -> bool:
    _reap(proc.pid)
    return not alive(proc)


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass  # started by another invocation (`up` then `down`): init reaps it


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the component binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def listening(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        return s.connect_ex((host, port)) == 0


def log_tail(proc: Proc, lines: int = 15) -> str:
    try:
        text = Path(proc.log).read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.strip().splitlines()[-lines:])
