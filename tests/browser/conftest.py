"""Fixtures of the console's real-browser tests: headless Chromium (Debian ``chromium`` + ``chromium-driver``,
installed by ``infra/install-system-deps.sh``) driven by Selenium, and ONE running DiffSentry for the whole
session: a local stack serving the demo's small models (trained here, under a minute), one ``diffsentry run``
worker process, a SKAB experiment and a Ped2 clip replayed into it by the tests that need them.

Skipped with the reason when chromium, its driver or the data sets are missing."""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from selenium import webdriver

from core.settings import Settings
from core.stack_state import running_stack_addresses
from infra import stack as local_stack
from infra.kafka import create_declared_topics
from pipeline.demo import DEMO_ALERTING, run_settings
from pipeline.demo_models import DemoModels, data_dir, ensure_models
from pipeline.worker_process import WorkerProcess

# Where each test saves its page's screenshot: a session temporary folder, so that ``make test`` writes nothing in
# the checkout; ``make screenshots`` sets it to docs/console/, whose pictures the README shows.
SCREENSHOTS_ENV = "DIFFSENTRY_SCREENSHOTS"
WINDOW = (1280, 900)
MODELS = DemoModels()
PED2_CLIP = "04"  # anomalous from frame 30 (the demo's clip)
# The demo's event-time alerting; every transition goes out at once (no grouping wait) and is never repeated, so
# what the webhook receiver gets is exactly what acknowledging and silencing let through.
ALERTING = DEMO_ALERTING.model_copy(update={"group_wait_s": 0.0, "repeat_interval_s": None})


@dataclass
class Console:
    settings: Settings  # the worker's, with its ports and token
    url: str  # the API's base URL
    data: Path

    @property
    def token(self) -> str:
        return self.settings.api.token


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    chosen = os.environ.get(SCREENSHOTS_ENV)
    folder = Path(chosen) if chosen else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="session")
def browser() -> Iterator[webdriver.Chrome]:
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver_path is None:
        pytest.skip("chromium or chromedriver not installed: bash infra/install-system-deps.sh installs them")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver_path))
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="session")
def console(tmp_path_factory: pytest.TempPathFactory, browser: webdriver.Chrome) -> Iterator[Console]:
    work = tmp_path_factory.mktemp("console")
    paths = {"state_dir": work / "stack", "model_repository": work / "stack" / "models"}
    settings = Settings(**paths)
    root = data_dir(settings)
    for needed in (root / MODELS.sensor_file, root / "ped2" / "testing" / PED2_CLIP):
        if not needed.exists():
            pytest.skip(f"{needed} not found (set DIFFSENTRY_DATA_DIR or place SKAB and Ped2 at ../shared/data)")
    ensure_models(settings, MODELS)
    local_stack.up(settings)
    worker = None
    try:
        stack = Settings(**paths, **running_stack_addresses(paths["state_dir"]))
        worker = WorkerProcess(run_settings(stack, f"console-{uuid.uuid4().hex[:8]}", ALERTING))
        asyncio.run(create_declared_topics(worker.settings))
        worker.start()
        asyncio.run(worker.wait_ready())
        yield Console(worker.settings, worker.api_url, root)
    finally:
        if worker is not None:
            worker.stop()
        local_stack.down(settings)
