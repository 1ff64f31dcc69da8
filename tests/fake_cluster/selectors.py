"""Label and field selectors (``labelSelector=``, ``fieldSelector=``) as the API server parses them."""

from __future__ import annotations

import re

from tests.kube_api.errors import bad_request


def _split(text: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur.strip())
    return parts


_SET = re.compile(r"^([\w./-]+)\s+(in|notin)\s+\((.*)\)$")
_EQ = re.compile(r"^([\w./-]+)\s*(==|=|!=)\s*([\w./-]*)$")


def label_matcher(text: str | None):
    if not text:
        return lambda labels: True
    reqs = []
    for part in _split(text):
        if m := _SET.match(part):
            values = {v.strip() for v in m.group(3).split(",") if v.strip()}
            reqs.append((m.group(1), m.group(2), values))
        elif m := _EQ.match(part):
            reqs.append((m.group(1), "!=" if m.group(2) == "!=" else "=", {m.group(3)}))
        elif re.match(r"^!\s*[\w./-]+$", part):
            reqs.append((part[1:].strip(), "!exists", set()))
        elif re.match(r"^[\w./-]+$", part):
            reqs.append((part, "exists", set()))
        else:
            raise bad_request(f"unable to parse requirement: {part!r}")

    def match(labels: dict | None) -> bool:
        labels = labels or {}
        for key, op, values in reqs:
            present, value = key in labels, labels.get(key)
            ok = {
                "=": present and value in values,
                "in": present and value in values,
                "!=": not present or value not in values,
                "notin": not present or value not in values,
                "exists": present,
                "!exists": not present,
            }[op]
            if not ok:
                return False
        return True

    return match


def _lookup(obj: dict, path: str):
    node = obj
    for part in path.split("."):
        if not isinstance(node, dict):
            return ""
        node = node.get(part, "")
    return "" if node is None else str(node)


def field_matcher(text: str | None):
    if not text:
        return lambda obj: True
    reqs = []
    for part in _split(text):
        m = re.match(r"^([\w.]+)\s*(==|=|!=)\s*(.*)$", part)
        if not m:
            raise bad_request(f"invalid field selector: {part!r}")
        reqs.append((m.group(1), m.group(2) == "!=", m.group(3)))

    def match(obj: dict) -> bool:
        return all(
            (_lookup(obj, path) != value) if negate else (_lookup(obj, path) == value) for path, negate, value in reqs
        )

    return match
