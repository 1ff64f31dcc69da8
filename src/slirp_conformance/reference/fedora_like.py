"""The Fedora-like reference guests: which flavour stands for which KubeVirt test image.

KubeVirt's ``fedora-with-test-tooling`` image differs by release in the tool the suite would
trip over first, ``/usr/bin/nc`` (facts and sources: ../shared/kubevirt-slirp-facts.md,
"The Fedora test image"). One flavour per distinct tool set; everything else (systemd,
NetworkManager, systemd-resolved, cloud-init, OpenSSH, python3) is common to all of them.
"""

from __future__ import annotations

from dataclasses import dataclass

from slirp_conformance.cluster import versions
from slirp_conformance.errors import SetupError


@dataclass(frozen=True)
class Flavour:
    name: str
    kubevirt: str  # the KubeVirt releases whose test image it stands for
    fedora: str  # the Fedora release of that image
    nc: str  # what /usr/bin/nc is
    absent: tuple[str, ...]  # tools of the common tree this image does not have
    covers: tuple[tuple[int, int], ...]  # (major, minor) KubeVirt releases

    def __str__(self) -> str:
        return f"{self.name} (KubeVirt {self.kubevirt}, Fedora {self.fedora})"


FLAVOURS = {
    f.name: f
    for f in (
        Flavour("nmap-ncat", "v1.1.x", "35", "ncat", absent=("usr/bin/nc.openbsd", "bin/nc.openbsd"), covers=((1, 1),)),
        Flavour(
            "busybox-nc",
            "v1.2 - v1.8",
            "35 (v1.2-v1.6), 39 (v1.7-v1.8)",
            "busybox",
            absent=("usr/bin/ncat", "usr/bin/nc.openbsd", "bin/nc.openbsd"),
            covers=tuple((1, m) for m in range(2, 9)),
        ),
        Flavour("openbsd-nc", "v1.9.0", "43", "nc.openbsd", absent=(), covers=((1, 9),)),
    )
}


def flavour_for(kubevirt_version: str) -> Flavour:
    """The flavour whose tools match KubeVirt ``kubevirt_version``'s Fedora test image."""
    release = versions.parse_kubevirt_version(kubevirt_version)
    for flavour in FLAVOURS.values():
        if (release.major, release.minor) in flavour.covers:
            return flavour
    raise SetupError(
        f"KubeVirt {release}: no Fedora-like flavour stands for its test image; "
        f"FLAVOURS in {__name__} covers v1.1 - v1.9"
    )
