"""Kubernetes ``Status`` errors, as the API server returns them."""

from __future__ import annotations


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str, details: dict | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def status(self) -> dict:
        body = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            body["details"] = self.details
        return body


def not_found(group: str, plural: str, name: str) -> ApiError:
    kind = f"{plural}.{group}" if group else plural
    return ApiError(404, "NotFound", f'{kind} "{name}" not found', {"name": name, "group": group, "kind": plural})


def already_exists(group: str, plural: str, name: str) -> ApiError:
    kind = f"{plural}.{group}" if group else plural
    return ApiError(
        409, "AlreadyExists", f'{kind} "{name}" already exists', {"name": name, "group": group, "kind": plural}
    )


def conflict(group: str, plural: str, name: str) -> ApiError:
    kind = f"{plural}.{group}" if group else plural
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {kind} "{name}": the object has been '
        "modified; please apply your changes to the latest version and try again",
        {"name": name, "group": group, "kind": plural},
    )


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def invalid(kind: str, name: str, message: str, causes: list[dict] | None = None, group: str = "") -> ApiError:
    return ApiError(422, "Invalid", message, {"name": name, "group": group, "kind": kind, "causes": causes or []})
