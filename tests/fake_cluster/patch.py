"""PATCH bodies: RFC 6902 JSON patch and RFC 7386 merge patch (strategic merge is served as merge)."""

from __future__ import annotations

import copy


class PatchError(ValueError):
    pass


def merge_patch(target, patch):
    """RFC 7386: objects merge recursively, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _parent(doc, tokens: list[str], path: str):
    node = doc
    for tok in tokens[:-1]:
        if isinstance(node, list):
            try:
                node = node[int(tok)]
            except (ValueError, IndexError):
                raise PatchError(f"path {path!r}: no index {tok}") from None
        elif isinstance(node, dict) and tok in node:
            node = node[tok]
        else:
            raise PatchError(f"doc is missing path: {path!r}")
    return node


def _get(doc, path: str):
    node = doc
    for tok in _pointer(path):
        try:
            node = node[int(tok)] if isinstance(node, list) else node[tok]
        except (KeyError, ValueError, IndexError, TypeError):
            raise PatchError(f"doc is missing path: {path!r}") from None
    return node


def _remove(doc, path: str):
    tokens = _pointer(path)
    if not tokens:
        raise PatchError("cannot remove the whole document")
    parent = _parent(doc, tokens, path)
    try:
        if isinstance(parent, list):
            return parent.pop(int(tokens[-1]))
        return parent.pop(tokens[-1])
    except (KeyError, ValueError, IndexError):
        raise PatchError(f"doc is missing path: {path!r}") from None


def _add(doc, path: str, value, replace: bool = False):
    tokens = _pointer(path)
    if not tokens:
        return copy.deepcopy(value)
    parent = _parent(doc, tokens, path)
    last = tokens[-1]
    if isinstance(parent, list):
        if last == "-" and not replace:
            parent.append(copy.deepcopy(value))
            return doc
        try:
            i = int(last)
        except ValueError:
            raise PatchError(f"path {path!r}: bad index") from None
        if not 0 <= i <= len(parent) - (1 if replace else 0):
            raise PatchError(f"path {path!r}: index out of range")
        if replace:
            parent[i] = copy.deepcopy(value)
        else:
            parent.insert(i, copy.deepcopy(value))
    elif isinstance(parent, dict):
        if replace and last not in parent:
            raise PatchError(f"doc is missing key: {path!r}")
        parent[last] = copy.deepcopy(value)
    else:
        raise PatchError(f"path {path!r}: parent is not a container")
    return doc


def json_patch(doc, ops):
    if not isinstance(ops, list):
        raise PatchError("a JSON patch must be a list of operations")
    doc = copy.deepcopy(doc)
    for op in ops:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise PatchError(f"invalid operation {op!r}")
        kind, path = op["op"], op["path"]
        if kind in ("add", "replace", "test") and "value" not in op:
            raise PatchError(f"operation {kind} at {path!r} has no value")
        if kind == "add":
            doc = _add(doc, path, op["value"])
        elif kind == "remove":
            _remove(doc, path)
        elif kind == "replace":
            doc = _add(doc, path, op["value"], replace=True)
        elif kind == "move":
            value = _remove(doc, op["from"])
            doc = _add(doc, path, value)
        elif kind == "copy":
            doc = _add(doc, path, _get(doc, op["from"]))
        elif kind == "test":
            if _get(doc, path) != op["value"]:
                raise PatchError(f"testing value {path} failed")
        else:
            raise PatchError(f"unknown operation {kind!r}")
    return doc
