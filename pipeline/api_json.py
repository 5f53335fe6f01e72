"""JSON bodies and error answers shared by the ``/v1`` route modules."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from pydantic import ValidationError


def error(status: int, reason: str) -> web.Response:
    return web.json_response({"error": reason}, status=status)


def bad_request(reason: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=json.dumps({"error": reason}), content_type="application/json")


def invalid(failure: ValueError, what: str) -> web.Response:
    """400 with one reason per field pydantic refused (``what`` names the body, e.g. "invalid silence")."""
    if isinstance(failure, ValidationError):
        reasons = [f"{'.'.join(str(p) for p in item['loc']) or 'body'}: {item['msg']}" for item in failure.errors()]
        return web.json_response({"error": what, "reasons": reasons}, status=400)
    return error(400, str(failure))


async def json_object(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except json.JSONDecodeError as failure:
        raise bad_request(f"malformed JSON: {failure}") from failure
    if not isinstance(body, dict):
        raise bad_request("expected a JSON object")
    return body
