"""Install KubeVirt from its release manifests when the cluster has none; uninstall only that.

Manifests: ``kubevirt-operator.yaml`` then ``kubevirt-cr.yaml`` from the GitHub release of the
version, or from ``--kubevirt-manifests DIR`` (air-gapped). Objects are created with the dynamic
client (``utils.create_from_yaml`` cannot create custom resources). Without a usable /dev/kvm
the CR gets ``developerConfiguration.useEmulation: true`` before it is created.
"""

from __future__ import annotations

import atexit
import copy
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Self

import yaml

from slirp_conformance import waits
from slirp_conformance.cluster import kubevirt_cr, runner
from slirp_conformance.cluster.versions import (
    KubeVirtVersion,
    parse_kubevirt_version,
    release_manifest_urls,
)
from slirp_conformance.errors import SetupError
from slirp_conformance.kubevirt.apis import KUBEVIRT

log = logging.getLogger("slirp.cluster.kubevirt")

OPERATOR_MANIFEST = "kubevirt-operator.yaml"
CR_MANIFEST = "kubevirt-cr.yaml"


def _parse(text: str, source: str) -> list[dict]:
    try:
        docs = [d for d in yaml.safe_load_all(text) if d]
    except yaml.YAMLError as e:
        raise SetupError(f"{source} is not valid YAML ({e.__class__.__name__}); re-download it") from None
    if not docs or not all(isinstance(d, dict) and "kind" in d and "apiVersion" in d for d in docs):
        raise SetupError(f"{source} holds no Kubernetes objects; is it a KubeVirt release manifest?")
    return docs


def load_manifests(
    version: KubeVirtVersion | str, manifests_dir: str | Path | None = None
) -> tuple[list[dict], list[dict]]:
    """(operator objects, CR objects) of ``version``, from ``manifests_dir`` or the GitHub release."""
    if isinstance(version, str):
        version = parse_kubevirt_version(version)
    texts: dict[str, tuple[str, str]] = {}
    if manifests_dir is not None:
        directory = Path(manifests_dir)
        for name in (OPERATOR_MANIFEST, CR_MANIFEST):
            path = directory / name
            try:
                texts[name] = (path.read_text(), str(path))
            except OSError as e:
                raise SetupError(
                    f"--kubevirt-manifests: cannot read {path} ({e.strerror}); put the {version} "
                    f"release's {OPERATOR_MANIFEST} and {CR_MANIFEST} in {directory}"
                ) from None
    else:
        timeout = runner.budget("manifest-download")
        for name, url in release_manifest_urls(version).items():
            try:
                with urllib.request.urlopen(url, timeout=timeout) as response:
                    texts[name] = (response.read().decode(), url)
            except (urllib.error.URLError, TimeoutError, OSError) as e:
                reason = getattr(e, "reason", e)
                raise SetupError(
                    f"cannot download {url} ({reason}); check the network/proxy, or download the "
                    f"release manifests elsewhere and pass --kubevirt-manifests DIR"
                ) from None
    operator = _parse(*texts[OPERATOR_MANIFEST])
    crs = _parse(*texts[CR_MANIFEST])
    if not any(d["kind"] == KUBEVIRT.kind for d in crs):
        raise SetupError(f"{texts[CR_MANIFEST][1]} has no KubeVirt object; is it the release's {CR_MANIFEST}?")
    return operator, crs


def with_use_emulation(cr: dict) -> dict:
    """A copy of the KubeVirt CR with ``spec.configuration.developerConfiguration.useEmulation: true``."""
    cr = copy.deepcopy(cr)
    dev = cr.setdefault("spec", {}).setdefault("configuration", {}).setdefault("developerConfiguration", {})
    dev["useEmulation"] = True
    return cr


def _describe(obj: dict) -> str:
    if not obj:
        return "not found"
    conds = ", ".join(
        f"{c.get('type')}={c.get('status')}" + (f" ({c.get('reason')})" if c.get("reason") else "")
        for c in obj.get("status", {}).get("conditions", []) or []
    )
    return f"phase={obj.get('status', {}).get('phase')!s}; conditions: {conds or 'none yet'}"


def wait_available(api: Any, ref: kubevirt_cr.KubeVirtRef) -> dict:
    """Wait (bounded by "kubevirt-available") for the CR's Available condition; logs each new state."""
    from kubernetes.client import ApiException

    seen: dict[str, str | None] = {"last": None}

    def probe() -> dict:
        obj = kubevirt_cr.get_kubevirt(api, ref)
        state = _describe(obj)
        if state != seen["last"]:
            log.info("KubeVirt %s/%s: %s", ref.namespace, ref.name, state)
            seen["last"] = state
        return obj

    return waits.wait_for(
        f"KubeVirt {ref.namespace}/{ref.name} to report condition Available",
        probe,
        waits.timeout("kubevirt-available"),
        accept=kubevirt_cr.is_available,
        retry_on=(ApiException,),
        describe=_describe,
        max_interval=10,
    )


