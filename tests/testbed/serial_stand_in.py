"""A stand-in for a VM's serial console in the self-tests of the bed's console path: a unix
socket server where QEMU's would be, published where the node agent publishes it."""

from __future__ import annotations

import socket
import tempfile
import threading
from pathlib import Path

from tests.testbed.node_layout import console_socket

GREETING = b"testbed-serial login: "


class SerialConsoleStandIn:
    """A unix socket server in QEMU's place: greets each connection, echoes lines back as
    ``echo:<line>``; published (a symlink, as the node agent does) at console_socket()."""

    def __init__(self, state_dir: Path, namespace: str, name: str) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="console-", dir="/tmp"))  # short: sun_path has 108 bytes
        self.server = socket.socket(socket.AF_UNIX)
        self.server.bind(str(self.dir / "serial0"))
        self.server.listen()
        self.link = console_socket(state_dir, namespace, name)
        self.link.parent.mkdir(parents=True, exist_ok=True)
        self.link.symlink_to(self.dir / "serial0")
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return  # closed
            self.connections += 1
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        with conn:
            conn.sendall(GREETING)
            pending = b""
            try:
                while data := conn.recv(4096):
                    pending += data
                    while b"\n" in pending or b"\r" in pending:
                        line, _, pending = pending.replace(b"\r", b"\n").partition(b"\n")
                        if line:
                            conn.sendall(b"echo:" + line + b"\r\n")
            except OSError:
                pass

    def close(self) -> None:
        try:
            self.server.shutdown(socket.SHUT_RDWR)  # wakes the accept() in _serve (close alone does not)
        except OSError:
            pass
        self.server.close()
        self.link.unlink(missing_ok=True)
        for leftover in self.dir.iterdir():
            leftover.unlink()
        self.dir.rmdir()
