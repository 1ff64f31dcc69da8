"""``--images-from-source``: what a kind cluster needs when nothing can be downloaded or pulled.

kind and kubectl are built from their Go modules at the pins of the KubeVirt version (into
``.tools``, as ``hack/install-tools.sh --from-source``), and the node image is built here for the
pinned Kubernetes version (``slirp_conformance.kindnode``), found again by its key when nothing changed.
``hack/cluster-up.sh --images-from-source`` and ``--target=kind --images-from-source`` both come
here; the cluster is then created from the suite's own config with that image, on the suite's
Docker network, with the suite's CNI (kindnetd is not available: ``slirp_conformance.kindnode.cni``).
"""

from __future__ import annotations

import logging
from typing import TypedDict

from slirp_conformance import kind_tools, progress
from slirp_conformance.cluster import kind_network, runner
from slirp_conformance.cluster.versions import Pins
from slirp_conformance.docker_daemon import Engine
from slirp_conformance.kindnode import node_image

log = logging.getLogger(__name__)


def prepare(pins: Pins, engine: Engine) -> node_image.NodeImage:
    """kind and kubectl on PATH (built), and the node image in ``engine`` (built or found)."""
    with progress.phase(f"kind {pins.kind} and kubectl {pins.kubectl} from their Go modules (cached by version)"):
        kind_tools.install_pinned(pins.kind, pins.kubectl, runner.TOOLS_DIR.parent)
        runner.prepend_tools_dir()
    with progress.phase(f"the kind node image for Kubernetes {pins.kubernetes} (built here; cached by its inputs)"):
        return node_image.ensure(pins, engine)


class NodeSettings(TypedDict):
    """The ``KindCluster`` fields that follow from ``--images-from-source`` and the Docker engine."""

    node_image: str | None
    own_cni: bool
    network: str | None


def node_settings(pins: Pins, engine: Engine, images_from_source: bool) -> NodeSettings:
    """What a new cluster's nodes are, for both ways in (``hack/cluster-up.sh`` and ``--target=kind``):
    with ``images_from_source`` the node image built here (``prepare``) and the suite's CNI, else
    kind's pinned image and kindnetd; on the network ``kind_network.for_cluster`` picks."""
    image = None
    if images_from_source:
        built = prepare(pins, engine)
        image = built.tag
        log.info("node image %s (%s)", image, "built now" if built.cold else "found in Docker")
    return NodeSettings(
        node_image=image,
        own_cni=images_from_source,
        network=kind_network.for_cluster(images_from_source, engine.project_started),
    )
