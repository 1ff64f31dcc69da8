"""A kind node image for one Kubernetes version, built here from its parts and loaded into Docker.

Two layers: the Debian base (``rootfs``, cached by its recipe) and everything kind and
Kubernetes add (kind's node files adapted, kubelet/kubeadm/kubectl, crictl, the CNI plugins,
the runc wrapper, and ``/var/lib/containerd`` with the control-plane images preloaded). The
image config is written here, so it has what ``docker import`` cannot give: ``STOPSIGNAL
SIGRTMIN+3`` (systemd's clean shutdown; kind passes no stop signal). The tag carries a key of
every input (``slirp-conformance/kind-node:v1.34.0-<key>``): an image with that tag in Docker is
the cache; a changed input builds a new one.

The Go builds run one after the other (each already uses both cores) while debootstrap runs
beside them; every part's time and whether it was built now go to the returned report.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from slirp_conformance import buildlog, cache_dirs, file_lock, image_archive, progress, runc_wrapper, waits
from slirp_conformance.cache_dirs import cache_root
from slirp_conformance.cluster import versions
from slirp_conformance.cluster.versions import Pins
from slirp_conformance.docker_daemon import Engine
from slirp_conformance.errors import SetupError
from slirp_conformance.gobuild import Built, build, spec_key
from slirp_conformance.image_archive import Image
from slirp_conformance.kindnode import component_images, parts, preload, rootfs
from slirp_conformance.kindnode.contract import RUNC_WRAPPER_IN_NODE, KindContract

REPOSITORY = "slirp-conformance/kind-node"
NODE_ENV = ("container=docker", image_archive.DEFAULT_PATH)
ENTRYPOINT = ("/usr/local/bin/entrypoint", "/sbin/init")
STOP_SIGNAL = "SIGRTMIN+3"
# The code whose output is in the image (not the CNI or the CLI): a change to it makes a new image.
# On cgroup v1 kind's entrypoint makes the kubelet's cgroup root in the hierarchies Docker mounted;
# systemd mounts the others afterwards (here hugetlb, net_cls,net_prio and perf_event: the kernel
# has them, the host mounts none of them), and kubelet 1.27 refuses a cgroup root missing from any
# ("cgroup ["kubelet"] has some missing paths: /sys/fs/cgroup/hugetlb/kubelet.slice"). kubelet
# 1.34 does not check those. Made before every kubelet start; nothing on cgroup v2. ($$: systemd.)
KUBELET_CGROUP_DROPIN = (
    "12-slirp-conformance-cgroup-v1.conf",
    "# slirp-conformance (src/slirp_conformance/kindnode/node_image.py): the kubelet's cgroup root in every\n"
    "# cgroup v1 hierarchy, also those systemd mounted after kind's entrypoint made it in Docker's.\n"
    "[Service]\n"
    "ExecStartPre=/bin/sh -euc 'if [ ! -f /sys/fs/cgroup/cgroup.controllers ]; then for h in /sys/fs/cgroup/*/; "
    'do [ -L "$${h%/}" ] || mkdir -p "$${h}kubelet" "$${h}kubelet.slice" 2>/dev/null || true; done; fi\'\n',
)
_BUILDER_SOURCES = [
    Path(__file__).parent / f"{name}.py"
    for name in ("node_image", "contract", "rootfs", "parts", "component_images", "preload")
] + [Path(image_archive.__file__)]


@dataclass(frozen=True)
class NodeRecipe:
    """What one node image is built from (all from hack/versions.env and the kind module)."""

    kubernetes: str
    kind: str
    suite: str
    crictl: str
    toolchain: str | None = None

    @classmethod
    def for_pins(cls, pins: Pins) -> NodeRecipe:
        toolchain = versions.go_toolchain(pins.kubernetes)
        return cls(
            kubernetes=pins.kubernetes,
            kind=pins.kind,
            suite=versions.env("KIND_NODE_DEBIAN_SUITE"),
            crictl=versions.env("KIND_NODE_CRICTL_VERSION"),
            toolchain=toolchain,
        )


@dataclass
class NodeImage:
    tag: str
    recipe: NodeRecipe
    cold: bool = False
    parts: dict[str, dict] = field(default_factory=dict)  # part -> {"seconds": s, "cold": bool}
    images: list[str] = field(default_factory=list)  # preloaded image names

    def report(self) -> dict:
        return {
            "tag": self.tag,
            "kubernetes": self.recipe.kubernetes,
            "kind": self.recipe.kind,
            "cold": self.cold,
            "parts": self.parts,
            "preloaded": self.images,
        }


def logs_dir(recipe: NodeRecipe, cache: Path) -> Path:
    return cache / "kind-node" / "logs" / recipe.kubernetes


def _builder_digest() -> str:
    h = hashlib.sha256()
    for path in _BUILDER_SOURCES:
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def image_key(recipe: NodeRecipe, contract: KindContract) -> str:
    """Every input of the node image, hashed: the recipe, kind's files, the base, the Go specs, this builder."""
    h = hashlib.sha256(json.dumps(recipe.__dict__, sort_keys=True).encode())
    for rel, (data, mode) in sorted(contract.files().items()):
        h.update(f"{rel}:{mode:o}".encode() + hashlib.sha256(data).digest())
    h.update(repr((contract.later_steps(), contract.pinned("CNI_PLUGINS_VERSION"), cri_base_hook(contract))).encode())
    h.update(rootfs.key_of(contract, recipe.suite).encode())
    for spec in _go_specs(recipe, contract):
        h.update(spec_key(spec).encode())
    h.update(_builder_digest().encode())
    return h.hexdigest()[:12]


