"""Where the build steps of one part run: its log (``<cache>/kubevirt-images/logs/<version>/<part>.log``;
the steps themselves run through ``slirp_conformance.buildlog``, a failure one line naming the log)
and the lock that keeps one builder per cache entry."""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from pathlib import Path

from slirp_conformance import file_lock, waits
from slirp_conformance.buildlog import note, output, run, tail
from slirp_conformance.cache_dirs import cache_root

__all__ = ["locked", "log_path", "note", "output", "root", "run", "tail"]


def root(cache: Path | None = None) -> Path:
    return (cache or cache_root()) / "kubevirt-images"


def log_path(version: str, part: str, cache: Path | None = None) -> Path:
    path = root(cache) / "logs" / version / f"{part}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def locked(path: Path) -> contextlib.AbstractContextManager[None]:
    """One builder of a cache entry at a time on this machine (another release's build, a second
    run): the second waits, bounded, then finds the entry built. The lock file stays (empty)."""
    return file_lock.held(
        path,
        f"another build of {path.parent.name}",
        waits.timeout("cached-build"),
        fix="stop that build, or delete the lock file if no build runs",
    )


# A cached set (or containerDisk) another run used within this time may be in use right now: `kind
# load image-archive` of a set takes minutes. Two checkouts whose recipes differ (two branches on one
# machine) each build their own and used to delete "every other" at once, so one run's archives
# vanished under its `kind load` ("No such file or directory: .../archives/network-slirp-binding.tar").
IN_USE_FOR_S = 3600.0


def mark_used(path: Path) -> None:
    """Record that ``path`` (a cached set) is being used now (its mtime; see ``prune_others``)."""
    os.utime(path)


def prune_others(home: Path, keep: Path, prefix: str = "") -> None:
    """Remove the cached siblings of ``keep`` in ``home`` (named ``prefix``*, not hidden) that nobody
    used within ``IN_USE_FOR_S``; recent ones stay (another checkout's run may be loading them)."""
    now = time.time()
    for old in home.iterdir():
        if old == keep or old.name.startswith(".") or not old.is_dir() or not old.name.startswith(prefix):
            continue
        try:
            if now - old.stat().st_mtime > IN_USE_FOR_S:
                shutil.rmtree(old, ignore_errors=True)
        except FileNotFoundError:
            continue
