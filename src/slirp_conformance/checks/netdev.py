"""The sidecar's rendering of the VM's network as QEMU sees it: the ``-netdev user,...`` argument
(``Target.sidecar_args``), read where the target knows it."""

from __future__ import annotations

import pytest

from slirp_conformance.evidence import Evidence, expect, matches
from slirp_conformance.target import Target


def of(target: Target) -> str:
    """The ``-netdev user,...`` value the sidecar gave this VM's QEMU; "" where the target does not know it."""
    return next((a for a in (target.sidecar_args() or []) if a.startswith("user,")), "")


def expect_rendered(ev: Evidence, pattern: str) -> None:
    """The netdev matches ``pattern``; a skip (not a pass) where the target does not know it."""
    if not getattr(ev, "netdev", ""):
        pytest.skip("this target does not know the sidecar's -netdev argument")
    expect(ev, "netdev", matches(pattern))
