"""What the cluster targets run inside the launcher pod and the client pod for issue 20's clauses,
as shell text to exec and parsers of what comes back (pure functions: the self-tests feed them
real tool output). The tools are the ones the images already carry: ``ncat`` in virt-launcher's
compute container (KubeVirt's launcherbase has nmap-ncat, rpm/BUILD.bazel; ours Debian's ``ncat``,
``kubevirt_images/debian.py``) and busybox ``nc`` in the suite's client pod."""

from __future__ import annotations

import json
import re
import shlex

from slirp_conformance.target import UdpSend

# The launcher pod's private emptyDir (virt-launcher's own scratch space, writable by its user at
# every release): where the loopback service's log lives until the VM's pod goes.
LAUNCHER_SCRATCH = "/var/run/kubevirt-private"


# The command line of the QEMU process in the compute container with a ``-netdev``, one argument a line.
QEMU_ARGV_SCRIPT = (
    "for d in /proc/[0-9]*; do if tr '\\0' '\\n' < $d/cmdline 2>/dev/null | grep -qx -- '-netdev'; then "
    "tr '\\0' '\\n' < $d/cmdline; exit 0; fi; done; exit 1"
)


def netdev_args(argv: list[str]) -> list[str] | None:
    """``-netdev user,...`` and the ``-device`` on that netdev (libvirt gives QEMU the device as
    JSON, ``{"driver":"e1000","netdev":"default",...}``), from a QEMU command line, in the sidecar's
    order (None when there is no user netdev: not slirp's QEMU)."""
    netdev = next(
        (argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "-netdev" and argv[i + 1].startswith("user,")), None
    )
    if netdev is None:
        return None
    found = re.search(r"(?:^|,)id=([^,]+)", netdev)
    args = ["-netdev", netdev]
    if found:
        device = next(
            (argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "-device" and _on(argv[i + 1], found[1])), None
        )
        if device is not None:
            args += ["-device", device]
    return args


def _on(device: str, netdev_id: str) -> bool:
    if device.startswith("{"):
        try:
            return json.loads(device).get("netdev") == netdev_id
        except ValueError:
            return False
    return f"netdev={netdev_id}" in device.split(",")


def loopback_log(host: str, port: int) -> str:
    return f"{LAUNCHER_SCRATCH}/slirp-conformance-loopback-{'6' if ':' in host else '4'}-{port}.log"


def loopback_listen_script(host: str, port: int, token: str) -> str:
    """Start ncat on the pod's loopback ``host``:``port``, answering every connection with
    ``token`` and logging each client, detached from the exec session (every descriptor away from
    it, so the session ends while ncat runs on). A listener an earlier call started there (the
    clause's fixture is set up again for each channel, with a new token) is stopped first."""
    log = loopback_log(host, port)
    pid = log.removesuffix(".log") + ".pid"
    answer = shlex.quote(f"echo {shlex.quote(token)}")
    return (
        f"if [ -f {pid} ]; then old=$(cat {pid}); kill $old 2>/dev/null; "
        f"for i in $(seq 50); do kill -0 $old 2>/dev/null || break; sleep 0.1; done; fi; rm -f {log}; "
        f"ncat -lk -v --sh-exec {answer} {shlex.quote(host)} {port} </dev/null >{log} 2>&1 & "
        f"echo $! > {pid}; echo started $!"
    )


def loopback_listening(log_text: str, host: str, port: int) -> bool:
    """ncat's own words that it listens where asked (``Listening on 127.0.0.1:9109`` or ``[::1]:9109``)."""
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return f"Listening on {where}" in log_text


def loopback_clients(log_text: str) -> list[str]:
    """The client addresses of ncat's ``Connection from 127.0.0.1:55950.`` / ``[::1]:36076.`` lines."""
    return [
        m.group(1) or m.group(2)
        for m in re.finditer(r"Connection from (?:\[([0-9a-fA-F:.]+)\]|([0-9.]+)):\d+\.", log_text)
    ]


UDP_REPLY_MARK = "slirp-conformance-udp-reply:"


def udp_send_script(host: str, port: int, payload: str, wait: float) -> str:
    """busybox ``nc -u`` on a connected socket: it says ``Connection refused`` when the pod's kernel
    answers ICMP port unreachable, ``net timeout`` when nothing came back in ``wait`` s, and prints a
    reply datagram on stdout (measured with the peer image's busybox 1.37: exit code 0 in all three)."""
    seconds = max(1, round(wait))
    # nc's words go to stdout (fd 3) ahead of the marked reply: an exec merges stdout and stderr
    # in no fixed order, and a reply parsed from the wrong side of the mark was taken for an answer.
    return (
        f"{{ reply=$(printf %s {shlex.quote(payload)} | nc -u -vv -w {seconds} {shlex.quote(host)} {port} 2>&3); }} "
        f'3>&1; echo; echo "{UDP_REPLY_MARK}$reply"'
    )


def udp_send_result(output: str, rc: int, wait: float) -> UdpSend:
    """The outcome of ``udp_send_script`` from its output (nc's stderr and the marked reply)."""
    words, _, reply = output.partition(UDP_REPLY_MARK)
    reply = reply.strip()
    detail = " ".join(words.split())
    if rc != 0:
        return UdpSend("error", f"exit {rc}: {detail[-300:]}")
    if reply:
        return UdpSend("answered", detail[-300:], reply=reply)
    if "refused" in words.lower():
        return UdpSend("refused", f"ICMP port unreachable from the pod (busybox nc: {detail[-300:]})")
    if "net timeout" in words or re.search(r"sent \d+, rcvd 0", words):
        return UdpSend("sent", f"no reply and no ICMP error within {wait:g} s (busybox nc: {detail[-300:]})")
    return UdpSend("error", f"busybox nc said neither sent nor refused: {detail[-300:]}")
