"""``python -m slirp_conformance.kindnode build --kubevirt-version V``: build (or find) the kind node image of a
KubeVirt version's pins and print what it took, per part, as JSON (exit 4 with one line on bad input)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

from slirp_conformance import docker_daemon
from slirp_conformance.cluster import versions
from slirp_conformance.errors import SetupError, refuse
from slirp_conformance.kindnode import node_image


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m slirp_conformance.kindnode", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="build or find the node image; print a JSON report")
    build.add_argument(
        "--if-usable",
        action="store_true",
        help="where it cannot be built (not root, no Docker) print the reason as JSON and exit 0",
    )
    build.add_argument(
        "--rebuild",
        action="store_true",
        help="assemble and load the image even when Docker has it (parts still come from their caches)",
    )
    versions.add_option(build)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    started = time.monotonic()
    if args.if_usable:
        reason = "building the kind node image needs root" if os.geteuid() != 0 else docker_daemon.unusable_reason()
        if reason:
            print(json.dumps({"skipped": reason}))
            return 0
    try:
        pins = versions.pins_for(args.kubevirt_version)
        with docker_daemon.engine("kind-node-build") as engine:
            docker_daemon.check_privileged(engine)
            image = node_image.ensure(pins, engine, rebuild=args.rebuild)
    except SetupError as e:
        return refuse("kindnode", e)
    print(json.dumps({**image.report(), "seconds": round(time.monotonic() - started, 1)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
