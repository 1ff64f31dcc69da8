"""The fake's virt-api: the aggregated ``subresources.kubevirt.io/v1`` API, only ``healthz`` and
``version`` (what the operator emulation reports, ``kubevirt``; among it the KubeVirt CR's
resourceVersion virt-api has loaded, ``config-resource-version``).

Anything else (the VMI console and port-forward among it) is 404: the fake boots no VM, and the
test bed's real virt-api serves them.
"""

from __future__ import annotations

from aiohttp import web

from tests.kube_api import errors


class VirtApi:
    def __init__(self, operator) -> None:
        self.operator = operator

    async def handle(self, request: web.Request, rest: list[str]) -> web.StreamResponse:
        if not self.operator.installed:
            raise errors.ApiError(503, "ServiceUnavailable", "the server is currently unable to handle the request")
        if rest == ["healthz"]:
            return self.operator.healthz()
        if rest == ["version"]:
            return self.operator.version_info()
        raise errors.ApiError(404, "NotFound", "the server could not find the requested resource")
