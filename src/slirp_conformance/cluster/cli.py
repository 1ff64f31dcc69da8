"""``python -m slirp_conformance.cluster.cli up|down|pins``: what hack/cluster-up.sh and cluster-down.sh run.

``up`` runs preflight, creates (or reuses) the kind cluster from the suite's config, installs
KubeVirt when absent, and records in ``<workdir>/state.json`` what it created, so ``down``
deletes only that. The kubeconfig path is printed; its contents never are.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from pathlib import Path

from slirp_conformance import docker_daemon, progress, waits
from slirp_conformance.cluster import kind, kind_network, kind_source, preflight, runner, versions
from slirp_conformance.errors import SetupError, refuse

log = logging.getLogger("slirp.cluster.cli")


def default_workdir(name: str) -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "slirp-conformance" / "kind" / name


def _state_path(workdir: Path) -> Path:
    return workdir / "state.json"


def _docker_holder(name: str) -> str:
    """The lease that keeps the project's dockerd up while cluster NAME lives on it (until cluster-down)."""
    return f"kind-cluster:{name}"


def cmd_up(args: argparse.Namespace) -> int:
    kvm = {"auto": None, "yes": True, "no": False}[args.kvm]
    versions.pins_for(args.kubevirt_version)  # a version with no pins: one line before anything starts
    workdir = Path(args.workdir or default_workdir(args.name))
    holder = _docker_holder(args.name)
    engine = docker_daemon.acquire(holder, persistent=True)
    if engine.host:
        os.environ["DOCKER_HOST"] = engine.host  # kind and docker below reach the project's dockerd
    cluster = None
    try:
        docker_daemon.check_privileged(engine)
        nodes = kind_source.node_settings(versions.pins_for(args.kubevirt_version), engine, args.images_from_source)
        report = preflight.preflight("kind", kubevirt_version=args.kubevirt_version, kvm=kvm)
        pins = report.pins
        assert pins is not None
        cluster = kind.KindCluster(
            pins, workdir, name=args.name, kvm=report.kvm, preload_images=args.preload_images, nodes=args.nodes, **nodes
        )
        cluster.up()
    except BaseException:
        if cluster is not None and cluster.created:
            cluster.down()  # a half-created cluster, its network and the /lib/modules it made
        if cluster is None or not cluster.reused_node_image:
            docker_daemon.release(holder)  # nothing of ours lives on the engine now
        raise
    state = {
        "name": args.name,
        "created": cluster.created,
        "kubeconfig": str(cluster.kubeconfig_path),
        "kubevirt_version": str(pins.kubevirt),
        "node_image": cluster.node_image,
        "kvm": report.kvm,
        "nodes": args.nodes,
        "kubevirt_installed_by_suite": False,
        "docker_host": engine.host,
        "docker_lease": holder if engine.project_started else None,
        "network": cluster.network if cluster.created_network else None,
        "lib_modules_created": cluster.created_lib_modules,
    }
    _state_path(workdir).write_text(json.dumps(state, indent=2))
    if cluster.created:
        try:
            log.info(
                "containerd settings on the node: %s", kind.effective_containerd_settings(cluster.node_container())
            )
        except runner.CommandFailed as e:
            log.warning("could not read containerd settings on the node: %s", e)
    if not args.no_kubevirt:
        from kubernetes import config

        from slirp_conformance.cluster.kubevirt_install import KubeVirtInstallation

        manifests_dir = args.kubevirt_manifests
        if args.images_from_source:
            # KubeVirt's images and release manifests built here (cached), into every node first.
            from slirp_conformance.kubevirt_images import build, kind_load

            with progress.phase(f"KubeVirt {pins.kubevirt}: its images and manifests built here (cached by version)"):
                images = build.build(str(pins.kubevirt))
            with progress.phase(f"KubeVirt {pins.kubevirt}: loading its images into kind cluster {args.name}"):
                kind_load.load(images, args.name)
            manifests_dir = manifests_dir or images.manifests_dir
        api_client = config.new_client_from_config(config_file=str(cluster.kubeconfig_path))
        installation = KubeVirtInstallation(
            api_client, pins.kubevirt, use_emulation=not report.kvm, manifests_dir=manifests_dir
        )
        version = installation.ensure()
        state["kubevirt_installed_by_suite"] = installation.installed
        _state_path(workdir).write_text(json.dumps(state, indent=2))
        log.info("KubeVirt %s ready", version)
    if engine.host:
        print(f"DOCKER_HOST={engine.host}")
    print(f"KUBECONFIG={cluster.kubeconfig_path}")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    workdir = Path(args.workdir or default_workdir(args.name))
    state_file = _state_path(workdir)
    state = json.loads(state_file.read_text()) if state_file.exists() else {}
    if not state.get("created") and not args.force:
        log.warning(
            "kind cluster %s was not created by hack/cluster-up.sh (no %s saying so); leaving it "
            "(use --force to delete anyway)",
            args.name,
            state_file,
        )
        return 0
    host = state.get("docker_host")
    # No state (a cluster the suite kept with --keep-cluster, or --force): the engine it lives on is
    # the one acquire() picks, the environment's, else the project's dockerd. Looking only at the
    # default socket, down said "gone with it" and released the lease of a cluster that still ran
    # on the project's dockerd.
    if (
        not host
        and docker_daemon.server_version(None) is None
        and docker_daemon.server_version(docker_daemon.project_host()) is not None
    ):
        host = docker_daemon.project_host()
    if host:
        os.environ["DOCKER_HOST"] = host
    if docker_daemon.server_version(os.environ.get("DOCKER_HOST")) is None:
        log.info(
            "no Docker engine answers at %s: kind cluster %s is gone with it",
            os.environ.get("DOCKER_HOST", "the default socket"),
            args.name,
        )
    elif args.name not in kind.existing_clusters():
        log.info("kind cluster %s does not exist; nothing to delete", args.name)
    else:
        with progress.phase(f"kind delete cluster {args.name}"):
            runner.run(
                ["kind", "delete", "cluster", "--name", args.name, "--kubeconfig", str(workdir / "kubeconfig")],
                timeout=runner.budget("resource-deleted"),
                fix=f"delete it by hand: kind delete cluster --name {args.name}",
            )
        kind.remove_stray_nodes(args.name)
        # Without state (a kept cluster of the suite's, --force), the suite's own network goes too once
        # no other cluster is on it: nothing but the suite creates a network of that name.
        network = state.get("network") if state else kind_network.NAME
        kind.remove_leftovers(network, bool(state.get("lib_modules_created")))
    if docker_daemon.release(state.get("docker_lease") or _docker_holder(args.name)):
        log.info("stopped the project's dockerd (this cluster was the last to use it)")
    state_file.unlink(missing_ok=True)
    # `kind delete --kubeconfig <workdir>/kubeconfig` makes the folder even for a cluster up never
    # made (--force on a cluster the suite kept): an empty one is left behind otherwise
    with contextlib.suppress(OSError):
        workdir.rmdir()
    return 0


