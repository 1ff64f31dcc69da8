"""The suite's command-line options, their validation, and the check that pytest rooted the run here.

pytest settles its root directory before any plugin can say that ``--kubeconfig`` takes a value,
so in ``pytest --kubeconfig /elsewhere/kubeconfig`` it takes the file for a test path and roots
the run in /elsewhere, without this project's settings and fixtures. Because this plugin is
registered by the package's entry point, it is loaded whatever the root is and can say so in
one line; hack/*.sh pin the root with ``-c pyproject.toml``. Runs of other projects in the same
Python (the plugin is installed there) are left alone: no option of ours, not started here.
"""

import pytest

from slirp_conformance.checkout import REPO

PYPROJECT = REPO / "pyproject.toml"


def is_suite_run(config) -> bool:
    """pytest rooted this run in the repo, so its settings, conftest and fixtures are in force."""
    return config.rootpath == REPO


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config, parser, args):
    """Before the repo's conftest.py (whose fixture modules need pyproject's ``pythonpath``) would
    fail to load in a run rooted elsewhere: refuse it, when it is meant for this suite."""
    if is_suite_run(early_config):
        return
    namespace = early_config.known_args_namespace
    if getattr(namespace, "help", False):
        return
    given = [d for d, default in DEFAULTS.items() if getattr(namespace, d, default) != default]
    if given or early_config.invocation_params.dir.is_relative_to(REPO):
        raise pytest.UsageError(
            f"pytest rooted this run in {early_config.rootpath}, not in the suite's {REPO} (a bare path after an "
            f"option, as in --kubeconfig PATH, is read as a test path): write option values with '=' "
            f"(--kubeconfig=PATH), or run hack/conformance.sh, or pass -c {PYPROJECT}"
        )


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    if is_suite_run(config) and not config.getoption("help"):
        _check_inputs(config)


# dest -> the value the run gets when the option is not given (run_inputs tells given from not).
DEFAULTS: dict[str, object] = {}


class _Group:
    """A pytest option group that records each option's default."""

    def __init__(self, group) -> None:
        self._group = group

    def addoption(self, flag: str, **kwargs) -> None:
        self._group.addoption(flag, **kwargs)
        default = kwargs.get("default", False if kwargs.get("action") == "store_true" else None)
        DEFAULTS[flag.removeprefix("--").replace("-", "_")] = default


def _check_inputs(config) -> None:
    """Every option value and environment setting, before any other plugin acts on them and before
    anything boots or builds: one line, exit 4."""
    from slirp_conformance import run_inputs
    from slirp_conformance.errors import SetupError

    try:
        run_inputs.check_run(config.getoption, DEFAULTS.__getitem__)
    except SetupError as e:
        raise pytest.UsageError(str(e)) from None


