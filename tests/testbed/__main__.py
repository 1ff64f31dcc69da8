"""``python -m tests.testbed up|down``: what hack/testbed.sh runs.

    up   --kubevirt-version V --kubeconfig PATH   build (or reuse) and start the bed, write PATH
         [--reference-guest busybox|fedora]       the guest the node agent boots behind each VMI
    down --kubeconfig PATH                        stop it; leaves no process, port or temp dir

Errors the user can act on are one line on stderr and exit status 2; the kubeconfig's contents
are never printed.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time
from pathlib import Path

from fixtures import waits
from fixtures.cluster import versions
from fixtures.errors import SetupError
from fixtures.reference import fedora_image, image, sidecar_render
from tests.testbed import bed, components, kubevirt, node_agent


def _up(args: argparse.Namespace) -> int:
    kubevirt_version = str(versions.parse_kubevirt_version(args.kubevirt_version))
    kubeconfig = Path(args.kubeconfig)
    if bed.record_path(kubeconfig.resolve()).exists():
        raise SetupError(f"a test bed is already recorded for {kubeconfig}: run "
                         f"`hack/testbed.sh down --kubeconfig {kubeconfig}` first")
    # Said at once, before any build: otherwise every VMI's start would fail on the node agent.
    flavour = node_agent.reference_guest_flavour(args.reference_guest, kubevirt_version)
    if flavour is not None:
        fedora_image.check_host_tools()
    pins = components.Pins.from_versions_env()
    started = time.monotonic()
    binaries = components.build_control_plane(pins)
    manifests = components.build_kubevirt_manifests(kubevirt_version)
    kubevirt_parts = components.build_kubevirt_components(kubevirt_version)
    # The node agent's: the real slirp sidecar's rendering and the reference guest (both cached).
    sidecar = sidecar_render.build(kubevirt_version)
    image.build()
    if flavour is not None:
        fedora_image.build()  # cached; built first so no VMI's start waits for it
    build_seconds = time.monotonic() - started
    testbed = bed.TestBed(binaries, pins.kubernetes, kubeconfig)
    record = testbed.up()
    try:
        testbed.phase("kubevirt-crds", lambda: kubevirt.install(testbed, manifests, kubevirt_version))
        testbed.phase("virt-handler-console", lambda: kubevirt.start_handler_console(testbed, kubevirt_version))
        testbed.phase("virt-api", lambda: kubevirt.start_virt_api(testbed, kubevirt_parts, manifests))
        testbed.phase("virt-controller", lambda: kubevirt.start_virt_controller(testbed, kubevirt_parts, kubevirt_version))
        testbed.phase("node-agent", lambda: node_agent.start(testbed, kubevirt_version, args.reference_guest))
    except BaseException:
        print("testbed: KubeVirt start failed or interrupted: stopping the bed", file=sys.stderr, flush=True)
        bed.stop(testbed.kubeconfig)
        raise
    summary = {"kubeconfig": str(testbed.kubeconfig), "kubernetes": pins.kubernetes, "kubevirt": kubevirt_version,
               "reference_guest": f"fedora-like {flavour}" if flavour else "busybox",
               "build_seconds": round(build_seconds, 1),
               "cold_builds": sorted(name for name, b in {**binaries.builds, "kubevirt-manifests": manifests,
                                                          "kubevirt-components": kubevirt_parts, "sidecar-render": sidecar}.items() if b.cold),
               "start_seconds": round(time.monotonic() - started - build_seconds, 1),
               "phases": record.timings}
    print(json.dumps(summary))
    return 0


def _down(args: argparse.Namespace) -> int:
    record = bed.stop(Path(args.kubeconfig))
    print(f"testbed: stopped {len(record.processes)} processes, removed {record.state_dir} and {record.kubeconfig}",
          file=sys.stderr)
    return 0


def _sigterm_as_interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hack/testbed.sh", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timeout-scale", type=float, default=1.0, help="multiply every readiness budget")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="build (or reuse) and start the bed; writes --kubeconfig")
    up.add_argument("--kubevirt-version", default=None, help="KubeVirt release whose CRDs and CR to install")
    up.add_argument("--kubeconfig", required=True, help="where to write the bed's admin kubeconfig (must not exist)")
    # Not argparse choices: a wrong name is one line (SetupError), not a usage text.
    up.add_argument("--reference-guest", default="busybox", metavar="|".join(node_agent.REFERENCE_GUESTS),
                    help="the guest behind each VMI: the busybox reference guest (default), or the Fedora-like "
                         "flavour of the bed's KubeVirt version, booted from the VMI's own cloudInitNoCloud")
    down = sub.add_parser("down", help="stop the bed recorded for --kubeconfig and remove its files")
    down.add_argument("--kubeconfig", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(name)s: %(message)s")
    signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    try:
        waits.set_timeout_scale(args.timeout_scale)
        if args.command == "up":
            if args.kubevirt_version is None:
                args.kubevirt_version = versions.env("KUBEVIRT_DEFAULT_VERSION")
            return _up(args)
        return _down(args)
    except (SetupError, ValueError) as e:
        print(f"testbed: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("testbed: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
