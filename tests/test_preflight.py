"""The reference target refuses early, naming the fix, when the host cannot run it."""

import pytest

from slirp_conformance.errors import SetupError
from slirp_conformance.reference import image, reference_vm
from slirp_conformance.reference.reference_vm import QemuOptions, parse_sysctl, preflight


def test_sysctl_values_keep_their_spaces():
    assert parse_sysctl("net.ipv4.ping_group_range=0 2147483647") == ("net.ipv4.ping_group_range", "0 2147483647")


def test_missing_busybox_names_the_package(monkeypatch):
    monkeypatch.setitem(image.REQUIRED_PACKAGES, "/nonexistent/busybox", "busybox-static")
    with pytest.raises(SetupError, match="apt-get install busybox-static"):
        image.check_host_tools()


def test_missing_dropbear_names_the_package(monkeypatch):
    monkeypatch.setattr(image, "REQUIRED_PACKAGES", {"/nonexistent/dropbear": "dropbear-bin"})
    with pytest.raises(SetupError, match="apt-get install dropbear-bin"):
        image.check_host_tools()


def test_no_root_and_no_user_namespaces(monkeypatch):
    monkeypatch.setattr(reference_vm.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(reference_vm, "_userns_works", lambda: False)
    with pytest.raises(SetupError, match="needs root or unprivileged user namespaces"):
        preflight(QemuOptions())


def test_not_root_but_user_namespaces_go_rootless(monkeypatch):
    monkeypatch.setattr(reference_vm.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(reference_vm, "_userns_works", lambda: True)
    assert preflight(QemuOptions()) is True


def test_kvm_asked_without_kvm(monkeypatch):
    monkeypatch.setattr(reference_vm.os, "access", lambda path, mode: path != "/dev/kvm")
    with pytest.raises(SetupError, match="--qemu-accel tcg"):
        preflight(QemuOptions(accel="kvm"))


def test_rootless_ping_group_range_keeps_its_meaning_for_qemus_gid():
    from slirp_conformance.reference.pod_lab import _mapped_value

    rootless = {"rootless": True}
    assert _mapped_value(rootless, "net.ipv4.ping_group_range", "0 2147483647") == "0 0"
    assert _mapped_value(rootless, "net.ipv4.ping_group_range", "1 0") is None  # the default: nobody
    assert _mapped_value(rootless, "net.ipv4.ping_group_range", "100 200") is None
    assert _mapped_value({"rootless": False}, "net.ipv4.ping_group_range", "1 0") == "1 0"
