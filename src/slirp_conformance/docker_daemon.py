"""The Docker engine of the kind path: the one that answers, else a dockerd the project starts and stops.

A Docker that already works (a CI runner's, a laptop's: ``docker version`` answers with the
environment's ``DOCKER_HOST`` or default socket) is used as it is and never stopped. Otherwise,
as root, the project starts Debian's ``dockerd`` (``hack/setup.sh`` installs docker.io) with a
configuration of its own:

* every container runs through the capability-dropping runc wrapper (``slirp_conformance.runc_wrapper``;
  ``default-runtime``), so ``--privileged`` works on hosts whose bounding set lacks a capability;
* the default bridge and every network docker picks itself are in 198.19.0.0/16 (RFC 2544
  benchmarking range: off the private ranges, never routed out; the reference lab uses
  198.18.0.0/24 in its own namespace);
* its socket, exec-root and pid file live in a run dir (``/run/slirp-conformance/docker``), its
  data-root (images: the kind node image survives restarts) and its log in the project's cache.

Who uses it holds a lease; the dockerd the project started stops when the last lease goes, and
takes with it what it made on the host (its bridges, its iptables chains, ip_forward as it
was, leftover mounts and shims). Use it as a context manager within one process::

    with docker_daemon.engine("kubevirt-images") as docker:   # start-if-needed
        subprocess.run(["docker", "build", ...], env=docker.env(), check=True)
    # stop-if-started: dockerd is stopped here if this started it and nobody else holds it

or across processes (``hack/cluster-up.sh`` keeps it for the cluster until cluster-down)::

    docker_daemon.acquire("kind-cluster:NAME", persistent=True)
    docker_daemon.release("kind-cluster:NAME")

While a lease of the project's dockerd is held through ``engine``, ``DOCKER_HOST`` is set in
``os.environ`` (so kind, docker and every tool run through ``slirp_conformance.cluster.runner`` reach it).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from slirp_conformance import file_lock, mounts, progress, waits
from slirp_conformance.cache_dirs import cache_root
from slirp_conformance.errors import SetupError

log = logging.getLogger("slirp.docker")

BRIDGE_IP = "198.19.0.1/24"  # docker0
ADDRESS_POOL = "198.19.128.0/17"  # networks docker picks a subnet for (/24 each)
RUNTIME_NAME = "slirp-runc"
PROBE_IMAGE = "slirp-conformance/probe:busybox"
BUSYBOX = "/bin/busybox"
SETUP_FIX = "run hack/setup.sh as root (it installs Debian's docker.io)"


def run_dir() -> Path:
    """Socket, exec-root, pid file and leases of the project's dockerd (``SLIRP_CONFORMANCE_RUN_DIR``)."""
    return Path(os.environ.get("SLIRP_CONFORMANCE_RUN_DIR") or "/run/slirp-conformance") / "docker"


def socket_path() -> Path:
    return run_dir() / "docker.sock"


def project_host() -> str:
    return f"unix://{socket_path()}"


def state_dir() -> Path:
    """data-root and the daemon's log: kept between runs (the images are the warm cache)."""
    return cache_root() / "docker"


def log_path() -> Path:
    return state_dir() / "dockerd.log"


@dataclass(frozen=True)
class Engine:
    """A Docker engine that answers. ``host`` is None for the environment's own Docker."""

    host: str | None
    server_version: str
    project_started: bool  # the project's dockerd (stopped when its last lease goes)

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """An environment for subprocesses that reaches this engine."""
        env = dict(os.environ if base is None else base)
        if self.host:
            env["DOCKER_HOST"] = self.host
        return env

    def docker(self, *args: str) -> list[str]:
        """``docker`` argv aimed at this engine."""
        return ["docker", *(["-H", self.host] if self.host else []), *args]

    def probe(self, *args: str) -> subprocess.CompletedProcess[str]:
        """A quick ``docker`` query on this engine (the tool-probe budget), its output as text."""
        return subprocess.run(
            self.docker(*args), capture_output=True, text=True, timeout=waits.timeout("tool-probe"), env=self.env()
        )

    def has_image(self, ref: str) -> bool:
        """Whether the image ``ref`` is in this engine (no registry is ever asked)."""
        return self.probe("image", "inspect", "--format", "{{.Id}}", ref).returncode == 0


