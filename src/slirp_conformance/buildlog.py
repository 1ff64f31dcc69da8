"""Each part of an image build writes its commands and their output to its own log file.

The log stays where the failure message says (the kind node image's parts under
``<cache>/kind-node/logs/<kubernetes>/``, KubeVirt's under ``<cache>/kubevirt-images/logs/<version>/``),
so a failed build names the file to read, never a traceback.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Sequence
from pathlib import Path

from slirp_conformance.errors import SetupError


def _logged(
    argv: Sequence[str | os.PathLike[str]], log: Path, what: str, timeout: float, keep_stdout: bool, **kwargs
) -> subprocess.CompletedProcess:
    """``argv`` with stderr (and stdout, unless kept) appended to ``log``; SetupError naming ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as out:
        out.write(f"$ {shlex.join(os.fspath(a) for a in argv)}\n")
        out.flush()
        try:
            r = subprocess.run(
                [os.fspath(a) for a in argv],
                stdout=subprocess.PIPE if keep_stdout else out,
                stderr=out if keep_stdout else subprocess.STDOUT,
                text=True,
                timeout=timeout,
                **kwargs,
            )
        except subprocess.TimeoutExpired:
            raise SetupError(f"{what} took more than {timeout:.0f} s (log: {log})") from None
    if r.returncode != 0:
        raise SetupError(f"{what} failed with exit code {r.returncode}: {tail(log)} (log: {log})")
    return r


def run(
    argv: Sequence[str | os.PathLike[str]], log: Path, what: str, timeout: float, **kwargs
) -> subprocess.CompletedProcess:
    """Run ``argv`` with stdout and stderr appended to ``log``; SetupError naming ``log`` when it fails."""
    return _logged(argv, log, what, timeout, False, **kwargs)


def output(argv: Sequence[str | os.PathLike[str]], log: Path, what: str, timeout: float, **kwargs) -> str:
    """Like ``run`` but returns stdout (stderr goes to the log)."""
    return _logged(argv, log, what, timeout, True, **kwargs).stdout


def note(log: Path, text: str) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as out:
        out.write(f"# {text}\n")


def tail(log: Path, lines: int = 2) -> str:
    try:
        text = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return " | ".join(text[-lines:])[-400:]
