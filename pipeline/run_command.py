"""``diffsentry run``: the streaming worker against the configured broker, Triton and store, until SIGINT/SIGTERM.

``--role`` splits it for scaling out (README, "Roles: scoring workers, an alerting tier, API instances"):

- ``all`` (default): one process does everything, as the demo and a small site run it;
- ``scoring``: readings and frames in, scores (keyed by stream) and the store out, no alert state; run several;
- ``alerting``: the faust-streaming app over the scores topic (``pipeline/alerting_tier.py``), with the notifier
  and the webhook delivery; run several, each owns the alert states of its partitions;
- ``api``: the REST API and the console only.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from enum import StrEnum
from typing import Annotated

import typer

from core.settings import Settings, get_settings
from infra.kafka import create_declared_topics
from operators.model_cards import ModelCardError
from pipeline.alerting_tier import AlertingTier
from pipeline.api_role import run_api
from pipeline.worker import ScoresOnly, Worker


class Role(StrEnum):
    ALL = "all"
    SCORING = "scoring"
    ALERTING = "alerting"
    API = "api"


async def run_role(role: Role, settings: Settings, stop: asyncio.Event) -> int:
    """Runs one role until ``stop`` is set; returns the exit status."""
    if role in (Role.ALERTING, Role.API):
        await create_declared_topics(settings)
        await (AlertingTier(settings).run(stop) if role == Role.ALERTING else run_api(settings, stop))
        return 0
    try:
        # Inside the loop: it opens gRPC channels bound to it.
        worker = Worker(settings, ScoresOnly() if role == Role.SCORING else None)
    except ModelCardError as error:
        typer.echo(f"cannot start: {error} (train a model, or set DIFFSENTRY_MODEL_REPOSITORY)", err=True)
        return 2
    await create_declared_topics(settings)
    await worker.run(stop)
    return 0


def run(
    role: Annotated[Role, typer.Option("--role", help="which part of DiffSentry this process runs")] = Role.ALL,
    metrics_port: Annotated[int | None, typer.Option("--metrics-port", help="override stream.metrics_port")] = None,
    log_level: Annotated[str, typer.Option("--log-level")] = "INFO",
) -> None:
    """Run the streaming worker (or one role of it): readings and frames in, scores and alerts out."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = get_settings()
    if metrics_port is not None:
        settings = settings.model_copy(
            update={"stream": settings.stream.model_copy(update={"metrics_port": metrics_port})}
        )

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        return await run_role(role, settings, stop)

    raise typer.Exit(asyncio.run(main()))
