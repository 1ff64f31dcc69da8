"""Redaction by value, and the report/JUnit amendments, on small inputs (no VM)."""

import base64
import json
import secrets
import xml.etree.ElementTree as ET

from slirp_conformance import junit, redaction
from slirp_conformance.conformance_report import ConformanceReport


def test_registered_values_are_masked_and_json_stays_json():
    password = "pw-" + secrets.token_hex(8)
    redaction.register(password)
    evidence = json.dumps({"token": "slirp-port-8080-abc123", "console": f"Password: \n{password}\nroot login"})
    masked = redaction.redact(evidence)
    assert password not in masked
    assert json.loads(masked)["token"] == "slirp-port-8080-abc123"  # a nonce called token stays readable
    assert "Password: \\n<redacted>\\nroot login" in masked


def test_short_values_and_keywords_alone_mask_nothing():
    redaction.register("abc", None, "")
    assert redaction.redact("password: abc token=xyz") == "password: abc token=xyz"


def test_kubeconfig_credentials_are_registered_written_and_decoded(tmp_path):
    key_pem = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIK" + secrets.token_hex(20) + "\n-----END EC PRIVATE KEY-----\n"
    key_b64 = base64.b64encode(key_pem.encode()).decode()
    token = secrets.token_urlsafe(24)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        f"apiVersion: v1\nkind: Config\nusers:\n- name: a\n  user:\n    client-key-data: {key_b64}\n"
        f"- name: b\n  user:\n    token: {token}\n"
    )
    redaction.register_kubeconfig(kubeconfig)
    text = f"{key_b64} Authorization: Bearer {token}\n" + key_pem.splitlines()[1]
    assert redaction.redact(text).count("<redacted>") == 3


def test_unreadable_kubeconfig_registers_nothing(tmp_path):
    bad = tmp_path / "kubeconfig"
    bad.write_text(": : not yaml [")
    redaction.register_kubeconfig(bad)  # no exception: preflight reports it


def test_pem_private_key_blocks_are_masked_whole():
    from slirp_conformance.ssh_client import generate_keypair

    generate_keypair()  # registers a key: its armor lines must not break the block rule for others
    pem = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----"
    assert "b3BlbnNz" not in redaction.redact(f"key: {pem}")


def _junit(tmp_path):
    path = tmp_path / "junit.xml"
    path.write_text(
        '<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" errors="0" '
        'failures="0" skipped="0" tests="1"><testcase classname="suites.test_slirp_dhcp" name="a"/>'
        "</testsuite></testsuites>"
    )
    return path


def test_redacted_log_masks_a_secret_split_across_writes(tmp_path):
    """A secret echoed a character at a time never reaches the disk; neither does it in the
    unfinished last line (``pending``, and what ``close`` writes)."""
    secret = "s3-" + secrets.token_hex(6)
    redaction.register(secret)
    log = redaction.RedactedLog(tmp_path / "t.log")
    for ch in f"Password: {secret}\r\nshell# echo {secret[:5]}":
        log.write(ch)
        log.flush()
        assert secret[:8] not in (tmp_path / "t.log").read_text()  # only whole lines are written
    log.write(secret[5:])
    assert log.pending() == f"shell# echo {redaction.MASK}"
    log.close()
    assert (tmp_path / "t.log").read_bytes().decode() == f"Password: {redaction.MASK}\r\nshell# echo {redaction.MASK}"


def test_junit_gets_deselected_and_interrupted_cases(tmp_path):
    path = _junit(tmp_path)
    junit.amend(
        path,
        deselected=[("suites/test_slirp_kubevirt.py::test_x", "KubeVirt-only")],
        interrupted="KeyboardInterrupt: signal 15",
        not_run=["suites/test_slirp_tcp.py::test_y"],
    )
    suite = ET.parse(path).getroot().find("testsuite")
    assert (suite.get("tests"), suite.get("skipped"), suite.get("errors")) == ("3", "1", "1")
    error = next(c for c in suite.iter("testcase") if c.get("name") == "run-interrupted").find("error")
    assert "signal 15" in error.get("message") and "test_y" in error.text


class _Report:
    def __init__(self, nodeid, when, outcome, text="", props=()):
        self.nodeid, self.when, self.outcome, self.longreprtext = nodeid, when, outcome, text
        self.user_properties, self.duration, self.longrepr = list(props), 0.1, None
        self.passed, self.failed, self.skipped = outcome == "passed", outcome == "failed", outcome == "skipped"


def test_where_a_probe_ran_is_the_clauses_not_a_version():
    r = ConformanceReport(target="qemu")
    node = "suites/test_slirp_tcp.py::test_egress_transfer_8mib_each_way"
    said = "transfer: ready 1.2 s before the check asked, the check waited 0.0 s"
    r.add(_Report(node, "call", "passed", props=[("probe_ran_ahead", said), ("target", "qemu")]))
    clause = next(c for c in r.to_dict()["clauses"] if c["nodeid"] == node)
    assert clause["ran_ahead"] == said and "probe_ran_ahead" not in r.versions, (clause, r.versions)