def _go_specs(recipe: NodeRecipe, contract: KindContract) -> list:
    tc = recipe.toolchain
    return [
        parts.node_module(recipe.kubernetes, tc),
        parts.kubectl_module(recipe.kubernetes),
        parts.crictl_module(recipe.crictl),
        parts.cni_plugins_module(contract.pinned("CNI_PLUGINS_VERSION")),
        runc_wrapper.module(),
    ]


def cri_base_hook(contract: KindContract) -> str:
    """The createContainer hook kind adds to cri-base.json (mount-product-files), read from its Dockerfile."""
    import re

    text = (contract.base / "Dockerfile").read_text()
    m = re.search(r'\{"path":\s*"([^"]+)"\}', text)
    if not m:
        raise SetupError(f"kind {contract.version}'s base Dockerfile names no createContainer hook for cri-base.json")
    return m.group(1)


class _Timer:
    def __init__(self, image: NodeImage) -> None:
        self.image = image

    @contextlib.contextmanager
    def part(self, name: str, what: str, cold_hint: str = "") -> Iterator[dict]:
        record: dict = {"cold": True}
        t0 = time.monotonic()
        with progress.phase(f"kind node {self.image.recipe.kubernetes}: {what}{cold_hint}"):
            yield record
        record["seconds"] = round(time.monotonic() - t0, 1)
        self.image.parts[name] = record

    def go(self, name: str, spec, cold_hint: str) -> Built:
        with self.part(name, f"Go build of {spec.name} {spec.version}", cold_hint) as record:
            built = build(spec)
            record["cold"] = built.cold
        return built


def _build_lock(cache: Path, recipe: NodeRecipe) -> contextlib.AbstractContextManager[None]:
    return file_lock.held(
        cache / "kind-node" / f".build-{recipe.kubernetes}.lock",
        f"another build of the kind node image {recipe.kubernetes}",
        waits.timeout("node-image-build"),
        fix="stop that build",
    )


