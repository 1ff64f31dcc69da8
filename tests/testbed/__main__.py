"""``python -m tests.testbed build|up|down|bench``: what hack/testbed.sh runs.

    build [--kubevirt-version V] [--if-usable]   build (or find cached) every part; JSON of the build times
    up    [--kubevirt-version V] --kubeconfig PATH   build (or reuse) and start the bed, write PATH
          [--reference-guest busybox|fedora]       the guest the node agent boots behind each VMI
    down  --kubeconfig PATH                        stop it; leaves no process, port or temp dir
    bench [--kubevirt-version V] [--reference-guest G]  build, up, `pytest -k slirp --target=cluster`, down:
                                                   JSON of each phase's time and the run's outcome

The KubeVirt version defaults to ``TESTBED_KUBEVIRT_VERSION`` of hack/versions.env. Errors the
user can act on are one line on stderr and exit status 2; the kubeconfig's contents are never
printed.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from slirp_conformance import waits
from slirp_conformance.cluster import versions
from slirp_conformance.errors import SetupError
from slirp_conformance.reference import fedora_image, image, sidecar_render
from tests.testbed import bed, components, kubevirt, node_agent


def _build(
    kubevirt_version: str, reference_guest: str = "busybox"
) -> tuple[components.Pins, components.Binaries, dict, dict]:
    """Every part the bed runs, built or found in the cache: (pins, control-plane binaries, the
    KubeVirt parts by name, the build report)."""
    # Said at once, before any build: otherwise every VMI's start would fail on the node agent.
    flavour = node_agent.reference_guest_flavour(reference_guest, kubevirt_version)
    if flavour is not None:
        fedora_image.check_host_tools()
    pins = components.Pins.from_versions_env()
    started = time.monotonic()
    binaries = components.build_control_plane(pins)
    kubevirt_parts = {
        "kubevirt-manifests": components.build_kubevirt_manifests(kubevirt_version),
        "kubevirt-components": components.build_kubevirt_components(kubevirt_version),
        # the node agent's: the real slirp sidecar's rendering (its guest image below)
        "sidecar-render": sidecar_render.build(kubevirt_version),
    }
    image.build()
    if flavour is not None:
        fedora_image.build()  # cached; built first so no VMI's start waits for it
    builds = {**binaries.builds, **kubevirt_parts}
    report = {
        "kubernetes": pins.kubernetes,
        "kubevirt": kubevirt_version,
        "reference_guest": f"fedora-like {flavour}" if flavour else "busybox",
        "build_seconds": round(time.monotonic() - started, 1),
        "cold_builds": sorted(name for name, b in builds.items() if b.cold),
        "builds": {name: {"cold": b.cold, "seconds": round(b.seconds, 1)} for name, b in sorted(builds.items())},
    }
    return pins, binaries, kubevirt_parts, report


def _start(kubevirt_version: str, kubeconfig: Path, reference_guest: str = "busybox") -> dict:
    """Build (or reuse) and start the bed; its summary (build report, start time, phase times)."""
    if bed.record_path(kubeconfig.resolve()).exists():
        raise SetupError(
            f"a test bed is already recorded for {kubeconfig}: run "
            f"`hack/testbed.sh down --kubeconfig {kubeconfig}` first"
        )
    pins, binaries, parts, report = _build(kubevirt_version, reference_guest)
    started = time.monotonic()
    testbed = bed.TestBed(binaries, pins.kubernetes, kubeconfig)
    record = testbed.up()
    manifests, kubevirt_parts = parts["kubevirt-manifests"], parts["kubevirt-components"]
    try:
        testbed.phase("kubevirt-crds", lambda: kubevirt.install(testbed, manifests, kubevirt_version))
        testbed.phase("virt-handler-console", lambda: kubevirt.start_handler_console(testbed, kubevirt_version))
        testbed.phase("virt-api", lambda: kubevirt.start_virt_api(testbed, kubevirt_parts, manifests))
        testbed.phase(
            "virt-controller", lambda: kubevirt.start_virt_controller(testbed, kubevirt_parts, kubevirt_version)
        )
        testbed.phase("node-agent", lambda: node_agent.start(testbed, kubevirt_version, reference_guest))
    except BaseException:
        print("testbed: KubeVirt start failed or interrupted: stopping the bed", file=sys.stderr, flush=True)
        bed.stop(testbed.kubeconfig)
        raise
    return {
        "kubeconfig": str(testbed.kubeconfig),
        **report,
        "start_seconds": round(time.monotonic() - started, 1),
        "phases": record.timings,
    }


def _version(args: argparse.Namespace) -> str:
    return str(versions.parse_kubevirt_version(args.kubevirt_version or versions.env("TESTBED_KUBEVIRT_VERSION")))


def _build_command(args: argparse.Namespace) -> int:
    if args.if_usable and (reason := bed.unusable_reason()):
        print(f"testbed: not built: {reason}", file=sys.stderr)
        print(json.dumps({"built": False, "reason": reason}))
        return 0
    print(json.dumps({"built": True, **_build(_version(args))[3]}))
    return 0


def _up(args: argparse.Namespace) -> int:
    print(json.dumps(_start(_version(args), Path(args.kubeconfig), args.reference_guest)))
    return 0


def _bench(args: argparse.Namespace) -> int:
    """The bed end to end as a user meets it, timed: up, the suite against it, down."""
    from tests.suite_runner import run_suite  # the self-tests' driver of `pytest -k slirp`

    with tempfile.TemporaryDirectory(prefix="slirp-bench-") as tmp:
        kubeconfig = Path(tmp) / "kubeconfig"
        summary = _start(_version(args), kubeconfig, args.reference_guest)
        try:
            started = time.monotonic()
            run = run_suite(Path(tmp), "--target=cluster", "--kubeconfig", str(kubeconfig), timeout=args.suite_timeout)
            suite_seconds = time.monotonic() - started
        finally:
            started = time.monotonic()
            bed.stop(kubeconfig)
            down_seconds = time.monotonic() - started
    summary.pop("kubeconfig")
    print(
        json.dumps(
            {
                **summary,
                "suite_seconds": round(suite_seconds, 1),
                "suite_exit": run.returncode,
                "suite_outcomes": dict(Counter(run.outcomes.values())),
                "outcome": (run.report or {}).get("outcome"),
                "down_seconds": round(down_seconds, 1),
            }
        )
    )
    return 0 if run.returncode == 0 else 1


def _down(args: argparse.Namespace) -> int:
    record = bed.stop(Path(args.kubeconfig))
    print(
        f"testbed: stopped {len(record.processes)} processes, removed {record.state_dir} and {record.kubeconfig}",
        file=sys.stderr,
    )
    return 0


def _sigterm_as_interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="hack/testbed.sh", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--timeout-scale", type=float, default=1.0, help="multiply every readiness budget")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    kubevirt_help = "KubeVirt release (default: TESTBED_KUBEVIRT_VERSION of hack/versions.env)"
    build = sub.add_parser("build", help="build (or find cached) every part of the bed; prints the build times")
    build.add_argument("--kubevirt-version", default=None, help=kubevirt_help)
    build.add_argument(
        "--if-usable", action="store_true", help="build nothing, and say why, where the bed cannot run (hack/test.sh)"
    )
    up = sub.add_parser("up", help="build (or reuse) and start the bed; writes --kubeconfig")
    up.add_argument("--kubevirt-version", default=None, help=kubevirt_help)
    up.add_argument("--kubeconfig", required=True, help="where to write the bed's admin kubeconfig (must not exist)")
    guest_help = (
        "the guest behind each VMI: the busybox reference guest (default), or the Fedora-like flavour "
        "of the bed's KubeVirt version, booted from the VMI's own cloudInitNoCloud"
    )
    guests = "|".join(node_agent.REFERENCE_GUESTS)
    # Not argparse choices: a wrong name is one line (SetupError), not a usage text.
    up.add_argument("--reference-guest", default="busybox", metavar=guests, help=guest_help)
    down = sub.add_parser("down", help="stop the bed recorded for --kubeconfig and remove its files")
    down.add_argument("--kubeconfig", required=True)
    bench = sub.add_parser("bench", help="build, up, the suite against the bed, down: each phase's time as JSON")
    bench.add_argument("--kubevirt-version", default=None, help=kubevirt_help)
    bench.add_argument("--reference-guest", default="busybox", metavar=guests, help=guest_help)
    bench.add_argument("--suite-timeout", type=float, default=900.0, help="bound of the suite run, seconds")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(name)s: %(message)s")
    signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    try:
        waits.set_timeout_scale(args.timeout_scale)
        return {"build": _build_command, "up": _up, "down": _down, "bench": _bench}[args.command](args)
    except (SetupError, ValueError) as e:
        print(f"testbed: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("testbed: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
