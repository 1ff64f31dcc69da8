"""The run's session: signals, timeouts, the target's preflight before anything slow, and how the
target is made (one VM per session, per xdist worker). The fixtures that hand it to the suites
are ``fixtures/slirp_vm.py``."""

from __future__ import annotations

import os
import signal
import sys
import threading

import pytest

from slirp_conformance import progress, run_inputs, waits
from slirp_conformance.conformance_report import DESELECT_REASON, FINISHED_REPORT, QUARANTINE_PREFIX
from slirp_conformance.errors import SetupError
from slirp_conformance.plugin.options import REPO, is_suite_run
from slirp_conformance.reference import qemu_target, reference_vm, sidecar_render
from slirp_conformance.target import Target
from slirp_conformance.vmspec import VMSpec, conformance_vm, variant_vm

_interrupts: list[int] = []
_terminal_fd: list[int] = []  # stderr as pytest_configure found it: pytest captures fd 2 while tests run


CLEANING_UP = b"slirp-conformance: interrupted; cleaning up (VM, namespaces, KubeVirt CR), every step bounded\n"


def _interrupt(signum, _frame):
    """The first SIGINT/SIGTERM unwinds like Ctrl-C, and says so at once (the cleanup may take a
    while on a cluster); later ones must not break the cleanup it started, so they only say so."""
    _interrupts.append(signum)
    fd = _terminal_fd[0] if _terminal_fd else 2
    if len(_interrupts) > 1:
        os.write(
            fd,
            b"\nslirp-conformance: still cleaning up (VM, namespaces, KubeVirt CR); every step is "
            b"bounded, please wait\n",
        )
        return
    os.write(fd, b"\n" + CLEANING_UP)
    raise KeyboardInterrupt(f"signal {signum}")


def _qemu_options(config) -> reference_vm.QemuOptions:
    sysctls = dict(reference_vm.parse_sysctl(s) for s in config.getoption("qemu_sysctl"))
    release = run_inputs.release_under_test(config.getoption("kubevirt_version"))
    return reference_vm.QemuOptions(
        netdev_extra=config.getoption("qemu_netdev_extra"),
        sysctls=sysctls,
        accel=config.getoption("qemu_accel"),
        sidecar_render=config.getoption("sidecar_render"),
        kubevirt_version=str(release.version),
    )


def _fedora_like(config):
    """``--reference-guest fedora``: the flavour that stands for the release under test's image
    (the one whose sidecar renders the VM's network: never another release's)."""
    if config.getoption("reference_guest") != "fedora":
        return None
    from slirp_conformance.reference.fedora_like import flavour_for

    return flavour_for(str(run_inputs.release_under_test(config.getoption("kubevirt_version")).version))


def _needs_target(items) -> bool:
    return any("slirp_target" in getattr(item, "fixturenames", ()) for item in items)


def pytest_configure(config) -> None:
    if not is_suite_run(config) or config.getoption("help"):
        return
    from slirp_conformance.cluster import runner

    progress.configure(config)
    runner.prepend_tools_dir()  # the pinned kind/kubectl of hack/install-tools.sh, when installed
    # A CI job cancelled with SIGTERM unwinds like Ctrl-C: the VM, the namespace and the
    # KubeVirt CR's configuration are put back by the fixtures' finalizers.
    if threading.current_thread() is threading.main_thread():
        if not _terminal_fd:  # pytest's capture is suspended between its load-time hooks and collection
            _terminal_fd.append(os.dup(2))
        signal.signal(signal.SIGTERM, _interrupt)
        signal.signal(signal.SIGINT, _interrupt)
    try:
        waits.set_timeout_scale(config.getoption("timeout_scale"))
    except ValueError as e:
        raise pytest.UsageError(str(e)) from None
    _refuse_xdist_on_clusters(config)


TARGET_KEY = pytest.StashKey[Target]()  # the session's started target, for artifacts of failed tests