_discovery_dir: list[str] = []


def _dynamic(api_client: Any) -> Any:
    """A DynamicClient whose discovery cache lives in this process's own temp dir (removed at
    exit), not as /tmp/osrcp-<hash>.json files that outlive every run."""
    from kubernetes.dynamic import DynamicClient

    if not _discovery_dir:
        _discovery_dir.append(tempfile.mkdtemp(prefix="slirp-conformance-discovery-"))
        atexit.register(shutil.rmtree, _discovery_dir[0], True)
    return DynamicClient(api_client, cache_file=os.path.join(_discovery_dir[0], "discovery.json"))


def _discovered(dyn: Any, api_version: str, kind: str) -> Any:
    """``dyn``'s resource for ``kind``, waiting (bounded) for the API server's discovery to serve
    it. A CRD's kind is served a moment after the CRD is Established, not with it: the API
    server's DiscoveryController adds the group version from a work queue of its own once it sees
    the Established condition (apiextensions-apiserver v0.34.0,
    pkg/apiserver/customresource_discovery_controller.go, ``sync``), and until then
    /apis/<group>/<version> answers 404. A cluster-up in CI created the KubeVirt CR in that moment
    and ended in ResourceNotFoundError. The client re-reads the server's discovery on a miss."""
    from kubernetes.dynamic.exceptions import ResourceNotFoundError

    return waits.wait_for(
        f"{kind} ({api_version}) in the API server's discovery",
        lambda: dyn.resources.get(api_version=api_version, kind=kind),
        runner.budget("crd-established"),
        retry_on=(ResourceNotFoundError,),
        describe=lambda r: f"found {r}",
    )


