"""The console in a real headless Chromium against one running DiffSentry (tests/browser/conftest.py): log in, a
SKAB anomaly turning a stream firing on the live overview, the stream page's chart holding the store's points, the
camera page showing a Ped2 anomaly's frame with its map and its alert's snapshot, subscriptions made in the UI,
and acknowledging and silencing from the alerts page changing what a webhook receiver gets.
Each test saves its page's screenshot (``make screenshots``: under docs/console/, shown in the README)."""

from __future__ import annotations

import asyncio
import bisect
import io
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.expected_conditions import staleness_of
from selenium.webdriver.support.ui import WebDriverWait

from infra.victoria_metrics import export_series
from operators.webhook_receiver import WebhookReceiver
from pipeline.console import SESSION_COOKIE
from pipeline.demo import expected_window_count, replay_video
from pipeline.ingest_sensors import ReplayTable, publish, read_sensor_csv
from tests.browser.conftest import MODELS, PED2_CLIP, WINDOW, Console

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SKAB_SPEED = 40.0  # readings per second: the anomaly (about 400 rows) fires and resolves over ~10 s, seen live
CAMERA = f"ped2-{PED2_CLIP}"


def in_background(work: Callable[[], object]) -> threading.Thread:
    thread = threading.Thread(target=lambda: asyncio.run(work()), daemon=True)
    thread.start()
    return thread


def wait_for(driver: WebDriver, css: str, timeout_s: float = 120.0):
    return WebDriverWait(driver, timeout_s, poll_frequency=0.2).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, css) or False
    )[0]


def screenshot(driver: WebDriver, folder: Path, page: str) -> None:
    assert driver.save_screenshot(str(folder / f"{page}.png"))


def sign_in(driver: WebDriver, console: Console, token: str) -> None:
    driver.get(f"{console.url}/console/login")
    field = driver.find_element(By.ID, "token")
    field.clear()
    field.send_keys(token)
    driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    WebDriverWait(driver, 30).until(staleness_of(field))  # the answer's page has replaced the form


@pytest.fixture
def signed_in(browser: WebDriver, console: Console) -> WebDriver:
    browser.get(f"{console.url}/console/login")
    if browser.get_cookie(SESSION_COOKIE) is None:
        sign_in(browser, console, console.token)
    return browser


@pytest.fixture(scope="module")
def sensor_replay(console: Console) -> Iterator[threading.Thread]:
    """The SKAB experiment, published once by the first test that needs it."""
    table = read_sensor_csv(console.data / MODELS.sensor_file)
    thread = in_background(lambda: publish(console.settings, table, MODELS.asset, SKAB_SPEED, False, progress=False))
    yield thread
    thread.join(timeout=120)


def test_a_wrong_token_gets_no_session_and_no_data_then_the_token_signs_in(
    browser: WebDriver, console: Console, screenshots: Path
):
    sign_in(browser, console, "not-the-token")
    assert "Wrong token." in browser.find_element(By.CSS_SELECTOR, "[role=alert]").text
    assert browser.get_cookie(SESSION_COOKIE) is None
    screenshot(browser, screenshots, "login")
    browser.get(f"{console.url}/v1/streams")
    assert "missing or wrong bearer token" in browser.find_element(By.TAG_NAME, "body").text
    browser.get(f"{console.url}/console/")
    assert browser.current_url.endswith("/console/login"), "pages send a visitor without a session to the login"

    sign_in(browser, console, console.token)
    assert browser.current_url == f"{console.url}/console/"
    cookie = browser.get_cookie(SESSION_COOKIE)
    assert cookie is not None and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    browser.get(f"{console.url}/v1/streams")
    assert '"streams"' in browser.find_element(By.TAG_NAME, "body").text


def test_the_overview_shows_the_stream_turning_firing_while_skab_replays(
    signed_in: WebDriver, console: Console, sensor_replay: threading.Thread, screenshots: Path
):
    signed_in.get(f"{console.url}/console/")
    wait_for(signed_in, f'tr[data-stream="{MODELS.asset}"]', timeout_s=90)
    assert signed_in.find_element(By.ID, "live").text == "live", "the EventSource is open with the session cookie"
    row = wait_for(signed_in, f'tr[data-stream="{MODELS.asset}"][data-status="firing"]', timeout_s=180)
    assert "firing" in row.text and row.find_elements(By.CSS_SELECTOR, "svg polyline")
    screenshot(signed_in, screenshots, "overview")


