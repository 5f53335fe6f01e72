"""The ``/v1`` routes of the alert lifecycle (registered by ``pipeline.subscriptions_api.build_app``).

- ``GET /v1/alerts?status=active|all&limit=N``, ``GET /v1/alerts/{alert_id}`` (with its events)
- ``POST /v1/alerts/{alert_id}/ack`` ``{"by", "comment", "expires_in_s"}``, ``DELETE /v1/alerts/{alert_id}/ack?by=``
- ``GET /v1/silences?state=active|pending|expired|all``, ``POST /v1/silences`` (201), ``DELETE /v1/silences/{id}?by=``
- ``GET /v1/maintenance-windows``, ``POST /v1/maintenance-windows`` (201), ``DELETE .../{id}?by=`` (204)
- ``GET /v1/events?since=&alert_id=&limit=`` newest last
"""

from __future__ import annotations

import math
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from operators.lifecycle import AlertView, MaintenanceWindowSpec, Silence, SilenceSpec
from operators.notifier import AlertAlreadyResolved, Notifier, UnknownAlert
from pipeline.api_json import bad_request, error, invalid, json_object

NOTIFIER = web.AppKey("notifier", Notifier)
MAX_LIMIT = 1000
SILENCE_STATES = ("active", "pending", "expired", "all")


class AckBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    by: str = Field(min_length=1, max_length=200)
    comment: str = Field(default="", max_length=2000)
    expires_in_s: float | None = Field(default=None, gt=0, allow_inf_nan=False)


def _limit(request: web.Request, default: int = 100) -> int:
    raw = request.query.get("limit", str(default))
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise bad_request(f"limit must be an integer from 1 to {MAX_LIMIT}")
    return int(raw)


def _actor(request: web.Request) -> str:
    by = request.query.get("by", "api")
    if not 1 <= len(by) <= 200:
        raise bad_request("by must be 1 to 200 characters")
    return by


def _view(view: AlertView) -> dict[str, Any]:
    return view.model_dump(mode="json")


def _silence(silence: Silence, now: float) -> dict[str, Any]:
    return {**silence.model_dump(mode="json"), "state": silence.state_at(now)}


async def _alerts(request: web.Request) -> web.Response:
    status = request.query.get("status", "active")
    if status not in ("active", "all"):
        raise bad_request("status must be active or all")
    views = request.app[NOTIFIER].views("active" if status == "active" else "all", limit=_limit(request))
    return web.json_response({"alerts": [_view(view) for view in views]})


async def _alert(request: web.Request) -> web.Response:
    notifier = request.app[NOTIFIER]
    view = notifier.view(request.match_info["alert_id"])
    if view is None:
        return error(404, "no such alert")
    events = notifier.events(alert_id=view.alert_id, limit=MAX_LIMIT)
    return web.json_response({**_view(view), "events": [event.model_dump(mode="json") for event in events]})


async def _acknowledge(request: web.Request) -> web.Response:
    try:
        body = AckBody.model_validate(await json_object(request))
    except ValidationError as failure:
        return invalid(failure, "invalid acknowledgement")
    try:
        alert_id = request.match_info["alert_id"]
        view = request.app[NOTIFIER].acknowledge(alert_id, body.by, body.comment, body.expires_in_s)
    except UnknownAlert:
        return error(404, "no such alert")
    except AlertAlreadyResolved:
        return error(409, "this alert is resolved: there is nothing to acknowledge")
    return web.json_response(_view(view))


async def _unacknowledge(request: web.Request) -> web.Response:
    try:
        view = request.app[NOTIFIER].unacknowledge(request.match_info["alert_id"], _actor(request))
    except UnknownAlert:
        return error(404, "no such alert")
    return web.json_response(_view(view))


async def _silences(request: web.Request) -> web.Response:
    state = request.query.get("state", "all")
    if state not in SILENCE_STATES:
        raise bad_request(f"state must be one of {', '.join(SILENCE_STATES)}")
    notifier = request.app[NOTIFIER]
    now = notifier.now()
    chosen = [s for s in notifier.silences() if state == "all" or s.state_at(now) == state]
    return web.json_response({"silences": [_silence(silence, now) for silence in chosen]})


async def _create_silence(request: web.Request) -> web.Response:
    notifier = request.app[NOTIFIER]
    try:
        silence = notifier.create_silence(SilenceSpec.model_validate(await json_object(request)))
    except ValueError as failure:  # pydantic's, and an end that is not in the future
        return invalid(failure, "invalid silence")
    return web.json_response(
        _silence(silence, notifier.now()), status=201, headers={"Location": f"/v1/silences/{silence.id}"}
    )


async def _expire_silence(request: web.Request) -> web.Response:
    notifier = request.app[NOTIFIER]
    silence = notifier.expire_silence(request.match_info["id"], _actor(request))
    if silence is None:
        return error(404, "no such silence")
    return web.json_response(_silence(silence, notifier.now()))


async def _windows(request: web.Request) -> web.Response:
    windows = request.app[NOTIFIER].maintenance_windows()
    return web.json_response({"maintenance_windows": [window.model_dump(mode="json") for window in windows]})


async def _create_window(request: web.Request) -> web.Response:
    try:
        spec = MaintenanceWindowSpec.model_validate(await json_object(request))
    except ValidationError as failure:
        return invalid(failure, "invalid maintenance window")
    window = request.app[NOTIFIER].create_maintenance_window(spec)
    return web.json_response(
        window.model_dump(mode="json"), status=201, headers={"Location": f"/v1/maintenance-windows/{window.id}"}
    )


async def _delete_window(request: web.Request) -> web.Response:
    if not request.app[NOTIFIER].delete_maintenance_window(request.match_info["id"], _actor(request)):
        return error(404, "no such maintenance window")
    return web.Response(status=204)


async def _events(request: web.Request) -> web.Response:
    since: float | None = None
    if "since" in request.query:
        try:
            since = float(request.query["since"])
        except ValueError:
            since = math.nan
        if not math.isfinite(since):
            raise bad_request("since must be a wall time in seconds since the epoch")
    events = request.app[NOTIFIER].events(since=since, alert_id=request.query.get("alert_id"), limit=_limit(request))
    return web.json_response({"events": [event.model_dump(mode="json") for event in events]})


def register(app: web.Application, notifier: Notifier) -> None:
    """Adds the routes; call after ``/v1/alerts/stream`` is added, which ``/v1/alerts/{alert_id}`` would take."""
    app[NOTIFIER] = notifier
    app.router.add_get("/v1/alerts", _alerts)
    app.router.add_get("/v1/alerts/{alert_id}", _alert)
    app.router.add_post("/v1/alerts/{alert_id}/ack", _acknowledge)
    app.router.add_delete("/v1/alerts/{alert_id}/ack", _unacknowledge)
    app.router.add_get("/v1/silences", _silences)
    app.router.add_post("/v1/silences", _create_silence)
    app.router.add_delete("/v1/silences/{id}", _expire_silence)
    app.router.add_get("/v1/maintenance-windows", _windows)
    app.router.add_post("/v1/maintenance-windows", _create_window)
    app.router.add_delete("/v1/maintenance-windows/{id}", _delete_window)
    app.router.add_get("/v1/events", _events)
