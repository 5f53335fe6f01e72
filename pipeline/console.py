"""The web console, served by the API process: a session login, the pages (static HTML, plain ES modules and a
vendored uPlot in ``pipeline/console_static/``; no build step, no internet), and the data behind them.

Session: ``POST /console/login`` with the API token as password sets ``diffsentry_session`` (HttpOnly,
SameSite=Strict, Path=/): ``<expires>.<nonce>.<signature>``, an HMAC-SHA256 under a key derived from the token, so
changing the token ends every session. ``/v1`` accepts it as well as the bearer header (``subscriptions_api``);
a state-changing request authenticated by the cookie must carry ``X-DiffSentry-Console: 1``, which a cross-site
form cannot set.

Data routes (under ``/v1``, so behind the same auth):

- ``GET /v1/streams`` every stream seen: phase, status, last score, recent scores (``operators.stream_board``)
- ``GET /v1/streams/{modality}/{stream}/scores?start=&end=`` points, contributions and alert episodes read back
  from the store (``infra.store_query``); the range defaults to the hour before the stream's last score
- ``GET /v1/cameras``, ``/v1/cameras/{camera}/latest.png``, ``/v1/alerts/{alert_id}/snapshot.png``
  (``operators.camera_gallery``)
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import html
import secrets
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from core.contracts import SEVERITY_ORDER
from infra.store_query import Sample, StoreReader
from operators.alerting import alert_id_for, stream_key
from operators.camera_gallery import CameraGallery
from operators.influx_sink import ALERTS_MEASUREMENT, MEASUREMENTS, STREAM_TAGS
from operators.stream_board import StreamBoard
from pipeline import api_json

STATIC_DIR = Path(__file__).with_name("console_static")
SESSION_COOKIE = "diffsentry_session"
CSRF_HEADER = "X-DiffSentry-Console"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
DEFAULT_RANGE_S = 3600.0
PAGES = {
    "/console/": "overview.html",
    "/console/stream": "stream.html",
    "/console/cameras": "cameras.html",
    "/console/alerts": "alerts.html",
    "/console/subscriptions": "subscriptions.html",
}

# The status of an open alert as the lifecycle knows it ("acknowledged", "silenced", ...), None: just firing.
AlertStatus = Callable[[str], str | None]


@dataclass
class ConsoleSources:
    """What the console's data routes read: the live board and gallery (fed by the alerting service), the store."""

    board: StreamBoard
    gallery: CameraGallery
    reader: StoreReader
    alert_status: AlertStatus | None = None


class Sessions:
    def __init__(self, token: str, ttl_s: float) -> None:
        self._key = hashlib.sha256(b"diffsentry-console-session\0" + token.encode()).digest()
        self._token = token
        self.ttl_s = ttl_s

    def password_matches(self, password: str) -> bool:
        return hmac.compare_digest(password.encode(), self._token.encode())

    def issue(self, now: float | None = None) -> str:
        body = f"{int((now or time.time()) + self.ttl_s)}.{secrets.token_urlsafe(12)}"
        return f"{body}.{self._sign(body)}"

    def valid(self, cookie: str | None, now: float | None = None) -> bool:
        if not cookie or cookie.count(".") != 2:
            return False
        body, _, signature = cookie.rpartition(".")
        if not hmac.compare_digest(signature.encode(), self._sign(body).encode()):
            return False
        expires = body.partition(".")[0]
        return expires.isdigit() and int(expires) > (now or time.time())

    def _sign(self, body: str) -> str:
        return hmac.new(self._key, body.encode(), hashlib.sha256).hexdigest()


SESSIONS = web.AppKey("sessions", Sessions)
SOURCES = web.AppKey("console_sources", ConsoleSources)


def session_of(request: web.Request) -> bool:
    """Whether the request carries a valid console session cookie."""
    return request.app[SESSIONS].valid(request.cookies.get(SESSION_COOKIE))


def csrf_refusal(request: web.Request) -> web.Response | None:
    """403 for a state-changing request authenticated by the cookie without the console's header, else None."""
    if request.method in SAFE_METHODS or request.headers.get(CSRF_HEADER) == "1":
        return None
    return api_json.error(403, f"console requests that change state need the {CSRF_HEADER} header")


# --- login and pages ----------------------------------------------------------------------------------------------


def _login_page(error: str = "", status: int = 200) -> web.Response:
    page = (STATIC_DIR / "login.html").read_text()
    message = f'<p class="error" role="alert">{html.escape(error)}</p>' if error else ""
    return web.Response(text=page.replace("<!--message-->", message), content_type="text/html", status=status)


async def _login_form(request: web.Request) -> web.Response:
    return _login_page()


async def _login(request: web.Request) -> web.Response:
    form = await request.post()
    password = form.get("token")
    sessions = request.app[SESSIONS]
    if not isinstance(password, str) or not sessions.password_matches(password):
        return _login_page("Wrong token.", status=401)
    response = web.HTTPSeeOther("/console/")
    response.set_cookie(
        SESSION_COOKIE, sessions.issue(), max_age=int(sessions.ttl_s), path="/",
        httponly=True, samesite="Strict", secure=request.secure,
    )  # fmt: skip
    raise response


async def _logout(request: web.Request) -> web.Response:
    response = web.HTTPSeeOther("/console/login")
    response.del_cookie(SESSION_COOKIE, path="/")
    raise response


def page_html(path: str) -> str:
    """A console page with the one header all pages share (``header.html``: name, page links, sign-out)."""
    header = (STATIC_DIR / "header.html").read_text()
    return (STATIC_DIR / PAGES[path]).read_text().replace("  <!--header-->\n", header)


