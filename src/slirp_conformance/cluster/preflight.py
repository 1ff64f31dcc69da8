"""Checks that run before anything slow, each bounded, each failure a SetupError naming the fix.

Version policy for tools (the pins are in hack/versions.env):
  * kind older than the pin: FAIL (an older kind may not boot the pinned node image);
    kind newer than the pin: WARN (node images are supported best-effort on other releases).
  * kubectl outside +/-1 minor of the node's Kubernetes: WARN (the suite talks to the API with
    the Python client; kubectl is only used by the hack scripts and for artifacts).
  * missing docker (or a daemon that does not answer while the project cannot start its own
    dockerd: slirp_conformance/docker_daemon.py), missing kind: FAIL for --target=kind.
  * missing kubectl: FAIL for --target=kind (hack scripts and artifact collection need it),
    WARN for --target=cluster.
  * /dev/kvm not usable: NOTE (KubeVirt is installed with useEmulation: true).
  * Python client kubernetes older than KUBERNETES_CLIENT_FLOOR: FAIL (the cluster code calls its API).
  * KubeVirt version (--target=cluster): the cluster's KubeVirt CR status.observedKubeVirtVersion;
    an explicit --kubevirt-version that differs: FAIL. --target=kind: the flag, else
    KUBEVIRT_DEFAULT_VERSION, decides the pins (a reused cluster's KubeVirt is checked at setup).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slirp_conformance import redaction
from slirp_conformance.cluster import runner
from slirp_conformance.cluster.kind import KVM_DEVICE, Run, kvm_usable
from slirp_conformance.cluster.versions import (
    VERSIONS_ENV,
    KubeVirtVersion,
    Pins,
    default_version,
    parse_kubevirt_version,
    pins_for,
)
from slirp_conformance.errors import SetupError
from slirp_conformance.version import Version, VersionError, find_in_tool_output
from slirp_conformance.version import parse as parse_version

log = logging.getLogger("slirp.cluster.preflight")

INSTALL_TOOLS = "run hack/install-tools.sh (installs the pinned kind and kubectl into .tools/bin)"
# The first kubernetes client with ApiClient.param_serialize and call_api(method, url, ...), which
# kubevirt_cr.KubeVirtAPI uses (checked in the published wheels: 36.0.3 has neither, 37.0.0 both).
# pyproject.toml declares the same floor; an older client already installed is refused here.
KUBERNETES_CLIENT_FLOOR = Version(37, 0, 0)


@dataclass
class PreflightReport:
    """What preflight found; ``warnings`` and ``notes`` are for the session header / JUnit properties."""

    target: str
    kubevirt_version: KubeVirtVersion | None = None
    pins: Pins | None = None
    kvm: bool = False
    tool_versions: dict[str, str] = field(default_factory=dict)
    server_version: str | None = None
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def use_emulation(self) -> bool:
        return not self.kvm


def _pinned(pin: str, tool: str) -> Version:
    """A pin of hack/versions.env, by the project's version rule."""
    try:
        return parse_version(pin)
    except VersionError as e:
        raise SetupError(f"{VERSIONS_ENV} pins {tool} {pin!r}: {e}; fix the pin") from None


def check_docker(run: Run = runner.run) -> str:
    """The docker CLI is there and its daemon answers; returns the server version."""
    fix = (
        "start the Docker daemon (or fix DOCKER_HOST / permissions on the docker socket); "
        "--target=kind needs a working Docker engine, --target=cluster does not, and --target=qemu "
        "runs the local reference VM with no cluster at all"
    )
    try:
        result = run(
            ["docker", "info", "--format", "{{json .ServerVersion}}"], timeout=runner.budget("tool-probe"), fix=fix
        )
    except runner.ToolMissing:
        raise SetupError(
            "docker is not installed or not on PATH; install Docker Engine "
            "(--target=kind runs the cluster in Docker), or use --target=cluster with a kubeconfig, "
            "or --target=qemu for the local reference VM (no cluster)"
        ) from None
    except runner.CommandTimedOut as e:
        raise SetupError(f"docker is installed but its daemon does not answer: {e}; {fix}") from None
    except runner.CommandFailed as e:
        from slirp_conformance import docker_daemon

        reason = docker_daemon.unusable_reason()
        if reason is None:  # the project starts its own dockerd when it creates the cluster
            return "the project's dockerd (started on demand)"
        raise SetupError(f"docker is installed but its daemon does not answer: {e}; {fix} ({reason})") from None
    version = result.stdout.strip().strip('"')
    if not version or version == "null":
        raise SetupError(f"docker info reported no server version: the daemon is not reachable; {fix}")
    return version