def pytest_addoption(parser):
    group = _Group(parser.getgroup("slirp-conformance", "slirp network binding conformance"))
    group.addoption(
        "--target",
        choices=("kind", "cluster", "qemu"),
        default="kind",
        help="where the VM runs: a kind cluster the suite manages (default), an existing cluster "
        "(--kubeconfig), or the local QEMU/libslirp reference VM",
    )
    group.addoption(
        "--timeout-scale", type=float, default=1.0, help="multiply every named timeout (slow CI, emulated guests)"
    )
    group.addoption(
        "--artifacts",
        metavar="DIR",
        default=None,
        help="write logs, transcripts and evidence of each failed test under DIR",
    )
    group.addoption(
        "--report-dir",
        metavar="DIR",
        default="reports",
        help="where every conformance run writes conformance.md and conformance.json "
        "(default: reports/ under the current directory)",
    )
    group.addoption(
        "--qemu-netdev-extra",
        metavar="OPTS",
        default="",
        help="qemu target: options appended to the `-netdev user,...` string, e.g. restrict=on (negative controls)",
    )
    group.addoption(
        "--qemu-sysctl",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="qemu target: a net.* sysctl for the pod network namespace (repeatable), e.g. "
        "net.ipv4.ping_group_range='0 2147483647' to mirror a containerd 2.x pod",
    )
    cluster = _Group(parser.getgroup("slirp-conformance cluster", "kind and existing-cluster targets"))
    cluster.addoption(
        "--kubeconfig", default=None, help="cluster target: kubeconfig (default: KUBECONFIG or ~/.kube/config)"
    )
    cluster.addoption("--context", default=None, help="cluster target: kubeconfig context")
    cluster.addoption(
        "--kubevirt-version",
        default=None,
        help="KubeVirt release under test (v1.1.0 .. v1.9.x); default: the cluster's own "
        "(KubeVirt CR status.observedKubeVirtVersion), or KUBEVIRT_DEFAULT_VERSION of "
        "hack/versions.env where the suite installs it. Given, it must match the cluster",
    )
    cluster.addoption(
        "--kubevirt-manifests",
        metavar="DIR",
        default=None,
        help="air-gapped install: directory holding kubevirt-operator.yaml and kubevirt-cr.yaml",
    )
    cluster.addoption(
        "--install-kubevirt", action="store_true", help="cluster target: install KubeVirt when absent (kind always may)"
    )
    cluster.addoption(
        "--slirp-sidecar-image", default=None, help="default quay.io/kubevirt/network-slirp-binding:<kubevirt version>"
    )
    cluster.addoption(
        "--vm-image",
        default=None,
        help="default quay.io/kubevirt/fedora-with-test-tooling-container-disk:<kubevirt version>",
    )
    cluster.addoption(
        "--peer-image",
        default=None,
        help=(
            "image of the peer and client pods (busybox; default docker.io/library/busybox:1.36, "
            "with --images-from-source the one built here)"
        ),
    )
    cluster.addoption(
        "--guest-profile",
        default="auto",
        choices=("auto", "fedora-with-test-tooling", "reference-busybox"),
        help="how to talk to the VM's OS: auto (from /etc/os-release after login), "
        "fedora-with-test-tooling or reference-busybox",
    )
    cluster.addoption(
        "--kind-cluster-name",
        default="slirp-conformance",
        help="kind target: reuse this cluster if it exists, else create it",
    )
    cluster.addoption("--keep-cluster", action="store_true", help="kind target: keep a cluster the suite created")
    cluster.addoption(
        "--preload-images",
        action="append",
        default=[],
        metavar="IMAGE",
        help="kind target: `kind load` this locally present image first (repeatable)",
    )
    cluster.addoption(
        "--images-from-source",
        action="store_true",
        help="kind target: build kind, kubectl and the node image here from Go modules and Debian packages "
        "(no download, no registry; cached by version), as hack/cluster-up.sh --images-from-source; the "
        "cluster gets the suite's CNI instead of kindnetd",
    )
    cluster.addoption(
        "--kind-nodes",
        type=int,
        default=1,
        metavar="N",
        help="kind target: nodes of a cluster the suite creates (a control plane and N-1 workers)",
    )
    group.addoption(
        "--sidecar-render",
        choices=("auto", "go", "python"),  # sidecar_render.MODES (not imported here: every pytest loads this)
        default="auto",
        help="qemu target: where the VM's QEMU network arguments come from: go = KubeVirt's own "
        "converter and slirp sidecar code of the release under test (hack/sidecar-render, built with "
        "Go and cached; the run stops when it cannot be built), python = the suite's model, "
        "src/slirp_conformance/vmspec.slirp_qemu_args, auto (default) = go once its build is cached; "
        "before that (a machine's first run) the model, which the golden self-test holds byte for "
        "byte to that release's sidecar, and the Go build runs after the verdict. The report says "
        "which renderer decided",
    )
    group.addoption(
        "--reference-guest",
        choices=("busybox", "fedora"),
        default="busybox",
        help="qemu target: the fast busybox reference guest (default), or a Fedora-like guest built "
        "from Debian packages whose tools follow the Fedora test image of the release under test "
        "(--kubevirt-version, else KUBEVIRT_DEFAULT_VERSION)",
    )
    group.addoption(
        "--qemu-accel",
        choices=("auto", "kvm", "tcg"),
        default="auto",
        help="qemu target: accelerator; auto uses KVM only when a probe guest really runs on it",
    )
