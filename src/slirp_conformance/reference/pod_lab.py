"""The reference target's little cluster: a "pod" namespace running QEMU, a peer namespace.

Started by ``qemu_target`` as ``unshare [--user --map-root-user] --mount --net --pid --fork
--kill-child --mount-proc python -m slirp_conformance.reference.pod_lab CONFIG``. This process is PID 1
of a fresh PID namespace and lives in a fresh network namespace that plays the cluster network
(the peers). It creates the pod network namespace (persisted as a bind mount inside its own
private mount namespace), joins the two with a veth pair, gives QEMU the pod's resolv.conf,
and runs QEMU in the pod namespace as an unprivileged user without CAP_NET_RAW, as
virt-launcher does. When this process ends, for any reason, the kernel tears down every
process, mount and namespace of the lab: nothing can leak.

Protocol with the parent: one JSON line on stdout, ``{"ready": ...}`` or ``{"error": ...}``.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from slirp_conformance.reference.peer_services import PeerServices

log = logging.getLogger("lab")


class LabError(Exception):
    pass


def _run(argv: list[str], what: str) -> str:
    log.info("%s: %s", what, " ".join(argv))
    r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        raise LabError(f"{what} failed: {' '.join(argv)}: {r.stderr.strip() or r.returncode}")
    return r.stdout


def _in_pod(cfg: dict, argv: list[str]) -> list[str]:
    return ["nsenter", f"--net={cfg['pod_netns']}", "--", *argv]


def _sysctl_path(key: str) -> str:
    return "/proc/sys/" + key.replace(".", "/")


def setup_network(cfg: dict) -> None:
    pod_ns = Path(cfg["pod_netns"])
    pod_ns.touch()
    _run(["unshare", f"--net={pod_ns}", "true"], "creating the pod network namespace")
    _run(["ip", "link", "set", "lo", "up"], "peer loopback")
    _run(_in_pod(cfg, ["ip", "link", "set", "lo", "up"]), "pod loopback")
    _run(
        _in_pod(cfg, ["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "cluster0", "netns", "1"]),
        "veth between pod and cluster",
    )
    _run(_in_pod(cfg, ["ip", "addr", "add", f"{cfg['pod_ip']}/{cfg['prefix']}", "dev", "eth0"]), "pod address")
    _run(_in_pod(cfg, ["ip", "link", "set", "eth0", "up"]), "pod link")
    _run(_in_pod(cfg, ["ip", "route", "add", "default", "via", cfg["peer_ip"]]), "pod default route")
    _run(["ip", "addr", "add", f"{cfg['peer_ip']}/{cfg['prefix']}", "dev", "cluster0"], "peer address")
    _run(["ip", "link", "set", "cluster0", "up"], "peer link")
    for key, wanted in cfg["pod_sysctls"].items():
        value = _mapped_value(cfg, key, wanted)
        if value is None:
            continue  # the new namespace's default already means it
        _run(
            _in_pod(cfg, ["sh", "-c", 'printf "%s\\n" "$1" > "$2"', "_", value, _sysctl_path(key)]),
            f"sysctl {key}={value} in the pod namespace",
        )
    resolv = Path(cfg["resolv_conf"])
    _run(["mount", "--bind", str(resolv), "/etc/resolv.conf"], "giving the pod its resolv.conf")


def _mapped_value(cfg: dict, key: str, value: str) -> str | None:
    """In a rootless lab only gid 0 exists, and the kernel refuses a ping_group_range naming
    unmapped gids: keep what the range means for QEMU's gid (0). None: leave the default of a
    new namespace ("1 0", nobody), which is what any range without gid 0 means here."""
    if not cfg.get("rootless") or key != "net.ipv4.ping_group_range":
        return value
    low, high = (int(v) for v in value.split())
    return "0 0" if low <= 0 <= high else None


def read_pod_sysctl(cfg: dict, key: str) -> str:
    return _run(_in_pod(cfg, ["cat", _sysctl_path(key)]), f"reading {key}").strip()


_libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNET = 0x40000000


@contextmanager
def _in_netns(netns: str) -> Iterator[None]:
    """This thread inside ``netns`` for the block (setns is per thread), then back in its own; a
    socket belongs to the namespace it was created in, so it stays there after the block."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(netns, os.O_RDONLY)
    try:
        if _libc.setns(target, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {netns}")
        try:
            yield
        finally:
            if _libc.setns(own, CLONE_NEWNET) != 0:
                os._exit(70)  # a thread stuck in the wrong namespace must not serve anything else
    finally:
        os.close(own)
        os.close(target)


def connect_in_netns(netns: str, host: str, port: int, timeout: float) -> socket.socket:
    """A TCP connection made from inside ``netns`` (call from a worker thread: setns is per thread),
    handed back non-blocking once the thread is in its own namespace again."""
    with _in_netns(netns):
        sock = socket.create_connection((host, port), timeout=timeout)
    sock.setblocking(False)
    return sock


def listen_in_netns(netns: str, host: str, port: int) -> socket.socket:
    """A listening TCP socket bound to host:port inside ``netns`` (call from a worker thread, as
    ``connect_in_netns``). ``host`` may be an IPv6 literal."""
    with _in_netns(netns):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(8)
        except BaseException:
            sock.close()  # the port taken, or the address absent: no socket left behind
            raise
    sock.setblocking(False)
    return sock


def _status_fields(pid: int) -> dict:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, v = line.partition(":")
        if k in ("Uid", "Gid", "CapEff", "CapBnd", "CapAmb", "Groups"):
            fields[k] = v.split()
    return fields


class Lab:
    def __init__(self, cfg: dict) -> None:
        self.cfg = cfg
        self.qemu: asyncio.subprocess.Process | None = None
        self.loopback: dict[str, dict] = {}  # "host:port" -> {"token", "seen": [client addresses]}

    async def _loopback_listen(self, request: dict) -> dict:
        """A TCP service on the pod's loopback (``host``: 127.0.0.1 or ::1), as a process in the pod
        keeps to itself (a sidecar's metrics or debug port): every connection gets ``token`` and a
        newline; the clients' addresses are kept (``loopback-seen``)."""
        host, port, token = request["host"], int(request["port"]), request["token"]
        key = f"{host}:{port}"
        if key in self.loopback:
            self.loopback[key]["token"] = token
            return {"ok": True}
        try:
            sock = await asyncio.to_thread(listen_in_netns, self.cfg["pod_netns"], host, port)
        except OSError as e:
            return {"ok": False, "error": f"cannot listen on {key} in the pod: {e}"}
        entry: dict = {"token": token, "seen": []}
        self.loopback[key] = entry

        async def serve(reader, writer) -> None:
            entry["seen"].append(str(writer.get_extra_info("peername")[0]))
            log.info("pod loopback %s: connection from %s", key, writer.get_extra_info("peername"))
            writer.write(entry["token"].encode() + b"\n")
            await writer.drain()
            writer.close()

        await asyncio.start_server(serve, sock=sock)
        return {"ok": True}

    async def _loopback_seen(self, request: dict) -> dict:
        entry = self.loopback.get(f"{request['host']}:{int(request['port'])}")
        return {"ok": entry is not None, "seen": list(entry["seen"]) if entry else []}

    async def _evidence(self, _request: dict) -> dict:
        reply = {"ok": True, "pod_sysctls": {k: read_pod_sysctl(self.cfg, k) for k in self.cfg["evidence_sysctls"]}}
        if self.qemu is None or self.qemu.returncode is not None:
            return reply | {"qemu_running": False}
        status = _status_fields(self.qemu.pid)
        cmdline = Path(f"/proc/{self.qemu.pid}/cmdline").read_bytes().split(b"\0")[:-1]
        return reply | {
            "qemu_running": True,
            "qemu_uid": int(status["Uid"][1]),
            "qemu_gid": int(status["Gid"][1]),
            "qemu_cap_eff": status["CapEff"][0],
            "qemu_cap_bnd": status["CapBnd"][0],
            "qemu_cmdline": [a.decode() for a in cmdline],
            # its CPU priority: field 19 of /proc/PID/stat, after the name's closing parenthesis (proc(5))
            "qemu_nice": int(Path(f"/proc/{self.qemu.pid}/stat").read_text().rsplit(")", 1)[1].split()[16]),
        }

    async def _exec(self, request: dict) -> dict:
        """Run argv in the pod network namespace (as the lab's root), or in the peer namespace with
        ``where: peer``; bounded."""
        argv = request["argv"]
        if request.get("where", "pod") == "pod":
            argv = _in_pod(self.cfg, argv)
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), float(request.get("timeout", 30)))
        except TimeoutError:
            proc.kill()
            out, err = await proc.communicate()
            return {
                "ok": True,
                "rc": 124,
                "stdout": out.decode(errors="replace"),
                "stderr": err.decode(errors="replace") + "\n(killed: timed out)",
            }
        return {
            "ok": True,
            "rc": proc.returncode,
            "stdout": out.decode(errors="replace"),
            "stderr": err.decode(errors="replace"),
        }

    async def _ping_from_pod(self, request: dict) -> dict:
        # iputils: with -w, -c counts replies, so a request goes every 0.2 s until the first reply
        # (a lost first one, e.g. while ARP resolves, is sent again) or 2 s pass; it was -c 2 -i 0.2,
        # 0.2 s on every run's way to the first ICMP check for the second, unneeded reply.
        reply = await self._exec(
            {"argv": ["ping", "-n", "-c", "1", "-w", "2", "-i", "0.2", request["host"]], "timeout": 10}
        )
        return {"ok": True, "rc": reply["rc"], "output": reply["stdout"] + reply["stderr"]}

    async def main(self) -> int:
        cfg = self.cfg
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(sig, stop.set)
        services = PeerServices(
            peer_ip=cfg["peer_ip"],
            tcp_echo_port=cfg["tcp_echo_port"],
            udp_echo_port=cfg["udp_echo_port"],
            dns_records=cfg["dns_records"],
            control_path=cfg["control_socket"],
            handlers={
                "evidence": self._evidence,
                "ping-from-pod": self._ping_from_pod,
                "exec": self._exec,
                "loopback-listen": self._loopback_listen,
                "loopback-seen": self._loopback_seen,
            },
            pod_connect=lambda host, port, timeout: connect_in_netns(cfg["pod_netns"], host, port, timeout),
        )
        await services.start()
        logging.getLogger("peer").info(
            "listening on %s: TCP/UDP echo %s, DNS 53 (each arrival is logged below)",
            cfg["peer_ip"],
            cfg["tcp_echo_port"],
        )
        with open(cfg["qemu_log"], "ab") as qemu_log:
            qemu_log.write(
                f"# {time.strftime('%H:%M:%S')} QEMU started in the pod network namespace:\n# "
                f"{' '.join(cfg['qemu_argv'])}\n".encode()
            )
            self.qemu = await asyncio.create_subprocess_exec(
                *_in_pod(cfg, cfg["qemu_argv"]),
                stdin=subprocess.DEVNULL,
                stdout=qemu_log,
                stderr=subprocess.STDOUT,
            )
        log.info("QEMU started, pid %s", self.qemu.pid)
        print(json.dumps({"ready": True, "qemu_pid": self.qemu.pid}), flush=True)
        qemu_done = asyncio.ensure_future(self.qemu.wait())
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait({qemu_done, stopped}, return_when=asyncio.FIRST_COMPLETED)
        log.info("QEMU %s", f"exited with status {self.qemu.returncode}" if qemu_done.done() else "stopped by the lab")
        if self.qemu.returncode is None:
            self.qemu.terminate()
            try:
                await asyncio.wait_for(self.qemu.wait(), 5)
            except TimeoutError:
                self.qemu.kill()
                await self.qemu.wait()
        return 0 if stopped.done() else 3


def main() -> int:
    cfg = json.loads(Path(sys.argv[1]).read_text())
    os.chdir(cfg["run_dir"])
    # lab.log (our stderr): what the lab did; peer.log: what reached the peers, from where.
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    peer_log = logging.FileHandler(Path(cfg["run_dir"]) / "peer.log")
    peer_log.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    logging.getLogger("peer").addHandler(peer_log)
    try:
        setup_network(cfg)
        return asyncio.run(Lab(cfg).main())
    except (LabError, OSError, subprocess.TimeoutExpired) as e:
        log.error("lab failed: %s", e)
        print(json.dumps({"error": str(e)}), flush=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
