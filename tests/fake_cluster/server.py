"""The HTTPS REST front: auth, discovery, CRUD/PATCH/watch on the store, and subresource dispatch.

Paths are parsed the way the API server lays them out (``/api/v1/...``, ``/apis/<g>/<v>/...``,
``namespaces/<ns>/<plural>/<name>/<subresource>``). Errors are ``Status`` objects. Subresources
other than ``status`` (exec, portforward, log, the kubevirt console...) are handed to handlers that
the behaviour modules register.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import Awaitable, Callable

from aiohttp import web

from tests.kube_api import errors

from . import discovery, tables
from .discovery import BY_PATH, Resource
from .patch import PatchError, json_patch, merge_patch
from .store import Store

Admission = Callable[[str, Resource, dict, "dict | None"], None]
SubHandler = Callable[[web.Request, Resource, str, str, str], Awaitable[web.StreamResponse]]
MAX_WATCH_SECONDS = 1800
# An OpenAPI v2 document (gnostic protobuf) with only swagger="2.0" and info{title, version}: no
# schemas, so kubectl's client-side apply falls back to JSON merge patches, as it does for CRDs.
OPENAPI_V2_PB = b"\x0a\x032.0\x12\x0f\x0a\x04fake\x12\x07v1.27.1"


def _json(body: dict, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(body), status=status, content_type="application/json")


def _error(exc: errors.ApiError) -> web.Response:
    return _json(exc.status(), exc.code)


def _truthy(value: str | None) -> bool:
    return (value or "").lower() in ("true", "1")


class ApiServer:
    def __init__(self, store: Store, token: str, client_cn: str | None = None) -> None:
        self.store = store
        self.token = token
        self.client_cn = client_cn
        self.admission: list[Admission] = []
        self.subresources: dict[tuple[str, str], SubHandler] = {}
        self.aggregated: dict[str, Callable[[web.Request, list[str]], Awaitable[web.StreamResponse]]] = {}
        self.app = web.Application(middlewares=[self._auth], client_max_size=64 * 1024 * 1024)
        self.app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._streams: set[web.StreamResponse] = set()

    # -- auth ---------------------------------------------------------------------------------------
    @web.middleware
    async def _auth(self, request: web.Request, handler):
        header = request.headers.get("Authorization", "")
        ok = header.startswith("Bearer ") and hmac.compare_digest(header[7:].strip(), self.token)
        if not ok and self.client_cn:
            cert = request.transport.get_extra_info("peercert") if request.transport else None
            subject = dict(x[0] for x in (cert or {}).get("subject", ()))
            ok = subject.get("commonName") == self.client_cn
        if not ok:
            return _error(errors.ApiError(401, "Unauthorized", "Unauthorized"))
        try:
            return await handler(request)
        except errors.ApiError as exc:
            return _error(exc)

    # -- routing ------------------------------------------------------------------------------------
    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        seg = [s for s in request.path.split("/") if s]
        if request.method == "GET":
            doc = self._discovery(seg)
            if doc is not None:
                return _json(doc)
        if seg[:1] in (["healthz"], ["livez"], ["readyz"]):
            return web.Response(text="ok")
        if seg == ["openapi", "v2"] and "protobuf" in request.headers.get("Accept", ""):
            return web.Response(
                body=OPENAPI_V2_PB, content_type="application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
            )
        if seg[:1] == ["openapi"]:
            raise errors.ApiError(404, "NotFound", "the server could not find the requested resource")
        if len(seg) >= 3 and seg[0] == "apis" and seg[1] in self.aggregated:
            return await self.aggregated[seg[1]](request, seg[3:])
        if seg[:1] == ["api"] and len(seg) >= 3:
            group, version, rest = "", seg[1], seg[2:]
        elif seg[:1] == ["apis"] and len(seg) >= 4:
            group, version, rest = seg[1], seg[2], seg[3:]
        else:
            raise errors.ApiError(404, "NotFound", "the server could not find the requested resource")
        ns = None
        if rest[0] == "namespaces" and len(rest) >= 3:
            inner = BY_PATH.get((group, version, rest[2]))
            if inner is not None and inner.namespaced:
                ns, rest = rest[1], rest[2:]
        res = BY_PATH.get((group, version, rest[0]))
        if res is None or (res.namespaced is False and ns is not None):
            raise errors.ApiError(404, "NotFound", "the server could not find the requested resource")
        name = rest[1] if len(rest) > 1 else None
        sub = "/".join(rest[2:])
        if sub and sub != "status":
            handler = self.subresources.get((res.key, sub.split("/")[0]))
            if handler is None or name is None:
                raise errors.ApiError(404, "NotFound", "the server could not find the requested resource")
            return await handler(request, res, ns or "", name, sub)
        return await self._rest(request, res, ns, name, sub == "status")

    def _discovery(self, seg: list[str]) -> dict | None:
        if seg == ["version"]:
            return discovery.SERVER_VERSION
        if seg == ["api"]:
            return discovery.api_versions()
        if seg == ["apis"]:
            return discovery.api_group_list()
        if len(seg) == 2 and seg[0] == "api":
            return discovery.resource_list("", seg[1])
        if len(seg) == 2 and seg[0] == "apis":
            return discovery.api_group(seg[1])
        if len(seg) == 3 and seg[0] == "apis":
            return discovery.resource_list(seg[1], seg[2])
        return None

    # -- REST ---------------------------------------------------------------------------------------
    async def _body(self, request: web.Request):
        raw = await request.read()
        try:
            return json.loads(raw or b"null")
        except ValueError:
            raise errors.bad_request("the request body is not JSON (this fake accepts JSON only)") from None

    def _admit(self, op: str, res: Resource, obj: dict, old: dict | None) -> None:
        for hook in self.admission:
            hook(op, res, obj, old)

    async def _rest(
        self, request: web.Request, res: Resource, ns: str | None, name: str | None, status: bool
    ) -> web.StreamResponse:
        q = request.query
        m = request.method
        if name is None:
            if m == "GET" and _truthy(q.get("watch")):
                return await self._watch(request, res, ns)
            if m == "GET":
                items = self.store.list(res, ns, q.get("labelSelector"), q.get("fieldSelector"))
                rv = str(self.store.rv)
                if tables.wants_table(request.headers.get("Accept", "")):
                    return _json(tables.table(res.kind, items, rv, q.get("includeObject", "")))
                return _json(
                    {
                        "kind": f"{res.kind}List",
                        "apiVersion": res.group_version,
                        "metadata": {"resourceVersion": rv},
                        "items": items,
                    }
                )
            if m == "POST":
                obj = await self._body(request)
                if not isinstance(obj, dict):
                    raise errors.bad_request("the body must be an object")
                if obj.get("kind") not in (None, res.kind):
                    raise errors.bad_request(f"the kind {obj.get('kind')!r} does not match {res.kind}")
                if ns and obj.get("metadata", {}).get("namespace") not in (None, "", ns):
                    raise errors.bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request"
                    )
                self._admit("CREATE", res, obj, None)
                if q.get("dryRun") == "All":
                    return _json(obj, 201)
                return _json(self.store.create(res, ns, obj), 201)
            if m == "DELETE":
                deleted = [
                    self.store.delete(res, o["metadata"].get("namespace"), o["metadata"]["name"])
                    for o in self.store.list(res, ns, q.get("labelSelector"), q.get("fieldSelector"))
                ]
                return _json(
                    {
                        "kind": f"{res.kind}List",
                        "apiVersion": res.group_version,
                        "metadata": {"resourceVersion": str(self.store.rv)},
                        "items": deleted,
                    }
                )
            raise errors.ApiError(405, "MethodNotAllowed", f"{m} is not supported on a collection")
        if m == "GET":
            if _truthy(q.get("watch")):
                raise errors.bad_request("watch a single object with fieldSelector=metadata.name=<name>")
            obj = self.store.get(res, ns, name)
            if tables.wants_table(request.headers.get("Accept", "")):
                return _json(
                    tables.table(res.kind, [obj], obj["metadata"]["resourceVersion"], q.get("includeObject", ""))
                )
            return _json(obj)
        if m == "PUT":
            obj = await self._body(request)
            if not isinstance(obj, dict):
                raise errors.bad_request("the body must be an object")
            old = self.store.get(res, ns, name)
            if not status:
                self._admit("UPDATE", res, obj, old)
            return _json(
                self.store.update(
                    res, ns, name, obj, status_only=status, preserve_status=not status and "status" in res.subresources
                )
            )
        if m == "PATCH":
            return _json(await self._patch(request, res, ns, name, status))
        if m == "DELETE":
            body = await self._body(request) or {}
            pre = body.get("preconditions") or {}
            current = self.store.get(res, ns, name)
            if (pre.get("uid") and pre["uid"] != current["metadata"]["uid"]) or (
                pre.get("resourceVersion") and pre["resourceVersion"] != current["metadata"]["resourceVersion"]
            ):
                raise errors.conflict(res.group, res.plural, name)
            grace = body.get("gracePeriodSeconds", q.get("gracePeriodSeconds"))
            try:
                grace = None if grace is None else int(grace)
            except (TypeError, ValueError):
                raise errors.bad_request(f"invalid gracePeriodSeconds {grace!r}") from None
            return _json(self.store.delete(res, ns, name, grace))
        raise errors.ApiError(405, "MethodNotAllowed", f"{m} is not supported")

    async def _patch(self, request: web.Request, res: Resource, ns: str | None, name: str, status: bool) -> dict:
        ctype = request.headers.get("Content-Type", "").split(";")[0].strip()
        body = await self._body(request)
        current = self.store.get(res, ns, name)
        try:
            if ctype == "application/json-patch+json":
                new = json_patch(current, body)
            elif ctype in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
                new = merge_patch(current, body)
            else:
                raise errors.ApiError(
                    415,
                    "UnsupportedMediaType",
                    "the body of the request was in an unknown format - accepted media types "
                    "include: application/json-patch+json, application/merge-patch+json, "
                    "application/strategic-merge-patch+json",
                )
        except PatchError as exc:
            code = 422 if ctype == "application/json-patch+json" else 400
            raise errors.ApiError(code, "Invalid" if code == 422 else "BadRequest", str(exc)) from None
        if not isinstance(new, dict):
            raise errors.bad_request("the patch must result in an object")
        if not status:
            self._admit("UPDATE", res, new, current)
        return self.store.update(
            res, ns, name, new, status_only=status, preserve_status=not status and "status" in res.subresources
        )

    async def _watch(self, request: web.Request, res: Resource, ns: str | None) -> web.StreamResponse:
        q = request.query
        try:
            w = self.store.watch(res, ns, q.get("labelSelector"), q.get("fieldSelector"), q.get("resourceVersion"))
        except errors.ApiError as exc:
            if exc.code != 410:
                raise
            # Like the API server: 200, then one ERROR event carrying the 410 Status.
            return _json({"type": "ERROR", "object": exc.status()})
        timeout = min(float(q.get("timeoutSeconds") or MAX_WATCH_SECONDS), MAX_WATCH_SECONDS)
        resp = web.StreamResponse(headers={"Content-Type": "application/json", "Cache-Control": "no-cache"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        self._streams.add(resp)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            while True:
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    kind, obj = await asyncio.wait_for(w.queue.get(), left)
                except TimeoutError:
                    break
                await resp.write(json.dumps({"type": kind, "object": obj}).encode() + b"\n")
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.store.unwatch(w)
            self._streams.discard(resp)
        try:
            await resp.write_eof()
        except (ConnectionResetError, RuntimeError):
            pass
        return resp
