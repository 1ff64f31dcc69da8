"""kind and kubectl built from their Go modules, for machines that cannot download the release binaries.

``hack/install-tools.sh --from-source`` (and its fallback when a download fails) runs
``python -m slirp_conformance.kind_tools TOOL VERSION DEST``: the binary is built through the module proxy
(``sigs.k8s.io/kind`` at the kind pin; ``k8s.io/kubernetes/cmd/kubectl`` at the kubectl pin, with
the staging modules at their published tags), cached by version under
``~/.cache/slirp-conformance/go``, and copied to DEST with one rename.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

from slirp_conformance import kubernetes_modules
from slirp_conformance.cluster import versions
from slirp_conformance.errors import SetupError, refuse
from slirp_conformance.gobuild import Built, WrapperModule, build, upstream_command

TOOLS = ("kind", "kubectl")


def kind_module(version: str) -> WrapperModule:
    """kind's CLI is the module's root package (main.go); its version is a constant of the module."""
    return upstream_command("kind", "sigs.k8s.io/kind", version)


def kubectl_module(version: str) -> WrapperModule:
    """kubectl at ``version``, with an older Go toolchain where hack/versions.env names one for its minor."""
    return kubernetes_modules.kubernetes_module(
        version, ("kubectl",), name="kubectl", toolchain=versions.go_toolchain(version)
    )


def build_tool(tool: str, version: str) -> Built:
    if tool not in TOOLS:
        raise SetupError(f"unknown tool {tool!r}: choose one of {', '.join(TOOLS)}")
    return build(kind_module(version) if tool == "kind" else kubectl_module(version))


def install(tool: str, version: str, dest: Path) -> Path:
    """Build (or take from the cache) ``tool`` at ``version`` and put it at ``dest`` atomically."""
    built = build_tool(tool, version).binary(tool)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
    os.close(fd)
    try:
        shutil.copyfile(built, tmp)
        os.chmod(tmp, 0o755)
        os.replace(tmp, dest)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m slirp_conformance.kind_tools",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("tool", choices=TOOLS)
    parser.add_argument("version")
    parser.add_argument("dest", type=Path)
    args = parser.parse_args(argv)
    try:
        install(args.tool, args.version, args.dest)
    except SetupError as e:
        return refuse("install-tools", e)
    return 0


if __name__ == "__main__":
    sys.exit(main())


def install_pinned(kind_version: str, kubectl_version: str, root: Path) -> dict[str, Path]:
    """Both tools from source into ``root/dist`` and linked from ``root/bin`` (what install-tools.sh
    --from-source does), for callers that need them on PATH (``hack/cluster-up.sh --images-from-source``)."""
    installed = {}
    for tool, version in (("kind", kind_version), ("kubectl", kubectl_version)):
        dest = root / "dist" / f"{tool}-{version}-linux-amd64-source"
        if not dest.is_file():
            install(tool, version, dest)
        link = root / "bin" / tool
        link.parent.mkdir(parents=True, exist_ok=True)
        tmp = link.with_name(f".{tool}.link")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(Path("..") / "dist" / dest.name)
        os.replace(tmp, link)
        installed[tool] = dest
    return installed
