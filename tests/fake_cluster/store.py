"""The object store: one global resourceVersion counter, event history for watches, graceful deletes.

All calls happen on the server's event loop thread. Listeners (the emulated controllers) are
called synchronously after each change with (event_type, resource, object); they schedule their
own work. Deletion: objects with ``metadata.finalizers`` stay until those are removed; kinds in
``TERMINATING_SECONDS`` (namespaces, VMs, VMIs, pods) first get ``deletionTimestamp`` (a MODIFIED
event) and disappear a little later, so "wait until gone" code is exercised.
"""

from __future__ import annotations

import asyncio
import copy
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from tests.kube_api import errors
from tests.kube_api.conditions import now

from .discovery import Resource
from .selectors import field_matcher, label_matcher

TERMINATING_SECONDS = {
    "/namespaces": 1.5,
    "kubevirt.io/virtualmachines": 1.0,
    "kubevirt.io/virtualmachineinstances": 0.5,
    "/pods": 0.5,
}
HISTORY = 5000


@dataclass(eq=False)
class Watcher:
    res: Resource
    namespace: str | None
    labels: Callable
    fields: Callable
    queue: asyncio.Queue = field(default_factory=lambda: asyncio.Queue(maxsize=10000))

    def translate(self, res: Resource, kind: str, obj: dict, old: dict | None) -> tuple[str, dict] | None:
        """What this watch sees of a change: a MODIFIED that moves an object into (out of) the
        selected set arrives as ADDED (DELETED), as the API server's watch cache does."""
        now_in = self.wants(res, obj)
        if kind != "MODIFIED" or old is None:
            return (kind, obj) if now_in else None
        was_in = self.wants(res, old)
        if now_in and was_in:
            return ("MODIFIED", obj)
        if now_in:
            return ("ADDED", obj)
        if was_in:
            return ("DELETED", obj)
        return None

    def wants(self, res: Resource, obj: dict) -> bool:
        md = obj.get("metadata", {})
        return (
            res.key == self.res.key
            and (self.namespace is None or md.get("namespace") == self.namespace)
            and self.labels(md.get("labels"))
            and self.fields(obj)
        )


