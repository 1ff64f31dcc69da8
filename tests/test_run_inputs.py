"""Every option value and environment setting the suite reads, tried with bad values: each stops the
run before anything boots or builds, with one line naming the fix and exit 4. Never a traceback, an
INTERNALERROR, or a verdict for something other than what was asked (issue 15)."""

from __future__ import annotations

import pytest

from slirp_conformance import run_inputs
from slirp_conformance.conformance_report import ConformanceReport
from slirp_conformance.errors import SetupError
from slirp_conformance.plugin import options as plugin_options
from tests.suite_runner import refused_run

NOT_A_DIR = "/etc/hostname/cache"  # under a file: can never be created


# (id, arguments, environment, what the one line must say)
BAD_INPUTS = [
    # the false green: a typo, and releases without the plugin, used to run and say CONFORMANT
    ("version-typo", ["--target=qemu", "--kubevirt-version=latest-ish"], {}, "'latest-ish' is not a release version"),
    ("version-below-plugin", ["--target=qemu", "--kubevirt-version=v1.0.0"], {}, "outside the supported range"),
    ("version-above-plugin", ["--target=qemu", "--kubevirt-version=v1.10.0"], {}, "outside the supported range"),
    ("version-pre-release", ["--target=qemu", "--kubevirt-version=v1.9.0-rc.1"], {}, "not a release version"),
    ("version-on-kind", ["--target=kind", "--kubevirt-version=1.9"], {}, "not a release version"),
    (
        "version-without-renderer",
        ["--target=qemu", "--kubevirt-version=v1.3.1"],
        {},
        "sidecar-render builds KubeVirt v1.1.0, v1.5.3, v1.9.0, not 'v1.3.1'",
    ),
    ("sidecar-render-unknown", ["--target=qemu", "--sidecar-render=fallback"], {}, "invalid choice: 'fallback'"),
    ("target", ["--target=minikube"], {}, "invalid choice: 'minikube'"),
    ("reference-guest", ["--target=qemu", "--reference-guest=cirros"], {}, "invalid choice: 'cirros'"),
    ("qemu-accel", ["--target=qemu", "--qemu-accel=hvf"], {}, "invalid choice: 'hvf'"),
    ("guest-profile", ["--target=cluster", "--guest-profile=ubuntu"], {}, "invalid choice: 'ubuntu'"),
    ("timeout-scale-word", ["--target=qemu", "--timeout-scale=fast"], {}, "invalid float value: 'fast'"),
    ("timeout-scale-zero", ["--target=qemu", "--timeout-scale=0"], {}, "give a positive finite factor"),
    ("netdev-extra-syntax", ["--target=qemu", "--qemu-netdev-extra=restrict on"], {}, "not a `-netdev user` suboption"),
    (
        "netdev-extra-owned",
        ["--target=qemu", "--qemu-netdev-extra=net=10.9.0.0/24"],
        {},
        "net= is the slirp sidecar's to set",
    ),
    ("qemu-sysctl", ["--target=qemu", "--qemu-sysctl=kernel.hostname=x"], {}, "only net.* sysctls"),
    (
        "qemu-option-on-kind",
        ["--target=kind", "--qemu-sysctl=net.ipv4.ping_group_range=0 1"],
        {},
        "--qemu-sysctl applies to --target=qemu only, and this run is --target=kind",
    ),
    (
        "fedora-on-cluster",
        ["--target=cluster", "--reference-guest=fedora"],
        {},
        "--reference-guest applies to --target=qemu only",
    ),
    (
        "kubeconfig-on-qemu",
        ["--target=qemu", "--kubeconfig=/tmp/x"],
        {},
        "--kubeconfig applies to --target=kind and --target=cluster only",
    ),
    (
        "kind-option-on-cluster",
        ["--target=cluster", "--keep-cluster"],
        {},
        "--keep-cluster applies to --target=kind only",
    ),
    ("install-on-kind", ["--target=kind", "--install-kubevirt"], {}, "--install-kubevirt applies to --target=cluster"),
    ("sidecar-image", ["--target=cluster", "--slirp-sidecar-image=Quay.io/x:y z"], {}, "is not an image reference"),
    ("vm-image", ["--target=kind", "--vm-image=:v1"], {}, "is not an image reference"),
    ("peer-image", ["--target=cluster", "--peer-image=busybox:"], {}, "is not an image reference"),
    ("preload-image", ["--target=kind", "--preload-images=a b"], {}, "is not an image reference"),
    ("from-source-cluster", ["--target=cluster", "--images-from-source"], {}, "--images-from-source applies to"),
    ("kind-nodes-cluster", ["--target=cluster", "--kind-nodes=2"], {}, "--kind-nodes applies to"),
    ("kind-nodes-zero", ["--target=kind", "--kind-nodes=0"], {}, "a cluster has 1 to 10 nodes"),
    ("kind-nodes-many", ["--target=kind", "--kind-nodes=11"], {}, "a cluster has 1 to 10 nodes"),
    ("kind-name", ["--target=kind", "--kind-cluster-name=Slirp_Conformance"], {}, "kind takes lower-case letters"),
    ("kind-name-long", ["--target=kind", "--kind-cluster-name=" + "a" * 51], {}, "at most 50"),
    (
        "manifests",
        ["--target=cluster", "--kubevirt-manifests=/nonexistent"],
        {},
        "kubevirt-operator.yaml, kubevirt-cr.yaml not found there",
    ),
    ("artifacts", ["--target=qemu", "--artifacts=/etc/hostname/a"], {}, "is a file, not a directory"),
    ("report-dir", ["--target=qemu", "--report-dir=/etc/hostname/r"], {}, "is a file, not a directory"),
    ("kubeconfig-missing", ["--target=cluster", "--kubeconfig=/nonexistent/kubeconfig"], {}, "does not exist"),
    # environment settings
    (
        "cache-not-creatable",
        ["--target=qemu"],
        {"SLIRP_CONFORMANCE_CACHE": NOT_A_DIR},
        "SLIRP_CONFORMANCE_CACHE (/etc/hostname/cache): /etc/hostname is a file, not a directory",
    ),
    (
        "xdg-cache-not-creatable",
        ["--target=qemu"],
        {"SLIRP_CONFORMANCE_CACHE": "", "XDG_CACHE_HOME": NOT_A_DIR},
        "XDG_CACHE_HOME (/etc/hostname/cache/slirp-conformance): /etc/hostname is a file, not a directory",
    ),
    ("kernel-deb", ["--target=qemu"], {"SLIRP_REF_KERNEL_DEB": "/nonexistent/linux.deb"}, "not a readable .deb file"),
    ("debian-mirror", ["--target=qemu"], {"SLIRP_DEBIAN_MIRROR": "deb.debian.org/debian"}, "give an http(s) URL"),
    ("qemu-binary", ["--target=qemu"], {"SLIRP_QEMU_BINARY": "qemu-system-nowhere"}, "no such executable"),
    (
        "guest-password",
        ["--target=qemu"],
        {"SLIRP_CONFORMANCE_GUEST_PASSWORD": "two words"},
        "use 1-64 printable ASCII characters",
    ),
]


