"""The web console's server side against a real aiohttp server: session login, the cookie on /v1 with its CSRF
guard, pages and static files, the stream board, the camera gallery and the store read-back's assembly."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from core.contracts import Alert, AlertEvent, DeadLetter, Score, decode
from core.settings import AlertingSettings, ApiSettings, Settings
from infra.store_query import Sample, StoreReader
from operators.alerting import alert_id_for, stream_key
from operators.camera_gallery import CameraGallery
from operators.delivery import AlertHub
from operators.stream_board import StreamBoard
from pipeline.alerting_service import AlertingService
from pipeline.api_role import live_view_item
from pipeline.console import PAGES, SESSION_COOKIE, ConsoleSources, Sessions, page_html, score_history
from pipeline.subscriptions_api import serve_api
from tests.state import subscription_store

TOKEN = "console-test-token-0123456789"


def score(t: float, value: float, anomalous: bool, modality: str = "sensor", stream: str = "pump-1") -> Score:
    return Score(
        modality=modality, stream=stream, event_time=t, score=value, threshold=1.0, is_anomaly=anomalous,
        model="m", model_version="1",
    )  # fmt: skip


def alert(state: str, t: float, stream: str = "pump-1", modality: str = "sensor") -> Alert:
    return Alert(
        alert_id="al-0123456789abcdef0123", modality=modality, stream=stream, state=state, severity="warning",
        started_at=t, event_time=t, score=2.0, threshold=1.0, model="m",
    )  # fmt: skip


@asynccontextmanager
async def console_server(tmp_path: Path) -> AsyncIterator[tuple[str, ConsoleSources]]:
    settings = Settings(state_dir=tmp_path, api=ApiSettings(port=0, token=TOKEN))
    store = subscription_store(tmp_path / "subscriptions.sqlite")
    sources = ConsoleSources(
        StreamBoard(), CameraGallery(tmp_path / "snapshots", 3, 3600), StoreReader(settings.influx)
    )
    runner = await serve_api(settings, store, AlertHub(), console=sources)
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}", sources
    finally:
        await runner.cleanup()


async def test_a_wrong_token_gets_no_cookie_and_no_data(tmp_path: Path) -> None:
    async with console_server(tmp_path) as console:
        url, sources = console
        sources.board.record(score(1.0, 0.5, False), [])
        async with httpx.AsyncClient(base_url=url) as client:
            refused = await client.post("/console/login", data={"token": "wrong"})
            assert refused.status_code == 401 and "set-cookie" not in refused.headers
            assert "Wrong token" in refused.text
            assert (await client.get("/v1/streams")).status_code == 401
            client.cookies.set(SESSION_COOKIE, f"{int(time.time()) + 3600}.nonce.{'0' * 64}")  # forged
            assert (await client.get("/v1/streams")).status_code == 401
            page = await client.get("/console/")
            assert page.status_code == 303 and page.headers["location"] == "/console/login"


async def test_the_session_cookie_opens_v1_and_state_changes_need_the_console_header(tmp_path: Path) -> None:
    async with console_server(tmp_path) as console:
        url, sources = console
        sources.board.record(score(1.0, 0.5, False), [])
        async with httpx.AsyncClient(base_url=url) as client:
            login = await client.post("/console/login", data={"token": TOKEN})
            assert login.status_code == 303 and login.headers["location"] == "/console/"
            cookie = login.headers["set-cookie"]
            assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
            (stream,) = (await client.get("/v1/streams")).json()["streams"]
            assert stream["stream"] == "pump-1" and stream["status"] == "ok" and stream["recent"] == [[1.0, 0.5, 1.0]]

            spec = {"name": "console", "delivery": {"sse": True}}
            csrf = await client.post("/v1/subscriptions", json=spec)
            assert csrf.status_code == 403 and "X-DiffSentry-Console" in csrf.json()["error"]
            created = await client.post("/v1/subscriptions", json=spec, headers={"X-DiffSentry-Console": "1"})
            assert created.status_code == 201

            assert '<table id="streams">' in (await client.get("/console/")).text
            assert (await client.get("/console/static/vendor/uPlot.iife.min.js")).status_code == 200
            logout = await client.post("/console/logout")
            assert logout.status_code == 303 and (await client.get("/v1/streams")).status_code == 401


async def test_the_bearer_token_needs_no_console_header(tmp_path: Path) -> None:
    async with console_server(tmp_path) as console:
        url, _ = console
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}) as client:
            assert (
                await client.post("/v1/subscriptions", json={"name": "b", "delivery": {"sse": True}})
            ).status_code == 201


def test_sessions_expire_and_belong_to_their_token() -> None:
    sessions = Sessions(TOKEN, ttl_s=60)
    cookie = sessions.issue(now=1000.0)
    assert sessions.valid(cookie, now=1059.0)
    assert not sessions.valid(cookie, now=1061.0)
    assert not Sessions("another-token-0123456789", 60).valid(cookie, now=1001.0)
    expires, nonce, signature = cookie.split(".")
    assert not sessions.valid(f"{int(expires) + 3600}.{nonce}.{signature}", now=1001.0)


async def test_the_alert_stream_carries_scores_when_asked(tmp_path: Path) -> None:
    async with console_server(tmp_path) as (url, sources):
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with (
            httpx.AsyncClient(base_url=url, headers=headers, timeout=5) as client,
            client.stream("GET", "/v1/alerts/stream?include=scores") as events,
        ):
            lines = events.aiter_lines()
            assert await anext(lines) == ": connected"
            sources.board.record(score(5.0, 3.0, True), [])
            assert [await anext(lines) for _ in range(3)][1:] == [
                "event: score",
                f"data: {score(5.0, 3.0, True).to_json().decode()}",
            ]


async def test_the_alert_stream_carries_every_lifecycle_event_of_the_alerting_service(tmp_path: Path) -> None:
    """The wiring ``diffsentry run`` uses: the Notifier's events (a transition, an API call) reach SSE listeners
    that ask for ``include=events``, and the overview's status follows the acknowledgement."""

    async def no_dead_letters(letter: DeadLetter) -> None:
        raise AssertionError(letter)

    settings = Settings(
        state_dir=tmp_path, api=ApiSettings(port=0, token=TOKEN),
        alerting=AlertingSettings(for_s=0, for_points=1, video_for_points=1, resolve_for_s=0, cooldown_s=0),
    )  # fmt: skip
    service = await AlertingService.start(settings, dead_letter=no_dead_letters)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    try:
        async with (
            httpx.AsyncClient(base_url=service.api_url, headers=headers, timeout=5) as client,
            client.stream("GET", "/v1/alerts/stream?include=events") as stream,
        ):
            events = _sse_events(stream)

            async def next_event() -> tuple[str | None, Any]:
                return await asyncio.wait_for(anext(events), 5)

            assert await next_event() == (None, None), "connected"
            [fired] = service.observe(score(10.0, 3.0, True))
            arrived = [await next_event() for _ in range(2)]
            assert arrived[0] == ("alert", fired)
            assert arrived[1][0] == "alert_event" and (arrived[1][1].kind, arrived[1][1].alert_id) == (
                "fired", fired.alert_id,
            )  # fmt: skip
            ack = {"by": "ana", "comment": "on it", "expires_in_s": 600}
            assert (await client.post(f"/v1/alerts/{fired.alert_id}/ack", json=ack)).status_code == 200
            kind, event = await next_event()
            assert kind == "alert_event" and event.kind == "acknowledged" and event.actor == "ana"
            assert event.until is not None and event.until > time.time() + 590
            (stream_view,) = (await client.get("/v1/streams")).json()["streams"]
            assert stream_view["status"] == "acknowledged"
    finally:
        await service.stop()


