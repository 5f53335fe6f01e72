"""REST API for alert subscriptions and the server-sent-events alert stream (aiohttp).

Every ``/v1`` route needs ``Authorization: Bearer <api.token>`` or the web console's session cookie
(``pipeline/console.py``; with the cookie, state-changing requests also need ``X-DiffSentry-Console: 1``);
``/healthz`` does not. The server refuses to
start with the default development token unless ``api.allow_dev_token`` is set.

A webhook URL, and the servers apprise URLs name, must pass the outbound policy (``operators/outbound.py``) when
they are created or changed, or the request is answered 422 with the reason; credentials in a webhook URL
(``user:password@``) never appear in answers, and an apprise URL shows only as its scheme and chosen host.

- ``POST /v1/subscriptions`` create (201; a generated webhook secret is returned in this response only)
- ``GET /v1/subscriptions`` list, ``GET /v1/subscriptions/{id}`` get (secrets never appear)
- ``PUT /v1/subscriptions/{id}`` replace, ``PATCH /v1/subscriptions/{id}`` JSON merge patch, ``DELETE`` remove (204)
- ``POST /v1/subscriptions/{id}/test`` sends a synthetic notification to each of its channels (202)
- ``GET /v1/alerts/stream`` server-sent events, filtered by ``?subscription=ID`` or
  ``?stream=&modality=&min_severity=``; ``?include=events,scores`` adds every AlertEvent as ``event: alert_event``
  and every score as ``event: score`` (the console; neither is filtered by the selector)
- ``GET /v1/deliveries?subscription=ID&limit=N`` the delivery log (newest first) and the deliveries by outcome
- with a ``notifier``: the alert-lifecycle routes of ``pipeline/alerts_api.py`` (alerts, ack, silences, ...)
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from core.settings import DEVELOPMENT_TOKEN, Settings
from operators import apprise_urls
from operators.alerting import idempotency_key
from operators.delivery import AlertDispatcher, AlertHub
from operators.notifier import Notifier
from operators.outbound import BlockedTarget, OutboundPolicy, redact_url
from operators.stream_board import StreamBoard
from operators.subscriptions import Selector, Subscription, SubscriptionSpec, SubscriptionStore
from pipeline import alerts_api, api_json
from pipeline.console import ConsoleSources, Sessions, add_console, csrf_refusal, session_of

KEEPALIVE_S = 15.0

STORE = web.AppKey("store", SubscriptionStore)
HUB = web.AppKey("hub", AlertHub)
DISPATCHER = web.AppKey("dispatcher", AlertDispatcher)
TOKEN = web.AppKey("token", str)
OUTBOUND = web.AppKey("outbound", OutboundPolicy)
BOARD = web.AppKey("board", StreamBoard)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _invalid(error: ValueError) -> web.Response:
    return api_json.invalid(error, "invalid subscription")


def _public(subscription: Subscription) -> dict[str, Any]:
    body = subscription.model_dump(mode="json")
    delivery = body["delivery"]
    if delivery["webhook_url"] is not None:
        delivery["webhook_url"] = redact_url(delivery["webhook_url"])
    delivery["apprise_urls"] = [apprise_urls.redacted(url) for url in delivery["apprise_urls"]]
    return body


async def _refused_target(request: web.Request, spec: SubscriptionSpec) -> web.Response | None:
    """422 when the spec's webhook URL or a server its apprise URLs name does not pass the outbound policy."""
    policy = request.app[OUTBOUND]
    checks: list[tuple[str, Callable[[], Awaitable[object]]]] = []
    if spec.delivery.webhook_url is not None:
        checks.append(("webhook_url", functools.partial(policy.resolve, str(spec.delivery.webhook_url))))
    for n, url in enumerate(spec.delivery.apprise_urls):
        checks.append(
            (f"apprise_urls[{n}] ({apprise_urls.redacted(url)})", functools.partial(policy.check_apprise_url, url))
        )
    for what, check in checks:
        try:
            await check()
        except BlockedTarget as error:
            return api_json.error(422, f"{what} refused: {error}")
        except OSError as error:
            return api_json.error(422, f"{what} refused: its host does not resolve ({error})")
    return None


@web.middleware
async def _auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    """``/v1``: the bearer token, or the console's session cookie (then state changes need the console header)."""
    if request.path.startswith("/v1/"):
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(token.encode(), request.app[TOKEN].encode()):
            return await handler(request)
        if not session_of(request):
            return web.json_response(
                {"error": "missing or wrong bearer token"}, status=401, headers={"WWW-Authenticate": "Bearer"}
            )
        if (refusal := csrf_refusal(request)) is not None:
            return refusal
    return await handler(request)


