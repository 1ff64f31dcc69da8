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
* ``cluster_delete_s``: ``hack/cluster-down.sh --force`` of that cluster: ``kind delete cluster``,
  the suite's network once unused, the project's dockerd lease of it released (dockerd stops when
  nobody else uses it).
* ``load_before``/``load_after``: the 1, 5 and 15 minute load averages (other work on the machine
  stretches every figure).
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

from slirp_conformance.checkout import REPO
from slirp_conformance.cluster import versions
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


def _load() -> list[float]:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except (OSError, ValueError):
        return []


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


def _run(version: str, cluster: str, extra: list[str]) -> dict:
    t0 = time.monotonic()
    r = subprocess.run(
        [str(REPO / "hack" / "conformance.sh"), "--target=kind", "--images-from-source", "--kubevirt-version",
         version, "--kind-cluster-name", cluster, "--keep-cluster", *extra],
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


def _delete(cluster: str) -> float:
    """The kept cluster goes as a user's would: hack/cluster-down.sh --force (a cluster the suite kept
    has no cluster-up state), which finds it on the project's dockerd and releases its lease."""
    t0 = time.monotonic()
    r = subprocess.run([str(REPO / "hack" / "cluster-down.sh"), "--name", cluster, "--force"], capture_output=True,
                       text=True, timeout=600)  # fmt: skip
    if r.returncode != 0:
        raise SetupError(f"hack/cluster-down.sh --name {cluster} --force exited {r.returncode}: {r.stderr[-300:]}")
    return round(time.monotonic() - t0, 1)


def _bad_input(version: str, timeout_scale: str | None) -> str | None:
    try:
        versions.pins_for(version)
    except SetupError as e:
        return f"--kubevirt-version {version!r}: {e}"
    try:
        if timeout_scale is not None and not float(timeout_scale) > 0:
            raise ValueError
    except ValueError:
        return f"--timeout-scale {timeout_scale!r}: give a number > 0"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hack/bench.sh --kubevirt")
    parser.add_argument("--kubevirt-version", default=str(versions.default_version()))
    parser.add_argument("--cold", action="store_true", help="build the images with every cache empty")
    parser.add_argument("--kind-cluster-name", default=CLUSTER, help=f"the cluster made and deleted ({CLUSTER})")
    parser.add_argument("--timeout-scale", default=None, help="passed to the run (a loaded machine, TCG guests)")
    args = parser.parse_args(argv)
    problem = _bad_input(args.kubevirt_version, args.timeout_scale)
    if problem:  # bad input: one line, exit 4, before anything is built
        print(f"bench: {problem}", file=sys.stderr)
        return 4
    extra = ["--timeout-scale", args.timeout_scale] if args.timeout_scale else []
    os.environ["PATH"] = f"{REPO / '.tools' / 'bin'}:{os.environ['PATH']}"
    result: dict = {"kubevirt_version": args.kubevirt_version, "cpus": os.cpu_count(), "load_before": _load()}
    try:
        result["images"] = _images(args.kubevirt_version, args.cold)
        try:
            result["run"] = _run(args.kubevirt_version, args.kind_cluster_name, extra)
        finally:  # the kept cluster goes also when the run timed out or was interrupted
            result["cluster_delete_s"] = _delete(args.kind_cluster_name)
    except (SetupError, subprocess.SubprocessError) as e:
        result["error"] = str(e)[-500:]
        print(json.dumps(result, indent=1))
        return 1
    result["load_after"] = _load()
    print(json.dumps(result, indent=1))
    return 0 if result["run"].get("exit_status") == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