def test_the_stream_page_charts_the_stores_points(
    signed_in: WebDriver, console: Console, sensor_replay: threading.Thread, screenshots: Path
):
    sensor_replay.join(timeout=180)
    table = read_sensor_csv(console.data / MODELS.sensor_file)
    expected = expected_window_count(console.settings, table, MODELS.asset)
    selector = f'sensor_scores_score{{asset="{MODELS.asset}"}}'
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        stored = {
            t for series in export_series(console.settings.influx.url, selector, 1.0) for t in series["timestamps"]
        }
        if len(stored) >= expected:
            break
        time.sleep(0.5)
    assert len(stored) == expected

    signed_in.get(f"{console.url}/console/stream?modality=sensor&stream={MODELS.asset}")
    chart = wait_for(signed_in, "#scores[data-points]", timeout_s=30)
    assert int(chart.get_attribute("data-points")) == len(stored), "one chart point per stored score"
    assert int(chart.get_attribute("data-episodes")) >= 1, "the SKAB anomaly's alert episode is shaded"
    assert chart.find_elements(By.TAG_NAME, "canvas"), "uPlot drew the chart"
    assert signed_in.find_element(By.ID, "contributions-section").is_displayed()
    assert signed_in.find_element(By.ID, "error").text == ""
    screenshot(signed_in, screenshots, "stream")


def image_width(driver: WebDriver, css: str) -> int:
    """The natural width of the first image matching ``css`` now (0: none, or not loaded): the page re-renders."""
    return driver.execute_script(f"return document.querySelector({css!r})?.naturalWidth ?? 0")


def test_the_camera_page_shows_a_ped2_anomaly_with_its_map_and_snapshot(
    signed_in: WebDriver, console: Console, screenshots: Path
):
    clip = console.data / "ped2" / "testing" / PED2_CLIP
    replay = in_background(lambda: replay_video(console.settings, clip, CAMERA))
    signed_in.get(f"{console.url}/console/cameras")
    snapshot = "#snapshots figure[data-alert] img"
    WebDriverWait(signed_in, 180, poll_frequency=0.2).until(lambda d: image_width(d, snapshot) > 0)
    replay.join(timeout=120)
    latest = f'figure[data-camera="{CAMERA}"] img'  # re-rendered by each refresh: loaded again each time
    WebDriverWait(signed_in, 30, poll_frequency=0.2).until(lambda d: image_width(d, latest) > 0)
    assert image_width(signed_in, latest) >= 432, "the latest frame with its map"

    headers = {"Authorization": f"Bearer {console.token}"}
    alert_id = signed_in.execute_script("return document.querySelector('#snapshots figure').dataset.alert")
    png = httpx.get(f"{console.url}/v1/alerts/{alert_id}/snapshot.png", headers=headers).content
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    red, green, blue = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    assert ((red - green > 60) & (red - blue > 60)).any(), "the anomaly map is overlaid in red"
    assert ((red > 240) & (green > 220) & (blue < 40)).any(), "the worst patch is boxed in yellow"
    time.sleep(2.5)  # the page's next refresh shows the clip's last frame
    screenshot(signed_in, screenshots, "cameras")


def test_a_subscription_made_in_the_console_is_stored_and_deleted(
    signed_in: WebDriver, console: Console, screenshots: Path
):
    signed_in.get(f"{console.url}/console/subscriptions")
    signed_in.find_element(By.ID, "sub-name").send_keys("control room")
    stream = signed_in.find_element(By.ID, "sub-stream")
    stream.clear()
    stream.send_keys("ped2-*")
    signed_in.find_element(By.ID, "sub-sse").click()
    signed_in.find_element(By.CSS_SELECTOR, "#subscription-form button[type=submit]").click()
    row = wait_for(signed_in, "tr[data-subscription]", timeout_s=10)
    assert "control room" in row.text

    headers = {"Authorization": f"Bearer {console.token}"}
    listed = httpx.get(f"{console.url}/v1/subscriptions", headers=headers).json()["subscriptions"]
    made = [s for s in listed if s["name"] == "control room"]
    assert len(made) == 1 and made[0]["selector"]["stream"] == "ped2-*" and made[0]["delivery"]["sse"]
    screenshot(signed_in, screenshots, "subscriptions")

    row.find_element(By.XPATH, ".//button[text()='Delete']").click()
    signed_in.switch_to.alert.accept()
    WebDriverWait(signed_in, 10).until(lambda d: not d.find_elements(By.CSS_SELECTOR, "tr[data-subscription]"))
    assert httpx.get(f"{console.url}/v1/subscriptions/{made[0]['id']}", headers=headers).status_code == 404


# --- acknowledge and silence from the alerts page, seen by a webhook receiver ------------------------------------

SHIFT_S = 3600.0  # each further replay of the experiment runs this much later in event time (past the cooldown)
REPLAY_FROM = 400  # rows of the experiment replayed again: from a while before its anomaly (rows 570-968) to the end