def check_kind(pin: str, run: Run = runner.run) -> tuple[str, str | None]:
    """(kind version, warning or None); SetupError when missing or older than the pin."""
    try:
        out = run(["kind", "version"], timeout=runner.budget("tool-probe"), fix=INSTALL_TOOLS).stdout
    except runner.ToolMissing:
        raise SetupError(f"kind is not installed or not on PATH; {INSTALL_TOOLS}") from None
    found, wanted = find_in_tool_output(out), _pinned(pin, "kind")
    if found is None:
        raise SetupError(f"cannot read the kind version from `kind version` ({out.strip()[:80]!r}); {INSTALL_TOOLS}")
    shown = str(found)
    if found < wanted:
        raise SetupError(
            f"kind {shown} is older than the pinned {pin} and may not boot the pinned node image; {INSTALL_TOOLS}"
        )
    if found != wanted:
        return shown, f"kind {shown} differs from the pinned {pin} (newer: node images are best-effort there)"
    return shown, None


def check_kubectl(pin: str, run: Run = runner.run) -> tuple[str, str | None]:
    """(kubectl client version, warning or None); ToolMissing when absent."""
    out = run(
        ["kubectl", "version", "--client", "--output", "json"], timeout=runner.budget("tool-probe"), fix=INSTALL_TOOLS
    ).stdout
    try:
        git_version = json.loads(out)["clientVersion"]["gitVersion"]
    except (ValueError, KeyError, TypeError):
        git_version = out.strip()[:80]
    # ``pin``: the kubectl pin, or a server's gitVersion (``v1.27.3-gke.100``): read as tool output
    found, wanted = find_in_tool_output(git_version), find_in_tool_output(pin)
    if found is None:
        raise SetupError(f"cannot read the kubectl version ({git_version!r}); {INSTALL_TOOLS}")
    shown = str(found)
    if wanted and (found[0] != wanted[0] or abs(found[1] - wanted[1]) > 1):
        return shown, (
            f"kubectl {shown} is outside the +/-1 minor skew of Kubernetes {pin} "
            f"(only the hack scripts and artifact collection use it); {INSTALL_TOOLS}"
        )
    return shown, None


def check_kubernetes_client() -> str:
    """The installed kubernetes client is at least KUBERNETES_CLIENT_FLOOR; returns its version."""
    import kubernetes

    found = find_in_tool_output(getattr(kubernetes, "__version__", "") or "")
    floor = "{}.{}.{}".format(*KUBERNETES_CLIENT_FLOOR)
    if found is None or found < KUBERNETES_CLIENT_FLOOR:
        raise SetupError(
            f"the Python client kubernetes {kubernetes.__version__} is older than {floor}, the first "
            f"with the API this suite calls; run: pip install 'kubernetes>={floor}' "
            f"(or bash hack/setup.sh)"
        )
    return "{}.{}.{}".format(*found)


def default_kubeconfig() -> str:
    """What kubectl reads without --kubeconfig: $KUBECONFIG (a list joined by os.pathsep), else ~/.kube/config."""
    return os.environ.get("KUBECONFIG") or str(Path("~/.kube/config").expanduser())


def check_kubeconfig(path: str | Path | None) -> str:
    """The kubeconfig to use (``--kubeconfig``, else the default) with at least one readable file.

    A $KUBECONFIG list is kept as the list (the client merges it, as kubectl does); files of the
    list that do not exist are skipped, as kubectl skips them. Contents are never shown.
    """
    given = str(path) if path else None
    chosen = given or default_kubeconfig()
    files = [Path(p).expanduser() for p in chosen.split(os.pathsep) if p] if not given else [Path(given).expanduser()]
    found = [f for f in files if f.exists()]
    if not found:
        if given:
            raise SetupError(f"the kubeconfig {files[0]} does not exist; pass --kubeconfig with a readable file")
        raise SetupError(
            f"no kubeconfig: pass --kubeconfig PATH, set KUBECONFIG, or create "
            f"{Path('~/.kube/config').expanduser()} (--target=cluster needs one)"
        )
    for kubeconfig in found:
        try:
            with kubeconfig.open("rb") as f:
                f.read(1)
        except OSError as e:
            raise SetupError(
                f"cannot read the kubeconfig {kubeconfig} ({e.strerror}); pass --kubeconfig with a readable file"
            ) from None
    return os.pathsep.join(str(f) for f in found)


