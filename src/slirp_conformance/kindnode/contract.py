"""kind's node contract, read from the kind module in the Go module cache at build time.

What a node image must be for the kind CLI of a given version is defined by that version's
``images/base`` (its Dockerfile and ``files/``) and ``pkg/build/nodeimage``. Nothing of it is
copied into this repository: the module is fetched through the module proxy (``go mod
download``) and read from the module cache when a node image is built. Read from it:

* the Debian packages of the base (the ``clean-install`` list), and the shell steps that follow
  that install in the same RUN (systemd units kind removes, journald's ReadKMsg, /sbin/init);
* the later steps of the base stage (``systemctl enable/mask``, ``mkdir -p``), done here in Python;
* ``files/``: the entrypoint, /kind/bin scripts, containerd's config and unit, kubelet's units,
  sysctls, crictl's config;
* the versions it pins (``ARG *_VERSION``): the CNI plugins the node carries.

The adaptations to Debian's containerd and to this machine are in ``adapt_*`` below, each with
its reason.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from slirp_conformance import gobuild
from slirp_conformance.errors import SetupError

# Packages of kind's list a node here does without: fuse-overlayfs (rootless Docker only),
# nfs-common and open-iscsi (network storage; the suite uses none). Added: Debian's containerd
# and runc, which kind builds from source instead.
DROPPED_PACKAGES = frozenset({"fuse-overlayfs", "nfs-common", "open-iscsi"})
DEBIAN_RUNTIME_PACKAGES = ("containerd", "runc")
SKIPPED_FILES = frozenset({"LICENSES/README.txt", "etc/systemd/system/containerd-fuse-overlayfs.service"})
EXECUTABLE_DIRS = ("usr/local/bin/", "kind/bin/")
DEBIAN_CONTAINERD = "/usr/bin/containerd"
RUNC_WRAPPER_IN_NODE = "/usr/local/sbin/runc-wrapper"


@dataclass(frozen=True)
class Step:
    """A later step of kind's base stage that this builder performs itself."""

    verb: str  # "enable", "mask", "mkdir"
    argument: str


def module_dir(kind_version: str) -> Path:
    """The kind module at ``kind_version`` in the Go module cache (downloaded through the proxy if absent)."""
    try:
        return gobuild.module_dir(f"sigs.k8s.io/kind@{kind_version}")
    except SetupError as e:
        raise SetupError(f"{e} (the kind pin is in hack/versions.env)") from None


