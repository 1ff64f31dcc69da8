"""``hack/bench.sh --kubevirt``: bad input stops in one line with exit 4 before anything is built."""

from __future__ import annotations

import subprocess

import pytest

from slirp_conformance.checkout import REPO


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--kubevirt-version", "v9.9"], "--kubevirt-version 'v9.9'"),
        (["--kubevirt-version", "v1.0.0"], "--kubevirt-version 'v1.0.0'"),
        (["--timeout-scale", "0"], "--timeout-scale '0'"),
        (["--timeout-scale", "fast"], "--timeout-scale 'fast'"),
    ],
)
def test_bad_input_is_one_line_and_exit_4(args, named):
    r = subprocess.run(
        [str(REPO / "hack/bench.sh"), "--kubevirt", *args], capture_output=True, text=True, timeout=300, cwd=REPO
    )
    lines = [line for line in r.stderr.splitlines() if line.startswith("bench:")]
    assert r.returncode == 4 and len(lines) == 1 and named in lines[0], (r.returncode, r.stderr[-1000:])
    assert r.stdout == "" and "Traceback" not in r.stderr


def test_good_input_passes_the_check():
    """The control: the default release and a scale pass the up-front check (nothing is run here)."""
    from slirp_conformance.kubevirt_images import bench

    assert bench._bad_input("v1.9.0", "3") is None
    assert bench._bad_input("v1.1.0", None) is None
