"""Where the build steps of one part run: its log (``<cache>/kubevirt-images/logs/<version>/<part>.log``;
the steps themselves run through ``slirp_conformance.buildlog``, a failure one line naming the log)
and the lock that keeps one builder per cache entry."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from slirp_conformance.buildlog import note, output, run, tail
from slirp_conformance.cache_dirs import cache_root

__all__ = ["locked", "log_path", "note", "output", "root", "run", "tail"]


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