# -- probes -------------------------------------------------------------------------------------


def server_version(host: str | None) -> str | None:
    """The engine's version when ``docker version`` answers through ``host`` (None: the environment's)."""
    if shutil.which("docker") is None:
        return None
    argv = ["docker", *(["-H", host] if host else []), "version", "--format", "{{.Server.Version}}"]
    try:
        r = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=waits.timeout("tool-probe"),
            env={k: v for k, v in os.environ.items() if not (host and k == "DOCKER_HOST")},
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    version = r.stdout.strip()
    return version if r.returncode == 0 and version and version != "<no value>" else None


def _environment_is_ours() -> bool:
    return os.environ.get("DOCKER_HOST") == project_host()


# -- leases -------------------------------------------------------------------------------------


def _start_time(pid: int) -> str | None:
    """The process's start time (its identity beside the pid); None once it has exited."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)  # our own child (the dockerd this process started): reap it
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] in ("Z", "X") else fields[19]


def _lease_file(holder: str) -> Path:
    return run_dir() / "leases" / re.sub(r"[^A-Za-z0-9_.-]", "_", holder)


def _write_lease(holder: str, persistent: bool) -> None:
    lease = {
        "holder": holder,
        "pid": None if persistent else os.getpid(),
        "start_time": None if persistent else _start_time(os.getpid()),
    }
    path = _lease_file(holder)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(lease))


def _lease_alive(path: Path) -> bool:
    try:
        lease = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    if lease.get("pid") is None:
        return True  # persistent: until released (cluster-down)
    return _start_time(int(lease["pid"])) == lease.get("start_time")


def live_leases() -> list[str]:
    """Holders of the project's dockerd now (dead processes' leases are swept)."""
    folder = run_dir() / "leases"
    holders = []
    for path in sorted(folder.glob("*")) if folder.is_dir() else ():
        if _lease_alive(path):
            holders.append(json.loads(path.read_text())["holder"])
        else:
            path.unlink(missing_ok=True)
    return holders


def _locked() -> contextlib.AbstractContextManager[None]:
    """One start/stop/lease change at a time on this machine; bounded wait."""
    return file_lock.held(
        run_dir().parent / "docker.lock",
        "another process starting or stopping the project's dockerd",
        waits.timeout("dockerd-start") + waits.timeout("dockerd-stop"),
    )


# -- public API ---------------------------------------------------------------------------------


def acquire(holder: str, *, persistent: bool = False) -> Engine:
    """A Docker engine that answers: the environment's, else the project's dockerd (started if needed).

    With the project's dockerd, ``holder`` takes a lease: a process lease ends with the process, a
    ``persistent`` one only with ``release(holder)``. SetupError (one line, the fix) when no engine
    answers and none can be started here.
    """
    if not _environment_is_ours():
        version = server_version(None)
        if version:
            log.info("using the Docker engine the environment points at (server %s)", version)
            return Engine(None, version, project_started=False)
    with _locked():
        version = server_version(project_host())
        if version is None:
            _start()
            version = server_version(project_host())
            if version is None:
                raise SetupError(
                    f"the project's dockerd started but does not answer on {socket_path()}; see {log_path()}"
                )
        _write_lease(holder, persistent)
    return Engine(project_host(), version, project_started=True)


def release(holder: str) -> bool:
    """Drop ``holder``'s lease; stop the project's dockerd when it started it and no lease is left.
    True when dockerd was stopped."""
    if not (run_dir() / "started.json").exists() and not _lease_file(holder).exists():
        return False
    with _locked():
        _lease_file(holder).unlink(missing_ok=True)
        left = live_leases()
        if left or not (run_dir() / "started.json").exists():
            if left:
                log.info("the project's dockerd stays up for %s", ", ".join(left))
            return False
        _stop()
        return True


@contextlib.contextmanager
def engine(purpose: str = "session") -> Iterator[Engine]:
    """``with engine("why") as docker:`` start-if-needed; on exit stop-if-started (and unused).

    ``DOCKER_HOST`` points at the project's dockerd inside the block, as it was after it.
    """
    holder = f"{purpose}:{os.getpid()}:{secrets.token_hex(3)}"
    found = acquire(holder)
    saved = os.environ.get("DOCKER_HOST")
    if found.host:
        os.environ["DOCKER_HOST"] = found.host
    try:
        yield found
    finally:
        if found.host:
            if saved is None:
                os.environ.pop("DOCKER_HOST", None)
            else:
                os.environ["DOCKER_HOST"] = saved
            release(holder)


def unusable_reason() -> str | None:
    """Why no Docker engine can be had here (None: one answers, or the project can start its own)."""
    if _environment_is_ours() or server_version(None) or server_version(project_host()):
        return None
    try:
        _check_can_start()
    except SetupError as e:
        return str(e)
    return None


def check_privileged(found: Engine, *, runtime: str | None = None) -> None:
    """A privileged container starts on ``found``; SetupError naming the fix otherwise (kind needs it).

    ``runtime``: run the probe with that runtime instead of the engine's default (self-tests)."""
    if found.project_started:
        fix = f"the project's dockerd should run it through its runc wrapper: see {log_path()}"
    else:
        fix = (
            "that Docker engine cannot give containers every capability (on hosts whose bounding set lacks "
            "one, e.g. CAP_SYS_RESOURCE); register the project's runc wrapper (src/slirp_conformance/runc_wrapper.py, "
            "hack/runc-wrapper) as its default-runtime in daemon.json, or stop it so the project starts its own "
            "dockerd"
        )
    _ensure_probe_image(found)
    argv = found.docker(
        "run",
        "--rm",
        "--privileged",
        "--network",
        "none",
        *(["--runtime", runtime] if runtime else []),
        PROBE_IMAGE,
        "/bin/true",
    )
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=waits.timeout("docker-probe"), env=found.env())
    except subprocess.TimeoutExpired:
        raise SetupError(
            f"`{shlex.join(argv)}` did not finish within {waits.timeout('docker-probe'):.0f} s; {fix}"
        ) from None
    if r.returncode != 0:
        reason = " ".join(r.stderr.split())[-300:]
        raise SetupError(f"Docker cannot run privileged containers ({reason}); {fix}")


