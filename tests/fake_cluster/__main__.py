"""``python -m tests.fake_cluster --kubeconfig PATH``: serve until SIGTERM/SIGINT, then tear down."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from .cluster import Options, serve


def parse_args(argv: list[str] | None = None) -> tuple[Options, bool]:
    p = argparse.ArgumentParser(prog="python -m tests.fake_cluster", description=__doc__)
    p.add_argument("--kubeconfig", required=True, type=Path, help="written once the server is ready")
    p.add_argument(
        "--preinstalled-kubevirt",
        nargs="?",
        const="v1.1.0",
        default=None,
        metavar="VERSION",
        help="start with namespace kubevirt and an Available KubeVirt CR (default version v1.1.0)",
    )
    p.add_argument(
        "--kubevirt-version",
        default="v1.1.0",
        help="the version a KubeVirt CR created later reports (unless an operator Deployment says)",
    )
    p.add_argument("--available-delay", type=float, default=2.0, help="seconds until a new KubeVirt CR is Available")
    p.add_argument(
        "--propagation-delay",
        type=float,
        default=1.0,
        help="seconds until KubeVirt components act on a changed KubeVirt CR",
    )
    p.add_argument("-v", "--verbose", action="store_true")
    a = p.parse_args(argv)
    return Options(
        kubeconfig=a.kubeconfig,
        preinstalled_kubevirt=a.preinstalled_kubevirt,
        kubevirt_version=a.kubevirt_version,
        available_delay=a.available_delay,
        propagation_delay=a.propagation_delay,
    ), a.verbose


async def _main(opts: Options) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await serve(opts, stop)


def main(argv: list[str] | None = None) -> int:
    opts, verbose = parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    asyncio.run(_main(opts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