async def _health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _create(request: web.Request) -> web.Response:
    try:
        spec = SubscriptionSpec.model_validate(await api_json.json_object(request))
    except ValidationError as error:
        return _invalid(error)
    if (refusal := await _refused_target(request, spec)) is not None:
        return refusal
    subscription, generated_secret = request.app[STORE].create(spec)
    body = _public(subscription)
    if generated_secret is not None:
        body["secret"] = generated_secret  # shown once: list and get never return it
    return web.json_response(body, status=201, headers={"Location": f"/v1/subscriptions/{subscription.id}"})


async def _list(request: web.Request) -> web.Response:
    return web.json_response({"subscriptions": [_public(s) for s in request.app[STORE].list()]})


async def _get(request: web.Request) -> web.Response:
    subscription = request.app[STORE].get(request.match_info["id"])
    if subscription is None:
        return api_json.error(404, "no such subscription")
    return web.json_response(_public(subscription))


async def _replace(request: web.Request) -> web.Response:
    try:
        spec = SubscriptionSpec.model_validate(await api_json.json_object(request))
    except ValueError as error:
        return _invalid(error)
    return await _store(request, spec)


async def _patch(request: web.Request) -> web.Response:
    try:
        spec = request.app[STORE].patched(request.match_info["id"], await api_json.json_object(request))
    except ValueError as error:
        return _invalid(error)
    return await _store(request, spec)


async def _store(request: web.Request, spec: SubscriptionSpec | None) -> web.Response:
    """PUT and PATCH: the new spec of a subscription (None: there is no such subscription), once checked."""
    if spec is None or request.app[STORE].get(request.match_info["id"]) is None:
        return api_json.error(404, "no such subscription")
    if (refusal := await _refused_target(request, spec)) is not None:
        return refusal
    try:
        subscription = request.app[STORE].replace(request.match_info["id"], spec)
    except ValueError as error:
        return _invalid(error)
    if subscription is None:
        return api_json.error(404, "no such subscription")
    return web.json_response(_public(subscription))


async def _delete(request: web.Request) -> web.Response:
    if not request.app[STORE].delete(request.match_info["id"]):
        return api_json.error(404, "no such subscription")
    return web.Response(status=204)


def _stream_selector(request: web.Request) -> Selector:
    query = request.query
    subscription_id = query.get("subscription")
    if subscription_id is not None:
        subscription = request.app[STORE].get(subscription_id)
        if subscription is None:
            raise web.HTTPNotFound(text=json.dumps({"error": "no such subscription"}), content_type="application/json")
        if not (subscription.enabled and subscription.delivery.sse):
            raise web.HTTPConflict(
                text=json.dumps({"error": "this subscription is disabled or does not deliver by SSE"}),
                content_type="application/json",
            )
        return subscription.selector
    try:
        return Selector.model_validate({k: query[k] for k in ("stream", "modality", "min_severity") if k in query})
    except ValidationError as error:
        raise api_json.bad_request(str(error)) from error


