"""Server-side printing: ``meta.k8s.io/v1 Table`` responses, which ``kubectl get`` asks for."""

from __future__ import annotations

import datetime


def _age(ts: str | None) -> str:
    if not ts:
        return "<unknown>"
    then = datetime.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    s = int((datetime.datetime.now(datetime.UTC) - then).total_seconds())
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    return f"{s // 3600}h"


def _pod_ready(o: dict) -> str:
    cs = o.get("status", {}).get("containerStatuses") or []
    total = len(o.get("spec", {}).get("containers") or [])
    return f"{sum(1 for c in cs if c.get('ready'))}/{total}"


def _pod_status(o: dict) -> str:
    return "Terminating" if o["metadata"].get("deletionTimestamp") else o.get("status", {}).get("phase", "Pending")


COLUMNS = {
    "Pod": [
        ("Ready", "string", _pod_ready),
        ("Status", "string", _pod_status),
        ("Restarts", "integer", lambda o: 0),
        ("Age", "string", lambda o: _age(o["metadata"].get("creationTimestamp"))),
        ("IP", "string", lambda o: o.get("status", {}).get("podIP", "<none>")),
        ("Node", "string", lambda o: o.get("spec", {}).get("nodeName", "<none>")),
    ],
    "Namespace": [
        ("Status", "string", lambda o: o.get("status", {}).get("phase", "Active")),
        ("Age", "string", lambda o: _age(o["metadata"].get("creationTimestamp"))),
    ],
    "KubeVirt": [
        ("Age", "date", lambda o: _age(o["metadata"].get("creationTimestamp"))),
        ("Phase", "string", lambda o: o.get("status", {}).get("phase", "")),
    ],
}
DEFAULT = [("Age", "string", lambda o: _age(o["metadata"].get("creationTimestamp")))]


def wants_table(accept: str) -> bool:
    return "as=Table" in accept.replace(" ", "")


def table(kind: str, items: list[dict], resource_version: str, include_object: str) -> dict:
    cols = [("Name", "string", lambda o: o["metadata"]["name"]), *COLUMNS.get(kind, DEFAULT)]
    rows = []
    for o in items:
        if include_object == "Object":
            embedded = o
        elif include_object == "None":
            embedded = None
        else:
            embedded = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"]}
        rows.append({"cells": [fn(o) for _, _, fn in cols], "object": embedded})
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": [
            {"name": n, "type": t, "format": "name" if n == "Name" else "", "description": n, "priority": 0}
            for n, t, _ in cols
        ],
        "rows": rows,
    }
