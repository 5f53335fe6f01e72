"""One API instance over the shared state (subscriptions, silences, the delivery journal): the part of
``AlertingService`` that two instances share through PostgreSQL, without the engine or the broker.

In a test: ``async with api_instance(settings) as instance``; as a process of its own (to be killed with SIGKILL):
``python -m tests.integration.api_instance`` with the settings in ``DIFFSENTRY_*`` variables; it prints
``listening <url>`` once it serves.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from core.contracts import DeadLetter
from core.settings import Settings
from operators.delivery import AlertDispatcher, AlertHub
from operators.notifier import Notifier
from operators.outbound import OutboundPolicy
from operators.shared_state import SharedState
from pipeline.subscriptions_api import serve_api


@dataclass
class ApiInstance:
    url: str
    shared: SharedState
    dispatcher: AlertDispatcher
    dead_letters: list[DeadLetter]


@asynccontextmanager
async def api_instance(settings: Settings) -> AsyncIterator[ApiInstance]:
    shared = SharedState.open(settings)
    dead_letters: list[DeadLetter] = []

    async def to_dead_letter(letter: DeadLetter) -> None:
        dead_letters.append(letter)

    dispatcher = AlertDispatcher(
        shared.subscriptions, shared.journal, settings=settings.delivery, dead_letter=to_dead_letter,
        source_topic=settings.topics.alerts, external_url=settings.api.public_url(),
        outbound=OutboundPolicy.from_settings(settings),
    )  # fmt: skip
    await dispatcher.start()
    notifier = Notifier(settings.alerting, shared.lifecycle, dispatcher)
    runner = await serve_api(settings, shared.subscriptions, AlertHub(), dispatcher, notifier)
    host, port = runner.addresses[0][:2]
    try:
        yield ApiInstance(f"http://{host}:{port}", shared, dispatcher, dead_letters)
    finally:
        await runner.cleanup()
        await dispatcher.stop()
        shared.close()


async def _serve_until_killed() -> None:
    async with api_instance(Settings()) as instance:
        print(f"listening {instance.url}", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(_serve_until_killed())