def test_report_verdicts_void_is_never_a_pass(tmp_path):
    r = ConformanceReport(target="qemu")
    r.expect("suites/test_slirp_icmp.py::test_i[ssh]", "icmp")
    r.expect("suites/test_slirp_tcp.py::test_t[ssh]", "tcp")
    r.expect("suites/test_slirp_udp.py::test_u[ssh]", "udp")
    r.add(
        _Report(
            "suites/test_slirp_icmp.py::test_i[ssh]",
            "setup",
            "failed",
            "VOID icmp: premise",
            [("evidence.icmp", json.dumps({"premise": ["no echo request left"]})), ("target", "qemu")],
        )
    )
    r.add(_Report("suites/test_slirp_tcp.py::test_t[ssh]", "call", "passed"))
    r.finish(1, None)
    data = r.to_dict()
    verdicts = {c["nodeid"]: c["verdict"] for c in data["clauses"]}
    assert verdicts == {
        "suites/test_slirp_icmp.py::test_i[ssh]": "void",
        "suites/test_slirp_tcp.py::test_t[ssh]": "pass",
        "suites/test_slirp_udp.py::test_u[ssh]": "not run",
    }
    assert data["outcome"] == "NOT CONFORMANT" and data["premises"][0]["premise"] == ["no echo request left"]
    md_path = r.write(tmp_path)[1]
    assert "VOID" in md_path.read_text() and json.loads((tmp_path / "conformance.json").read_text())
    r.finish(2, "KeyboardInterrupt")
    assert r.outcome == "INTERRUPTED"


def test_isolation_and_ipv6_findings_have_their_own_headings():
    """Issue 20: the contract's table holds the contract's areas; the isolation and IPv6 clauses are
    under their own headings (and under ``findings`` in the JSON), each in words from its evidence."""
    r = ConformanceReport(target="qemu")
    loop = {"guest_dials": "10.0.2.2:9109", "token": "t1", "guest_got": "t1", "pod_listener": "127.0.0.1:9109"}
    cases = {
        "suites/test_slirp_tcp.py::test_t[ssh]": ("tcp", {}),
        "suites/test_slirp_isolation.py::test_loop[ssh]": ("isolation", {"pod-loopback": loop}),
        "suites/test_slirp_ipv6.py::test_addr": ("ipv6", {"ipv6": {"addresses": ["fec0::1/64 site"]}}),
    }
    for nodeid, (area, evidence) in cases.items():
        r.expect(nodeid, area)
        props = [(f"evidence.{k}", json.dumps(v)) for k, v in evidence.items()]
        r.add(_Report(nodeid, "call", "passed", props=props))
    r.finish(0, None)
    md = r.to_markdown()
    contract_table = md[: md.index("## Isolation findings")]
    assert "tcp.py::test_t" in contract_table
    assert "isolation.py" not in contract_table and "ipv6.py" not in contract_table, contract_table
    isolation = md[md.index("## Isolation findings") : md.index("## IPv6 findings")]
    assert "isolation.py::test_loop" in isolation and "read the pod's token from 127.0.0.1:9109" in isolation
    assert "fec0::1/64 site" in md[md.index("## IPv6 findings") :]
    findings = r.to_dict()["findings"]
    assert [c["nodeid"] for c in findings["isolation"]] == ["suites/test_slirp_isolation.py::test_loop[ssh]"]
    assert [c["nodeid"] for c in findings["ipv6"]] == ["suites/test_slirp_ipv6.py::test_addr"]


def test_the_raw_serial_log_of_a_guest_that_echoed_the_password_is_copied_redacted(tmp_path):
    """QEMU logs the serial console raw (qemu/console.log); a guest too slow to turn its echo off
    prints the password typed at its login, and collect_artifacts must not carry it out (found once in
    a loaded CI run of tests/test_reference_target.py). Negative control: the raw file has it."""
    from slirp_conformance.reference.reference_vm import QemuOptions, ReferenceVM
    from slirp_conformance.vmspec import conformance_vm

    password = secrets.token_urlsafe(12)
    redaction.register(password)
    vm = ReferenceVM(
        conformance_vm("selftest-redact"), QemuOptions(), authorized_key="ssh-ed25519 AAAA x", password=password
    )
    vm.run_dir = tmp_path / "run"
    (vm.run_dir / "qemu").mkdir(parents=True)
    raw = f"selftest-redact login: root\r\nPassword: {password}\r\n~ # "
    (vm.run_dir / "qemu" / "console.log").write_text(raw)
    vm.collect_artifacts(tmp_path / "artifacts")  # the monitor does not answer: noted in its file
    assert password in (vm.run_dir / "qemu" / "console.log").read_text()
    copied = (tmp_path / "artifacts" / "qemu-console.log").read_text()
    assert password not in copied and "Password: <redacted>" in copied
