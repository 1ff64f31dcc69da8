"""slirp-conformance: command-line options and the fixture plugins. No helpers live here."""

pytest_plugins = [
    "fixtures.plugin_target",
    "fixtures.plugin_reporting",
]


def pytest_addoption(parser):
    group = parser.getgroup("slirp-conformance", "slirp network binding conformance")
    group.addoption("--target", choices=("kind", "cluster", "qemu"), default="kind",
                    help="where the VM runs: a kind cluster the suite manages (default), an existing cluster "
                         "(--kubeconfig), or the local QEMU/libslirp reference VM")
    group.addoption("--timeout-scale", type=float, default=1.0,
                    help="multiply every named timeout (slow CI, emulated guests)")
    group.addoption("--artifacts", metavar="DIR", default=None,
                    help="write logs, transcripts and evidence of each failed test under DIR")
    group.addoption("--qemu-netdev-extra", metavar="OPTS", default="",
                    help="qemu target: options appended to the `-netdev user,...` string, e.g. restrict=on "
                         "(negative controls)")
    group.addoption("--qemu-sysctl", metavar="KEY=VALUE", action="append", default=[],
                    help="qemu target: a net.* sysctl for the pod network namespace (repeatable), e.g. "
                         "net.ipv4.ping_group_range='0 2147483647' to mirror a containerd 2.x pod")
    group.addoption("--qemu-accel", choices=("auto", "kvm", "tcg"), default="auto",
                    help="qemu target: accelerator; auto uses KVM only when a probe guest really runs on it")
