"""``hack/bench.sh --kind``: the kind path's timings as JSON (figures to read, never asserted).

* ``node_image``: the node image build per part. With ``--cold`` it is built in a child process
  whose caches are all empty (the project's cache, ``GOCACHE`` and ``GOMODCACHE`` pointed at a
  scratch directory: every module is fetched, every package compiled, debootstrap run), then
  loaded into Docker; without it, the last build's report (``kind-node/logs/<version>/build.json``)
  and how long finding the image takes now.
* ``cluster_create_warm_s``: ``hack/cluster-up.sh --images-from-source --no-kubevirt`` with every
  image cached (``--nodes N`` nodes), to every node Ready and every kube-system pod Running.
* ``cluster_delete_s``: ``hack/cluster-down.sh``, to nothing left (the project's dockerd stopped
  when the benchmark's cluster was its only user).

Targets (README): warm create <= 60 s, cold builds of one version <= 25 min on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from slirp_conformance.cache_dirs import cache_root
from slirp_conformance.checkout import REPO
from slirp_conformance.cluster import versions
from slirp_conformance.kindnode import node_image


def _load() -> float:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError):
        return -1.0


def _cold_build(kubevirt_version: str) -> dict:
    scratch = Path(tempfile.mkdtemp(prefix="slirp-kind-cold-"))
    env = {
        **os.environ,
        "SLIRP_CONFORMANCE_CACHE": str(scratch / "cache"),
        "GOCACHE": str(scratch / "gocache"),
        "GOMODCACHE": str(scratch / "gomod"),
        "GOFLAGS": f"{os.environ.get('GOFLAGS', '')} -modcacherw".strip(),  # so the scratch dir can be removed
    }
    try:
        started = time.monotonic()
        cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "slirp_conformance.kindnode",
                "build",
                "--rebuild",
                "--kubevirt-version",
                kubevirt_version,
            ],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
        )
        if r.returncode != 0:
            raise SystemExit(f"bench: the cold node image build failed: {r.stderr.strip()[-600:]}")
        report = json.loads(r.stdout)
        report["wall_s"] = round(time.monotonic() - started, 1)
        cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
        # CPU time of the whole build (every compiler it waited for): the figure the host's load does not
        # stretch; on 2 idle cores the Go builds take about half of it as wall time, plus the downloads.
        report["cpu_s"] = round(cpu.ru_utime + cpu.ru_stime - cpu_before.ru_utime - cpu_before.ru_stime, 1)
        return report
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hack/bench.sh --kind", description=__doc__.splitlines()[0])
    versions.add_option(parser)
    parser.add_argument("--cold", action="store_true", help="build the node image from empty caches first")
    parser.add_argument("--nodes", type=int, default=1)
    args = parser.parse_args(argv)
    version = args.kubevirt_version
    pins = versions.pins_for(version)
    result: dict = {
        "kubevirt_version": version,
        "kubernetes": pins.kubernetes,
        "kind": pins.kind,
        "nodes": args.nodes,
        "load_before": _load(),
    }
    if args.cold:
        result["node_image"] = _cold_build(version)
    else:
        last = node_image.logs_dir(node_image.NodeRecipe.for_pins(pins), cache_root()) / "build.json"
        result["node_image_last_build"] = json.loads(last.read_text()) if last.exists() else None
    with tempfile.TemporaryDirectory(prefix="slirp-kind-bench-") as work:
        name = "slirp-bench"
        started = time.monotonic()
        up = subprocess.run(
            [
                "bash",
                str(REPO / "hack/cluster-up.sh"),
                "--kubevirt-version",
                version,
                "--images-from-source",
                "--no-kubevirt",
                "--name",
                name,
                "--workdir",
                work,
                "--nodes",
                str(args.nodes),
            ],
            capture_output=True,
            text=True,
        )
        result["cluster_create_warm_s"] = round(time.monotonic() - started, 1)
        result["cluster_create_rc"] = up.returncode
        result["phases"] = [
            line.split("slirp-conformance: ", 1)[1]
            for line in up.stderr.splitlines()
            if line.startswith("slirp-conformance: ") and line.rstrip().endswith(" s")
        ]
        started = time.monotonic()
        down = subprocess.run(
            ["bash", str(REPO / "hack/cluster-down.sh"), "--name", name, "--workdir", work],
            capture_output=True,
            text=True,
        )
        result["cluster_delete_s"] = round(time.monotonic() - started, 1)
        result["cluster_delete_rc"] = down.returncode
    result["load_after"] = _load()
    print(json.dumps(result, indent=2))
    return 0 if up.returncode == 0 and down.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
