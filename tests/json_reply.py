"""The self-tests' small HTTP stand-ins answer JSON the same way: one helper for the reply."""

from __future__ import annotations

from http.server import BaseHTTPRequestHandler


def reply_json(handler: BaseHTTPRequestHandler, status: int, body: bytes) -> None:
    """Send ``body`` (JSON bytes) with ``status`` and the headers a client expects."""
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)
