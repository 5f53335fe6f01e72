"""``diffsentry run``: the streaming worker against the configured broker, Triton and store, until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Annotated

import typer

from core.settings import get_settings
from infra.kafka import create_declared_topics
from operators.model_cards import ModelCardError
from pipeline.worker import Worker


def run(
    metrics_port: Annotated[int | None, typer.Option("--metrics-port", help="override stream.metrics_port")] = None,
    log_level: Annotated[str, typer.Option("--log-level")] = "INFO",
) -> None:
    """Run the streaming worker: readings and frames in, scores and alerts out."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = get_settings()
    if metrics_port is not None:
        settings = settings.model_copy(
            update={"stream": settings.stream.model_copy(update={"metrics_port": metrics_port})}
        )

    async def main() -> int:
        try:
            worker = Worker(settings)  # inside the loop: it opens gRPC channels bound to it
        except ModelCardError as error:
            typer.echo(f"cannot start: {error} (train a model, or set DIFFSENTRY_MODEL_REPOSITORY)", err=True)
            return 2
        await create_declared_topics(settings)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await worker.run(stop)
        return 0

    raise typer.Exit(asyncio.run(main()))
