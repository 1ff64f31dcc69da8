"""The slirp sidecar's real QEMU arguments for a VMSpec, from KubeVirt's own code.

``hack/sidecar-render`` (our Go program) runs KubeVirt's VMI-to-domain converter and the slirp
sidecar's ``OnDefineDomain`` of one release; ``slirp_conformance.gobuild`` builds it per release as a
wrapper module that requires ``kubevirt.io/kubevirt`` at that tag and takes its go.mod's
replace block. The VMI is the one the KubeVirt targets create (``vm_manifest.render_vm``), so
the reference VM and a cluster VM start from the same object.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass

from slirp_conformance import gobuild
from slirp_conformance.checkout import GO_SHIMS, REPO
from slirp_conformance.cluster import versions
from slirp_conformance.errors import SetupError, refuse
from slirp_conformance.kubevirt.apis import VIRTUAL_MACHINE_INSTANCE
from slirp_conformance.kubevirt.vm_manifest import render_vm
from slirp_conformance.version import VersionError
from slirp_conformance.version import parse as parse_version
from slirp_conformance.vmspec import VMSpec, slirp_qemu_args

MODES = ("auto", "go", "python")  # --sidecar-render; auto is the default
PYTHON_MODEL = "the suite's Python model (vmspec.slirp_qemu_args, --sidecar-render python), not KubeVirt's code"
GOLDEN = "tests/test_sidecar_golden.py"

REPO_SOURCE = REPO / "hack" / "sidecar-render"
# KubeVirt minor -> build tag of the release glue in hack/sidecar-render (kubevirt_v1_*.go).
# Only minors whose converter/sidecar API was read are listed; others are refused, not guessed.
GLUE_BY_MINOR = {"1.1": "kubevirt_v1_1", "1.5": "kubevirt_v1_5", "1.9": "kubevirt_v1_9"}
# Per release, replacements beyond the release's own go.mod replace block:
#  * github.com/golang/glog: KubeVirt <= v1.8 replaces it with a directory of its repository
#    (a glog-to-klog redirect, a nested module absent from the module zip); the glog release its
#    go.mod requires has the same API and only logs differently.
#  * The module proxy refuses (HTTP 403, 2026-11-28) kubevirt.io/client-go v1.5.2-v1.5.4 and
#    kubevirt.io/virt-template-{api,client-go} (every version): client-go comes from v1.5.1 (the
#    newest v1.5 it serves; the sidecar path uses only its log/precond/kubecli packages) and
#    virt-template from build stand-ins of ours (hack/go-shims/README.md).
EXTRA_REPLACES: dict[str, tuple[tuple[str, str], ...]] = {
    "v1.1.0": (("github.com/golang/glog", "github.com/golang/glog v1.0.0"),),
    "v1.5.3": (
        ("github.com/golang/glog", "github.com/golang/glog v1.2.1"),
        ("kubevirt.io/client-go", "kubevirt.io/client-go v1.5.1"),
    ),
    "v1.9.0": (
        ("kubevirt.io/virt-template-api", "./shims/virt-template-api"),
        ("kubevirt.io/virt-template-client-go", "./shims/virt-template-client-go"),
    ),
}
RENDER_TIMEOUT = 120.0
# Placeholders for what the manifest needs and the sidecar never reads (not secrets).
_NAMESPACE, _IMAGE, _KEY, _PASSWORD = (
    "sidecar-render",
    "registry.invalid/sidecar-render:none",
    "ssh-ed25519 AAAA sidecar-render",
    "sidecar-render-placeholder",
)


@dataclass(frozen=True)
class Rendering:
    args: list[str]
    search_domains: tuple[str, ...]  # as the sidecar parsed them from the resolv.conf
    kubevirt_version: str


@dataclass(frozen=True)
class Choice:
    """What renders a run's VM network: ``go`` (KubeVirt's own code of ``version``) or ``python``
    (the suite's model), for the ``--sidecar-render`` value ``asked``, and why when ``auto`` chose."""

    renderer: str
    version: str
    asked: str
    why: str  # "" where the user named the renderer

    @property
    def build_after_verdict(self) -> bool:
        """``auto`` rendered with the model because the Go build was not cached: build it for the next run."""
        return self.asked == "auto" and self.renderer == "python"


class SidecarRejected(Exception):
    """The sidecar refused the VMI (its own error, e.g. no slirp binding on the pod network)."""


def wrapper_module(kubevirt_version: str) -> gobuild.WrapperModule:
    try:
        release = parse_version(kubevirt_version)
    except VersionError:
        release = None
    if release is None or release.minor_key not in GLUE_BY_MINOR or str(release) not in EXTRA_REPLACES:
        raise SetupError(
            f"sidecar-render builds KubeVirt {', '.join(EXTRA_REPLACES)}, not {kubevirt_version!r}: "
            "use one of those, or --sidecar-render python to check the suite's Python model of "
            "the sidecar's arguments (the report says so)"
        )
    tag = str(release)  # v-prefixed, as the module proxy and the cache name it
    return gobuild.WrapperModule(
        name="sidecar-render",
        version=tag,
        packages=(".",),
        source=REPO_SOURCE,
        shims=GO_SHIMS,
        requires=(f"kubevirt.io/kubevirt@{tag}",),
        replace_from=f"kubevirt.io/kubevirt@{tag}",
        # kubevirt.io/api and client-go are staging dirs there, published at the same tag.
        local_replace_version=tag,
        replaces=EXTRA_REPLACES[tag],
        tags=(GLUE_BY_MINOR[release.minor_key],),
        ldflags=f"-X main.kubevirtVersion={tag}",
    )


_outcomes: dict[str, gobuild.Built | SetupError] = {}


def build(kubevirt_version: str) -> gobuild.Built:
    """The program for one release; a failed build is not retried within the process."""
    if kubevirt_version not in _outcomes:
        try:
            _outcomes[kubevirt_version] = gobuild.build(wrapper_module(kubevirt_version))
        except SetupError as e:
            _outcomes[kubevirt_version] = e
    outcome = _outcomes[kubevirt_version]
    if isinstance(outcome, SetupError):
        raise outcome
    return outcome


def golden_releases() -> tuple[str, ...]:
    """The releases whose sidecar the golden self-test holds ``slirp_qemu_args`` to, byte for byte
    (every release the program builds: tests/test_sidecar_render.py checks the two lists agree)."""
    return tuple(str(v) for v in versions.nightly_versions())


_choices: dict[tuple[str, str], Choice] = {}


def choose(mode: str, kubevirt_version: str | None) -> Choice:
    """Which renderer a run uses; the same answer for every VM of a process.

    ``go`` and ``python`` are what they say. ``auto`` (the default) takes KubeVirt's own code when
    its Go build for the release is already cached. Before that, on a machine's first run, it takes
    the suite's model instead of making the user wait minutes for a compiler: for these releases the
    golden self-test holds the model to the real sidecar's output byte for byte, so the arguments
    are the same; the report says which renderer decided and why, and the Go build runs after the
    verdict (``build_after_verdict``). It never stands in for a build that failed or a release the
    program cannot build: those stop the run as with ``go``."""
    version = kubevirt_version or default_version()
    if mode != "auto":
        return Choice(mode, version, mode, "")
    if (mode, version) not in _choices:
        module = wrapper_module(version)  # a release without glue stops the run here
        if version not in golden_releases():
            choice = Choice("go", version, mode, f"the golden self-test does not cover {version}")
        else:
            try:
                found = gobuild.cached(module)
            except SetupError as e:  # no usable Go toolchain: the model, and the fix named after the verdict
                choice = Choice("python", version, mode, str(e))
            else:
                why = (
                    f"its Go build for {version} is cached"
                    if found
                    else f"no Go build of KubeVirt {version}'s sidecar code is cached yet (a first run)"
                )
                choice = Choice("go" if found else "python", version, mode, why)
        _choices[(mode, version)] = choice
    return _choices[(mode, version)]


def prepare(mode: str, kubevirt_version: str | None) -> Choice:
    """Build before the run when the chosen renderer is the Go program (the plugin calls this with
    output capture off, so a cold build's progress line shows); a build that fails stops the run
    here, in one line."""
    choice = choose(mode, kubevirt_version)
    if choice.renderer == "go":
        build(choice.version)
    return choice


def build_for_next_run(choice: Choice, say) -> None:
    """After the verdict of a run ``auto`` rendered with the model: the Go build, in the foreground
    (a background build would outlive the run), so the next run renders with KubeVirt's code. A
    failure or Ctrl-C only costs the next run the same choice; ``say`` gets one line each."""
    say(
        f"sidecar-render: building KubeVirt {choice.version}'s sidecar code for the next run "
        f"(a cold Go build, minutes on 2 cores; Ctrl-C skips it)"
    )
    try:
        built = build(choice.version)
    except (SetupError, OSError) as e:
        say(f"sidecar-render: not built ({e}); the next run renders with the model again")
    except KeyboardInterrupt:
        say("sidecar-render: build interrupted; the next run renders with the model again")
    else:
        next_run = f"the next run renders with KubeVirt {choice.version}'s code"
        say(f"sidecar-render: built in {built.seconds:.0f} s; {next_run}")


def vmi_json(spec: VMSpec) -> dict:
    """The VMI KubeVirt makes from the conformance VM (the VM template's spec)."""
    vm = render_vm(spec, namespace=_NAMESPACE, image=_IMAGE, authorized_key=_KEY, password=_PASSWORD)
    template = vm["spec"]["template"]
    return {
        "apiVersion": VIRTUAL_MACHINE_INSTANCE.api_version,
        "kind": VIRTUAL_MACHINE_INSTANCE.kind,
        "metadata": {"name": spec.name, "namespace": _NAMESPACE, **template["metadata"]},
        "spec": template["spec"],
    }


def binding_name(vmi: dict) -> str:
    """The binding plugin the VMI's pod-network interface names: what virt-controller gives that
    binding's sidecar as NETWORK_BINDING_PLUGIN_NAME from v1.9.0 (pkg/virt-controller/services/
    template.go newSidecarContainerRenderer). "slirp" where there is none (the sidecar's default)."""
    spec = vmi.get("spec", {})
    pod_network = next((n.get("name") for n in spec.get("networks") or [] if "pod" in n), None)
    interfaces = (spec.get("domain", {}).get("devices", {}) or {}).get("interfaces") or []
    iface = next((i for i in interfaces if i.get("name") == pod_network), None)
    return ((iface or {}).get("binding") or {}).get("name") or "slirp"


def resolv_conf(search_domains: tuple[str, ...]) -> str:
    """The launcher pod's resolv.conf as far as the sidecar reads it."""
    search = f"search {' '.join(search_domains)}\n" if search_domains else ""
    return f"{search}nameserver 10.96.0.10\noptions ndots:5\n"


def render_many(
    kubevirt_version: str, requests: list[tuple[VMSpec, tuple[str, ...]]]
) -> list[Rendering | SidecarRejected]:
    """One run of the program for many (spec, search list) pairs."""
    return render_vmis(kubevirt_version, [(vmi_json(spec), resolv_conf(domains)) for spec, domains in requests])


def render_vmis(
    kubevirt_version: str, requests: list[tuple[dict, str]], *, told_name: str | None = None
) -> list[Rendering | SidecarRejected]:
    """One run of the program for many (whole VMI object, the launcher pod's resolv.conf text) pairs.
    The sidecar is told its binding's name as virt-controller tells it (``binding_name``), or
    ``told_name`` (a self-test's control)."""
    binary = build(kubevirt_version).binary("sidecar-render")
    payload = [
        {"vmi": vmi, "resolvConf": resolv, "bindingPluginName": told_name or binding_name(vmi)}
        for vmi, resolv in requests
    ]
    try:
        r = subprocess.run([binary], input=json.dumps(payload), capture_output=True, text=True, timeout=RENDER_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise SetupError(f"{binary} did not answer within {RENDER_TIMEOUT:.0f} s") from None
    if r.returncode != 0:
        lines = r.stderr.strip().splitlines() or [f"exit {r.returncode}"]
        cause = next((ln for ln in lines if ln.startswith("panic:")), lines[-1])  # a Go panic: its first line
        raise SetupError(f"{binary} failed: {cause}")
    out = json.loads(r.stdout)
    if out["kubevirtVersion"] != kubevirt_version:
        raise SetupError(
            f"{binary} says it is KubeVirt {out['kubevirtVersion']}, not {kubevirt_version}: delete it from the cache"
        )
    return [
        SidecarRejected(res["error"])
        if "error" in res
        else Rendering(res["args"], tuple(res.get("searchDomains") or ()), kubevirt_version)
        for res in out["results"]
    ]


def render(spec: VMSpec, search_domains: tuple[str, ...], kubevirt_version: str) -> Rendering:
    """The QEMU arguments the sidecar of ``kubevirt_version`` adds for ``spec``."""
    (result,) = render_many(kubevirt_version, [(spec, search_domains)])
    if isinstance(result, SidecarRejected):
        raise result
    return result


def default_version() -> str:
    return str(versions.default_version())


def check(mode: str, kubevirt_version: str | None) -> None:
    """Preflight for ``--sidecar-render``: a choice this machine cannot honour fails at once with
    one line. Nothing falls back: a run checks the sidecar code of the release it names, or the
    Python model because the user asked for it (``python``), never something else silently."""
    if mode not in MODES:
        raise SetupError(f"--sidecar-render {mode!r}: choose one of {', '.join(MODES)}")
    if mode == "auto":
        wrapper_module(kubevirt_version or default_version())
    if mode == "go":
        try:
            gobuild.go_binary()
        except SetupError as e:
            raise SetupError(
                f"{e}; or pass --sidecar-render python to check the suite's Python model of the "
                f"sidecar's arguments instead of KubeVirt's code (the report says so)"
            ) from None
        wrapper_module(kubevirt_version or default_version())


def qemu_network_args(
    spec: VMSpec, search_domains: tuple[str, ...], mode: str, kubevirt_version: str | None
) -> tuple[list[str], dict[str, str]]:
    """The reference VM's QEMU network arguments and where they came from (for ``describe()``).

    ``go``: the real sidecar's of ``kubevirt_version`` (default: the versions.env default), an
    error when that cannot be built or rendered; ``python``: ``slirp_qemu_args``, the suite's model
    (held to the real sidecar's output by tests/test_sidecar_golden.py at the nightly releases);
    ``auto``: what ``choose`` says.
    """
    choice = choose(mode, kubevirt_version)
    version = choice.version
    if choice.renderer == "python":
        source = PYTHON_MODEL
        if choice.build_after_verdict:
            source = (
                f"the suite's Python model (vmspec.slirp_qemu_args), which {GOLDEN} holds byte for byte to "
                f"KubeVirt {version}'s slirp sidecar, because --sidecar-render auto found {choice.why}; "
                f"KubeVirt's code is built after this run's verdict, for the next run"
            )
        return slirp_qemu_args(spec, search_domains), {
            "sidecar_render": "python",
            "sidecar_render_mode": choice.asked,
            "sidecar_args_from": source,
        }
    try:
        rendering = render(spec, search_domains, version)
    except SidecarRejected as e:
        raise SetupError(f"the slirp sidecar of KubeVirt {version} rejects the VM: {e}") from None
    return rendering.args, {
        "sidecar_render": "go",
        "sidecar_render_mode": choice.asked,
        "sidecar_kubevirt_version": version,
        "sidecar_args_from": f"KubeVirt {version}'s converter and slirp sidecar code (hack/sidecar-render)",
    }


def main(argv: list[str]) -> int:
    """``python -m slirp_conformance.reference.sidecar_render [VERSION...]``: build (or find cached) the
    program for each release, default the nightly ones; hack/test.sh runs it before the self-tests."""
    wanted = argv or [str(v) for v in versions.nightly_versions()]
    try:
        for version in wanted:
            built = build(version)
            state = "built" if built.cold else "cached"
            print(f"sidecar-render {version}: {state} in {built.seconds:.1f} s ({built.bin_dir})")
    except SetupError as e:
        return refuse("sidecar-render", e, 1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