class KubeVirtInstallation:
    """``with KubeVirtInstallation(api_client, "v1.5.3", use_emulation=True) as kv:`` -> ``kv.version``.

    Uses an existing KubeVirt CR (any namespace) when there is one, else installs ``version``
    (only when ``install`` allows). On exit uninstalls only what it installed (``keep=True`` leaves it).
    ``expect_version``: fail when an existing KubeVirt runs another version than ``version``.
    ``version`` (after ``ensure``): the version the cluster runs, from the CR's status.
    """

    def __init__(
        self,
        api_client: Any,
        version: KubeVirtVersion | str | None,
        *,
        use_emulation: bool,
        manifests_dir: str | Path | None = None,
        expect_version: bool = True,
        keep: bool = False,
        install: bool = True,
    ):
        self.api_client = api_client
        self.requested = parse_kubevirt_version(version) if isinstance(version, str) else version
        self.use_emulation = use_emulation
        self.manifests_dir = manifests_dir
        self.expect_version = expect_version
        self.keep = keep
        self.install = install
        self.installed = False
        self.ref: kubevirt_cr.KubeVirtRef | None = None
        self.version: str | None = None
        self._created: list[dict] = []  # operator objects this run created, in creation order
        self._created_cr = False

    def __enter__(self) -> Self:
        try:
            self.ensure()
        except BaseException:
            if not self.keep:
                self.uninstall()  # a half-done install (timeout, Ctrl-C) is ours to remove
            raise
        return self

    def __exit__(self, *exc) -> None:
        if not self.keep:
            self.uninstall()

    def ensure(self) -> str:
        """The running KubeVirt version, installing ``requested`` first when there is none."""
        api = kubevirt_cr.as_api(self.api_client)
        ref = kubevirt_cr.find_kubevirt(api)
        if ref is not None:
            self.ref = ref
            obj = wait_available(api, ref)
            running = kubevirt_cr.running_version(obj, ref)
            self.version = str(running)
            log.info("using the KubeVirt already in the cluster: %s/%s %s", ref.namespace, ref.name, self.version)
            kubevirt_cr.check_requested(running, self.requested if self.expect_version else None, ref)
            return self.version
        if not self.install:
            raise SetupError("no KubeVirt on this cluster: install it, or pass --install-kubevirt")
        if self.requested is None:
            raise SetupError("the cluster has no KubeVirt; pass --kubevirt-version to let the suite install one")
        self._install()
        return self.version or ""

    def _install(self) -> None:
        operator, crs = load_manifests(self.requested, self.manifests_dir)  # type: ignore[arg-type]
        if self.use_emulation:
            crs = [with_use_emulation(d) if d["kind"] == KUBEVIRT.kind else d for d in crs]
        self.installed = True  # from here on, uninstall cleans up whatever got created
        dyn = _dynamic(self.api_client)
        log.info(
            "installing KubeVirt %s (%d operator objects, useEmulation=%s)",
            self.requested,
            len(operator),
            self.use_emulation,
        )
        for doc in operator:
            if self._create(dyn, doc):
                self._created.append(doc)
        self._wait_crd_established(dyn)
        dyn = _dynamic(self.api_client)  # fresh discovery: the KubeVirt kind exists now
        for doc in crs:
            if self._create(dyn, doc) and doc["kind"] == KUBEVIRT.kind:
                self._created_cr = True
                self.ref = kubevirt_cr.KubeVirtRef(
                    doc["metadata"].get("namespace", "kubevirt"), doc["metadata"]["name"]
                )
        if self.ref is None:
            self.ref = kubevirt_cr.require_kubevirt(self.api_client)
        obj = wait_available(kubevirt_cr.as_api(self.api_client), self.ref)
        self.version = str(kubevirt_cr.running_version(obj, self.ref))
        log.info("KubeVirt %s is Available", self.version)

    @staticmethod
    def _create(dyn: Any, doc: dict) -> bool:
        """Create one object; False when it already existed (then it is not ours to delete)."""
        from kubernetes.dynamic.exceptions import DynamicApiError

        resource = _discovered(dyn, doc["apiVersion"], doc["kind"])
        namespace = doc["metadata"].get("namespace") if resource.namespaced else None
        try:
            resource.create(body=doc, namespace=namespace)
        except DynamicApiError as e:
            if e.status == 409:
                log.info("%s %s exists already; leaving it as it is", doc["kind"], doc["metadata"]["name"])
                return False
            raise SetupError(
                f"creating {doc['kind']} {doc['metadata']['name']} failed: HTTP {e.status} "
                f"{getattr(e, 'reason', '')}; does the kubeconfig's user have cluster-admin?"
            ) from None
        return True

    @staticmethod
    def _wait_crd_established(dyn: Any) -> None:
        from kubernetes.dynamic.exceptions import DynamicApiError

        crds = dyn.resources.get(api_version="apiextensions.k8s.io/v1", kind="CustomResourceDefinition")

        def established() -> bool:
            crd = crds.get(name=KUBEVIRT.crd_name).to_dict()
            return any(
                c.get("type") == "Established" and c.get("status") == "True"
                for c in crd.get("status", {}).get("conditions", []) or []
            )

        waits.wait_for(
            f"CRD {KUBEVIRT.crd_name} to be Established",
            established,
            runner.budget("crd-established"),
            retry_on=(DynamicApiError,),
        )

    def uninstall(self) -> None:
        """Delete the CR (and wait until the operator removed KubeVirt), then the operator objects we created."""
        if not self.installed:
            return
        from kubernetes.dynamic.exceptions import (
            DynamicApiError,
            NotFoundError,
            ResourceNotFoundError,
        )

        dyn = _dynamic(self.api_client)
        budget = waits.timeout("resource-deleted")
        if self._created_cr and self.ref is not None:
            kv = dyn.resources.get(api_version=KUBEVIRT.api_version, kind=KUBEVIRT.kind)
            self._delete_and_wait(kv, self.ref.name, self.ref.namespace, budget)
        for doc in reversed(self._created):
            try:
                resource = dyn.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
            except ResourceNotFoundError:
                continue  # its CRD went away with an earlier delete
            namespace = doc["metadata"].get("namespace") if resource.namespaced else None
            try:
                resource.delete(name=doc["metadata"]["name"], namespace=namespace)
            except NotFoundError:
                pass
            except DynamicApiError as e:
                log.warning("could not delete %s %s: HTTP %s", doc["kind"], doc["metadata"]["name"], e.status)
        for doc in self._created:
            if doc["kind"] == "Namespace":
                ns = dyn.resources.get(api_version="v1", kind="Namespace")
                self._wait_gone(ns, doc["metadata"]["name"], None, budget)
        self.installed = False
        self._created.clear()
        self._created_cr = False

    @classmethod
    def _delete_and_wait(cls, resource: Any, name: str, namespace: str | None, budget: float) -> None:
        from kubernetes.dynamic.exceptions import NotFoundError

        try:
            resource.delete(name=name, namespace=namespace)
        except NotFoundError:
            return
        cls._wait_gone(resource, name, namespace, budget)

    @staticmethod
    def _wait_gone(resource: Any, name: str, namespace: str | None, budget: float) -> None:
        from kubernetes.dynamic.exceptions import NotFoundError

        def gone() -> bool:
            try:
                resource.get(name=name, namespace=namespace)
            except NotFoundError:
                return True
            return False

        waits.wait_for(f"{resource.kind} {name} to be deleted", gone, budget, max_interval=5)