def pytest_unconfigure(config) -> None:
    """After the verdict: the renderer's Go build a first run went without (``_build_renderer``).
    Once an interrupted run has cleaned up, a late Ctrl-C must not kill the exiting interpreter
    (Python puts SIGINT back to its default while it finalizes, and the run would end by a signal,
    not with pytest's exit code 2): ignore it. Ignored dispositions survive finalization."""
    if not _interrupts:
        _build_renderer(config)
    if _interrupts and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _build_renderer(config) -> None:
    """A run that ``--sidecar-render auto`` rendered with the model, because KubeVirt's code was not
    built yet, builds it now that the verdict is printed (pytest's exit code is already settled):
    in the foreground, so nothing outlives the run; Ctrl-C skips it without the cleanup message."""
    report = config.stash.get(FINISHED_REPORT, None)
    if report is None or report.interrupted or report.versions.get("sidecar_render_mode") != "auto":
        return
    if report.versions.get("sidecar_render") != "python":
        return
    choice = sidecar_render.choose("auto", report.versions.get("kubevirt_version"))
    if not choice.build_after_verdict:  # another run has built it meanwhile
        return
    capture = config.pluginmanager.getplugin("capturemanager")
    main = threading.current_thread() is threading.main_thread()
    if main:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        with capture.global_and_fixture_disabled():
            sidecar_render.build_for_next_run(choice, lambda line: print(line, file=sys.stderr, flush=True))
    finally:
        if main:  # the interpreter is about to exit: a late Ctrl-C must not end it by a signal
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _refuse_xdist_on_clusters(config) -> None:
    """One cluster setup cannot be shared by xdist workers that each create or reuse the kind cluster,
    install, register, restore and toggle the feature gate: refuse ``-n``/``--tx`` on those targets
    (xdist has turned either into ``--dist`` != no by now). Workers never get here: the controller stops."""
    target = config.getoption("target")
    if target == "qemu" or hasattr(config, "workerinput") or config.getoption("help"):
        return
    # The controller collects nothing under xdist, so the test items cannot say whether a target is
    # needed: the paths can. Only the conformance suites use the target (the self-tests do not).
    suites = REPO / "suites"
    paths = [(config.invocation_params.dir / a.split("::")[0]).resolve() for a in config.args]
    if not any(p == suites or p.is_relative_to(suites) or suites.is_relative_to(p) for p in paths):
        return
    if getattr(config.option, "dist", "no") != "no" or getattr(config.option, "numprocesses", None):
        raise pytest.UsageError(
            f"--target={target} runs one VM on one shared cluster setup (kind cluster, KubeVirt, binding "
            f"registration, feature gate) that xdist workers would each create and tear down: drop -n/--tx "
            f"(pytest-xdist); only --target=qemu runs one VM per worker"
        )


def _runs_alone(item: pytest.Item) -> bool:
    """The check's probe is exclusive and never runs ahead (marker ``probe``, ahead.py)."""
    marker = item.get_closest_marker("probe")
    return marker is not None and marker.args[0].exclusive and not marker.args[0].runs_ahead


