"""``python -m slirp_conformance.kubevirt_images build --kubevirt-version V``: build (or find) KubeVirt's
images and manifests for release V and print where they are, as JSON. Bad input: one line, exit 4."""

from __future__ import annotations

import argparse
import json
import sys
import time

from slirp_conformance.errors import SetupError, refuse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m slirp_conformance.kubevirt_images")
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build KubeVirt's images and release manifests of one release")
    b.add_argument("--kubevirt-version", required=True)
    args = parser.parse_args(argv)
    from slirp_conformance.kubevirt_images import build

    t0 = time.monotonic()
    try:
        built = build.build(args.kubevirt_version)
    except SetupError as e:
        return refuse("kubevirt-images", e)
    print(
        json.dumps(
            {
                "version": built.version,
                "home": str(built.home),
                "cold": built.cold,
                "seconds": round(time.monotonic() - t0, 1),
                "timings": built.timings,
                "manifests": str(built.manifests_dir),
                "archives": {k: str(v) for k, v in built.archives.items()},
            },
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