async def _page(request: web.Request) -> web.StreamResponse:
    if not session_of(request):
        raise web.HTTPSeeOther("/console/login")
    return web.Response(text=page_html(request.path), content_type="text/html", headers={"Cache-Control": "no-store"})


# --- data -----------------------------------------------------------------------------------------------------------


def _sources(request: web.Request) -> ConsoleSources:
    sources = request.app.get(SOURCES)
    if sources is None:
        raise web.HTTPNotFound(text='{"error": "this server has no console data"}', content_type="application/json")
    return sources


async def _streams(request: web.Request) -> web.Response:
    sources = _sources(request)
    views = []
    for entry in sources.board.entries():
        view = entry.view()
        status = sources.alert_status(entry.alert_id) if sources.alert_status and entry.alert_id else None
        view["status"] = status or entry.phase
        views.append(view)
    return web.json_response({"streams": views})


def _range(request: web.Request, last_event_time: float | None) -> tuple[float, float]:
    try:
        end = float(request.query["end"]) if "end" in request.query else (last_event_time or time.time())
        start = float(request.query["start"]) if "start" in request.query else end - DEFAULT_RANGE_S
    except ValueError as error:
        raise api_json.bad_request("start and end are seconds since 1970") from error
    if start >= end:
        raise api_json.bad_request("start must be before end")
    return start, end


def score_history(modality: str, stream: str, scores: list[Sample], alerts: list[Sample]) -> dict[str, Any]:
    """The answer of the scores route from the stored samples of the stream's scores and alerts."""
    by_time: dict[float, dict[str, float]] = defaultdict(dict)
    contributions: dict[str, list[list[float]]] = defaultdict(list)
    for sample in scores:
        if sample.field.startswith("contribution_"):
            contributions[sample.field.removeprefix("contribution_")].append([sample.time, sample.value])
        else:
            by_time[sample.time][sample.field] = sample.value
    points = [
        [t, fields["score"], fields.get("threshold"), bool(fields.get("is_anomaly"))]
        for t, fields in sorted(by_time.items())
        if "score" in fields
    ]
    # An alert transition is stored at its event time with its episode's started_at and severity (a tag);
    # resolved has firing = 0. An episode: its start, its resolution's time (None: still open), its worst severity.
    transitions: dict[float, dict[str, float]] = defaultdict(dict)
    severity_at: dict[float, str] = {}
    for sample in alerts:
        transitions[sample.time][sample.field] = sample.value
        severity_at[sample.time] = dict(sample.tags).get("severity", "warning")
    episodes: dict[float, list[Any]] = {}
    for t, fields in sorted(transitions.items()):
        if (started_at := fields.get("started_at")) is None:
            continue
        episode = episodes.setdefault(
            started_at, [started_at, None, alert_id_for(stream_key(modality, stream), started_at), severity_at[t]]
        )
        if fields.get("firing") == 0:
            episode[1] = t
        if SEVERITY_ORDER[severity_at[t]] > SEVERITY_ORDER[episode[3]]:
            episode[3] = severity_at[t]
    return {"points": points, "contributions": dict(contributions), "episodes": list(episodes.values())}


async def _scores(request: web.Request) -> web.Response:
    sources = _sources(request)
    modality, stream = request.match_info["modality"], request.match_info["stream"]
    if modality not in MEASUREMENTS:
        return api_json.error(404, "modality is sensor or video")
    last = next(
        (e.last.event_time for e in sources.board.entries() if (e.modality, e.stream) == (modality, stream)), None
    )
    start, end = _range(request, last)
    reader = sources.reader
    try:
        scores = await asyncio.to_thread(
            reader.samples, MEASUREMENTS[modality], {STREAM_TAGS[modality]: stream},
            ["score", "threshold", "is_anomaly", "contribution_*"], start, end,
        )  # fmt: skip
        alerts = await asyncio.to_thread(
            reader.samples, ALERTS_MEASUREMENT, {"modality": modality, "stream": stream},
            ["firing", "started_at"], start, end,
        )  # fmt: skip
    except Exception as error:  # the store is down or answers nonsense: the page says so
        return api_json.error(502, f"the store did not answer: {error}")
    return web.json_response({"start": start, "end": end, **score_history(modality, stream, scores, alerts)})


async def _cameras(request: web.Request) -> web.Response:
    return web.json_response({"cameras": _sources(request).gallery.cameras()})


def _png(png: bytes | None, missing: str) -> web.Response:
    if png is None:
        return api_json.error(404, missing)
    return web.Response(body=png, content_type="image/png", headers={"Cache-Control": "no-store"})


async def _latest_png(request: web.Request) -> web.Response:
    return _png(_sources(request).gallery.latest_png(request.match_info["camera"]), "no scored frame of this camera")


async def _snapshot_png(request: web.Request) -> web.Response:
    return _png(_sources(request).gallery.snapshot_png(request.match_info["alert_id"]), "no snapshot of this alert")


def add_console(app: web.Application, sessions: Sessions, sources: ConsoleSources | None) -> None:
    """Registers the login, the pages, the static files and (with ``sources``) the console's data routes."""
    app[SESSIONS] = sessions
    app.router.add_get("/console/login", _login_form)
    app.router.add_post("/console/login", _login)
    app.router.add_post("/console/logout", _logout)
    for path in PAGES:
        app.router.add_get(path, _page)
    app.router.add_static("/console/static/", STATIC_DIR)
    if sources is None:
        return
    app[SOURCES] = sources
    app.router.add_get("/v1/streams", _streams)
    app.router.add_get("/v1/streams/{modality}/{stream}/scores", _scores)
    app.router.add_get("/v1/cameras", _cameras)
    app.router.add_get("/v1/cameras/{camera}/latest.png", _latest_png)
    app.router.add_get("/v1/alerts/{alert_id}/snapshot.png", _snapshot_png)
