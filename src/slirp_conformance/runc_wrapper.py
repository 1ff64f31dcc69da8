"""The capability-dropping runc wrapper (``hack/runc-wrapper``): built once with Go, cached by content.

``runc`` refuses to start a container asked for a capability outside the host's bounding set
(this project's machines lack CAP_SYS_RESOURCE: ``container-runtime-facts.md``); the wrapper
deletes such capabilities from the OCI spec and execs the real runc. The project's dockerd runs
every container through it (``slirp_conformance.docker_daemon``), and the kind node image sets it as
containerd's runc ``BinaryName`` (a pod that adds SYS_RESOURCE fails the same way in a node).
It is a static binary with no module dependencies, so it runs on the host and in the node alike.
"""

from __future__ import annotations

from pathlib import Path

from slirp_conformance.checkout import REPO
from slirp_conformance.gobuild import WrapperModule, build

SOURCE = REPO / "hack" / "runc-wrapper"
BINARY = "runc-wrapper"


def module() -> WrapperModule:
    return WrapperModule(name=BINARY, version="v1", packages=(".",), source=SOURCE, ldflags="-s -w")


def binary(cache: Path | None = None) -> Path:
    """Path of the built wrapper (a cold build takes a few seconds)."""
    return build(module(), cache).binary(BINARY)