def _ensure_probe_image(found: Engine) -> None:
    """A one-binary busybox image (no registry here: imported from a tarball)."""
    if found.has_image(PROBE_IMAGE):
        return
    if not os.path.exists(BUSYBOX):
        raise SetupError(f"{BUSYBOX} is missing (Debian's busybox-static): run hack/setup.sh")
    with tempfile.TemporaryDirectory(prefix="slirp-probe-") as tmp:
        archive = Path(tmp) / "probe.tar"
        with tarfile.open(archive, "w") as tar:
            tar.add(BUSYBOX, arcname="bin/busybox")
            link = tarfile.TarInfo("bin/true")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(link)
        with open(archive, "rb") as data:
            r = subprocess.run(
                found.docker("import", "-", PROBE_IMAGE),
                stdin=data,
                capture_output=True,
                text=True,
                timeout=waits.timeout("docker-probe"),
                env=found.env(),
            )
    if r.returncode != 0:
        raise SetupError(
            f"`docker import` of the probe image failed: {r.stderr.strip()[-300:]}; "
            f"check the Docker engine ({log_path()})"
        )


# -- start and stop (under the lock) ------------------------------------------------------------


def _started() -> dict | None:
    try:
        return json.loads((run_dir() / "started.json").read_text())
    except (OSError, ValueError):
        return None


def _check_can_start() -> str:
    dockerd = shutil.which("dockerd")
    if os.geteuid() != 0:
        raise SetupError(
            "no Docker engine answers, and starting the project's own dockerd needs root: run as root "
            "(or with sudo), or start Docker and make `docker version` work for this user"
        )
    if dockerd is None:
        raise SetupError(f"no Docker engine answers and dockerd is not installed; {SETUP_FIX}")
    if shutil.which("docker") is None:
        raise SetupError(f"the docker CLI is missing; {SETUP_FIX}")
    for folder, variable in ((state_dir(), "SLIRP_CONFORMANCE_CACHE"), (run_dir(), "SLIRP_CONFORMANCE_RUN_DIR")):
        check_writable(folder, variable)
    return dockerd


