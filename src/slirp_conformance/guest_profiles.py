"""How to talk to a guest OS: login, and the commands that read its network state.

The checks never spell a guest command themselves: they ask the profile, so the same check
runs on the busybox reference guest and on KubeVirt's Fedora test image.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import shlex
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field

from slirp_conformance import waits
from slirp_conformance.console import Credentials


@dataclass(frozen=True)
class Lease:
    """A DHCP lease as the guest's DHCP client recorded it."""

    address: str | None
    prefix: int | None
    router: str | None
    dns: tuple[str, ...]
    search: tuple[str, ...]
    lease_seconds: int | None
    server_id: str | None
    raw: dict = field(default_factory=dict)


def _ints(value: str | None) -> int | None:
    return int(value) if value and value.strip().isdigit() else None


def _mask_to_prefix(value: str | None) -> int | None:
    if not value:
        return None
    if value.isdigit():
        return int(value)
    return ipaddress.IPv4Network(f"0.0.0.0/{value}").prefixlen


def parse_udhcpc_lease(text: str) -> Lease | None:
    raw = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    if not raw.get("ip"):
        return None
    return Lease(
        address=raw.get("ip"),
        prefix=_mask_to_prefix(raw.get("mask")),
        router=(raw.get("router") or "").split()[0] if raw.get("router") else None,
        dns=tuple(raw.get("dns", "").split()),
        search=tuple(raw.get("search", "").split()),
        lease_seconds=_ints(raw.get("lease")),
        server_id=raw.get("serverid") or None,
        raw=raw,
    )


def parse_nmcli_dhcp4(text: str) -> Lease | None:
    """``nmcli -t -f DHCP4 device show eth0``: lines ``DHCP4.OPTION[n]:key = value``."""
    raw = {}
    for line in text.splitlines():
        m = re.match(r"DHCP4\.OPTION\[\d+\]:(\S+) = (.*)$", line.strip())
        if m:
            raw[m.group(1)] = m.group(2).strip()
    if not raw.get("ip_address"):
        return None
    return Lease(
        address=raw.get("ip_address"),
        prefix=_mask_to_prefix(raw.get("subnet_mask")),
        router=(raw.get("routers") or "").split()[0] if raw.get("routers") else None,
        dns=tuple(raw.get("domain_name_servers", "").split()),
        search=tuple(raw.get("domain_search", "").split()),
        lease_seconds=_ints(raw.get("dhcp_lease_time")),
        server_id=raw.get("dhcp_server_identifier"),
        raw=raw,
    )


def parse_nslookup(text: str) -> list[str]:
    """busybox nslookup: the ``Address:`` lines that follow a ``Name:`` line."""
    answers, after_name = [], False
    for line in text.splitlines():
        if line.startswith("Name:"):
            after_name = True
        elif after_name and line.startswith("Address"):
            answers.append(line.split(":", 1)[1].strip().split()[0])
    return answers


def parse_ipv4_lines(text: str) -> list[str]:
    """One IPv4 address per line; anything else (a boot message on the console) is not an answer."""
    return [line.strip() for line in text.splitlines() if re.fullmatch(r"\d{1,3}(\.\d{1,3}){3}", line.strip())]


def _t(seconds: int) -> int:
    """A guest-side ``timeout N``: scaled by --timeout-scale like every other bound."""
    return waits.guest_seconds(seconds)


def process_running(pid: str) -> str:
    """A guest shell test, true while process ``pid`` (a number or ``$p``) runs: it exists and is
    not a zombie. ``kill -0`` also succeeds on a zombie, a process that has ended but that its
    parent (the console's shell, for a job it started) has not reaped yet. The state is the field
    after the command name's last closing parenthesis in /proc/PID/stat (proc(5)). Read by the
    shell itself (no process per look: the guest's waits look every 20 ms); one brace group, so
    ``! <it>`` negates all of it."""
    return (
        f"{{ {{ read -r slirp_st </proc/{pid}/stat; }} 2>/dev/null && "
        'case "${slirp_st##*)}" in " Z"*) false;; *) true;; esac; }'
    )


def wait_while(condition: str, seconds: float) -> str:
    """A guest shell loop that looks every 20 ms and ends once ``condition`` fails, or after
    ``seconds`` at the latest (a bound the caller's own deadline covers)."""
    return f"n=0; while {condition} && [ $n -lt {round(seconds * 50)} ]; do sleep 0.02; n=$((n+1)); done"


