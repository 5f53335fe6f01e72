"""Fixtures for integration tests: one real local stack per test session.

Use ``local_stack`` (a :class:`Settings` whose Kafka, Triton and Influx addresses point at the running services
and whose ``model_repository`` is served by that Triton) in any test under ``tests/integration``::

    pytestmark = pytest.mark.integration

    async def test_something(local_stack: Settings, new_topic) -> None:
        topic = await new_topic(partitions=1)
        producer = AIOKafkaProducer(bootstrap_servers=local_stack.kafka.bootstrap_servers)
        ...

A model trained into ``local_stack.model_repository / <name>`` is served after
``infra.stack.load_model(local_stack, <name>)``. Subprocesses (the CLI) find the same stack through the
environment of ``local_stack_env``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Awaitable, Callable, Iterator

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from core.settings import Settings
from core.stack_state import running_stack_addresses
from infra import stack
from triton_models.paths import SOURCE_ROOT


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Starts tansu, tritonserver and VictoriaMetrics on free ports in a temporary state dir; stops them by pid."""
    state_dir = tmp_path_factory.mktemp("diffsentry-stack")
    paths = {"state_dir": state_dir, "model_repository": state_dir / "model_repository"}
    stack.up(Settings(**paths))
    try:
        # Passed as init values, the stack's addresses win over any DIFFSENTRY_* variables of the environment.
        yield Settings(**paths, **running_stack_addresses(state_dir))
    finally:
        stack.down(Settings(**paths))


@pytest.fixture(scope="session")
def local_stack_env(local_stack: Settings) -> dict[str, str]:
    """Environment for subprocesses (e.g. the ``diffsentry`` CLI) that makes them use the session's stack."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIFFSENTRY_")}
    env["DIFFSENTRY_STATE_DIR"] = str(local_stack.state_dir)
    env["DIFFSENTRY_MODEL_REPOSITORY"] = str(local_stack.model_repository)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SOURCE_ROOT), os.environ.get("PYTHONPATH")) if p)
    return env


@pytest.fixture
def new_topic(local_stack: Settings) -> Callable[..., Awaitable[str]]:
    """Creates a topic with a unique name on the session's broker: ``await new_topic(partitions=1)``."""

    async def create(partitions: int = 1, prefix: str = "test") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        admin = AIOKafkaAdminClient(bootstrap_servers=local_stack.kafka.bootstrap_servers)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
        finally:
            await admin.close()
        return name

    return create