def check_writable(folder: Path, variable: str) -> None:
    """``folder`` can be made and written (probed at its nearest existing ancestor, leaving nothing)."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        if not existing.is_dir():
            raise NotADirectoryError(20, "not a directory")
        tempfile.NamedTemporaryFile(dir=existing, prefix=".slirp-write-probe-").close()
    except OSError as e:
        raise SetupError(
            f"{folder} is not writable ({existing}: {e.strerror}): set {variable} to a writable directory"
        ) from None


def _config(wrapper: Path) -> dict:
    return {
        "hosts": [project_host()],
        "data-root": str(state_dir() / "data-root"),
        "exec-root": str(run_dir() / "exec"),
        "pidfile": str(run_dir() / "dockerd.pid"),
        "bip": BRIDGE_IP,
        "default-address-pools": [{"base": ADDRESS_POOL, "size": 24}],
        "runtimes": {RUNTIME_NAME: {"path": str(wrapper)}},
        "default-runtime": RUNTIME_NAME,
        "storage-driver": "overlay2",
        "log-driver": "json-file",
        "log-opts": {"max-size": "10m", "max-file": "2"},
        "ipv6": False,
        # No ip_forward (and so no FORWARD policy DROP) on the host: kind nodes talk over their
        # bridge, published ports go through docker-proxy, and nothing leaves this machine.
        "ip-forward": False,
        "live-restore": False,
        "features": {"buildkit": False},
    }


def _host_network_state() -> dict:
    return {
        "links": sorted(_links()),
        "ip_forward": _read("/proc/sys/net/ipv4/ip_forward"),
        "forward_policy": _forward_policy(),
        "docker_chains": sorted(_docker_chains()),
    }


def _forward_policy() -> str | None:
    """The filter FORWARD chain's policy (dockerd sets DROP when it turns ip_forward on)."""
    for line in _iptables_save("filter"):
        if line.startswith(":FORWARD "):
            return line.split()[1]
    return None


def fresh_log() -> Path:
    """The daemon's log for this start: the one before it kept as ``dockerd.log.1``, and its folder
    made on a machine's first start (the data-root is made by dockerd itself, the log is ours)."""
    logfile = log_path()
    logfile.parent.mkdir(parents=True, exist_ok=True)  # check_writable has vouched for it
    if logfile.exists():
        os.replace(logfile, logfile.with_suffix(".log.1"))
    return logfile