def pytest_collection_modifyitems(session, config, items) -> None:
    """Check options and the host before anything slow, only when a selected test needs a VM."""
    if not is_suite_run(config):
        return
    _quarantine(items)
    target = config.getoption("target")
    if target == "qemu":  # KubeVirt's own side of the contract has nothing to look at here
        kubevirt_only = [i for i in items if i.get_closest_marker("kubevirt")]
        if kubevirt_only:
            for item in kubevirt_only:
                item.stash[DESELECT_REASON] = "KubeVirt-only check: nothing to look at on --target=qemu"
            config.hook.pytest_deselected(items=kubevirt_only)
            items[:] = [i for i in items if not i.get_closest_marker("kubevirt")]
        # The variant VMs boot beside the conformance VM's checks (QemuTarget.variants_boot_aside,
        # fixtures/slirp_vm.py): their clauses run last, so the boots overlap the rest of the run.
        # The checks whose probe must run alone (ICMP: ahead.py) come first, so the probes that run
        # ahead in the lane can run beside every other check. Stable: the order is kept within.
        items.sort(key=lambda i: (i.get_closest_marker("variant_vm") is not None, not _runs_alone(i)))
    if config.getoption("collectonly") or not _needs_target(items):
        return
    try:
        if target == "qemu":
            opts = _qemu_options(config)
            reference_vm.preflight(opts)
            if _fedora_like(config) is not None:
                from slirp_conformance.reference import fedora_image

                fedora_image.check_host_tools()
            capture = config.pluginmanager.getplugin("capturemanager")
            with capture.global_and_fixture_disabled():  # a cold Go build says so on the terminal
                choice = sidecar_render.prepare(opts.sidecar_render, opts.kubevirt_version)
                if choice.build_after_verdict:
                    print(
                        f"sidecar-render: {choice.why}: this run renders with the suite's model, which "
                        f"{sidecar_render.GOLDEN} holds byte for byte to that sidecar; the Go build runs "
                        f"after the verdict",
                        file=sys.stderr,
                        flush=True,
                    )
        else:
            from slirp_conformance.cluster import preflight

            preflight.preflight(
                target,
                kubevirt_version=config.getoption("kubevirt_version"),
                kubeconfig=config.getoption("kubeconfig"),
                context=config.getoption("context"),
                # kind and kubectl are built at setup with --images-from-source: not looked for here
                from_source=config.getoption("images_from_source"),
            )
    except SetupError as e:
        raise pytest.UsageError(str(e)) from None


def _quarantine(items) -> None:
    """``@pytest.mark.quarantined(reason="<issue>: why")``: the clause is not run (xfail, run=False:
    never rerun until it passes) and the report shows it as quarantined, never as a pass."""
    for item in items:
        marker = item.get_closest_marker("quarantined")
        if marker is None:
            continue
        reason = marker.kwargs.get("reason") or (marker.args[0] if marker.args else "")
        if not str(reason).strip():
            raise pytest.UsageError(
                f"{item.nodeid}: @pytest.mark.quarantined needs reason='<issue>: why it is quarantined'"
            )
        item.add_marker(pytest.mark.xfail(reason=QUARANTINE_PREFIX + str(reason), run=False))


def variant_spec(config, model: str) -> VMSpec:
    """The variant VM for a requested NIC model, named after this run's (and worker's) VM."""
    return variant_vm(model, _vm_name(config))


def _vm_name(config) -> str:
    worker = getattr(config, "workerinput", {}).get("workerid")
    return "vm-net-binding-slirp" + (f"-{worker}" if worker else "")


def make_target(config) -> Target:
    """The target the options describe (not started)."""
    spec = conformance_vm(_vm_name(config))
    if config.getoption("target") == "qemu":
        return qemu_target.QemuTarget(spec, _qemu_options(config), fedora_like=_fedora_like(config))
    from slirp_conformance.kubevirt.environment import ClusterOptions
    from slirp_conformance.kubevirt.kubevirt_target import KubeVirtTarget

    worker = getattr(config, "workerinput", {}).get("workerid")
    return KubeVirtTarget(
        spec,
        ClusterOptions(
            target=config.getoption("target"),
            kubevirt_version=config.getoption("kubevirt_version"),
            kubeconfig=config.getoption("kubeconfig"),
            context=config.getoption("context"),
            install_kubevirt=config.getoption("install_kubevirt"),
            kubevirt_manifests=config.getoption("kubevirt_manifests"),
            sidecar_image=config.getoption("slirp_sidecar_image"),
            vm_image=config.getoption("vm_image"),
            peer_image=config.getoption("peer_image"),
            guest_profile=config.getoption("guest_profile"),
            kind_cluster_name=config.getoption("kind_cluster_name"),
            keep_cluster=config.getoption("keep_cluster"),
            preload_images=config.getoption("preload_images"),
            images_from_source=config.getoption("images_from_source"),
            kind_nodes=config.getoption("kind_nodes"),
            namespace_suffix=f"-{worker}" if worker else "",
        ),
    )