def _load_kubeconfig(path: str, context: str | None, configuration) -> None:
    """``load_kube_config`` with every way a kubeconfig can be wrong turned into one line."""
    import yaml
    from kubernetes import config
    from kubernetes.config.config_exception import ConfigException

    fix = "fix it or pass another with --kubeconfig"
    redaction.register_kubeconfig(path)  # its credentials are secrets of the run from now on
    try:
        config.load_kube_config(config_file=path, context=context, client_configuration=configuration)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise SetupError(f"the kubeconfig {path} is not valid YAML{where}; {fix}") from None
    except ConfigException as e:
        if context and f"name {context} in" in str(e):
            try:
                known = ", ".join(sorted(c["name"] for c in config.list_kube_config_contexts(config_file=path)[0]))
            except (ConfigException, yaml.YAMLError, KeyError, TypeError, ValueError):
                known = "none readable"
            raise SetupError(
                f"--context {context} is not in the kubeconfig {path} (its contexts: {known}); "
                f"pass one of them with --context"
            ) from None
        # Messages of ConfigException name fields and files, not credential values; redact anyway.
        raise SetupError(
            f"the kubeconfig {path} is not usable: {runner.redact(' '.join(str(e).split()))[:300]}; {fix}"
        ) from None
    except (ValueError, TypeError, AttributeError, KeyError, OSError) as e:
        raise SetupError(f"the kubeconfig {path} is not a kubeconfig ({type(e).__name__}); {fix}") from None


def client_configuration(kubeconfig: str | Path | None, context: str | None = None):
    """The official client's Configuration for the kubeconfig (default chain) and context, one attempt per call."""
    from kubernetes import client

    configuration = client.Configuration()
    _load_kubeconfig(check_kubeconfig(kubeconfig), context, configuration)
    configuration.retries = False
    return configuration


def check_kubevirt_version(
    kubeconfig: str | Path | None, *, context: str | None = None, requested: KubeVirtVersion | None = None
) -> KubeVirtVersion | None:
    """The version the cluster's KubeVirt runs (status.observedKubeVirtVersion), None when there is
    none or it is still deploying; SetupError when ``requested`` (an explicit --kubevirt-version) differs."""
    from kubernetes import client

    from slirp_conformance.cluster import kubevirt_cr

    timeout = runner.budget("api-probe")
    with client.ApiClient(client_configuration(kubeconfig, context)) as api_client:
        api = kubevirt_cr.as_api(api_client)
        try:
            ref = kubevirt_cr.find_kubevirt(api, request_timeout=timeout)
            obj = None if ref is None else kubevirt_cr.get_kubevirt(api, ref, _request_timeout=timeout)
        except client.ApiException as e:
            if e.status in (401, 403):  # not allowed to list KubeVirt CRs: the target finds out later
                log.warning("preflight: cannot read KubeVirt CRs (HTTP %s); the version is checked at setup", e.status)
                return None
            raise SetupError(f"listing KubeVirt CRs failed with HTTP {e.status}; check the cluster") from None
    if ref is None or obj is None or not kubevirt_cr.observed_version(obj):
        return None
    running = kubevirt_cr.running_version(obj, ref)
    kubevirt_cr.check_requested(running, requested, ref)
    return running


