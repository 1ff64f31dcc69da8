"""Progress lines stay whole when threads (the variant VMs booting beside the checks) write them
at the same time."""

from __future__ import annotations

import threading
import time

import pytest

from slirp_conformance import progress


class _SlowTerminal:
    """A terminal reporter that writes a line's text and its newline apart, with a thread switch
    between (as a real terminal write may be split)."""

    def __init__(self) -> None:
        self.out: list[str] = []

    def ensure_newline(self) -> None:
        if self.out and not self.out[-1].endswith("\n"):
            self.out.append("\n")

    def write_line(self, line: str) -> None:
        self.out.append(line)
        time.sleep(0.001)
        self.out.append("\n")


class _Config:
    def __init__(self, terminal: _SlowTerminal) -> None:
        plugins = {"terminalreporter": terminal, "capturemanager": None}
        self.pluginmanager = type("PM", (), {"get_plugin": staticmethod(plugins.get)})()

    def get_verbosity(self) -> int:
        return 0


@pytest.fixture
def terminal():
    terminal, before = _SlowTerminal(), progress._config
    progress.configure(_Config(terminal))
    try:
        yield terminal
    finally:
        progress.configure(before)


def test_lines_from_threads_never_share_a_line(terminal):
    def write(n: int) -> None:
        for i in range(20):
            progress.note(f"vm-{n} step {i}")

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = "".join(terminal.out).splitlines()
    expected = {f"slirp-conformance: vm-{n} step {i}" for n in range(4) for i in range(20)}
    assert set(lines) == expected and len(lines) == len(expected), [x for x in lines if x not in expected][:5]
