"""Assembly: store + API server + KubeVirt emulation, served over HTTPS on 127.0.0.1.

``FakeCluster.start()`` binds a random free port, then writes the kubeconfig (atomically: a
reader never sees half a file). ``stop()`` ends the watches and removes the kubeconfig. Nothing
else is written: the server key exists on disk only while ``ssl`` loads it.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import secrets
import shutil
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml
from aiohttp import web

from .core import CoreControllers
from .discovery import BY_PATH
from .kubevirt import KubeVirtOperator
from .server import ApiServer
from .store import Store
from .tls import make_pki
from .virt_api import VirtApi

log = logging.getLogger("fake_cluster")


@dataclass
class Options:
    kubeconfig: Path
    preinstalled_kubevirt: str | None = None  # a version: start with KubeVirt already Available
    kubevirt_version: str = "v1.1.0"  # what a KubeVirt CR created later reports
    available_delay: float = 2.0
    propagation_delay: float = 1.0


class FakeCluster:
    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.token = secrets.token_urlsafe(32)
        self.ca, server_pem, self.client = make_pki()
        self.store = Store()
        self.api = ApiServer(self.store, self.token, client_cn="fake-admin")
        self.operator = KubeVirtOperator(
            self.store, opts.kubevirt_version, opts.available_delay, opts.propagation_delay
        )
        self.core = CoreControllers(self.store)
        self.virt_api = VirtApi(self.operator)
        self.api.admission += [self.core.default, self.operator.admit]
        self.api.subresources[(BY_PATH[("", "v1", "pods")].key, "proxy")] = self.operator.pod_proxy
        self.api.aggregated["subresources.kubevirt.io"] = self.virt_api.handle
        self.ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tmp = Path(
            tempfile.mkdtemp(prefix=f"fake-cluster-{os.getpid()}-")
        )  # ssl loads keys from files only; gone at once
        try:
            cert, key = tmp / "server.crt", tmp / "server.key"
            cert.write_bytes(server_pem.cert)
            key.write_bytes(server_pem.key)
            self.ssl.load_cert_chain(cert, key)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        self.ssl.load_verify_locations(cadata=self.ca.cert.decode())
        self.ssl.verify_mode = ssl.CERT_OPTIONAL  # client certificates are optional; tokens work too
        self.runner: web.AppRunner | None = None
        self.listener: asyncio.Server | None = None
        self.port = 0

    def _seed(self) -> None:
        ns = BY_PATH[("", "v1", "namespaces")]
        for name in ("default", "kube-system", "kube-public", "kube-node-lease"):
            self.store.create(
                ns,
                None,
                {
                    "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name}},
                    "spec": {"finalizers": ["kubernetes"]},
                    "status": {"phase": "Active"},
                },
            )
        self.store.create(
            BY_PATH[("", "v1", "nodes")],
            None,
            {
                "metadata": {
                    "name": "fake-node",
                    "labels": {"kubernetes.io/hostname": "fake-node", "kubevirt.io/schedulable": "true"},
                },
                "status": {
                    "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
                    "addresses": [{"type": "InternalIP", "address": "172.18.0.2"}],
                },
            },
        )
        if self.opts.preinstalled_kubevirt:
            self.operator.preinstall(self.opts.preinstalled_kubevirt)

    async def start(self) -> None:
        self._seed()
        self.runner = web.AppRunner(self.api.app, handle_signals=False, access_log=None, shutdown_timeout=2)
        await self.runner.setup()
        self.listener = await asyncio.get_running_loop().create_server(self.runner.server, "127.0.0.1", 0, ssl=self.ssl)
        self.port = self.listener.sockets[0].getsockname()[1]
        self.write_kubeconfig()
        log.info("serving on https://127.0.0.1:%d, kubeconfig %s", self.port, self.opts.kubeconfig)

    def write_kubeconfig(self) -> None:
        def b64(data: bytes) -> str:
            return base64.b64encode(data).decode()

        server = f"https://127.0.0.1:{self.port}"
        cfg = {
            "apiVersion": "v1",
            "kind": "Config",
            "preferences": {},
            "current-context": "fake",
            "clusters": [
                {"name": "fake", "cluster": {"server": server, "certificate-authority-data": b64(self.ca.cert)}}
            ],
            "users": [
                {"name": "fake-admin", "user": {"token": self.token}},
                {
                    "name": "fake-admin-cert",
                    "user": {"client-certificate-data": b64(self.client.cert), "client-key-data": b64(self.client.key)},
                },
            ],
            "contexts": [
                {"name": "fake", "context": {"cluster": "fake", "user": "fake-admin", "namespace": "default"}},
                {
                    "name": "fake-cert",
                    "context": {"cluster": "fake", "user": "fake-admin-cert", "namespace": "default"},
                },
            ],
        }
        path = Path(self.opts.kubeconfig)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            yaml.safe_dump(cfg, f)
        os.replace(tmp, path)

    async def stop(self) -> None:
        try:
            Path(self.opts.kubeconfig).unlink()
        except OSError:
            pass
        self.store.cancel_timers()
        for w in list(self.store.watchers):  # end watch streams: a None-event wakes nobody, so cancel below
            self.store.unwatch(w)
        if self.listener is not None:
            self.listener.close()
        if self.runner is not None:
            await self.runner.cleanup()


async def serve(opts: Options, stop: asyncio.Event) -> None:
    cluster = FakeCluster(opts)
    try:
        await cluster.start()
        await stop.wait()
    finally:
        await cluster.stop()
