"""Which Fedora-like flavour stands for which KubeVirt release, and how the qemu target picks it."""

from types import SimpleNamespace

import pytest

from slirp_conformance.cluster.versions import default_version
from slirp_conformance.errors import SetupError
from slirp_conformance.plugin.session import _fedora_like
from slirp_conformance.reference.fedora_like import FLAVOURS, flavour_for


@pytest.mark.parametrize(
    "version, flavour",
    [
        ("v1.1.0", "nmap-ncat"),
        ("v1.1.1", "nmap-ncat"),
        ("v1.2.0", "busybox-nc"),
        ("v1.5.3", "busybox-nc"),
        ("1.8.2", "busybox-nc"),
        ("v1.9.0", "openbsd-nc"),
    ],
)
def test_flavour_follows_the_kubevirt_release(version, flavour):
    assert flavour_for(version).name == flavour


@pytest.mark.parametrize("version", ["v1.0.1", "v1.10.0", "latest", "v1.9.0-rc.1", "none", ""])
def test_a_release_without_the_plugin_or_not_a_release_is_refused_with_the_range(version):
    """No lenient reading: a pre-release or a word would pick some flavour for a release nobody named."""
    with pytest.raises(SetupError, match=r"outside the supported range v1.1.0..v1.9.x|not a release version"):
        flavour_for(version)


def test_every_flavour_keeps_a_different_nc():
    assert len({f.nc for f in FLAVOURS.values()}) == len(FLAVOURS)


def _config(args: list[str], guest: str = "fedora", version: str | None = None):
    options = {"reference_guest": guest, "kubevirt_version": version}
    return SimpleNamespace(invocation_params=SimpleNamespace(args=args), getoption=options.__getitem__)


def test_qemu_target_takes_the_flavour_of_the_release_under_test():
    assert (
        _fedora_like(_config(["--target=qemu", "--kubevirt-version", "v1.9.0"], version="v1.9.0")).name == "openbsd-nc"
    )
    assert _fedora_like(_config(["--kubevirt-version=v1.1.0"], version="v1.1.0")).name == "nmap-ncat"
    # no --kubevirt-version: the release the run checks (KUBEVIRT_DEFAULT_VERSION), whose sidecar
    # renders the VM's network too; never a flavour of another release
    assert _fedora_like(_config(["--target=qemu"])) == flavour_for(str(default_version()))
    assert _fedora_like(_config(["--kubevirt-version=v1.9.0"], guest="busybox", version="v1.9.0")) is None