def check_cluster_reachable(kubeconfig: str | Path | None, *, context: str | None = None) -> str:
    """GET /version with the official client and a short timeout; returns the server gitVersion."""
    from kubernetes import client

    configuration = client_configuration(kubeconfig, context)
    timeout = runner.budget("api-probe")
    with client.ApiClient(configuration) as api_client:
        try:
            # Raw JSON: the generated VersionInfo model rejects servers that omit optional fields. With
            # _preload_content=False the client returns the urllib3 response, not what get_code declares.
            response: Any = client.VersionApi(api_client).get_code(
                _preload_content=False, _request_timeout=(timeout, timeout)
            )
            info = json.loads(response.data)
        except client.ApiException as e:
            if e.status in (401, 403):
                raise SetupError(
                    f"the cluster at {configuration.host} rejected the kubeconfig's credentials "
                    f"(HTTP {e.status}); refresh them or use another --kubeconfig"
                ) from None
            raise SetupError(
                f"the cluster at {configuration.host} answered GET /version with HTTP {e.status}; "
                f"check that it is a Kubernetes API server"
            ) from None
        except ValueError:
            raise SetupError(
                f"{configuration.host} answered GET /version with something that is not JSON; "
                f"check that the kubeconfig points at a Kubernetes API server"
            ) from None
        except Exception as e:  # noqa: BLE001 - urllib3/SSL/socket errors: many types, all "unreachable"
            reason = runner.redact(f"{type(e).__name__}: {e}")[:300]
            raise SetupError(
                f"the cluster at {configuration.host} is not reachable within {timeout:.0f} s ({reason}); "
                f"check the kubeconfig's server address, VPN/proxy, and that the cluster is up"
            ) from None
    return str(info.get("gitVersion", "unknown"))


def preflight(
    target: str,
    *,
    kubevirt_version: str | None,
    kubeconfig: str | Path | None = None,
    context: str | None = None,
    kvm: bool | None = None,
    kvm_device: str = KVM_DEVICE,
    run: Run = runner.run,
    from_source: bool = False,
) -> PreflightReport:
    """All checks for ``--target`` (kind | cluster), cheapest first; the first failure raises SetupError.

    ``from_source`` (``--images-from-source``): kind and kubectl are built at setup, so they are not
    looked for here; Go must be there to build them.

    ``kvm``: None probes ``kvm_device`` (opens it and creates a VM); pass True/False to override
    (e.g. with the result of a probe that boots a guest: /dev/kvm can exist and still fail).
    """
    if target not in ("kind", "cluster"):
        raise SetupError(f"--target={target}: the cluster preflight handles kind and cluster only")
    report = PreflightReport(target=target)
    report.tool_versions["python-kubernetes"] = check_kubernetes_client()
    requested = parse_kubevirt_version(kubevirt_version) if kubevirt_version else None
    if target == "kind":
        # What a new cluster is built for and gets installed; a reused cluster's KubeVirt is read at setup.
        report.kubevirt_version = requested or default_version()
        report.pins = pins_for(report.kubevirt_version)

    if target == "kind":
        report.tool_versions["docker"] = check_docker(run)
        assert report.pins is not None
        if from_source:
            from slirp_conformance.gobuild import go_binary

            go_binary()  # SetupError naming the fix when Go is missing
            report.notes.append(
                f"kind {report.pins.kind}, kubectl {report.pins.kubectl} and the node image of "
                f"Kubernetes {report.pins.kubernetes} are built here (--images-from-source)"
            )
        else:
            report.tool_versions["kind"], warning = check_kind(report.pins.kind, run)
            if warning:
                report.warnings.append(warning)
            try:
                report.tool_versions["kubectl"], warning = check_kubectl(report.pins.kubectl, run)
            except runner.ToolMissing:
                raise SetupError(f"kubectl is not installed or not on PATH; {INSTALL_TOOLS}") from None
            if warning:
                report.warnings.append(warning)
        # Last: on the host's /dev/kvm the probe boots the reference guest (kind.kvm_usable).
        report.kvm = kvm_usable(kvm_device) if kvm is None else kvm
        if not report.kvm:
            report.notes.append(
                f"{kvm_device} is missing or not usable: KubeVirt will run with useEmulation: true "
                "(slow TCG guests; consider --timeout-scale)"
            )
    else:
        report.server_version = check_cluster_reachable(kubeconfig, context=context)
        report.kubevirt_version = check_kubevirt_version(kubeconfig, context=context, requested=requested) or requested
        report.pins = pins_for(report.kubevirt_version) if report.kubevirt_version else None
        try:
            # Skew is judged against the server this run talks to, not a pin.
            report.tool_versions["kubectl"], warning = check_kubectl(report.server_version or "", run)
            if warning:
                report.warnings.append(warning)
        except runner.ToolMissing:
            report.warnings.append("kubectl is not on PATH: artifact collection will be thinner")
    for warning in report.warnings:
        log.warning("preflight: %s", warning)
    for note in report.notes:
        log.info("preflight: %s", note)
    return report
