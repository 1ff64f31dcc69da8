"""Running the build steps of one part: each part appends its commands and their output to its own
log (``<cache>/kubevirt-images/logs/<version>/<part>.log``), and a failure is one line naming it."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path

from slirp_conformance.cache_dirs import cache_root
from slirp_conformance.errors import SetupError


def root(cache: Path | None = None) -> Path:
    return (cache or cache_root()) / "kubevirt-images"


def log_path(version: str, part: str, cache: Path | None = None) -> Path:
    path = root(cache) / "logs" / version / f"{part}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """One builder of a cache entry at a time on this machine (another release's build, a second
    run): the second waits, then finds the entry built. The lock file stays (empty)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def tail(log: Path, lines: int = 2) -> str:
    try:
        text = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return " | ".join(text[-lines:])[-400:]


def note(log: Path, text: str) -> None:
    with open(log, "a") as out:
        out.write(f"# {text}\n")


def run(argv: list, log: Path, what: str, timeout: float, **kwargs) -> subprocess.CompletedProcess:
    """``argv`` with stdout and stderr appended to ``log``; SetupError naming ``log`` on failure."""
    with open(log, "a") as out:
        out.write(f"$ {shlex.join(str(a) for a in argv)}\n")
        out.flush()
        try:
            r = subprocess.run(
                [str(a) for a in argv], stdout=out, stderr=subprocess.STDOUT, text=True, timeout=timeout, **kwargs
            )
        except subprocess.TimeoutExpired:
            raise SetupError(f"{what} took more than {timeout:.0f} s (log: {log})") from None
    if r.returncode != 0:
        raise SetupError(f"{what} failed with exit code {r.returncode}: {tail(log)} (log: {log})")
    return r


def output(argv: list, log: Path, what: str, timeout: float, **kwargs) -> str:
    """Like ``run`` but returns stdout (stderr goes to the log)."""
    with open(log, "a") as out:
        out.write(f"$ {shlex.join(str(a) for a in argv)}\n")
        out.flush()
        try:
            r = subprocess.run(
                [str(a) for a in argv], stdout=subprocess.PIPE, stderr=out, text=True, timeout=timeout, **kwargs
            )
        except subprocess.TimeoutExpired:
            raise SetupError(f"{what} took more than {timeout:.0f} s (log: {log})") from None
    if r.returncode != 0:
        raise SetupError(f"{what} failed with exit code {r.returncode}: {tail(log)} (log: {log})")
    return r.stdout
