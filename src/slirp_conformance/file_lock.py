"""One way to take a machine-wide lock: an exclusive ``flock`` on a file, waited for with a bound.

Builds of cached parts (Go programs, the kind node image, KubeVirt's images, the Fedora-like guest)
and the project's dockerd are shared by every run and xdist worker on the machine; the second taker
waits for the first, then finds the work done. A file lock gives no event to wait on, so it is polled
(``waits.wait_for``); a holder that never lets go ends the wait with one line naming the lock and
what to do, never a hang. The lock file stays (empty); closing it releases the lock, also when the
holder dies.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from slirp_conformance import waits
from slirp_conformance.errors import SetupError


def _try(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


@contextlib.contextmanager
def held(path: Path, what: str, budget: float, *, fix: str = "stop that process") -> Iterator[None]:
    """Hold ``path``'s lock for the block. ``what``: what the holder does ("another build of X");
    past ``budget`` s a ``SetupError`` says so and names ``fix``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            waits.wait_for(f"{what} to release {path}", lambda: _try(fd), budget, describe=lambda _: "still held")
        except waits.WaitTimeout as e:
            raise SetupError(f"{e}: {fix}") from None
        yield
    finally:
        os.close(fd)