async def _next_items(queues: dict[str, asyncio.Queue[Any]]) -> list[tuple[str, Any]]:
    """What arrives first on any of the queues (by kind), all of those ready at once; TimeoutError after
    KEEPALIVE_S without any."""
    waiting = {asyncio.ensure_future(queue.get()): kind for kind, queue in queues.items()}
    done, pending = await asyncio.wait(waiting, timeout=KEEPALIVE_S, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    if not done:
        raise TimeoutError
    return [(kind, task.result()) for task, kind in waiting.items() if task in done]


def _sse(kind: str, item: Any) -> bytes:
    if kind == "alert":
        return f"id: {idempotency_key(item)}\nevent: alert\ndata: {item.to_json().decode()}\n\n".encode()
    return f"event: {kind}\ndata: {item.to_json().decode()}\n\n".encode()


async def _alert_stream(request: web.Request) -> web.StreamResponse:
    selector = _stream_selector(request)
    hub = request.app[HUB]
    board = request.app.get(BOARD)
    include = set(request.query.get("include", "").split(","))
    queues: dict[str, asyncio.Queue[Any]] = {"alert": hub.subscribe(selector)}
    if "events" in include:
        queues["alert_event"] = hub.listen_events()
    if board is not None and "scores" in include:
        queues["score"] = board.listen()
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
    try:
        await response.prepare(request)
        # A first comment tells the client the stream is live, so it knows alerts from now on will reach it.
        await response.write(b": connected\n\n")
        while True:
            try:
                arrived = await _next_items(queues)
            except TimeoutError:
                await response.write(b": keepalive\n\n")
                continue
            if any(item is None for _, item in arrived):
                break
            for kind, item in arrived:
                await response.write(_sse(kind, item))
    except ConnectionResetError:
        pass  # the client went away
    finally:
        hub.unsubscribe(queues["alert"])
        if "alert_event" in queues:
            hub.unlisten_events(queues["alert_event"])
        if "score" in queues and board is not None:
            board.unlisten(queues["score"])
    return response


def _dispatcher(request: web.Request) -> AlertDispatcher:
    dispatcher = request.app.get(DISPATCHER)
    if dispatcher is None:
        raise web.HTTPNotFound(
            text=json.dumps({"error": "this server does not deliver notifications"}), content_type="application/json"
        )
    return dispatcher


async def _send_test(request: web.Request) -> web.Response:
    dispatcher = _dispatcher(request)
    subscription = request.app[STORE].get(request.match_info["id"])
    if subscription is None:
        return api_json.error(404, "no such subscription")
    if not subscription.enabled:
        return api_json.error(409, "this subscription is disabled")
    if subscription.delivery.webhook_url is None and not subscription.delivery.apprise_urls:
        return api_json.error(
            409, "this subscription has no webhook or apprise channel to test (SSE is not journalled)"
        )
    notification, queued = dispatcher.send_test(subscription)
    return web.json_response(
        {
            "notification_id": notification.notification_id,
            "queued": queued,
            "deliveries": f"/v1/deliveries?subscription={subscription.id}",
        },
        status=202,
    )


async def _deliveries(request: web.Request) -> web.Response:
    dispatcher = _dispatcher(request)
    subscription_id = request.query.get("subscription")
    try:
        limit = int(request.query.get("limit", "50"))
    except ValueError:
        return api_json.error(400, "limit must be an integer")
    return web.json_response(
        {
            "summary": dispatcher.summary(subscription_id),
            "deliveries": dispatcher.deliveries(subscription_id, limit),
        }
    )


def build_app(
    token: str,
    store: SubscriptionStore,
    hub: AlertHub,
    dispatcher: AlertDispatcher | None = None,
    *,
    outbound: OutboundPolicy,
    session_ttl_s: float,
    notifier: Notifier | None = None,
    console: ConsoleSources | None = None,
) -> web.Application:
    app = web.Application(middlewares=[_auth])
    app[TOKEN] = token
    app[OUTBOUND] = outbound
    app[STORE] = store
    app[HUB] = hub
    if dispatcher is not None:
        app[DISPATCHER] = dispatcher
    app.router.add_get("/healthz", _health)
    app.router.add_post("/v1/subscriptions", _create)
    app.router.add_get("/v1/subscriptions", _list)
    app.router.add_get("/v1/subscriptions/{id}", _get)
    app.router.add_put("/v1/subscriptions/{id}", _replace)
    app.router.add_patch("/v1/subscriptions/{id}", _patch)
    app.router.add_delete("/v1/subscriptions/{id}", _delete)
    app.router.add_post("/v1/subscriptions/{id}/test", _send_test)
    app.router.add_get("/v1/alerts/stream", _alert_stream)
    app.router.add_get("/v1/deliveries", _deliveries)
    if notifier is not None:
        alerts_api.register(app, notifier)
    add_console(app, Sessions(token, session_ttl_s), console)
    if console is not None:
        app[BOARD] = console.board

    async def _end_streams(app: web.Application) -> None:
        hub.close()  # lets open SSE responses finish instead of holding the shutdown
        if console is not None:
            console.board.close()

    app.on_shutdown.append(_end_streams)
    return app


async def serve_api(
    settings: Settings,
    store: SubscriptionStore,
    hub: AlertHub,
    dispatcher: AlertDispatcher | None = None,
    notifier: Notifier | None = None,
    console: ConsoleSources | None = None,
) -> web.AppRunner:
    """Starts the API on ``api.host:api.port`` (port 0 picks a free one; see ``runner.addresses``).

    The caller owns the runner: ``await runner.cleanup()`` stops it.
    """
    if settings.api.token == DEVELOPMENT_TOKEN and not settings.api.allow_dev_token:
        raise ValueError(
            "api.token is the default development token, which anyone can guess: set DIFFSENTRY_API__TOKEN "
            "(or api.allow_dev_token: true on a development machine)"
        )
    app = build_app(
        settings.api.token, store, hub, dispatcher, outbound=OutboundPolicy.from_settings(settings),
        session_ttl_s=settings.api.session_ttl_s, notifier=notifier, console=console,
    )  # fmt: skip
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, settings.api.host, settings.api.port).start()
    return runner
