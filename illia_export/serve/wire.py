"""Responses and JSON on the wire: one fast, strict encoder for every answer of the server.

Why orjson: encoding the response tensors is a large share of a small model's request time;
orjson writes numpy arrays directly (``OPT_SERIALIZE_NUMPY``) and writes NaN/inf as ``null``,
so every response is strict JSON (as ``illia_export.strict_json`` would write it). Parsing
with orjson refuses ``NaN``/``Infinity`` tokens, which strict JSON does not have.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from illia_export.errors import require

orjson = require("orjson", "serve", "illia-export serve")

JSON = "application/json"


@dataclass
class Response:
    """Status, body bytes, content type and extra headers of one answer."""

    status: int
    body: bytes
    content_type: str = JSON
    headers: dict[str, str] = field(default_factory=dict)


def dumps(obj: Any) -> bytes:
    """Strict JSON bytes (numpy arrays and scalars allowed; NaN/inf become null)."""
    return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)


def loads(data: bytes | str) -> Any:
    """Parse strict JSON (raises ``orjson.JSONDecodeError``, a ValueError)."""
    return orjson.loads(data)


def json_response(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(int(status), dumps(obj), JSON, headers or {})


def error_response(status: int | HTTPStatus, message: str, headers: dict[str, str] | None = None) -> Response:
    """The documented error body ``{"error": message}``."""
    return Response(int(status), dumps({"error": message}), JSON, headers or {})