@pytest.fixture(scope="module")
def webhook(console: Console) -> Iterator[WebhookReceiver]:
    """A local webhook receiver (on a loop of its own, in a thread) subscribed to the replayed asset's alerts."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    receiver = WebhookReceiver("browser-test-secret")
    asyncio.run_coroutine_threadsafe(receiver.start(), loop).result(10)
    headers = {"Authorization": f"Bearer {console.token}"}
    spec = {
        "name": "control room hook",
        "selector": {"stream": MODELS.asset, "modality": "sensor"},
        "delivery": {"webhook_url": receiver.url},
        "secret": receiver.secret,
    }
    created = httpx.post(f"{console.url}/v1/subscriptions", json=spec, headers=headers).raise_for_status().json()
    try:
        yield receiver
    finally:
        httpx.delete(f"{console.url}/v1/subscriptions/{created['id']}", headers=headers)
        asyncio.run_coroutine_threadsafe(receiver.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def replay_rows(console: Console, start: int, stop: int | None, shift_s: float) -> None:
    """Rows ``start:stop`` of the experiment, ``shift_s`` later in event time, as fast as the worker takes them."""
    table = read_sensor_csv(console.data / MODELS.sensor_file)
    part = ReplayTable(table.channels, [t + shift_s for t in table.times[start:stop]], table.rows[start:stop])
    asyncio.run(publish(console.settings, part, MODELS.asset, speed=0, loop=False, progress=False))


def api_get(console: Console, path: str) -> Any:
    headers = {"Authorization": f"Bearer {console.token}"}
    return httpx.get(f"{console.url}{path}", headers=headers, timeout=10).raise_for_status().json()


def delivered_states(receiver: WebhookReceiver, alert_id: str, after: float = 0.0) -> list[str]:
    return [
        alert.state
        for notification in list(receiver.notifications)
        if notification.created_at > after
        for alert in notification.alerts
        if alert.alert_id == alert_id
    ]


def click(driver: WebDriver, xpath: str, timeout_s: float = 10.0) -> None:
    """Clicks the element, found again if the page re-rendered it in between (live pages do)."""
    WebDriverWait(driver, timeout_s, 0.2, ignored_exceptions=[StaleElementReferenceException]).until(
        lambda d: d.find_element(By.XPATH, xpath).click() or True
    )


def text_of(driver: WebDriver, css: str, timeout_s: float = 10.0) -> str:
    """The text of the first element matching ``css`` once there is one (found again if re-rendered)."""
    return WebDriverWait(driver, timeout_s, 0.2, ignored_exceptions=[StaleElementReferenceException]).until(
        lambda d: d.find_element(By.CSS_SELECTOR, css).text
    )


def wait_until(check: Callable[[], Any], timeout_s: float, message: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (result := check()):
        assert time.monotonic() < deadline, message
        time.sleep(0.3)
    return result


def test_acknowledging_in_the_console_stops_escalations_but_its_resolve_is_delivered(
    signed_in: WebDriver, console: Console, sensor_replay: threading.Thread, webhook: WebhookReceiver
):
    sensor_replay.join(timeout=180)
    (first,) = [a for a in api_get(console, "/v1/alerts?status=all")["alerts"] if a["stream"] == MODELS.asset]
    # The replay stops a little after the row where the first replay's alert started, so the new alert stays firing.
    table = read_sensor_csv(console.data / MODELS.sensor_file)
    firing_row = bisect.bisect_left(table.times, first["started_at"]) + 20
    replay_rows(console, REPLAY_FROM, firing_row, SHIFT_S)

    signed_in.get(f"{console.url}/console/alerts")
    firing = f'#active tr[data-stream="{MODELS.asset}"][data-status="firing"]:not([data-alert="{first["alert_id"]}"])'
    alert_id = WebDriverWait(signed_in, 120, 0.2, ignored_exceptions=[StaleElementReferenceException]).until(
        lambda d: d.find_element(By.CSS_SELECTOR, firing).get_attribute("data-alert")
    )
    wait_until(lambda: delivered_states(webhook, alert_id), 30, "the firing alert reaches the receiver")
    click(signed_in, f"//table[@id='active']//tr[@data-alert='{alert_id}']//button[text()='Acknowledge']")
    signed_in.find_element(By.ID, "ack-by").send_keys("ana")
    signed_in.find_element(By.ID, "ack-comment").send_keys("checking the valve")
    signed_in.find_element(By.CSS_SELECTOR, "#ack-form button[type=submit]").click()
    acknowledged = text_of(signed_in, f'#active tr[data-alert="{alert_id}"][data-status="acknowledged"]')
    assert "by ana: checking the valve" in acknowledged
    logged = text_of(signed_in, f'#events tr[data-kind="acknowledged"][data-alert="{alert_id}"]')
    assert "ana" in logged and "checking the valve" in logged
    (ack,) = [e for e in api_get(console, f"/v1/events?alert_id={alert_id}")["events"] if e["kind"] == "acknowledged"]

    signed_in.get(f"{console.url}/console/")
    wait_for(signed_in, f'tr[data-stream="{MODELS.asset}"][data-status="acknowledged"]', 10)

    replay_rows(console, firing_row, None, SHIFT_S)
    wait_until(lambda: "resolved" in delivered_states(webhook, alert_id), 120, "the resolve is delivered")
    assert delivered_states(webhook, alert_id, after=ack["at"]) == ["resolved"], "no escalation after the ack"


def test_a_silence_made_from_an_alert_in_the_console_keeps_the_streams_next_alert_from_the_receiver(
    signed_in: WebDriver, console: Console, webhook: WebhookReceiver, screenshots: Path
):
    signed_in.get(f"{console.url}/console/alerts")
    click(signed_in, f"//table[@id='history']//tr[@data-stream='{MODELS.asset}']//button[text()='Silence…']")
    form = {name: signed_in.find_element(By.ID, f"silence-{name}") for name in ("stream", "modality", "model")}
    assert {name: field.get_attribute("value") for name, field in form.items()} == {
        "stream": MODELS.asset, "modality": "sensor", "model": "*",
    }, "the matchers are the alert's stream and modality"  # fmt: skip
    signed_in.find_element(By.ID, "silence-by").send_keys("ana")
    signed_in.find_element(By.ID, "silence-comment").send_keys("valve replaced, recalibrating")
    signed_in.find_element(By.CSS_SELECTOR, "#silence-form button[type=submit]").click()
    assert f"stream={MODELS.asset}, modality=sensor" in text_of(signed_in, '#silences tr[data-state="active"]')

    signed_in.find_element(By.ID, "window-name").send_keys("camera service")
    window_stream = signed_in.find_element(By.ID, "window-stream")
    window_stream.clear()
    window_stream.send_keys("ped2-*")
    window_zone = signed_in.find_element(By.ID, "window-tz")
    window_zone.clear()
    window_zone.send_keys("Europe/Berlin")
    signed_in.find_element(By.ID, "window-by").send_keys("ana")
    signed_in.find_element(By.CSS_SELECTOR, "#window-form button[type=submit]").click()
    assert "Europe/Berlin" in text_of(signed_in, "#windows tr[data-window]")

    known = {a["alert_id"] for a in api_get(console, "/v1/alerts?status=all")["alerts"]}
    journalled = len(api_get(console, "/v1/deliveries?limit=500")["deliveries"])
    replay_rows(console, REPLAY_FROM, None, 2 * SHIFT_S)

    def silenced_episode() -> tuple[str, list[str]] | None:
        for event in api_get(console, "/v1/events?limit=1000")["events"]:
            if event["kind"] == "resolved" and event["stream"] == MODELS.asset and event["alert_id"] not in known:
                events = api_get(console, f"/v1/events?alert_id={event['alert_id']}")["events"]
                return event["alert_id"], [e["kind"] for e in events]
        return None

    alert_id, kinds = wait_until(silenced_episode, 180, "the replayed anomaly fires and resolves")
    assert kinds[:2] == ["fired", "suppressed"] and kinds[-2:] == ["resolved", "suppressed"], kinds
    assert delivered_states(webhook, alert_id) == [], "nothing of the silenced alert reaches the receiver"
    assert len(api_get(console, "/v1/deliveries?limit=500")["deliveries"]) == journalled, "nor is queued for it"
    wait_for(signed_in, f'#events tr[data-kind="suppressed"][data-alert="{alert_id}"]', 10)
    wait_for(signed_in, f'#history tr[data-alert="{alert_id}"][data-status="resolved"]', 10)
    signed_in.set_window_size(WINDOW[0], 1600)
    signed_in.execute_script("window.scrollTo(0, 0)")
    screenshot(signed_in, screenshots, "alerts")
    signed_in.set_window_size(*WINDOW)

    click(signed_in, "//table[@id='silences']//tr[@data-state='active']//button[text()='End now']")
    wait_for(signed_in, '#silences tr[data-state="expired"]', 10)
    click(signed_in, "//table[@id='windows']//button[text()='Delete']")
    WebDriverWait(signed_in, 10).until(lambda d: not d.find_elements(By.CSS_SELECTOR, "#windows tr[data-window]"))
    assert api_get(console, "/v1/maintenance-windows")["maintenance_windows"] == []
    assert [s["state"] for s in api_get(console, "/v1/silences")["silences"]] == ["expired"]