def python3_command(program: str, *args: object) -> str:
    r"""``python3 -c`` running a multi-line ``program`` from ONE shell line (console commands are
    single lines): the newlines travel as ``\n`` escapes inside a triple-quoted ``exec``
    argument, the whole in single quotes. So the program may hold no single quote, no backslash
    and no triple quote."""
    src = textwrap.dedent(program).strip()
    if "'" in src or "\\" in src or '"""' in src:
        raise ValueError("a guest python3 program must not contain ', \\ or triple quotes")
    line = 'exec("""' + src.replace("\n", "\\n") + '""")'
    return " ".join(["python3", "-c", f"'{line}'", *(shlex.quote(str(a)) for a in args)])


# Each program prints what the checks parse on stdout; failures end in a traceback on stderr.
_PY_TCP_ECHO = """
    import socket,sys
    s=socket.create_connection((sys.argv[1],int(sys.argv[2])),timeout=10)
    s.sendall(sys.argv[3].encode()+bytes([10]))
    s.shutdown(socket.SHUT_WR)
    while True:
        d=s.recv(65536)
        if not d:
            break
        sys.stdout.buffer.write(d)
"""

# Three tries, as a resolver would: a lost datagram is UDP, not a broken slirp.
_PY_UDP_ECHO = """
    import socket,sys
    s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)
    s.settimeout(2)
    for attempt in range(3):
        s.sendto(sys.argv[3].encode()+bytes([10]),(sys.argv[1],int(sys.argv[2])))
        try:
            sys.stdout.buffer.write(s.recv(65536))
            break
        except socket.timeout:
            pass
    else:
        sys.exit("no UDP reply from %s:%s after 3 tries" % (sys.argv[1],sys.argv[2]))
"""

# 1 MiB of urandom repeated with a counter before each copy (see GuestProfile.transfer_command),
# sent while the echo is read back; prints both MD5 sums, then sent and received sizes.
_PY_TRANSFER = """
    import hashlib,os,socket,sys,threading
    host,port,size=sys.argv[1],int(sys.argv[2]),int(sys.argv[3])
    mib=1<<20
    rnd=os.urandom(min(size,mib))
    data=b"".join(b"%08d" % i + rnd for i in range(1,max(1,size//mib)+1))
    s=socket.create_connection((host,port),timeout=30)
    def send():
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
    sender=threading.Thread(target=send)
    sender.start()
    back=hashlib.md5(usedforsecurity=False)
    got=0
    while True:
        d=s.recv(1<<16)
        if not d:
            break
        back.update(d)
        got+=len(d)
    sender.join()
    print(hashlib.md5(data,usedforsecurity=False).hexdigest()+"  sent")
    print(back.hexdigest()+"  received")
    print(len(data))
    print(got)
"""

# A DNS A query to one server over UDP with the standard library (no dig in the Fedora image).
_PY_DNS_QUERY = """
    import socket,struct,sys
    name,server,port=sys.argv[1],sys.argv[2],int(sys.argv[3])
    q=struct.pack(">HHHHHH",0x5c1a,0x0100,1,0,0,0)+b"".join(bytes([len(p)])+p.encode() for p in name.split("."))
    q+=bytes(1)+struct.pack(">HH",1,1)
    s=socket.socket(socket.AF_INET6 if ":" in server else socket.AF_INET,socket.SOCK_DGRAM)
    s.settimeout(3)
    for attempt in range(3):
        s.sendto(q,(server,port))
        try:
            r=s.recv(1500)
            break
        except socket.timeout:
            pass
    else:
        sys.exit("no DNS reply from %s:%d after 3 tries" % (server,port))
    an=struct.unpack(">H",r[6:8])[0]
    i=12
    while r[i]:
        i+=r[i]+1
    i+=5
    for _ in range(an):
        i+=2 if r[i]&0xc0==0xc0 else r.index(bytes(1),i)+1-i
        t,c,ttl,l=struct.unpack(">HHIH",r[i:i+10])
        i+=10
        if t==1:
            print(socket.inet_ntoa(r[i:i+4]))
        i+=l
"""

