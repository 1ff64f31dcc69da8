"""Cache staging: a build killed mid-way leaves a directory the next build sweeps."""

import subprocess
import sys

from slirp_conformance import cache_dirs


def test_a_dead_builders_staging_dir_is_swept_and_a_live_ones_kept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".abc123.{int(dead.stdout)}.xyz"
    stale.mkdir()
    (stale / "half-written").write_text("x")
    mine = cache_dirs.staging_dir(tmp_path, "abc123")
    assert not stale.exists() and mine.is_dir()
    cache_dirs.staging_dir(tmp_path, "abc123")  # a second build sweeps nothing that is alive
    assert mine.is_dir()
    entry = tmp_path / "abc123"
    entry.mkdir()
    assert cache_dirs.sweep_stale(tmp_path) == [] and entry.is_dir()  # real entries are never touched
