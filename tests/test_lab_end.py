"""A closed reference VM leaves no process to reap (reference_vm ``_end_lab``): its lab, PID 1 of
a PID namespace under ``unshare --fork --kill-child``, is reaped by unshare, not left a zombie for
the host's init. The test process is made the children's subreaper, so an orphan comes to it
instead of init and stays a zombie until reaped here: that makes the negative control (the old
close, SIGKILL to unshare) deterministic on any host, however quickly its init reaps."""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from slirp_conformance import waits
from slirp_conformance.reference.reference_vm import _end_lab

PR_SET_CHILD_SUBREAPER = 36
_REAL_RMTREE = shutil.rmtree


@contextlib.contextmanager
def _subreaper() -> Iterator[None]:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        pytest.skip(f"prctl(PR_SET_CHILD_SUBREAPER): errno {ctypes.get_errno()}")
    try:
        yield
    finally:
        libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


def _lab_like() -> tuple[subprocess.Popen, int]:
    """``unshare`` as the reference VM runs it, with ``sleep`` for the lab; and the lab's pid."""
    rootless = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
    unshare = subprocess.Popen(["unshare", *rootless, "--pid", "--fork", "--kill-child", "sleep", "60"])
    children = Path(f"/proc/{unshare.pid}/task/{unshare.pid}/children")
    try:
        got = waits.wait_for(
            "unshare to fork the lab-like child",
            lambda: (unshare.poll(), children.read_text().split() if unshare.poll() is None else []),
            10,
            accept=lambda r: r[0] is not None or bool(r[1]),
            retry_on=(OSError,),  # unshare ending between the poll and the read: the next poll says so
            describe=lambda r: f"exit {r[0]}, children {r[1]}",
        )
    except BaseException:
        unshare.kill()
        unshare.wait()
        raise
    if got[0] is not None:
        pytest.skip(f"unshare --pid cannot run here (exit {got[0]})")
    return unshare, int(got[1][0])


def _state(pid: int) -> str | None:
    """The process's state letter (Z: a zombie), or None once it is gone (reaped)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def test_a_closed_lab_is_reaped_by_unshare_not_left_to_init():
    with _subreaper():
        unshare, lab = _lab_like()
        _end_lab(unshare)
        assert unshare.returncode is not None
        assert _state(lab) is None, f"the lab-like child {lab} is left in state {_state(lab)}"


def test_control_killing_unshare_leaves_the_lab_a_zombie():
    """The premise: the close this replaced (SIGKILL to unshare, whose --kill-child then kills the
    lab) leaves the lab unreaped by anyone but whoever inherits it."""
    with _subreaper():
        unshare, lab = _lab_like()
        unshare.send_signal(signal.SIGKILL)
        unshare.wait()
        try:
            got = waits.wait_for(
                "the orphaned lab-like child to end",
                lambda: _state(lab),
                10,
                accept=lambda s: s != "S" and s != "R",
                describe=lambda s: f"state {s}",
            )
            assert got == "Z", f"state {got}: expected a zombie waiting for its reaper"
        finally:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(lab, 0)
    assert _state(lab) is None


def _closed_vm_with(run_dir: Path):
    from slirp_conformance.reference.reference_vm import QemuOptions, ReferenceVM
    from slirp_conformance.vmspec import conformance_vm

    vm = ReferenceVM(conformance_vm("selftest-close"), QemuOptions(), authorized_key="ssh-ed25519 AAAA x", password="x")
    vm.run_dir = run_dir
    (run_dir / "qemu").mkdir(parents=True)
    (run_dir / "lab.json").write_text("{}")
    return vm


def _rmtree_meeting_a_writer(monkeypatch, rounds: int) -> list[Path]:
    """shutil.rmtree as reference_vm calls it, with a writer that adds a file to the tree as each of
    the first ``rounds`` removals goes (what a start under way in another thread does)."""
    from slirp_conformance.reference import reference_vm

    real, calls = _REAL_RMTREE, []

    def rmtree(path, ignore_errors=False):
        calls.append(Path(path))
        if len(calls) <= rounds:
            (Path(path) / "late-file").write_text("added as the tree went")  # rmdir then meets it
            for child in Path(path).iterdir():
                if child.name != "late-file":
                    real(child) if child.is_dir() else child.unlink()
            return
        real(path, ignore_errors=ignore_errors)

    monkeypatch.setattr(reference_vm.shutil, "rmtree", rmtree)
    return calls


def test_a_run_dir_that_a_writer_added_to_is_removed_again(monkeypatch, tmp_path):
    run_dir = tmp_path / "run"
    vm = _closed_vm_with(run_dir)
    calls = _rmtree_meeting_a_writer(monkeypatch, rounds=1)
    vm.close()
    assert len(calls) >= 2, calls  # the premise: the first removal left the directory behind
    assert not run_dir.exists()


def test_a_run_dir_still_written_after_the_bound_is_left_for_the_next_close(monkeypatch, tmp_path):
    """The start under way in another thread fails on its next step and closes again: that close
    removes what the first one could not."""
    run_dir = tmp_path / "run"
    vm = _closed_vm_with(run_dir)
    calls = _rmtree_meeting_a_writer(monkeypatch, rounds=10_000)
    vm.close()
    assert run_dir.exists() and len(calls) > 1
    _rmtree_meeting_a_writer(monkeypatch, rounds=0)
    vm.close()
    assert not run_dir.exists()
