"""Where the bed's node-side parts meet on disk: the node agent (which runs each VMI's reference VM)
publishes a VMI's serial console here, and the virt-handler console endpoint that virt-api dials
streams from it. Both are local processes of one bed, under its state directory."""

from __future__ import annotations

from pathlib import Path


# A VMI with this annotation set to "skip" is left alone by the node agent: no VM, no status. The
# console self-tests play such a VMI's VM themselves, with a stand-in serial console.
AGENT_SKIP_ANNOTATION = "testbed.slirp-conformance.kubevirt.io/node-agent"


def vmi_dir(state_dir: Path, namespace: str, name: str) -> Path:
    return Path(state_dir) / "node-agent" / "vmis" / namespace / name


def console_socket(state_dir: Path, namespace: str, name: str) -> Path:
    """A symlink to the running VM's serial console (a QEMU unix socket server); absent while the
    VMI has no running VM."""
    return vmi_dir(state_dir, namespace, name) / "console.sock"
