"""The Fedora-like guest's cidata ISO carries exactly the VM manifest's cloud-init."""

import subprocess

from slirp_conformance.kubevirt.vm_manifest import render_vm
from slirp_conformance.reference import cidata
from slirp_conformance.vmspec import conformance_vm


def test_iso_holds_the_manifests_user_data_and_network_config(tmp_path):
    spec = conformance_vm("vm-x")
    iso = cidata.write_iso(tmp_path / "cidata.iso", vm_name="vm-x", authorized_key="ssh-ed25519 AAAA k", password="pw")
    out = tmp_path / "out"
    subprocess.run(
        ["xorriso", "-osirrox", "on", "-indev", str(iso), "-extract", "/", str(out)], check=True, capture_output=True
    )
    manifest = render_vm(spec, namespace="ns", image="img", authorized_key="ssh-ed25519 AAAA k", password="pw")
    volume = next(v for v in manifest["spec"]["template"]["spec"]["volumes"] if "cloudInitNoCloud" in v)
    nocloud = volume["cloudInitNoCloud"]
    assert (out / "user-data").read_text() == nocloud["userData"]
    assert (out / "network-config").read_text() == nocloud["networkData"]
    assert "vm-x" in (out / "meta-data").read_text()
    label = subprocess.run(["xorriso", "-indev", str(iso), "-pvd_info"], capture_output=True, text=True).stdout
    assert "Volume Id    : cidata" in label