class Store:
    def __init__(self) -> None:
        self.rv = 0
        self.objects: dict[str, dict[tuple[str, str], dict]] = {}
        self.history: deque = deque(maxlen=HISTORY)
        self.watchers: set[Watcher] = set()
        self.listeners: list[Callable[[str, Resource, dict], None]] = []
        self._timers: set[asyncio.TimerHandle] = set()

    # -- helpers ------------------------------------------------------------------------------------
    def _table(self, res: Resource) -> dict[tuple[str, str], dict]:
        return self.objects.setdefault(res.key, {})

    def _emit(self, kind: str, res: Resource, obj: dict, old: dict | None = None) -> None:
        """``old``: the object before a MODIFIED, so selector watches see it enter or leave their set."""
        snapshot = copy.deepcopy(obj)
        before = copy.deepcopy(old) if old is not None else None
        self.history.append((self.rv, res, kind, snapshot, before))
        for w in list(self.watchers):
            event = w.translate(res, kind, snapshot, before)
            if event is not None:
                try:
                    w.queue.put_nowait(event)
                except asyncio.QueueFull:
                    self.watchers.discard(w)
        for listener in self.listeners:
            listener(kind, res, snapshot)

    def _next_rv(self) -> str:
        self.rv += 1
        return str(self.rv)

    @staticmethod
    def _ns(res: Resource, namespace: str | None) -> str:
        return (namespace or "") if res.namespaced else ""

    # -- reads --------------------------------------------------------------------------------------
    def find(self, res: Resource, namespace: str | None, name: str) -> dict | None:
        return self._table(res).get((self._ns(res, namespace), name))

    def get(self, res: Resource, namespace: str | None, name: str) -> dict:
        obj = self.find(res, namespace, name)
        if obj is None:
            raise errors.not_found(res.group, res.plural, name)
        return copy.deepcopy(obj)

    def list(
        self,
        res: Resource,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> list[dict]:
        labels, fields = label_matcher(label_selector), field_matcher(field_selector)
        out = [
            o
            for (ns, _), o in sorted(self._table(res).items())
            if (not namespace or ns == namespace) and labels(o["metadata"].get("labels")) and fields(o)
        ]
        return copy.deepcopy(out)

    # -- writes -------------------------------------------------------------------------------------
    def create(self, res: Resource, namespace: str | None, obj: dict) -> dict:
        obj = copy.deepcopy(obj)
        md = obj.setdefault("metadata", {})
        if not md.get("name"):
            if not md.get("generateName"):
                raise errors.invalid(
                    res.kind,
                    "",
                    f'{res.kind} "" is invalid: metadata.name: Required value: name or generateName is required',
                    group=res.group,
                )
            md["name"] = md["generateName"] + uuid.uuid4().hex[:5]
        ns = self._ns(res, namespace or md.get("namespace"))
        if res.namespaced:
            md["namespace"] = ns
            self._check_namespace(ns)
        else:
            md.pop("namespace", None)
        if (ns, md["name"]) in self._table(res):
            raise errors.already_exists(res.group, res.plural, md["name"])
        obj["apiVersion"], obj["kind"] = res.group_version, res.kind
        md.update(uid=str(uuid.uuid4()), creationTimestamp=now(), generation=1, resourceVersion=self._next_rv())
        for k in ("deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"):
            md.pop(k, None)
        self._table(res)[(ns, md["name"])] = obj
        self._emit("ADDED", res, obj)
        return copy.deepcopy(obj)

    def _check_namespace(self, ns: str) -> None:
        from .discovery import BY_PATH

        nsobj = self._table(BY_PATH[("", "v1", "namespaces")]).get(("", ns))
        if nsobj is None:
            raise errors.not_found("", "namespaces", ns)
        if nsobj["metadata"].get("deletionTimestamp"):
            raise errors.ApiError(
                403,
                "Forbidden",
                f"unable to create new content in namespace {ns} because it is being terminated",
                {"name": ns, "kind": "namespaces"},
            )

    def update(
        self,
        res: Resource,
        namespace: str | None,
        name: str,
        obj: dict,
        *,
        status_only: bool = False,
        check_rv: bool = True,
        preserve_status: bool = False,
    ) -> dict:
        """``status_only``: a write to the status subresource; ``preserve_status``: a client write to the
        main resource of a kind with a status subresource (its status changes are ignored)."""
        current = self.find(res, namespace, name)
        if current is None:
            raise errors.not_found(res.group, res.plural, name)
        obj = copy.deepcopy(obj)
        md = obj.setdefault("metadata", {})
        if md.get("name", name) != name:
            raise errors.bad_request(
                f"the name of the object ({md.get('name')}) does not match the name on the URL ({name})"
            )
        wanted_rv = md.get("resourceVersion")
        if check_rv and wanted_rv and wanted_rv != current["metadata"]["resourceVersion"]:
            raise errors.conflict(res.group, res.plural, name)
        if status_only:
            new = copy.deepcopy(current)
            new["status"] = obj.get("status", {})
        else:
            new = obj
            cur_md = current["metadata"]
            for k in (
                "uid",
                "creationTimestamp",
                "namespace",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
            ):
                if k in cur_md:
                    md[k] = cur_md[k]
                else:
                    md.pop(k, None)
            md["name"] = name
            if preserve_status:
                new.pop("status", None)
                if "status" in current:
                    new["status"] = copy.deepcopy(current["status"])
            new["apiVersion"], new["kind"] = res.group_version, res.kind

            def strip(o: dict) -> dict:
                return {k: v for k, v in o.items() if k not in ("metadata", "status", "apiVersion", "kind")}

            if strip(new) != strip(current):
                md["generation"] = cur_md.get("generation", 1) + 1
        if new == current or (_same_but_rv(new, current)):
            return copy.deepcopy(current)  # no-op writes do not bump the resourceVersion
        new["metadata"]["resourceVersion"] = self._next_rv()
        self._table(res)[(self._ns(res, namespace), name)] = new
        self._emit("MODIFIED", res, new, current)
        if (
            new["metadata"].get("deletionTimestamp")
            and current["metadata"].get("finalizers")
            and not new["metadata"].get("finalizers")
        ):
            self._remove(res, new)  # the last finalizer is gone
        return copy.deepcopy(new)

    def mutate(
        self, res: Resource, namespace: str | None, name: str, fn: Callable[[dict], None], status_only: bool = False
    ) -> dict | None:
        """Controller-side read-modify-write; None when the object is gone."""
        current = self.find(res, namespace, name)
        if current is None:
            return None
        new = copy.deepcopy(current)
        fn(new)
        return self.update(res, namespace, name, new, status_only=status_only, check_rv=False)

    def delete(self, res: Resource, namespace: str | None, name: str, grace_seconds: int | None = None) -> dict:
        """``grace_seconds=0`` (a forced delete) skips the Terminating period of pods, VMs and VMIs."""
        current = self.find(res, namespace, name)
        if current is None:
            raise errors.not_found(res.group, res.plural, name)
        md = current["metadata"]
        delay = TERMINATING_SECONDS.get(res.key)
        if grace_seconds == 0 and res.kind != "Namespace":
            delay = None
        if md.get("deletionTimestamp"):
            return copy.deepcopy(current)
        if delay is None and not md.get("finalizers"):
            self._remove(res, current)
            return copy.deepcopy(current)
        new = copy.deepcopy(current)
        new["metadata"].update(deletionTimestamp=now(), deletionGracePeriodSeconds=0 if delay is None else int(delay))
        if res.kind == "Namespace":
            new.setdefault("status", {})["phase"] = "Terminating"
        new["metadata"]["resourceVersion"] = self._next_rv()
        self._table(res)[(self._ns(res, namespace), name)] = new
        self._emit("MODIFIED", res, new, current)
        if res.kind == "Namespace":
            self._empty_namespace(name)
        if delay is not None:
            loop = asyncio.get_running_loop()
            handle = loop.call_later(delay, self._finish_delete, res, namespace, name, new["metadata"]["uid"])
            self._timers.add(handle)
        return copy.deepcopy(new)

    def _empty_namespace(self, ns: str) -> None:
        from .discovery import RESOURCES

        for res in RESOURCES:
            if not res.namespaced:
                continue
            for (ons, oname), obj in list(self._table(res).items()):
                if ons == ns and not obj["metadata"].get("deletionTimestamp"):
                    self.delete(res, ns, oname)

    def _finish_delete(self, res: Resource, namespace: str | None, name: str, uid: str) -> None:
        current = self.find(res, namespace, name)
        if current is None or current["metadata"]["uid"] != uid or current["metadata"].get("finalizers"):
            return
        if res.kind == "Namespace":  # whatever is still left goes now
            from .discovery import RESOURCES

            for r in RESOURCES:
                if r.namespaced:
                    for (ons, _), obj in list(self._table(r).items()):
                        if ons == name:
                            self._remove(r, obj)
        self._remove(res, current)

    def _remove(self, res: Resource, obj: dict) -> None:
        md = obj["metadata"]
        key = (self._ns(res, md.get("namespace")), md["name"])
        if self._table(res).get(key, {}).get("metadata", {}).get("uid") != md["uid"]:
            return
        del self._table(res)[key]
        obj = copy.deepcopy(obj)
        obj["metadata"]["resourceVersion"] = self._next_rv()
        self._emit("DELETED", res, obj)

    # -- watches ------------------------------------------------------------------------------------
    def watch(
        self,
        res: Resource,
        namespace: str | None,
        label_selector: str | None,
        field_selector: str | None,
        resource_version: str | None,
    ) -> Watcher:
        w = Watcher(res, namespace, label_matcher(label_selector), field_matcher(field_selector))
        if resource_version in (None, "", "0"):
            for obj in self.list(res, namespace, label_selector, field_selector):
                w.queue.put_nowait(("ADDED", obj))
        else:
            try:
                since = int(resource_version)
            except ValueError:
                raise errors.bad_request(f"invalid resource version {resource_version!r}") from None
            oldest = self.history[0][0] if self.history else self.rv + 1
            if since < oldest - 1 and since < self.rv:
                raise errors.ApiError(410, "Expired", f"too old resource version: {since} ({oldest - 1})")
            for rv, r, kind, obj, old in self.history:
                event = w.translate(r, kind, obj, old) if rv > since else None
                if event is not None:
                    w.queue.put_nowait((event[0], copy.deepcopy(event[1])))
        self.watchers.add(w)
        return w

    def unwatch(self, w: Watcher) -> None:
        self.watchers.discard(w)

    def cancel_timers(self) -> None:
        for h in self._timers:
            h.cancel()


def _same_but_rv(a: dict, b: dict) -> bool:
    a, b = copy.deepcopy(a), copy.deepcopy(b)
    a["metadata"].pop("resourceVersion", None)
    b["metadata"].pop("resourceVersion", None)
    return a == b
