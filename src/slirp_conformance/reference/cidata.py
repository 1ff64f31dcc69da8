"""The NoCloud ``cidata`` ISO of a Fedora-like reference guest, built from exactly the user
data and network config the KubeVirt VM manifest carries (``vm_manifest`` renders both), so
the password, ``chpasswd``, the authorized key and ``dhcp4: true`` are exercised for real."""

from __future__ import annotations

import json
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from slirp_conformance.errors import SetupError
from slirp_conformance.kubevirt.vm_manifest import NETWORK_DATA, user_data


def meta_data(vm_name: str) -> str:
    """What KubeVirt writes as NoCloud meta-data: an instance id and the VM's host name."""
    return json.dumps({"instance-id": f"{vm_name}.slirp-conformance", "local-hostname": vm_name}) + "\n"


@dataclass(frozen=True)
class NoCloud:
    """What a ``cloudInitNoCloud`` volume carries: the user data and, when given, the network config."""

    user_data: str
    network_config: str | None = None


def write_iso(out: Path, *, vm_name: str, authorized_key: str, password: str) -> Path:
    """An ISO 9660 volume labelled ``cidata`` with user-data, meta-data and network-config."""
    return write_nocloud_iso(out, vm_name=vm_name, nocloud=NoCloud(user_data(authorized_key, password), NETWORK_DATA))


def write_nocloud_iso(out: Path, *, vm_name: str, nocloud: NoCloud) -> Path:
    """The ``cidata`` volume of exactly ``nocloud`` (no network-config file when it has none)."""
    with tempfile.TemporaryDirectory(prefix="cidata-") as tmp:
        files = {
            "user-data": nocloud.user_data,
            "meta-data": meta_data(vm_name),
            "network-config": nocloud.network_config,
        }
        for name, text in files.items():
            if text is None:
                continue
            Path(tmp, name).write_text(text)
        r = subprocess.run(
            ["xorriso", "-as", "mkisofs", "-quiet", "-V", "cidata", "-J", "-r", "-o", str(out), tmp],
            capture_output=True,
            text=True,
            timeout=60,
        )
    if r.returncode != 0:
        raise SetupError(f"xorriso could not write the cidata ISO: {r.stderr.strip()[-300:]}")
    out.chmod(0o644)
    return out