def ensure(pins: Pins, engine: Engine, cache: Path | None = None, *, rebuild: bool = False) -> NodeImage:
    """The node image for ``pins`` in ``engine``: found by its key, else built and loaded.

    ``rebuild``: build and load it even when Docker has it (the parts still come from their caches:
    a cold benchmark points the caches at empty directories)."""
    cache = cache or cache_root()
    recipe = NodeRecipe.for_pins(pins)
    contract = KindContract.fetch(recipe.kind)
    tag = f"{REPOSITORY}:{recipe.kubernetes}-{image_key(recipe, contract)}"
    image = NodeImage(tag, recipe)
    if not rebuild and engine.has_image(tag):
        return image
    with _build_lock(cache, recipe):
        if rebuild or not engine.has_image(tag):
            _build(image, contract, engine, cache)
            (logs_dir(recipe, cache) / "build.json").write_text(json.dumps(image.report(), indent=2))
    return image


def _build(image: NodeImage, contract: KindContract, engine: Engine, cache: Path) -> None:
    recipe, timer = image.recipe, _Timer(image)
    image.cold = True
    logs = logs_dir(recipe, cache)
    if logs.exists():
        shutil.rmtree(logs)
    logs.mkdir(parents=True)
    progress.note(
        f"building the kind node image {image.tag} (cold: 15-25 min on 2 cores; parts are cached by "
        f"version, logs in {logs})"
    )
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as lane:
        base_future = lane.submit(_timed_rootfs, timer, contract, recipe, cache, logs / "rootfs.log")
        try:
            built = _go_parts(timer, recipe, contract)
        finally:
            base = base_future.result()
    home = cache / "kind-node" / "node"
    final = home / f"{recipe.kubernetes}-{image.tag.rsplit('-', 1)[1]}"
    if not (final / "layer.tar").is_file():
        stage = cache_dirs.staging_dir(home, final.name)
        try:
            _node_layer(image, timer, contract, built, base, stage, logs)
            os.rename(stage, final)
        finally:
            shutil.rmtree(stage, ignore_errors=True)
        for old in home.glob(f"{recipe.kubernetes}-*"):
            if old != final:
                shutil.rmtree(old, ignore_errors=True)
    image.images = json.loads((final / "preloaded.json").read_text())
    with timer.part("docker-load", f"docker load of {image.tag}") as record:
        node = Image(
            tags=(image.tag,),
            layers=(base.layer, final / "layer.tar"),
            entrypoint=ENTRYPOINT,
            env=NODE_ENV,
            stop_signal=STOP_SIGNAL,
            labels={"io.x-k8s.kind.kubernetes": recipe.kubernetes, "io.x-k8s.kind.version": recipe.kind},
        )
        _docker_load(engine, [node], logs / "docker-load.log")
        record["cold"] = True
    if not engine.has_image(image.tag):
        raise SetupError(f"docker load did not leave {image.tag} in Docker (log: {logs / 'docker-load.log'})")
    _prune(engine, image.tag)


def _prune(engine: Engine, keep: str) -> None:
    """Older node images of the same Kubernetes version (about 1 GB each); one a node still runs stays."""
    prefix = keep.rsplit("-", 1)[0] + "-"
    listed = engine.probe("image", "ls", "--format", "{{.Repository}}:{{.Tag}}", REPOSITORY)
    for tag in listed.stdout.split():
        if tag != keep and tag.startswith(prefix):
            subprocess.run(engine.docker("image", "rm", tag), capture_output=True, timeout=120, env=engine.env())


def _timed_rootfs(timer: _Timer, contract: KindContract, recipe: NodeRecipe, cache: Path, log: Path) -> rootfs.Rootfs:
    with timer.part("rootfs", f"Debian {recipe.suite} base (debootstrap: 1-4 min when not cached)") as record:
        base = rootfs.build(contract, recipe.suite, cache, log)
        record["cold"] = base.cold
    return base