async def _sse_events(response: httpx.Response) -> AsyncIterator[tuple[str | None, Any]]:
    """(kind, decoded message) per server-sent event; (None, None) for the first comment."""
    kind = None
    async for line in response.aiter_lines():
        if line == ": connected":
            yield None, None
        elif line.startswith("event: "):
            kind = line.removeprefix("event: ")
        elif line.startswith("data: "):
            yield kind, decode(AlertEvent if kind == "alert_event" else Alert, line.removeprefix("data: ").encode())


def test_the_board_follows_a_stream_through_its_phases() -> None:
    board = StreamBoard(recent=3)
    phases = []
    for t, (value, anomalous, alerts) in enumerate(
        [(0.1, False, []), (2.0, True, []), (2.5, True, [alert("firing", 1.0)]), (2.2, True, []),
         (0.2, False, [alert("resolved", 4.0)]), (0.1, False, []), (3.0, True, [])]
    ):  # fmt: skip
        board.record(score(float(t), value, anomalous), alerts)
        phases.append(board.entries()[0].phase)
    assert phases == ["ok", "pending", "firing", "firing", "resolved", "resolved", "pending"]
    assert [p[0] for p in board.entries()[0].recent] == [4.0, 5.0, 6.0]


def test_an_api_instance_board_follows_scores_and_alerts_from_their_topics(caplog: pytest.LogCaptureFixture) -> None:
    """Scores and transitions come apart (two topics): the phases are those of the same scores seen together."""
    settings, board = Settings(), StreamBoard()
    topics = settings.topics
    records = [
        (topics.alerts, alert("firing", 1.0).to_json()),  # the transition may overtake its score
        (topics.scores, score(1.0, 2.5, True).to_json()),
        (topics.scores, score(2.0, 2.2, True).to_json()),
        (topics.alerts, b'{"event_id": "ev-1", "kind": "acknowledged", "at": 3.0, "alert_id": "al-1"}'),
        (topics.alerts, b"not json"),  # logged and skipped: the view is not where bad records are handled
        (topics.scores, None),
        (topics.alerts, alert("resolved", 4.0).to_json()),
        (topics.scores, score(4.0, 0.2, False).to_json()),
    ]
    phases = []
    for topic, value in records:
        item = live_view_item(topic, value, settings)
        if item is not None:
            board.record(item, []) if isinstance(item, Score) else board.record_alert(item)
        phases.append(board.entries()[0].phase)
    assert phases == ["firing", "firing", "firing", "firing", "firing", "firing", "resolved", "resolved"]
    entry = board.entries()[0]
    assert [p[0] for p in entry.recent] == [1.0, 2.0, 4.0] and entry.alert_id is None
    assert len(caplog.records) == 1 and "skips a record" in caplog.records[0].getMessage()  # the bad one only


