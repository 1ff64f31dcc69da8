"""Supported KubeVirt versions and the pins (kind, node image, kubectl) that go with each.

Everything comes from ``hack/versions.env``, the one file the shell scripts and CI also read.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from slirp_conformance.checkout import REPO
from slirp_conformance.errors import SetupError
from slirp_conformance.version import Version, VersionError
from slirp_conformance.version import parse as parse_version

VERSIONS_ENV = REPO / "hack" / "versions.env"

# Below this minor the NetworkBindingPlugins feature gate must be enabled (GA in v1.5).
FEATURE_GATE = "NetworkBindingPlugins"
_BINDING_NAME_CONFIGURABLE_MINOR = 9
_FEATURE_GATE_GA_MINOR = 5

_LINE = re.compile(r'^(?P<key>[A-Za-z_][A-Za-z0-9_]*)=(?:"(?P<quoted>[^"$`\\]*)"|(?P<bare>[^\s"\'$`\\#]*))\s*(?:#.*)?$')


def parse_env_file(path: Path = VERSIONS_ENV) -> dict[str, str]:
    """Parse a shell-compatible KEY=VALUE file without a shell (no expansions allowed)."""
    values: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line)
        if not match:
            raise SetupError(
                f"{path}:{number}: not a plain KEY=VALUE line: {line!r}; "
                f"fix the line (no expansions, quotes only around the whole value)"
            )
        values[match["key"]] = match["quoted"] if match["quoted"] is not None else match["bare"]
    return values


@lru_cache(maxsize=1)
def _env() -> dict[str, str]:
    return parse_env_file(VERSIONS_ENV)


def env(key: str) -> str:
    """One value of hack/versions.env; SetupError when the key is missing."""
    try:
        return _env()[key]
    except KeyError:
        raise SetupError(f"{VERSIONS_ENV} has no {key}; add it (see the comments in that file)") from None


# A KubeVirt release, by the project's one version rule (slirp_conformance/version.py).
KubeVirtVersion = Version


def supported_minors() -> list[str]:
    return env("KUBEVIRT_SUPPORTED_MINORS").split()


def supported_range() -> str:
    minors = supported_minors()
    return f"v{minors[0]}.0..v{minors[-1]}.x"


def parse_kubevirt_version(text: str) -> KubeVirtVersion:
    """``"v1.5.3"`` (or ``"1.5.3"``) -> KubeVirtVersion; SetupError naming the range otherwise."""
    hint = (
        f"use a full release version in the supported range {supported_range()}, "
        f"e.g. --kubevirt-version {env('KUBEVIRT_DEFAULT_VERSION')}"
    )
    try:
        version = parse_version(text)
    except VersionError:
        raise SetupError(f"KubeVirt version {text!r} is not a release version (vMAJOR.MINOR.PATCH); {hint}") from None
    if version.minor_key not in supported_minors():
        raise SetupError(
            f"KubeVirt {version} is outside the supported range {supported_range()} "
            f"(the slirp binding sidecar ships only in those releases); {hint}"
        )
    return version


def needs_feature_gate(version: KubeVirtVersion | str) -> bool:
    """True when NetworkBindingPlugins must be listed in developerConfiguration.featureGates."""
    if isinstance(version, str):
        version = parse_kubevirt_version(version)
    return (version.major, version.minor) < (1, _FEATURE_GATE_GA_MINOR)


def binding_name_configurable(version: KubeVirtVersion | str) -> bool:
    """True when the slirp plugin may be registered under a name other than ``slirp``: from v1.9.0
    virt-controller passes each binding's name to its sidecar as NETWORK_BINDING_PLUGIN_NAME
    (pkg/virt-controller/services/template.go, pkg/network/netbinding/netbinding.go) and the sidecar
    serves the interface of that binding (cmd/sidecars/network-slirp-binding/main.go); up to v1.8 the
    sidecar accepts only ``slirp`` (domain.go SlirpPluginName)."""
    if isinstance(version, str):
        version = parse_kubevirt_version(version)
    return (version.major, version.minor) >= (1, _BINDING_NAME_CONFIGURABLE_MINOR)


@dataclass(frozen=True)
class Pins:
    """What a kind cluster for one KubeVirt release is built from."""

    kubevirt: KubeVirtVersion
    kind: str
    node_image: str
    kubectl: str

    @property
    def node_image_tag(self) -> str:
        """``kindest/node:v1.27.1`` (the pin without its ``@sha256:`` digest)."""
        return self.node_image.split("@", 1)[0]

    @property
    def kubernetes(self) -> str:
        return self.node_image_tag.rsplit(":", 1)[1]


def pins_for(version: KubeVirtVersion | str) -> Pins:
    if isinstance(version, str):
        version = parse_kubevirt_version(version)
    prefix = "KUBEVIRT_" + version.minor_key.replace(".", "_")
    return Pins(
        kubevirt=version,
        kind=env(f"{prefix}_KIND"),
        node_image=env(f"{prefix}_NODE_IMAGE"),
        kubectl=env(f"{prefix}_KUBECTL"),
    )


def go_toolchain(kubernetes: str) -> str | None:
    """The Go toolchain to build Kubernetes ``vX.Y.Z`` with when today's Go cannot
    (``KIND_NODE_GO_TOOLCHAIN_X_Y`` of hack/versions.env), else None: the machine's Go."""
    minor = kubernetes.lstrip("v").rsplit(".", 1)[0].replace(".", "_")
    return _env().get(f"KIND_NODE_GO_TOOLCHAIN_{minor}") or None


def latest_known_patch(minor: str) -> KubeVirtVersion:
    return parse_kubevirt_version(env("KUBEVIRT_" + minor.replace(".", "_") + "_LATEST"))


def default_version() -> KubeVirtVersion:
    return parse_kubevirt_version(env("KUBEVIRT_DEFAULT_VERSION"))


def add_option(parser: argparse.ArgumentParser) -> None:
    """``--kubevirt-version V`` of a command that takes one release's pins."""
    parser.add_argument(
        "--kubevirt-version",
        default=str(default_version()),
        help="whose pins (default: %(default)s, KUBEVIRT_DEFAULT_VERSION of hack/versions.env)",
    )


def nightly_versions() -> list[KubeVirtVersion]:
    return [parse_kubevirt_version(v) for v in env("NIGHTLY_KUBEVIRT_VERSIONS").split()]


def tool_sha256(tool: str, version: str, os_name: str = "linux", arch: str = "amd64") -> str | None:
    """The pinned sha256 of a kind/kubectl binary, or None when it is not filled in yet."""
    key = f"{tool.upper()}_{version.replace('.', '_')}_SHA256_{os_name}_{arch}"
    value = _env().get(key, "")
    return value or None


def slirp_sidecar_image(version: KubeVirtVersion | str) -> str:
    """The slirp binding sidecar KubeVirt shipped with this release."""
    if isinstance(version, str):
        version = parse_kubevirt_version(version)
    return f"{env('SLIRP_SIDECAR_IMAGE_REPO')}:{version}"


def release_manifest_urls(version: KubeVirtVersion | str) -> dict[str, str]:
    """``{"kubevirt-operator.yaml": url, "kubevirt-cr.yaml": url}`` of the GitHub release."""
    if isinstance(version, str):
        version = parse_kubevirt_version(version)
    base = f"{env('KUBEVIRT_RELEASE_URL')}/{version}"
    return {name: f"{base}/{name}" for name in ("kubevirt-operator.yaml", "kubevirt-cr.yaml")}
