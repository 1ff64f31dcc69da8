"""The ICMP check's premise: "no reply" counts only when the echo requests demonstrably left the
guest through its slirp NIC. Outputs below are what the busybox guest printed under the default
lab and under ``restrict=on`` (no route)."""

import re
from dataclasses import dataclass

import pytest

from slirp_conformance import waits
from slirp_conformance.checks import icmp
from slirp_conformance.guest_profiles import REFERENCE

SNMP_HEAD = (
    "Icmp: InMsgs InErrors InCsumErrors InDestUnreachs InTimeExcds InParmProbs InSrcQuenchs InRedirects "
    "InEchos InEchoReps InTimestamps InTimestampReps InAddrMasks InAddrMaskReps OutMsgs OutErrors "
    "OutRateLimitGlobal OutRateLimitHost OutDestUnreachs OutTimeExcds OutParmProbs OutSrcQuenchs "
    "OutRedirects OutEchos OutEchoReps OutTimestamps OutTimestampReps OutAddrMasks OutAddrMaskReps"
)


def counters(tx: int, out_echos: int, unreachables: int = 0) -> str:
    values = ["0"] * (len(SNMP_HEAD.split()) - 1)
    values[SNMP_HEAD.split()[1:].index("OutEchos")] = str(out_echos)
    values[SNMP_HEAD.split()[1:].index("InDestUnreachs")] = str(unreachables)
    return f"{tx}\n{SNMP_HEAD}\nIcmp: {' '.join(values)}\n"


@dataclass
class R:
    output: str
    rc: int = 0
    stderr: str = ""

    @property
    def ok(self):
        return self.rc == 0


class FakeShell:
    """Answers the probe's guest commands part by part, in order, like the guest did: a batch
    (``guest_batch``) gets each of its parts' answers, framed by the batch's own markers."""

    def __init__(self, *answers: R) -> None:
        self.answers = list(answers)
        self.commands = []  # every part, in order
        self.timeouts = []  # every guest command's deadline

    def run(self, command, timeout=None):
        self.timeouts.append(timeout)
        out = []
        for m in re.finditer(r"\{ (.*?);? \} 2>&1; printf '\\n%s %s %d\\n' (\S+) (\S+) \$\?", command):
            answer = self.answers.pop(0)
            self.commands.append(m.group(1))
            out.append(f"{answer.output}{answer.stderr}\n{m.group(2)} {m.group(3)} {answer.rc}\n")
        assert out, f"not a batch: {command}"
        return R("".join(out))


SENT = R(
    "PING 198.18.0.1 (198.18.0.1): 56 data bytes\n\n--- 198.18.0.1 ping statistics ---\n"
    "3 packets transmitted, 0 packets received, 100% packet loss\n",
    rc=1,
)
UNREACHABLE = R("PING 198.18.0.1 (198.18.0.1): 56 data bytes\n", rc=1, stderr="ping: sendto: Network is unreachable\n")
ROUTE = R("198.18.0.1 via 10.0.2.2 dev eth0  src 10.0.2.15")
NO_ROUTE = R("", rc=2, stderr="ip: RTNETLINK answers: Network is unreachable")


def probe(*answers):
    shell = FakeShell(*answers)
    return icmp.ping(shell, REFERENCE, "198.18.0.1"), shell


def test_parse_counters_reads_out_echos_and_tx_packets():
    c = icmp.parse_counters(counters(42, 7))
    assert (c["tx_packets"], c["OutEchos"], c["InEchos"]) == (42, 7, 0)
    assert icmp.parse_counters("garbage") is None


def test_requests_that_left_the_guest_prove_the_premise():
    p, shell = probe(R(counters(100, 1, 5)), ROUTE, SENT, R(counters(104, 4, 8)))
    assert (p.echo_requests_out, p.nic_tx_packets, p.replies) == (3, 4, 0)
    assert p.destination_unreachable_in == 3  # slirp's ICMP errors for them, recorded
    assert icmp.premise_problems(p, "eth0") == []
    assert "ping" in shell.commands[2] and "/proc/net/snmp" in shell.commands[0] + shell.commands[3]


def test_a_ping_that_failed_inside_the_guest_is_void():
    """restrict=on: no route, ping's sendto fails, no reply: this must never read as 'ICMP fails'."""
    p, _ = probe(R(counters(100, 1)), NO_ROUTE, UNREACHABLE, R(counters(100, 1)))
    problems = icmp.premise_problems(p, "eth0")
    assert p.replies == 0 and len(problems) == 3, problems
    assert any("OutEchos +0" in x for x in problems) and any("sendto" in x for x in problems)


@pytest.mark.parametrize(
    "before,after,why",
    [
        (counters(100, 1), counters(100, 4), "frames"),  # counted, but nothing left the NIC
        ("cat: can't open", counters(104, 4), "could not be read"),
    ],
)
def test_missing_proof_is_void(before, after, why):
    p, _ = probe(R(before), ROUTE, SENT, R(after))
    assert any(why in x for x in icmp.premise_problems(p, "eth0"))


def test_a_route_via_another_interface_is_void():
    p, _ = probe(R(counters(100, 1)), R("198.18.0.1 dev eth1  src 192.168.1.5"), SENT, R(counters(104, 4)))
    assert any("not via eth0" in x for x in icmp.premise_problems(p, "eth0"))


@pytest.mark.parametrize("scale", [1.0, 3.0])
def test_the_ping_gets_the_allowance_of_every_other_command_on_top_of_its_own_bound(scale):
    """The ping's deadline was 26 s, less than half of any other guest command's (60 s): on a loaded
    host it was the first command of a run to miss its deadline, read as an SSH stall. It gets the
    same allowance for the guest's own work as the others, plus what the guest-side ``timeout``
    lets ping itself take."""
    waits.set_timeout_scale(scale)
    try:
        _, shell = probe(R(counters(100, 1)), ROUTE, SENT, R(counters(104, 4)))
        # one guest command here (the fake has no line limit), with the ping's budget
        assert shell.timeouts == [waits.timeout("console-command") + REFERENCE.ping_guest_bound(3)]
        assert f"[ $n -lt {REFERENCE.ping_guest_bound(3) * 50} ]" in shell.commands[2]
    finally:
        waits.set_timeout_scale(1.0)