def _frame_and_map(peak: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    anomaly_map = np.zeros((6, 9), dtype=np.float32)
    anomaly_map[peak] = 1.0
    return np.full((96, 144), 90, dtype=np.uint8), anomaly_map


def test_the_gallery_keeps_the_worst_frame_of_each_video_alert_within_its_retention(tmp_path: Path) -> None:
    gallery = CameraGallery(tmp_path, keep=2, max_age_s=3600)
    for t, peak in ((1.0, (0, 0)), (2.0, (5, 8))):
        gallery.observe_frame("cam", t, *_frame_and_map(peak))
    fired = alert("firing", 1.0, stream="cam", modality="video")
    gallery.record(score(1.0, 2.0, True, "video", "cam"), [fired])
    gallery.record(score(2.0, 5.0, True, "video", "cam"), [])  # worse: the snapshot moves to this frame
    snapshot = Image.open(io.BytesIO(gallery.snapshot_png(fired.alert_id) or b"")).convert("RGB")
    width, height = snapshot.size
    assert width >= 432
    assert snapshot.getpixel((width - 2, height - 2)) == (255, 230, 0), "the box around the worst cell (bottom right)"
    assert snapshot.getpixel((1, 1)) != (255, 230, 0)
    latest = Image.open(io.BytesIO(gallery.latest_png("cam") or b"")).convert("RGB")
    assert latest.size == snapshot.size and latest.getpixel((width - 2, height - 2))[0] == 255
    assert gallery.cameras()[0]["alert_id"] == fired.alert_id
    assert gallery.snapshot_png("../../etc/passwd") is None

    for n in range(3):  # retention: only the newest 2 snapshots stay
        other = alert("firing", 10.0 + n, stream="cam", modality="video").model_copy(update={"alert_id": f"al-{n}"})
        gallery.observe_frame("cam", 10.0 + n, *_frame_and_map((1, 1)))
        gallery.record(score(10.0 + n, 9.0, True, "video", "cam"), [other])
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["al-1.png", "al-2.png"]
    assert [info["alert_id"] for info in gallery.cameras()[0]["snapshots"]] == ["al-2", "al-1"], "newest first"


def test_the_score_history_pairs_points_contributions_and_alert_episodes() -> None:
    tags = (("asset", "pump-1"),)
    scores = [
        Sample("score", 10.0, 0.5, tags), Sample("threshold", 10.0, 1.0, tags), Sample("is_anomaly", 10.0, 0.0, tags),
        Sample("contribution_temp", 10.0, 0.3, tags), Sample("score", 11.0, 2.0, tags),
        Sample("threshold", 11.0, 1.0, tags), Sample("is_anomaly", 11.0, 1.0, tags),
    ]  # fmt: skip
    alert_tags = lambda severity: (("modality", "sensor"), ("severity", severity), ("stream", "pump-1"))  # noqa: E731
    alerts = [
        Sample("firing", 11.0, 1.0, alert_tags("warning")), Sample("started_at", 11.0, 10.5, alert_tags("warning")),
        Sample("firing", 12.0, 1.0, alert_tags("critical")), Sample("started_at", 12.0, 10.5, alert_tags("critical")),
        Sample("firing", 13.0, 0.0, alert_tags("critical")), Sample("started_at", 13.0, 10.5, alert_tags("critical")),
        Sample("firing", 20.0, 1.0, alert_tags("warning")), Sample("started_at", 20.0, 19.0, alert_tags("warning")),
    ]  # fmt: skip
    history = score_history("sensor", "pump-1", scores, alerts)
    assert history["points"] == [[10.0, 0.5, 1.0, False], [11.0, 2.0, 1.0, True]]
    assert history["contributions"] == {"temp": [[10.0, 0.3]]}
    key = stream_key("sensor", "pump-1")
    assert history["episodes"] == [
        [10.5, 13.0, alert_id_for(key, 10.5), "critical"],
        [19.0, None, alert_id_for(key, 19.0), "warning"],
    ]


def test_every_page_gets_the_one_shared_header() -> None:
    for path in PAGES:
        page = page_html(path)
        assert page.count("<header>") == 1 and 'action="/console/logout"' in page, path
        assert all(f'href="{other}"' in page for other in PAGES if other != "/console/stream"), path
