"""Facts read from KubeVirt's and kind's sources that the cluster path must follow (issue 7, item 7).

Each test names the upstream file it was checked against, at the pinned tags.
"""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
import yaml
from kubernetes.client import ApiException

from slirp_conformance.cluster import kind, kubevirt_config, versions
from slirp_conformance.kubevirt.vm_manifest import render_vm
from slirp_conformance.vmspec import conformance_vm
from suites import test_slirp_kubevirt


def _vmi_with_live_migratable(condition: dict):
    return SimpleNamespace(vmi_object=lambda: {"status": {"conditions": [{"type": "LiveMigratable", **condition}]}})


def test_not_migratable_check_passes_on_kubevirts_reason():
    # kubevirt staging/src/kubevirt.io/api/core/v1/types.go (v1.1.0..v1.9.0):
    # VirtualMachineInstanceReasonInterfaceNotMigratable = "InterfaceNotLiveMigratable"
    target = _vmi_with_live_migratable({"status": "False", "reason": "InterfaceNotLiveMigratable"})
    test_slirp_kubevirt.test_vmi_is_not_live_migratable(target, record=lambda ev: ev)


@pytest.mark.parametrize("reason", ["DisksNotLiveMigratable", "HotplugNotLiveMigratable", None])
def test_not_migratable_check_fails_on_any_other_reason(reason):
    target = _vmi_with_live_migratable({"status": "False", "reason": reason})
    with pytest.raises(AssertionError, match="InterfaceNotLiveMigratable"):
        test_slirp_kubevirt.test_vmi_is_not_live_migratable(target, record=lambda ev: ev)


def test_every_pinned_node_image_carries_the_digest_of_its_kind_release():
    # kind pkg/apis/config/defaults/image.go at each pinned kind tag: `const Image = "kindest/node:vX@sha256:..."`.
    for minor in versions.supported_minors():
        pins = versions.pins_for(versions.latest_known_patch(minor))
        assert re.fullmatch(r"kindest/node:v1\.\d+\.\d+@sha256:[0-9a-f]{64}", pins.node_image), pins
        assert re.fullmatch(r"v1\.\d+\.\d+", pins.kubernetes), pins


def test_kind_config_asks_for_the_digest_and_no_host_search_domains():
    pins = versions.pins_for("v1.1.0")
    config = yaml.safe_load(kind.render_config("c", pins.node_image, kvm=False))
    assert (
        config["nodes"][0]["image"]
        == "kindest/node:v1.27.1@sha256:b7d12ed662b873bd8510879c1846e87c7e676a79fefc93e17b2a52989d3ff42b"
    )
    # kind pkg/apis/config/v1alpha4/types.go (since v0.19.0): Networking.DNSSearch, "If not set, this will be
    # inherited from the host". An empty list keeps the host's search domains out of the node and its pods.
    assert config["networking"]["dnsSearch"] == []


def test_vm_has_the_user_guides_zero_grace_period():
    # kubevirt/user-guide docs/network/net_binding_plugins/slirp.md: terminationGracePeriodSeconds: 0
    vm = render_vm(conformance_vm("vm"), namespace="ns", image="img", authorized_key="ssh-ed25519 AAAA k", password="p")
    assert vm["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 0


class _Unregistered:
    """A KubeVirt VM stand-in on which a VM naming an unregistered binding fails with ``message``:
    from the controller (a FailedCreate event), or refused at admission when ``at_admission``."""

    def __init__(self, message: str | None, at_admission: bool = False) -> None:
        self.message, self.at_admission = message, at_admission
        self.created: list[tuple[str, str | None]] = []
        self.deleted: list[str] = []

    def create_vm(self, name: str, *, binding: str | None = None) -> None:
        self.created.append((name, binding))
        if self.at_admission:
            raise ApiException(status=400, reason="Bad Request")  # its body: None, no message

    def event_messages(self, involved: str, reason: str) -> list[str]:
        assert (involved, reason) == (self.created[-1][0], "FailedCreate")
        return [self.message] if self.message else []

    def read_vmi(self, name: str) -> dict:
        raise ApiException(status=404, reason="Not Found")

    def delete_vm(self, name: str) -> None:
        self.deleted.append(name)


# kubevirt pkg/network/netbinding/netbinding.go: "bindining" at v1.1.0..v1.6.6, "binding" from v1.7.0;
# virt-controller prefixes "failed to render launch manifest: ".
@pytest.mark.parametrize("word", ["bindining", "binding"])
def test_unregistered_binding_check_passes_on_either_spelling_of_kubevirts_reason(word):
    vm = _Unregistered(
        f"failed to render launch manifest: couldn't find configuration for network {word}: slirp-unregistered"
    )
    test_slirp_kubevirt.test_unregistered_binding_fails_with_the_controllers_reason(vm, record=lambda ev: ev)
    assert [binding for _, binding in vm.created] == ["slirp-unregistered"]
    assert vm.deleted == [vm.created[0][0]], "the VM the check created is deleted"


@pytest.mark.parametrize(
    "message",
    [
        "failed to render launch manifest: couldn't find configuration for network binding: another-name",
        "Internal error occurred: failed calling webhook",
    ],
)
def test_unregistered_binding_check_fails_on_another_reason(message):
    with pytest.raises(AssertionError, match="slirp-unregistered"):
        test_slirp_kubevirt.test_unregistered_binding_fails_with_the_controllers_reason(
            _Unregistered(message), record=lambda ev: ev
        )


def test_unregistered_binding_check_fails_on_a_refusal_without_a_message():
    with pytest.raises(AssertionError, match="slirp-unregistered"):
        test_slirp_kubevirt.test_unregistered_binding_fails_with_the_controllers_reason(
            _Unregistered(None, at_admission=True), record=lambda ev: ev
        )


def test_stale_config_messages_cover_both_spellings():
    assert "couldn't find configuration for network bindining" in kubevirt_config.STALE_CONFIG_MESSAGES
    assert "couldn't find configuration for network binding" in kubevirt_config.STALE_CONFIG_MESSAGES
