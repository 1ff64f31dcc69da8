"""The one way the cluster modules run external tools: bounded, logged, and redacted.

Every call has a timeout; a hung tool is killed with its whole process group. Errors carry
the command line and the tail of stderr with anything secret-looking masked, never stdout
(which may be a kubeconfig).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from slirp_conformance import redaction, waits
from slirp_conformance.checkout import REPO
from slirp_conformance.errors import SetupError

log = logging.getLogger("slirp.cluster.runner")

TOOLS_DIR = REPO / ".tools" / "bin"


def budget(name: str) -> float:
    """A named, scaled budget of slirp_conformance.waits (tool-probe, api-probe, kind-load, ...)."""
    return waits.timeout(name)


class CommandFailed(SetupError):
    """A tool exited non-zero. ``returncode`` and the redacted ``stderr_tail`` are attributes."""

    def __init__(self, message: str, *, returncode: int | None = None, stderr_tail: str = ""):
        super().__init__(message)
        self.returncode = returncode
        self.stderr_tail = stderr_tail


class CommandTimedOut(CommandFailed):
    """A tool did not finish within its budget and was killed."""


class ToolMissing(SetupError):
    """The executable is not on PATH."""


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Mask the run's registered secrets (``slirp_conformance.redaction``) and ``secrets`` in ``text``."""
    return redaction.redact(text, tuple(secrets))


def _tail(text: str, lines: int = 15, chars: int = 2000) -> str:
    tail = "\n".join(text.strip().splitlines()[-lines:])
    return tail[-chars:]


def prepend_tools_dir(path: Path | None = None) -> None:
    """Put the pinned tools installed by hack/install-tools.sh (.tools/bin) first on PATH, if installed."""
    path = path or TOOLS_DIR
    if path.is_dir() and str(path) not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = f"{path}{os.pathsep}{os.environ.get('PATH', '')}"


def which(tool: str) -> str | None:
    return shutil.which(tool)


@dataclass
class Result:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str


def run(
    argv: Sequence[str],
    *,
    timeout: float,
    check: bool = True,
    input: str | None = None,
    env: dict[str, str] | None = None,
    secrets: Iterable[str] = (),
    fix: str = "",
    quiet: bool = False,
) -> Result:
    """Run ``argv`` with a hard ``timeout``; raise CommandFailed/CommandTimedOut/ToolMissing.

    ``fix`` is appended to error messages (what the user should do). ``secrets`` are extra
    values to mask in messages (stdout is never put in messages or logs). ``quiet``: log the
    command at DEBUG (the probes of a wait, which repeat).
    """
    argv = [str(a) for a in argv]
    secrets = list(secrets)
    shown = redact(" ".join(argv), secrets)
    suffix = f"; {fix}" if fix else ""
    executable = which(argv[0])
    if executable is None:
        raise ToolMissing(f"`{argv[0]}` is not installed or not on PATH{suffix or '; run hack/install-tools.sh'}")
    log.log(logging.DEBUG if quiet else logging.INFO, "run: %s (timeout %.0f s)", shown, timeout)
    proc = subprocess.Popen(
        [executable, *argv[1:]],
        stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(input=input, timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        stdout, stderr = proc.communicate()
        tail = redact(_tail(stderr or ""), secrets)
        raise CommandTimedOut(
            f"`{shown}` did not finish within {timeout:.0f} s and was killed"
            + (f"; stderr tail: {tail}" if tail else "")
            + suffix,
            returncode=None,
            stderr_tail=tail,
        ) from None
    except BaseException:
        _kill_group(proc)  # KeyboardInterrupt: do not leave the tool running behind us
        raise
    result = Result(argv=argv, returncode=proc.returncode, stdout=stdout or "", stderr=stderr or "")
    if check and proc.returncode != 0:
        tail = redact(_tail(result.stderr), secrets)
        raise CommandFailed(
            f"`{shown}` exited with {proc.returncode}" + (f": {tail}" if tail else "") + suffix,
            returncode=proc.returncode,
            stderr_tail=tail,
        )
    return result


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