# A UDP service: every datagram's payload appended to a file (argv[2]), whoever sent it.
_PY_UDP_SERVE = """
    import socket,sys
    s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)
    s.bind(("0.0.0.0",int(sys.argv[1])))
    while True:
        d,a=s.recvfrom(65536)
        with open(sys.argv[2],"ab") as f:
            f.write(d)
"""

_PY_UDP_SEND = """
    import socket,sys
    s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)
    s.sendto(sys.argv[3].encode()+bytes([10]),(sys.argv[1],int(sys.argv[2])))
"""

# Connect and print what the server sends until it closes (no request: the server speaks first).
_PY_TCP_READ = """
    import socket,sys
    s=socket.create_connection((sys.argv[1],int(sys.argv[2])),timeout=10)
    while True:
        d=s.recv(65536)
        if not d:
            break
        sys.stdout.buffer.write(d)
"""

_PY_HTTP_GET = """
    import sys,urllib.request
    sys.stdout.buffer.write(urllib.request.urlopen(sys.argv[1],timeout=10).read())
"""


@dataclass(frozen=True)
class NetcatTools:
    """TCP/UDP/DNS spoken with OpenBSD netcat and busybox applets (the busybox reference guest,
    which has no python3)."""

    nc: str = "nc.openbsd"  # for UDP and the transfer; busybox's sh runs its own nc applet for plain `nc`
    # busybox's nc applet (TCP only): it ends its sending side when its input ends and prints what
    # comes back until the peer closes, as OpenBSD nc's -N does. Under TCG it starts and ends in 15
    # ms against 30 ms for OpenBSD nc (its dynamic libraries); its reads and writes are 1 KiB, so
    # the 8 MiB transfer keeps OpenBSD nc (16 KiB).
    tcp_nc: str = "busybox nc"

    def tcp_echo(self, host: str, port: int, payload: str) -> str:
        return f"printf '%s\\n' {shlex.quote(payload)} | timeout {_t(15)} {self.tcp_nc} {host} {port}"

    def udp_echo(self, host: str, port: int, payload: str) -> str:
        """OpenBSD nc reads the reply, then waits out its idle ``-w`` (whole seconds, at least one)
        before it ends: the reply is read from nc's output as soon as it lands there, and nc is
        stopped then (or when it ends by itself, or after its bound: no reply). Its files are named
        after the payload: the console's echo and the SSH one may run at once (ahead.py), and with
        one pair of files they read each other's replies (seen: a check got the other's token)."""
        bound = _t(5)
        out = f"/tmp/slirp-udp-echo-{hashlib.sha256(payload.encode()).hexdigest()[:12]}"
        return (
            f"printf '%s\\n' {shlex.quote(payload)} > {out}.in && : > {out}.out && "
            f"{{ {self.nc} -u -w {bound} {host} {port} < {out}.in > {out}.out & "
            f"p=$!; {wait_while(f'[ ! -s {out}.out ] && ' + process_running('$p'), bound)}; "
            f"kill $p 2>/dev/null; wait $p; "
            f"cat {out}.out; rm -f {out}.in {out}.out; }}"
        )

    def transfer(self, host: str, port: int, size: int, budget: int) -> str:
        mib = 1 << 20
        copies = range(1, max(1, size // mib) + 1)
        # One read of urandom (dd; busybox head reads it in small pieces: 0.14 s against 0.05 s for
        # 1 MiB under TCG), and one cat of the counters' files and the copies (one per copy: 0.11 s
        # against 0.07 s). A short read would make a payload short of ``size``: the check says so.
        counters = " && ".join(f"printf '%08d' {i} > /tmp/slirp-c{i}" for i in copies)
        pieces = " ".join(f"/tmp/slirp-c{i} /tmp/slirp-rnd" for i in copies)
        return (
            f"dd if=/dev/urandom of=/tmp/slirp-rnd bs={min(size, mib)} count=1 iflag=fullblock 2>/dev/null && "
            f"{counters} && cat {pieces} > /tmp/slirp-out && "
            f"timeout {budget} {self.nc} -N -w 30 {host} {port} < /tmp/slirp-out > /tmp/slirp-back; "
            # The sizes from stat: busybox `wc -c` reads every byte (0.3 s per 8 MiB under TCG).
            f"md5sum /tmp/slirp-out /tmp/slirp-back; stat -c %s /tmp/slirp-out /tmp/slirp-back; "
            f"rm -f /tmp/slirp-rnd /tmp/slirp-out /tmp/slirp-back /tmp/slirp-c[0-9]*"
        )

    def dns_lookup(self, name: str, server: str) -> str:
        return f"timeout {_t(10)} busybox nslookup {shlex.quote(name)} {server}"

    def parse_dns(self, text: str) -> list[str]:
        return parse_nslookup(text)

    def http_serve(self, port: int, root: str, pidfile: str) -> str:
        return f"busybox httpd -f -p {port} -h {root} >/dev/null 2>&1 & echo $! > {pidfile}"

    def tcp_read(self, host: str, port: int) -> str:
        # stdin from /dev/null: nothing to send (OpenBSD nc's -d), the sending side ends at once
        return f"timeout {_t(10)} {self.tcp_nc} {host} {port} </dev/null"

    def udp_serve(self, port: int, received: str, pidfile: str) -> str:
        # -k with -u: an unconnected socket that takes datagrams from every sender; stdin from
        # /dev/null, or a backgrounded nc would stop on the terminal (SIGTTIN).
        return f"{self.nc} -k -u -l {port} </dev/null >{received} 2>/dev/null & echo $! > {pidfile}"

    def udp_send(self, host: str, port: int, payload: str) -> str:
        # -q 0: quit once stdin has ended and its datagram has gone. Not -w 0: that polls once
        # with no wait and quits when printf, the other end of the pipe, has not written yet, and
        # the datagram never leaves (measured: 0 of 40 sent with printf 50 ms late; -q 0: 40 of 40).
        return f"printf '%s\\n' {shlex.quote(payload)} | timeout {_t(5)} {self.nc} -u -q 0 {host} {port}"

    def http_get(self, url: str) -> str:
        return f"timeout {_t(10)} busybox wget -q -O - {shlex.quote(url)}"


@dataclass(frozen=True)
class Python3Tools:
    """TCP/UDP/DNS/HTTP spoken with python3's standard library: the same on every flavour of the
    Fedora test image, whichever nc it ships (nmap-ncat, BusyBox nc or OpenBSD nc, none of
    which agree on -N, -q or UDP end-of-input)."""

    def tcp_echo(self, host: str, port: int, payload: str) -> str:
        return f"timeout {_t(15)} " + python3_command(_PY_TCP_ECHO, host, port, payload)

    def udp_echo(self, host: str, port: int, payload: str) -> str:
        return f"timeout {_t(15)} " + python3_command(_PY_UDP_ECHO, host, port, payload)

    def transfer(self, host: str, port: int, size: int, budget: int) -> str:
        return f"timeout {budget} " + python3_command(_PY_TRANSFER, host, port, size)

    def dns_lookup(self, name: str, server: str, port: int = 53) -> str:
        return f"timeout {_t(15)} " + python3_command(_PY_DNS_QUERY, name, server, port)

    def parse_dns(self, text: str) -> list[str]:
        return parse_ipv4_lines(text)

    def http_serve(self, port: int, root: str, pidfile: str) -> str:
        # $! is the server itself: nothing stands between the shell and python3.
        return f"python3 -m http.server {port} --directory {root} >/dev/null 2>&1 & echo $! > {pidfile}"

    def http_get(self, url: str) -> str:
        return f"timeout {_t(15)} " + python3_command(_PY_HTTP_GET, url)

    def tcp_read(self, host: str, port: int) -> str:
        return f"timeout {_t(15)} " + python3_command(_PY_TCP_READ, host, port)

    def udp_serve(self, port: int, received: str, pidfile: str) -> str:
        return f"{python3_command(_PY_UDP_SERVE, port, received)} </dev/null >/dev/null 2>&1 & echo $! > {pidfile}"

    def udp_send(self, host: str, port: int, payload: str) -> str:
        return f"timeout {_t(10)} " + python3_command(_PY_UDP_SEND, host, port, payload)


@dataclass(frozen=True)
class GuestProfile:
    name: str
    credentials: Credentials | None
    ssh_user: str
    interface: str
    host_key_command: str  # prints one OpenSSH public key line
    lease_command: str
    parse_lease: Callable[[str], Lease | None]
    resolver_config_command: str  # prints a resolv.conf holding the servers the guest really asks
    tools: NetcatTools | Python3Tools
    # prints the DHCP client's last words (read only when the guest holds no lease: why not)
    dhcp_client_log_command: str | None = None
    sudo: str = ""  # prefix for root-only commands over SSH
    # Run once after the console login: returns when the boot's jobs that write to the console
    # are over (cloud-init's final stage prints there, into the output of the suite's commands).
    settle_command: str | None = None
    # busybox ping waits out its -W after ICMP errors; iputils ping ends on them (ping_command)
    ping_ignores_icmp_errors: bool = False
    # Seconds between echo requests: 0.2 is iputils' shortest for a user who is not root; busybox
    # ping as root has no floor. What a probe proves is the requests that left and their answers,
    # not their pace.
    ping_interval: float = 0.2
    # The longest line the guest's shell takes on the serial console as the suite uses it, echo off
    # (None: no limit met). busybox ash then reads the line through the kernel's canonical mode,
    # whose buffer holds 4095 characters and the newline (measured: a 3250-character line ran, one
    # of 4150 never ended). With echo on, its line editor kept 1022 (CONFIG_FEATURE_EDITING_MAX_LEN
    # 1024) and lost the rest: a line of 1023 ended in a syntax error and a wait for a marker that
    # never came.
    console_line_limit: int | None = None

    def nic_driver_command(self) -> str:
        return f"basename $(readlink /sys/class/net/{self.interface}/device/driver)"

    def nic_pci_command(self) -> str:
        """Every Ethernet controller on the guest's PCI bus (class 0x0200), whether or not a driver
        took it: ``vendor:device driver`` per line (``-`` when no driver is bound). The files are
        read by the shell itself (``read``: no process per file; a warm busybox run measured 0.12 -> 0.03 s)."""
        return (
            "for d in /sys/bus/pci/devices/*; do read c <$d/class; case $c in 0x0200*) "
            'read v <$d/vendor; read p <$d/device; r=$(readlink $d/driver); echo "${v#0x}:${p#0x} ${r##*/}";; '
            "esac; done"
        )

    def mac_command(self) -> str:
        return f"cat /sys/class/net/{self.interface}/address"

    def address_command(self) -> str:
        return f"ip -4 -o addr show dev {self.interface}"

    def route_command(self) -> str:
        return "ip -4 route show default"

    def address6_command(self) -> str:
        return f"ip -6 -o addr show dev {self.interface}"

    def route6_command(self) -> str:
        return "ip -6 route show"

    def ping_command(self, host: str, count: int = 3) -> str:
        """``count`` echo requests ``ping_interval`` apart, then at most a second's wait for replies.

        Where slirp cannot forward an echo request (no ping socket for QEMU's gid), libslirp
        sends it as a UDP datagram to the host's port 7 instead, and turns the port unreachable
        that comes back into an ICMP error for the guest (libslirp 4.7.0, Debian bookworm's:
        ``src/ip_icmp.c`` ``icmp_input`` L211-229; the UDP socket gets ``IP_RECVERR`` in
        ``src/udp.c`` ``udp_attach`` L322; ``src/socket.c`` ``sorecvfrom`` L573-581). An echo
        request answered by an error gets no reply. iputils ping ends once every request has its
        reply or its error; busybox ping ignores errors and waits out its second, so there the
        guest ends it (SIGINT: it prints its statistics) once the guest's ``InDestUnreachs`` has
        risen by ``count``, and otherwise at its bound. The peer's kernel rate-limits its port
        unreachables (6 at once, then one a second): without them the ping runs its course."""
        ping = f"ping -n -c {count} -i {self.ping_interval:g} -W 1 {shlex.quote(host)}"
        bound = self.ping_guest_bound(count)
        if not self.ping_ignores_icmp_errors:
            # busybox ping does not always honour -w without replies: bound it from outside.
            return f"timeout {bound} {ping}"
        # Short: it goes in one batch with the counters over busybox's console (console_line_limit).
        running = process_running("$sp")
        return (
            f"slirp_u() {{ {self.icmp_in_dest_unreachs_command()}; }}; s0=$(slirp_u); {ping} & sp=$!; "
            f"ss='its {bound} s bound'; n=0; while {running} && [ $n -lt {bound * 50} ]; do "
            f'[ -n "$s0" ] && [ $(slirp_u) -ge $((s0+{count})) ] && {{ ss="an ICMP error for each request"; break; }}; '
            f"sleep 0.02; n=$((n+1)); done; if {running}; then kill -INT $sp; else ss=; fi; wait $sp; sr=$?; "
            f'[ -n "$ss" ] && echo "slirp-conformance: ping stopped on $ss"; (exit $sr)'
        )

    def ping_guest_bound(self, count: int = 3) -> int:
        """Seconds the guest gives ``ping_command``: its ``timeout``, or the loop that watches
        busybox's ping (scaled like every bound)."""
        return _t(count + 4)

    def icmp_in_dest_unreachs_command(self) -> str:
        """The body of a shell function that prints the guest's ``InDestUnreachs`` (ICMP destination
        unreachable received) of /proc/net/snmp, its column found by name in the first ``Icmp:``
        line. Read by the shell itself (``read``, ``set``), as ``ping_command`` asks for it every
        20 ms: an awk per look cost each ICMP probe about 10 ms a look under TCG."""
        return (
            'slirp_h=; while read -r slirp_l; do case $slirp_l in Icmp:*) if [ -z "$slirp_h" ]; then slirp_h=$slirp_l; '
            "else set -- $slirp_l; for slirp_f in $slirp_h; do "
            '[ "$slirp_f" = InDestUnreachs ] && { echo "$1"; return; }; shift; done; fi;; esac; done </proc/net/snmp'
        )

    def icmp_counters_command(self) -> str:
        """Prints the NIC's transmitted-frame count, then the ``Icmp:`` lines of /proc/net/snmp
        (the kernel counts an echo request there only once it has a route and builds the packet)."""
        return f"cat /sys/class/net/{self.interface}/statistics/tx_packets; grep '^Icmp:' /proc/net/snmp"

    def udp6_counters_command(self) -> str:
        """Prints the guest's ``Udp6OutDatagrams`` and ``Icmp6InDestUnreachs`` lines of /proc/net/snmp6:
        its IPv6 datagrams sent, and the ICMPv6 destination unreachable errors it received."""
        return "grep -E '^(Udp6OutDatagrams|Icmp6InDestUnreachs)[[:space:]]' /proc/net/snmp6"

    def detached_job_command(self, command: str, output: str) -> str:
        """``command`` in the background, its output to the file ``output``, as a job that is not
        the console shell's child: a subshell the shell waits for starts it and exits (a double
        fork), so the job's end is nothing to the shell. busybox ash reads a line with the
        terminal's echo off (as the console runs it) through ``fgets``, which a SIGCHLD interrupts,
        and takes that for the end of its input: a job of the login shell that ended while the
        shell waited for a line logged the console out (measured 2026-12-07 on the reference guest:
        ``(sleep 2) &`` did; ``( (sleep 0.3) & )`` six times out of six did not; ``setsid sh -c``
        did once in CI, its own quick exit being the shell's child's)."""
        return f"( ({command}) </dev/null >{output} 2>&1 & )"

    def processes_with_argument_command(self, argument: str) -> str:
        """Prints the /proc/PID/cmdline of every guest process that has ``argument`` as one whole
        argument (NUL-separated in cmdline; no pgrep in the busybox guest). Its last character goes
        in a bracket expression, so the grep does not find its own command line."""
        head, last = argument[:-1], argument[-1]
        if last in "^\\":
            raise ValueError(f"argument {argument!r}: its last character cannot stand in a bracket expression")
        pattern = re.sub(r"([.\[\]*^$\\])", r"\\\1", head) + f"[{last}]"
        return f"grep -lsxz {shlex.quote(pattern)} /proc/[0-9]*/cmdline"

    def tcp_sockets_command(self, port: int) -> str:
        """The guest kernel's TCP sockets on local ``port`` with their queues (``ss -tni``: unacked,
        retransmits, last send/receive; busybox's netstat where there is no ss)."""
        return f"ss -tnio '( sport = :{port} )' 2>/dev/null || netstat -tn 2>/dev/null | grep ':{port} '"

    def route_get_command(self, host: str) -> str:
        return f"ip -4 route get {shlex.quote(host)}"

    def tcp_echo_command(self, host: str, port: int, payload: str) -> str:
        """Send ``payload`` and a newline, close the sending side, print what comes back."""
        return self.tools.tcp_echo(host, port, payload)

    def udp_echo_command(self, host: str, port: int, payload: str) -> str:
        """Send ``payload`` and a newline as one datagram, print the reply datagram."""
        return self.tools.udp_echo(host, port, payload)

    def transfer_command(self, host: str, port: int, size: int, budget: int) -> str:
        """Send ``size`` bytes to a TCP echo; print both MD5 sums, then sent and received sizes.

        The payload is 1 MiB of /dev/urandom repeated with a counter before each copy: random
        enough to catch corruption, and 8x cheaper to make than 8 MiB of urandom under TCG.
        """
        return self.tools.transfer(host, port, size, budget)

    def dns_command(self, name: str, server: str) -> str:
        """An A query for ``name`` sent to ``server`` itself (not through the guest's resolver)."""
        return self.tools.dns_lookup(name, server)

    def parse_dns(self, text: str) -> list[str]:
        return self.tools.parse_dns(text)

    def http_serve_command(self, port: int, root: str, pidfile: str) -> str:
        """Start an HTTP server for ``root`` in the background and write ITS pid to ``pidfile``."""
        return self.tools.http_serve(port, root, pidfile)

    def http_get_command(self, url: str) -> str:
        return self.tools.http_get(url)

    def tcp_read_command(self, host: str, port: int) -> str:
        """Connect to ``host``:``port`` (IPv4 or IPv6) and print what the server sends until it closes."""
        return self.tools.tcp_read(host, port)

    def udp_serve_command(self, port: int, received: str, pidfile: str) -> str:
        """Start a UDP service on ``port`` in the background that appends every datagram's payload
        to the file ``received``, and write ITS pid to ``pidfile``."""
        return self.tools.udp_serve(port, received, pidfile)

    def udp_send_command(self, host: str, port: int, payload: str) -> str:
        """Send ``payload`` and a newline as one datagram; wait for nothing."""
        return self.tools.udp_send(host, port, payload)


REFERENCE = GuestProfile(
    name="reference-busybox",
    credentials=None,  # filled per run: the reference target generates the console password
    ssh_user="root",
    interface="eth0",
    host_key_command="cat /etc/dropbear/dropbear_ed25519_host_key.pub",  # written at boot (guest_init.sh)
    lease_command="cat /run/udhcpc.lease",
    parse_lease=parse_udhcpc_lease,
    resolver_config_command="cat /etc/resolv.conf",
    tools=NetcatTools(),
    dhcp_client_log_command="tail -n 20 /run/udhcpc.log",  # guest_init.sh starts udhcpc with it
    ping_ignores_icmp_errors=True,
    # root (busybox: no floor). 0.02 s: each ICMP probe ends once its third error is in, 0.21-0.24 s
    # after it began, against 0.40-0.43 s at 0.1 (measured on the reference guest, 2026-12-07)
    ping_interval=0.02,
    console_line_limit=4095,
)

FEDORA = GuestProfile(
    name="fedora-with-test-tooling",
    credentials=Credentials("fedora", "fedora", become_root="sudo -i"),
    ssh_user="fedora",
    interface="eth0",
    host_key_command="cat /etc/ssh/ssh_host_ed25519_key.pub",
    lease_command="nmcli -t -f DHCP4 device show eth0",
    parse_lease=parse_nmcli_dhcp4,
    # systemd-resolved: /etc/resolv.conf names only its stub 127.0.0.53; the servers it
    # forwards to (the DHCP-provided ones) and the search list are in its own resolv.conf.
    resolver_config_command="cat /run/systemd/resolve/resolv.conf",
    tools=Python3Tools(),
    sudo="sudo ",
    dhcp_client_log_command="sudo -n journalctl -b -o cat --no-pager -u NetworkManager | grep -i dhcp | tail -n 20",
    # Until systemd's boot jobs are over, cloud-init's last stage (cloud-final) included. Not
    # `cloud-init status --wait`: that starts one more cloud-init Python process (about 4 s
    # under TCG) while cloud-init's own config and final stages need the CPU.
    settle_command="systemctl is-system-running --wait >/dev/null",
)

PROFILES = {p.name: p for p in (REFERENCE, FEDORA)}
OS_RELEASE_IDS = {"slirp-reference": REFERENCE, "fedora": FEDORA}  # /etc/os-release ID= -> profile


def profile_for_os_release(text: str) -> GuestProfile | None:
    m = re.search(r'^ID="?([^"\n]+)"?$', text, re.M)
    return OS_RELEASE_IDS.get(m.group(1)) if m else None
