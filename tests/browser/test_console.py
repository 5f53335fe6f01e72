"""The console in a real headless Chromium against one running DiffSentry (tests/browser/conftest.py): log in, a
SKAB anomaly turning a stream firing on the live overview, the stream page's chart holding the store's points, the
camera page showing a Ped2 anomaly's frame with its map and its alert's snapshot, subscriptions made in the UI.
Each test saves its page's screenshot under docs/console/ (shown in the README)."""

from __future__ import annotations

import asyncio
import io
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import numpy as np
import pytest
from PIL import Image
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from infra.victoria_metrics import export_series
from pipeline.console import SESSION_COOKIE
from pipeline.demo import expected_window_count, replay_video
from pipeline.ingest_sensors import publish, read_sensor_csv
from tests.browser.conftest import MODELS, PED2_CLIP, SCREENSHOTS, Console

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


def screenshot(driver: WebDriver, page: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    assert driver.save_screenshot(str(SCREENSHOTS / f"{page}.png"))


def sign_in(driver: WebDriver, console: Console, token: str) -> None:
    driver.get(f"{console.url}/console/login")
    field = driver.find_element(By.ID, "token")
    field.clear()
    field.send_keys(token)
    driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()


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


def test_a_wrong_token_gets_no_session_and_no_data_then_the_token_signs_in(browser: WebDriver, console: Console):
    sign_in(browser, console, "not-the-token")
    assert "Wrong token." in browser.find_element(By.CSS_SELECTOR, "[role=alert]").text
    assert browser.get_cookie(SESSION_COOKIE) is None
    screenshot(browser, "login")
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
    signed_in: WebDriver, console: Console, sensor_replay: threading.Thread
):
    signed_in.get(f"{console.url}/console/")
    wait_for(signed_in, f'tr[data-stream="{MODELS.asset}"]', timeout_s=90)
    assert signed_in.find_element(By.ID, "live").text == "live", "the EventSource is open with the session cookie"
    row = wait_for(signed_in, f'tr[data-stream="{MODELS.asset}"][data-status="firing"]', timeout_s=180)
    assert "firing" in row.text and row.find_elements(By.CSS_SELECTOR, "svg polyline")
    screenshot(signed_in, "overview")


def test_the_stream_page_charts_the_stores_points(
    signed_in: WebDriver, console: Console, sensor_replay: threading.Thread
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
    screenshot(signed_in, "stream")


def image_width(driver: WebDriver, css: str) -> int:
    """The natural width of the first image matching ``css`` now (0: none, or not loaded): the page re-renders."""
    return driver.execute_script(f"return document.querySelector({css!r})?.naturalWidth ?? 0")


def test_the_camera_page_shows_a_ped2_anomaly_with_its_map_and_snapshot(signed_in: WebDriver, console: Console):
    clip = console.data / "ped2" / "testing" / PED2_CLIP
    replay = in_background(lambda: replay_video(console.settings, clip, CAMERA))
    signed_in.get(f"{console.url}/console/cameras")
    snapshot = "#snapshots figure[data-alert] img"
    WebDriverWait(signed_in, 180, poll_frequency=0.2).until(lambda d: image_width(d, snapshot) > 0)
    replay.join(timeout=120)
    assert image_width(signed_in, f'figure[data-camera="{CAMERA}"] img') >= 432, "the latest frame with its map"

    headers = {"Authorization": f"Bearer {console.token}"}
    alert_id = signed_in.execute_script("return document.querySelector('#snapshots figure').dataset.alert")
    png = httpx.get(f"{console.url}/v1/alerts/{alert_id}/snapshot.png", headers=headers).content
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    red, green, blue = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    assert ((red - green > 60) & (red - blue > 60)).any(), "the anomaly map is overlaid in red"
    assert ((red > 240) & (green > 220) & (blue < 40)).any(), "the worst patch is boxed in yellow"
    time.sleep(2.5)  # the page's next refresh shows the clip's last frame
    screenshot(signed_in, "cameras")


def test_a_subscription_made_in_the_console_is_stored_and_deleted(signed_in: WebDriver, console: Console):
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
    screenshot(signed_in, "subscriptions")

    row.find_element(By.XPATH, ".//button[text()='Delete']").click()
    signed_in.switch_to.alert.accept()
    WebDriverWait(signed_in, 10).until(lambda d: not d.find_elements(By.CSS_SELECTOR, "tr[data-subscription]"))
    assert httpx.get(f"{console.url}/v1/subscriptions/{made[0]['id']}", headers=headers).status_code == 404
