"""The cluster targets' in-pod probes for issue 20's clauses, fed with the tools' real output:
busybox 1.37 ``nc -u`` of the peer image and Debian trixie's ``ncat`` 7.95 of the launcher image,
run here (2026-12-06) against a refusing port, a silent listener and an echoing one; and the QEMU
command line virt-launcher's libvirt gave the conformance VM on kind (KubeVirt v1.9.0)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from slirp_conformance.kubevirt import launcher_probes as lp

DATA = Path(__file__).parent / "data"
UDP_REPLY = lp.UDP_REPLY_MARK


def test_the_sidecars_netdev_and_its_json_device_are_read_from_qemus_argv():
    argv = json.loads((DATA / "qemu-argv-kind-v1.9.0.json").read_text())
    args = lp.netdev_args(argv)
    assert args is not None and args[0] == "-netdev" and args[1].startswith("user,id=default,net=10.0.2.0/24,")
    assert "hostfwd=udp::8082-:8082" in args[1]
    assert args[2:] == ["-device", '{"driver":"e1000","netdev":"default","id":"default","mac":"02:5c:1a:00:00:01"}']


def test_a_qemu_without_a_user_netdev_has_no_sidecar_args():
    assert lp.netdev_args(["qemu", "-netdev", "tap,id=n0", "-device", "virtio-net-pci,netdev=n0"]) is None


def test_the_device_of_another_netdev_is_not_taken():
    argv = ["-device", "e1000,netdev=other", "-netdev", "user,id=default", "-device", "rtl8139,netdev=default,id=x"]
    assert lp.netdev_args(argv) == ["-netdev", "user,id=default", "-device", "rtl8139,netdev=default,id=x"]


@pytest.mark.parametrize(
    ("output", "outcome"),
    [
        (
            "127.0.0.1 (127.0.0.1:39999) open\nnc: net read: Connection refused\nsent 6, rcvd 0\n\n" + UDP_REPLY,
            "refused",
        ),
        ("127.0.0.1 (127.0.0.1:39998) open\nnet timeout\nsent 6, rcvd 0\n\n" + UDP_REPLY, "sent"),
        (
            "reply:hello127.0.0.1 (127.0.0.1:39997) open\nnet timeout\nsent 6, rcvd 12\n\n" + UDP_REPLY + "reply:hello",
            "answered",
        ),
        ("nc: bad address 'x'\n\n" + UDP_REPLY, "error"),
    ],
    ids=["refused", "silent", "echoed", "garbage"],
)
def test_busybox_nc_udp_words_become_the_outcome(output, outcome):
    assert lp.udp_send_result(output, 0, 2).outcome == outcome


def test_a_failed_exec_is_an_error_not_a_sent_datagram():
    assert lp.udp_send_result("sh: nc: not found\n", 127, 2).outcome == "error"


def test_ncat_listening_and_client_lines():
    v4 = (
        "Ncat: Version 7.95 ( https://nmap.org/ncat )\nNcat: Listening on 127.0.0.1:9109\n"
        "Ncat: Connection from 127.0.0.1:55950.\n"
    )
    v6 = "Ncat: Listening on [::1]:9109\nNcat: Connection from [::1]:36076.\nNcat: Connection from [::1]:36078.\n"
    assert lp.loopback_listening(v4, "127.0.0.1", 9109) and not lp.loopback_listening(v4, "127.0.0.1", 9110)
    assert lp.loopback_listening(v6, "::1", 9109) and not lp.loopback_listening(v4, "::1", 9109)
    assert lp.loopback_clients(v4) == ["127.0.0.1"] and lp.loopback_clients(v6) == ["::1", "::1"]


@pytest.mark.skipif(shutil.which("sh") is None, reason="no sh")
def test_the_udp_script_is_valid_shell_that_quotes_its_payload():
    script = lp.udp_send_script("10.244.0.7", 8082, "tok'en; rm -rf /", 2)
    r = subprocess.run(["sh", "-n", "-c", script], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "'tok'\"'\"'en; rm -rf /'" in script