def _instructions(dockerfile: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    lines = [ln for ln in dockerfile.splitlines() if not ln.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    result = []
    for line in joined.splitlines():
        parts = line.strip().split(None, 1)
        if parts:
            result.append((parts[0].upper(), parts[1] if len(parts) > 1 else ""))
    return result


@dataclass(frozen=True)
class KindContract:
    version: str
    root: Path  # the module directory

    @classmethod
    def fetch(cls, kind_version: str) -> KindContract:
        return cls(kind_version, module_dir(kind_version))

    @property
    def base(self) -> Path:
        return self.root / "images" / "base"

    @cached_property
    def _base_stage(self) -> list[tuple[str, str]]:
        """The instructions of the Dockerfile's first stage (the node's own file system)."""
        path = self.base / "Dockerfile"
        if not path.is_file():
            raise SetupError(
                f"kind {self.version} has no images/base/Dockerfile in {self.root}: this builder "
                f"reads the node contract from there"
            )
        stage, seen_from = [], 0
        for instruction, args in _instructions(path.read_text()):
            if instruction == "FROM":
                seen_from += 1
                if seen_from > 1:
                    break
                continue
            stage.append((instruction, args))
        return stage

    @cached_property
    def _install_run(self) -> list[str]:
        """The ``&&`` segments of the RUN that installs the packages."""
        for instruction, args in self._base_stage:
            if instruction == "RUN" and "clean-install" in args:
                return [seg.strip() for seg in args.split("&&")]
        raise SetupError(
            f"kind {self.version}'s base Dockerfile has no clean-install step: "
            f"extend src/slirp_conformance/kindnode/contract.py for it"
        )

    def packages(self) -> list[str]:
        """kind's Debian packages for the node, minus DROPPED_PACKAGES, plus Debian's containerd and runc."""
        segment = next(seg for seg in self._install_run if "clean-install" in seg)
        names = shlex.split(segment.split("clean-install", 1)[1])
        return sorted({n for n in names if n not in DROPPED_PACKAGES} | set(DEBIAN_RUNTIME_PACKAGES))

    def post_install_commands(self) -> list[str]:
        """The shell steps after the install in the same RUN (run in the node's root, chrooted)."""
        index = next(i for i, seg in enumerate(self._install_run) if "clean-install" in seg)
        return [seg for seg in self._install_run[index + 1 :] if seg and not seg.startswith('echo "Installing')]

    def later_steps(self) -> list[Step]:
        """The base stage's other RUN steps, as Steps; SetupError for one this builder cannot do."""
        steps = []
        for instruction, args in self._base_stage:
            if instruction != "RUN" or "clean-install" in args:
                continue
            for segment in (seg.strip() for seg in args.split("&&")):
                words = shlex.split(segment)
                if not words or words[0] == "echo" or words[:2] == ["chmod", "755"]:
                    continue
                if words[:2] == ["systemctl", "enable"] and len(words) == 3:
                    steps.append(Step("enable", words[2]))
                elif words[:2] == ["systemctl", "mask"] and len(words) == 3:
                    steps.append(Step("mask", words[2]))
                elif words[:2] == ["mkdir", "-p"] and len(words) == 3:
                    steps.append(Step("mkdir", words[2]))
                else:
                    raise SetupError(
                        f"kind {self.version}'s base Dockerfile has a step this builder does not "
                        f"know: {segment!r}; extend src/slirp_conformance/kindnode/contract.py for it"
                    )
        return steps

    def pinned(self, arg: str) -> str:
        """A version the Dockerfile pins (``ARG CNI_PLUGINS_VERSION="v1.7.1"``)."""
        for instruction, args in _instructions((self.base / "Dockerfile").read_text()):
            m = re.fullmatch(rf'{re.escape(arg)}="?([^"\s]+)"?', args.strip()) if instruction == "ARG" else None
            if m:
                return m.group(1)
        raise SetupError(f"kind {self.version}'s base Dockerfile pins no {arg}")

    def files(self) -> dict[str, tuple[bytes, int]]:
        """Node path (relative to /) -> (content, mode) of kind's ``files/``, adapted for this node."""
        files_dir = self.base / "files"
        out = {}
        for path in sorted(p for p in files_dir.rglob("*") if p.is_file()):
            rel = path.relative_to(files_dir).as_posix()
            if rel in SKIPPED_FILES:
                continue
            mode = 0o755 if rel.startswith(EXECUTABLE_DIRS) else 0o644
            out[rel] = (path.read_bytes(), mode)
        out["etc/containerd/config.toml"] = (
            adapt_containerd_config(out["etc/containerd/config.toml"][0].decode()).encode(),
            0o644,
        )
        out["etc/systemd/system/containerd.service"] = (
            adapt_containerd_unit(out["etc/systemd/system/containerd.service"][0].decode()).encode(),
            0o644,
        )
        return out


def adapt_containerd_config(text: str) -> str:
    """kind's containerd config for Debian's containerd on this machine.

    * no fuse-overlayfs proxy plugin (not installed; rootless Docker only);
    * ``restrict_oom_score_adj = true``: runc cannot lower a pod's oom_score_adj without
      CAP_SYS_RESOURCE, which this machine's containers lack (kind sets it for rootless nodes);
    * runc through the capability-dropping wrapper (``BinaryName``): a pod that adds
      SYS_RESOURCE (virt-handler, virt-launcher) would fail "unable to apply caps" otherwise.
    """
    kept, skipping = [], False
    for line in text.splitlines():
        header = re.match(r"\s*\[([^\]]+)\]", line)
        if header:
            skipping = header.group(1).strip().startswith("proxy_plugins")
        if not skipping:
            kept.append(line)
    out = "\n".join(kept) + "\n"
    out, n = re.subn(r"restrict_oom_score_adj = false", "restrict_oom_score_adj = true", out)
    if n != 1:
        raise SetupError("kind's containerd config has no `restrict_oom_score_adj = false` line to turn on")
    out, n = re.subn(
        r"(?m)^(\s*)SystemdCgroup = true$", rf'\1SystemdCgroup = true\n\1BinaryName = "{RUNC_WRAPPER_IN_NODE}"', out
    )
    if n == 0:
        raise SetupError("kind's containerd config has no runc options (SystemdCgroup) to add the runc wrapper to")
    parsed = tomllib.loads(out)  # the result must still be TOML, with what was asked of it
    cri = parsed["plugins"]["io.containerd.grpc.v1.cri"]
    runc = cri["containerd"]["runtimes"]["runc"]["options"]
    if not (
        cri["restrict_oom_score_adj"] and runc["BinaryName"] == RUNC_WRAPPER_IN_NODE and "proxy_plugins" not in parsed
    ):
        raise SetupError("adapting kind's containerd config went wrong: fix src/slirp_conformance/kindnode/contract.py")
    return out


def adapt_containerd_unit(text: str) -> str:
    """kind's containerd.service, starting Debian's containerd (/usr/bin) instead of kind's own build."""
    out, n = re.subn(r"(?m)^ExecStart=\S*containerd$", f"ExecStart={DEBIAN_CONTAINERD}", text)
    if n != 1:
        raise SetupError("kind's containerd.service has no `ExecStart=.../containerd` line to point at Debian's")
    return out