@pytest.mark.parametrize("args, env, fix", [pytest.param(a, e, f, id=i) for i, a, e, f in BAD_INPUTS])
def test_bad_input_stops_the_run_in_one_line(args, env, fix):
    r = refused_run(*args, env=env)
    text = r.stdout + r.stderr
    assert r.returncode == 4, text
    assert "Traceback" not in text and "INTERNALERROR" not in text, text
    # pytest prints argparse's refusals after its usage line: that line is not a second error
    errors = [line for line in text.splitlines() if "error" in line.lower() and "usage:" not in line]
    assert len(errors) == 1 and fix in errors[0], text


def test_good_inputs_pass_the_same_checks():
    """The control: the table's options with good values get through validation (collect-only boots nothing)."""
    r = refused_run(
        "--collect-only",
        "-q",
        "--target=qemu",
        "--kubevirt-version=v1.5.3",
        "--sidecar-render=python",
        "--qemu-netdev-extra=restrict=on",
        "--qemu-sysctl=net.ipv4.ping_group_range=0 2147483647",
        "--reference-guest=fedora",
        "--qemu-accel=tcg",
        "--timeout-scale=2",
        env={"SLIRP_CONFORMANCE_GUEST_PASSWORD": "S3cret-pass", "SLIRP_DEBIAN_MIRROR": "http://deb.debian.org/debian"},
    )
    assert r.returncode == 0, r.stdout + r.stderr
    r = refused_run(
        "--collect-only",
        "-q",
        "--target=kind",
        "--kubevirt-version=v1.1.0",
        "--keep-cluster",
        "--kind-cluster-name=slirp.ci-1",
        "--vm-image=localhost:5000/fedora:v1",
        "--preload-images=quay.io/kubevirt/network-slirp-binding:v1.1.0@sha256:" + "0" * 64,
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_every_option_is_covered_by_the_table_or_needs_no_check():
    """A new option must come with its bad value in BAD_INPUTS (or a reason here why any value is fine)."""
    any_value_is_fine = {
        "keep_cluster",
        "install_kubevirt",
        "context",
    }  # flags; a context is checked against the kubeconfig
    table = " ".join(" ".join(a) for _, a, _, _ in BAD_INPUTS)
    untried = [
        d for d in plugin_options.DEFAULTS if d not in any_value_is_fine and "--" + d.replace("_", "-") not in table
    ]
    assert untried == [], f"options with no bad value tried: {untried}"


def test_release_under_test_defaults_to_the_pinned_release_and_says_so():
    default = run_inputs.release_under_test(None)
    assert str(default.version) == "v1.9.0" and "KUBEVIRT_DEFAULT_VERSION" in default.source
    assert str(run_inputs.release_under_test("1.5.3").version) == "v1.5.3"
    with pytest.raises(SetupError):
        run_inputs.release_under_test("latest")


def _report(requested: str | None, checked: str | None) -> ConformanceReport:
    report = ConformanceReport(target="qemu", requested_kubevirt_version=requested)
    if checked:
        report.versions["kubevirt_version"] = checked
    report.clauses["suites/test_slirp_dhcp.py::test_x"] = type("C", (), {"verdict": "pass"})()
    return report


def test_a_run_that_checked_another_release_is_never_conformant():
    wrong = _report("v1.5.3", "v1.9.0")
    assert wrong.outcome == "NOT CONFORMANT"
    assert wrong.release_mismatch == "--kubevirt-version v1.5.3 was requested but the run checked KubeVirt v1.9.0"
    assert _report("v1.5.3", None).outcome == "NOT CONFORMANT"
    # controls: the requested release checked, or none requested
    assert _report("v1.5.3", "v1.5.3").outcome == "CONFORMANT"
    assert _report(None, "v1.9.0").outcome == "CONFORMANT"
