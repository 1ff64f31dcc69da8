"""``hack/bench.sh --kubevirt``: the kind path with KubeVirt, phase by phase, as JSON (figures to
read, never asserted).

* ``images``: KubeVirt's images and manifests of the release. With ``--cold`` they are built in a
  child process whose caches are all empty (the project's cache, ``GOCACHE`` and ``GOMODCACHE`` in
  a scratch directory: every module fetched, every package compiled, the Debian trees and the
  Fedora-like guest made anew), per part; without it, the time to find them now and the parts'
  times of the build that made them.
* ``run``: ``hack/conformance.sh --target=kind --images-from-source`` on a cluster of its own,
  kept at the end: cluster create, image load, KubeVirt Available, VMI Running with its agent,
  console login (the run's own progress lines), the suite (pytest's wall time), its verdict.
* ``cluster_delete_s``: ``kind delete cluster`` of that cluster, then the project's dockerd lease
  of it released (dockerd stops when nobody else uses it).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from slirp_conformance import docker_daemon
from slirp_conformance.checkout import REPO
from slirp_conformance.errors import SetupError

CLUSTER = "slirp-bench-kubevirt"
_PHASE = re.compile(r"^slirp-conformance: (?P<what>.+): (?P<s>[0-9.]+) s$")
_PYTEST = re.compile(r"=+ (?P<summary>.+) in (?P<s>[0-9.]+)s")
PHASES = {  # progress line -> JSON key
    "kind create cluster": "cluster_create_s",
    "waiting for every node Ready": "nodes_ready_s",
    ": loading its images into kind cluster": "image_load_s",
    "waiting until Available": "kubevirt_available_s",
    "until Running with its guest agent connected": "vmi_running_s",
    "console: logging in": "console_login_s",
}


def _load() -> float:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError):
        return -1.0


def _images(version: str, cold: bool) -> dict:
    env = dict(os.environ)
    scratch = None
    if cold:
        scratch = Path(tempfile.mkdtemp(prefix="slirp-kubevirt-cold-"))
        env.update(
            SLIRP_CONFORMANCE_CACHE=str(scratch / "cache"),
            GOCACHE=str(scratch / "gocache"),
            GOMODCACHE=str(scratch / "gomod"),
            GOFLAGS=f"{os.environ.get('GOFLAGS', '')} -modcacherw".strip(),
        )
    try:
        t0 = time.monotonic()
        r = subprocess.run(
            [sys.executable, "-m", "slirp_conformance.kubevirt_images", "build", "--kubevirt-version", version],
            capture_output=True,
            text=True,
            env=env,
            timeout=4 * 3600,
        )
        if r.returncode != 0:
            raise SetupError(f"building KubeVirt {version}'s images failed: {r.stderr.strip()[-400:]}")
        built = json.loads(r.stdout)
        return {"cold": cold, "wall_s": round(time.monotonic() - t0, 1), "parts_s": built["timings"]}
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)


def _run(version: str) -> dict:
    t0 = time.monotonic()
    r = subprocess.run(
        [str(REPO / "hack" / "conformance.sh"), "--target=kind", "--images-from-source", "--kubevirt-version",
         version, "--kind-cluster-name", CLUSTER, "--keep-cluster"],
        capture_output=True,
        text=True,
        timeout=3 * 3600,
    )  # fmt: skip
    out: dict[str, object] = {"exit_status": r.returncode, "wall_s": round(time.monotonic() - t0, 1)}
    for line in (r.stdout + r.stderr).splitlines():
        m = _PHASE.match(line.strip())
        if m:
            for needle, key in PHASES.items():
                if needle in m["what"]:
                    out[key] = float(m["s"])
        m = _PYTEST.search(line)
        if m:
            out["suite_s"], out["pytest_summary"] = float(m["s"]), m["summary"].strip()
    report = REPO / "reports" / "conformance.json"
    if report.is_file():
        out["outcome"] = json.loads(report.read_text()).get("outcome")
    return out


def _delete() -> float:
    engine = docker_daemon.acquire(f"bench:{os.getpid()}")
    try:
        t0 = time.monotonic()
        subprocess.run(["kind", "delete", "cluster", "--name", CLUSTER], env=engine.env(), capture_output=True,
                       timeout=300, check=True)  # fmt: skip
        return round(time.monotonic() - t0, 1)
    finally:
        docker_daemon.release(f"kind-cluster:{CLUSTER}")
        docker_daemon.release(f"bench:{os.getpid()}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hack/bench.sh --kubevirt")
    parser.add_argument("--kubevirt-version", default="v1.9.0")
    parser.add_argument("--cold", action="store_true", help="build the images with every cache empty")
    args = parser.parse_args(argv)
    os.environ["PATH"] = f"{REPO / '.tools' / 'bin'}:{os.environ['PATH']}"
    result: dict = {"kubevirt_version": args.kubevirt_version, "load_before": _load()}
    try:
        result["images"] = _images(args.kubevirt_version, args.cold)
        result["run"] = _run(args.kubevirt_version)
        result["cluster_delete_s"] = _delete()
    except (SetupError, subprocess.SubprocessError) as e:
        result["error"] = str(e)[-500:]
        print(json.dumps(result, indent=1))
        return 1
    result["load_after"] = _load()
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