def cmd_pins(args: argparse.Namespace) -> int:
    pins = versions.pins_for(args.kubevirt_version)
    print(
        f"KUBEVIRT_VERSION={pins.kubevirt}\nKIND_VERSION={pins.kind}\nNODE_IMAGE={pins.node_image}\n"
        f"KUBECTL_VERSION={pins.kubectl}\nNEEDS_FEATURE_GATE={str(versions.needs_feature_gate(pins.kubevirt)).lower()}"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m slirp_conformance.cluster.cli",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="create or reuse the kind cluster and install KubeVirt")
    versions.add_option(up)
    up.add_argument(
        "--kubevirt-manifests",
        metavar="DIR",
        help="air-gapped: read kubevirt-operator.yaml and kubevirt-cr.yaml from DIR",
    )
    up.add_argument("--preload-images", nargs="*", default=[], metavar="IMAGE")
    up.add_argument("--no-kubevirt", action="store_true", help="only the cluster")
    up.add_argument(
        "--images-from-source",
        action="store_true",
        help="build kind, kubectl and the node image here (Go modules, Debian packages; no download, "
        "no registry), cached by version; the cluster gets the suite's CNI instead of kindnetd; KubeVirt's "
        "images and release manifests too (src/slirp_conformance/kubevirt_images) unless --no-kubevirt",
    )
    up.add_argument("--nodes", type=int, default=1, help="kind nodes: a control plane and NODES-1 workers")
    up.add_argument(
        "--kvm",
        choices=("auto", "yes", "no"),
        default="auto",
        help="mount /dev/kvm into the node (auto: when it opens and creates a VM); no: useEmulation",
    )
    down = sub.add_parser("down", help="delete the kind cluster if cluster-up created it")
    down.add_argument("--force", action="store_true", help="delete even if this suite did not create it")
    pins = sub.add_parser("pins", help="print the pins of a KubeVirt version as KEY=VALUE lines")
    versions.add_option(pins)
    for p in (up, down):
        p.add_argument("--name", default=kind.DEFAULT_CLUSTER_NAME)
        p.add_argument(
            "--workdir",
            default=None,
            help="where kubeconfig, kind-config.yaml and state.json live "
            "(default: ~/.cache/slirp-conformance/kind/NAME)",
        )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    runner.prepend_tools_dir()
    try:
        return {"up": cmd_up, "down": cmd_down, "pins": cmd_pins}[args.command](args)
    except SetupError as e:  # bad input or a host that cannot run it: one line naming the fix
        return refuse(f"cluster-{args.command}", e)
    except waits.WaitTimeout as e:
        return refuse(f"cluster-{args.command}", e, 3)


if __name__ == "__main__":
    sys.exit(main())