def _go_parts(timer: _Timer, recipe: NodeRecipe, contract: KindContract) -> dict[str, Built]:
    tc = recipe.toolchain
    built = {
        "kubernetes-node": timer.go("kubernetes-node", parts.node_module(recipe.kubernetes, tc), " (cold: 5-12 min)")
    }
    kubeadm = built["kubernetes-node"].binary("kubeadm")
    refs = parts.kubeadm_images(kubeadm, recipe.kubernetes)
    built["etcd"] = timer.go("etcd", parts.etcd_module(refs.etcd_module_version, tc), " (cold: 1-2 min)")
    built["coredns"] = timer.go("coredns", parts.coredns_module(refs.coredns_module_version, tc), " (cold: 2-4 min)")
    built["crictl"] = timer.go("crictl", parts.crictl_module(recipe.crictl), " (cold: about 1 min)")
    built["cni-plugins"] = timer.go(
        "cni-plugins", parts.cni_plugins_module(contract.pinned("CNI_PLUGINS_VERSION")), " (cold: about 1 min)"
    )
    built["kubectl"] = timer.go("kubectl", parts.kubectl_module(recipe.kubernetes), " (cold: 1-2 min)")
    built["runc-wrapper"] = timer.go("runc-wrapper", runc_wrapper.module(), "")
    return built


def _node_layer(
    image: NodeImage,
    timer: _Timer,
    contract: KindContract,
    built: dict[str, Built],
    base: rootfs.Rootfs,
    stage: Path,
    logs: Path,
) -> None:
    recipe = image.recipe
    kubeadm = built["kubernetes-node"].binary("kubeadm")
    refs = parts.kubeadm_images(kubeadm, recipe.kubernetes)
    files = contract.files()
    sandbox = _sandbox_image(files["etc/containerd/config.toml"][0].decode())
    work = stage / "work"
    work.mkdir()
    with timer.part("component-images", "control-plane images (one binary each on a Debian base layer)"):
        log = logs / "component-images.log"
        pause = parts.build_pause(recipe.kubernetes, refs.tag("pause"), work / "pause-bin", log)
        binaries = {
            name: built["kubernetes-node"].binary(name)
            for name in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy")
        }
        binaries |= {
            "etcd": built["etcd"].binary("server"),
            "coredns": built["coredns"].binary("coredns"),
            "pause": pause,
        }
        base_layer = component_images.base_layer(base.tree, work, log)
        extra = {"pause": [sandbox]} if sandbox != refs.refs["pause"] else {}
        archive = work / "images.tar"
        image_archive.write_file(component_images.images(refs.refs, extra, binaries, base_layer, work), archive)
    overlay = stage / "overlay"
    with timer.part("preload", "preloading them into the node's containerd") as record:
        names = preload.import_images(archive, overlay / "var/lib/containerd", logs / "preload.log")
        wanted = set(refs.refs.values()) | {sandbox}
        if not wanted <= set(names):
            raise SetupError(
                f"the node's containerd lacks {sorted(wanted - set(names))} after the import "
                f"(log: {logs / 'preload.log'})"
            )
        record["cold"] = True
    with timer.part("node-layer", "the node's own files (kind's contract, binaries)"):
        _node_files(overlay, contract, files, built, base, recipe)
        shutil.rmtree(work)
        image_archive.layer_from_dir(overlay, stage / "layer.tar")
        shutil.rmtree(overlay)
    (stage / "preloaded.json").write_text(json.dumps(sorted(wanted)))


def _sandbox_image(config: str) -> str:
    import tomllib

    return tomllib.loads(config)["plugins"]["io.containerd.grpc.v1.cri"]["sandbox_image"]


def _install(src: Path, dest: Path, mode: int = 0o755) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
    dest.chmod(mode)


