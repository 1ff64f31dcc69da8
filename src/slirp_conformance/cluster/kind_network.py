"""The Docker network kind puts the suite's clusters on: created by the suite, IPv4 only, off the private ranges.

kind creates a network named ``kind`` (or ``$KIND_EXPERIMENTAL_DOCKER_NETWORK``) when it finds
none, taking whatever IPv4 subnet Docker picks plus an IPv6 ULA; it reuses one that exists
(``pkg/cluster/internal/providers/docker/network.go``, ``ensureNetwork``). The suite creates its
own first, on 198.19.1.0/24 (RFC 2544, as the project's dockerd's bridge), with kind's own bridge
options, and removes it again once no container is attached, if it created it.
"""

from __future__ import annotations

import json

from slirp_conformance.cluster import runner

NAME = "slirp-conformance-kind"
SUBNET = "198.19.1.0/24"
ENV = "KIND_EXPERIMENTAL_DOCKER_NETWORK"


def for_cluster(images_from_source: bool, project_engine: bool) -> str | None:
    """The network a new cluster goes on: the suite's, when the suite brings the images (and its
    own CNI) or the Docker engine is the project's own; else None, kind's choice on a user's engine."""
    return NAME if images_from_source or project_engine else None


def exists(name: str = NAME, run=runner.run) -> bool:
    return run(["docker", "network", "inspect", name], timeout=runner.budget("tool-probe"), check=False).returncode == 0


def ensure(name: str = NAME, subnet: str = SUBNET, run=runner.run) -> bool:
    """The network exists afterwards; True when this call created it."""
    if exists(name, run):
        return False
    options = ["-o", "com.docker.network.bridge.enable_ip_masquerade=true", "-o", "com.docker.network.driver.mtu=1500"]
    result = run(
        ["docker", "network", "create", "--driver", "bridge", "--subnet", subnet, *options, name],
        timeout=runner.budget("tool-probe") * 3,
        check=False,
    )
    if result.returncode != 0 and "overlap" in result.stderr:
        # the subnet is taken on this engine (another network of the user's): let Docker pick one
        result = run(
            ["docker", "network", "create", "--driver", "bridge", *options, name],
            timeout=runner.budget("tool-probe") * 3,
            check=False,
        )
    if result.returncode != 0 and not exists(name, run):
        raise runner.CommandFailed(
            f"`docker network create {name}` failed: {result.stderr.strip()[-300:]}", returncode=result.returncode
        )
    return result.returncode == 0


def remove_if_unused(name: str = NAME, run=runner.run) -> bool:
    """Remove the network when no container is attached; True when it was removed."""
    result = run(["docker", "network", "inspect", name], timeout=runner.budget("tool-probe"), check=False)
    if result.returncode != 0:
        return False
    containers = (json.loads(result.stdout or "[{}]")[0] or {}).get("Containers") or {}
    if containers:
        return False
    run(
        ["docker", "network", "rm", name],
        timeout=runner.budget("tool-probe") * 3,
        fix=f"remove it by hand: docker network rm {name}",
    )
    return True