def _start() -> None:
    dockerd = _check_can_start()
    stale = _started()
    if stale:  # a dockerd of ours that died (or a stop that was cut short): clean up after it first
        log.warning("the project's dockerd of an earlier run is gone; cleaning up after it")
        _stop()
    from slirp_conformance import runc_wrapper

    wrapper = runc_wrapper.binary()
    folder = run_dir()
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "daemon.json"
    config.write_text(json.dumps(_config(wrapper), indent=2))
    before = _host_network_state()
    logfile = fresh_log()
    with progress.phase(f"starting the project's dockerd (socket {socket_path()}, log {logfile})"):
        with open(logfile, "ab") as out:
            proc = subprocess.Popen(
                [dockerd, "--config-file", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
            )
        started = {"pid": proc.pid, "start_time": _start_time(proc.pid), "config": str(config), **before}
        (folder / "started.json").write_text(json.dumps(started, indent=2))

        def answer() -> str | None:
            if proc.poll() is not None:
                raise SetupError(
                    f"dockerd exited with {proc.returncode} while starting: {_tail(logfile)} (full log: {logfile})"
                )
            return server_version(project_host())

        try:
            waits.wait_for(
                f"the project's dockerd to answer on {socket_path()}",
                answer,
                waits.timeout("dockerd-start"),
                describe=lambda _: f"no answer yet; log {logfile}",
            )
        except BaseException:
            _stop()
            raise


def _stop() -> None:
    """Stop the project's dockerd (recorded in started.json) and undo what it did to the host."""
    started = _started() or {}
    folder = run_dir()
    pid = started.get("pid")
    if pid and _start_time(pid) == started.get("start_time"):
        with progress.phase(f"stopping the project's dockerd (pid {pid})"):
            os.kill(pid, signal.SIGTERM)
            try:
                waits.wait_for(
                    f"dockerd (pid {pid}) to exit after SIGTERM",
                    lambda: _start_time(pid) is None,
                    waits.timeout("dockerd-stop"),
                )
            except waits.WaitTimeout:
                log.warning("dockerd (pid %s) did not exit within its budget: killing it", pid)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                waits.wait_for(f"dockerd (pid {pid}) to exit after SIGKILL", lambda: _start_time(pid) is None, 10)
    exec_root, data_root = folder / "exec", state_dir() / "data-root"
    _kill_leftovers((str(exec_root), str(data_root)))
    mounts.unmount_under(exec_root, data_root)
    _undo_network(started)
    if started.get("ip_forward") and _read("/proc/sys/net/ipv4/ip_forward") != started["ip_forward"]:
        Path("/proc/sys/net/ipv4/ip_forward").write_text(started["ip_forward"])
    if started.get("forward_policy") and _forward_policy() not in (None, started["forward_policy"]):
        subprocess.run(
            ["iptables", "-t", "filter", "-P", "FORWARD", started["forward_policy"]], capture_output=True, timeout=30
        )
    for child in list(folder.iterdir()) if folder.is_dir() else ():
        if child.name != "leases":
            shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        (folder / "leases").rmdir()
        folder.rmdir()


def processes_of(paths: tuple[str, ...]) -> list[int]:
    """Pids whose command line names one of ``paths`` (dockerd's containerd, shims, docker-proxy)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(p in cmdline for p in paths):
            found.append(int(entry.name))
    return found


def _kill_leftovers(paths: tuple[str, ...]) -> None:
    pids = processes_of(paths)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    if pids:
        log.warning("killed processes the project's dockerd left: %s", pids)
        waits.wait_for(
            "the project's dockerd's leftover processes to exit",
            lambda: not processes_of(paths),
            10,
            describe=lambda _: str(processes_of(paths)),
        )


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def _links() -> set[str]:
    return {p.name for p in Path("/sys/class/net").iterdir()}


def _docker_chains() -> set[str]:
    chains = set()
    for table in ("filter", "nat"):
        for line in _iptables_save(table):
            if line.startswith(":DOCKER"):
                chains.add(f"{table}/{line[1:].split()[0]}")
    return chains


def _iptables_save(table: str) -> list[str]:
    if shutil.which("iptables-save") is None:
        return []
    r = subprocess.run(["iptables-save", "-t", table], capture_output=True, text=True, timeout=30)
    return r.stdout.splitlines() if r.returncode == 0 else []


def _undo_network(started: dict) -> None:
    """Bridges the dockerd made, and its iptables chains and rules when there were none before it."""
    before_links = set(started.get("links") or _links())
    for name in sorted(_links() - before_links):
        if name == "docker0" or name.startswith("br-"):
            subprocess.run(["ip", "link", "delete", name], capture_output=True, timeout=30)
    if started.get("docker_chains"):
        return  # another dockerd's chains were there before ours: leave them all
    bridge = str(ipaddress.ip_interface(BRIDGE_IP).network)
    for table in ("filter", "nat"):
        lines = _iptables_save(table)
        for line in lines:
            if not line.startswith("-A ") or line.split()[1].startswith("DOCKER"):
                continue
            if "DOCKER" in line or "docker0" in line or bridge in line or re.search(r"\bbr-[0-9a-f]{12}\b", line):
                args = shlex.split(line)[2:]
                subprocess.run(["iptables", "-t", table, "-D", line.split()[1], *args], capture_output=True, timeout=30)
        chains = [line[1:].split()[0] for line in lines if line.startswith(":DOCKER")]
        for chain in chains:
            subprocess.run(["iptables", "-t", table, "-F", chain], capture_output=True, timeout=30)
        for chain in chains:
            subprocess.run(["iptables", "-t", table, "-X", chain], capture_output=True, timeout=30)


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text[-lines:])