def _node_files(
    root: Path,
    contract: KindContract,
    files: dict[str, tuple[bytes, int]],
    built: dict[str, Built],
    base: rootfs.Rootfs,
    recipe: NodeRecipe,
) -> None:
    """Lay kind's node files, the binaries and the later steps of kind's base stage over the base."""
    for rel, (data, mode) in files.items():
        dest = root / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
        dest.chmod(mode)
    for name in ("kubelet", "kubeadm"):
        _install(built["kubernetes-node"].binary(name), root / "usr/bin" / name)
    _install(built["kubectl"].binary("kubectl"), root / "usr/bin/kubectl")
    _install(built["crictl"].binary("crictl"), root / "usr/local/bin/crictl")
    for plugin in parts.CNI_PLUGINS:
        _install(built["cni-plugins"].binary(plugin), root / "opt/cni/bin" / plugin)
    _install(built["runc-wrapper"].binary(runc_wrapper.BINARY), root / RUNC_WRAPPER_IN_NODE.lstrip("/"))
    dropin = root / "etc/systemd/system/kubelet.service.d" / KUBELET_CGROUP_DROPIN[0]
    dropin.parent.mkdir(parents=True, exist_ok=True)
    dropin.write_text(KUBELET_CGROUP_DROPIN[1])
    (root / "kind").mkdir(parents=True, exist_ok=True)  # kind v0.19's files have no /kind of their own
    (root / "kind/version").write_text(recipe.kubernetes)
    (root / "etc/containerd/cri-base.json").write_text(json.dumps(_cri_base(contract), indent=4) + "\n")
    for step in contract.later_steps():
        if step.verb == "mkdir":
            (root / step.argument.lstrip("/")).mkdir(parents=True, exist_ok=True)
        elif step.verb == "mask":
            link = root / "etc/systemd/system" / step.argument
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to("/dev/null")
        elif step.verb == "enable":
            _enable(root, base.tree, step.argument)


def _cri_base(contract: KindContract) -> dict:
    """``ctr oci spec`` of the node's containerd version, with kind's hook added and no rlimits (kind's
    base Dockerfile does the same with jq)."""
    r = subprocess.run(["ctr", "oci", "spec"], capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        raise SetupError(f"`ctr oci spec` failed: {r.stderr.strip()[-200:]}; run hack/setup.sh (Debian's containerd)")
    spec = json.loads(r.stdout)
    spec.setdefault("hooks", {}).setdefault("createContainer", []).append({"path": cri_base_hook(contract)})
    spec.get("process", {}).pop("rlimits", None)
    return spec


def _enable(root: Path, tree: Path, unit: str) -> None:
    """``systemctl enable UNIT`` as files: a link in each WantedBy target's .wants directory."""
    for folder in (root / "etc/systemd/system", tree / "lib/systemd/system", tree / "etc/systemd/system"):
        if (folder / unit).is_file():
            text = (folder / unit).read_text()
            unit_path = "/" + (folder / unit).relative_to(root if folder.is_relative_to(root) else tree).as_posix()
            break
    else:
        raise SetupError(f"kind's base enables {unit}, which neither kind's files nor the Debian base have")
    targets = [
        t for line in text.splitlines() if line.strip().startswith("WantedBy=") for t in line.split("=", 1)[1].split()
    ]
    if not targets:
        raise SetupError(f"{unit} has no WantedBy= to enable it for")
    for target in targets:
        wants = root / "etc/systemd/system" / f"{target}.wants"
        wants.mkdir(parents=True, exist_ok=True)
        (wants / unit).symlink_to(unit_path)


def _docker_load(engine: Engine, images: list[Image], log: Path) -> None:
    with open(log, "a") as out:
        proc = subprocess.Popen(
            engine.docker("load"), stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT, env=engine.env()
        )
        try:
            assert proc.stdin is not None
            image_archive.write(images, proc.stdin)
            proc.stdin.close()
            rc = proc.wait(timeout=waits.timeout("node-image-load"))
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    if rc != 0:
        raise SetupError(f"docker load failed with exit code {rc}: {buildlog.tail(log)} (log: {log})")
