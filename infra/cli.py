"""Bodies of the ``diffsentry stack``, ``doctor`` and ``topics`` commands (registered in :mod:`pipeline.cli`)."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import asdict

import typer

from core.settings import Settings, get_settings
from infra import stack
from infra.doctor import run_checks
from infra.kafka import create_declared_topics


def _quiet_kafka_client() -> None:
    # aiokafka logs every refused connection; the commands report the service's state themselves.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)


def _print_statuses(statuses: list[stack.ServiceStatus]) -> None:
    for s in statuses:
        typer.echo(f"{s.name:<17} {'healthy' if s.healthy else 'DOWN':<8} pid {s.pid or '-':<8} {s.url}")


def stack_up(
    durable: bool | None = typer.Option(
        None,
        "--durable/--memory",
        help="Keep the broker's topics, records and offsets across restarts (in an object store in the state dir), "
        "or in memory only. Default: the mode this state dir last ran in (memory for a new one).",
    ),
    postgres: bool | None = typer.Option(
        None,
        "--with-postgres/--without-postgres",
        help="Run PostgreSQL for the shared state (subscriptions, silences, the delivery journal) of several "
        "instances; commands run against the stack then use it as database.url. Default: as this state dir last ran.",
    ),
) -> None:
    """Start the local stack (tansu, tritonserver, VictoriaMetrics, with --durable SeaweedFS, with --with-postgres
    PostgreSQL); what already runs is kept, not duplicated."""
    _quiet_kafka_client()
    settings = get_settings()
    try:
        statuses = stack.up(settings, durable=durable, postgres=postgres)
    except stack.StackError as error:
        typer.echo(f"stack up failed: {error}", err=True)
        raise typer.Exit(1) from error
    _print_statuses(statuses)
    typer.echo(f"state, logs and data: {settings.state_dir.resolve()}")


def stack_down() -> None:
    """Stop the services of the local stack, by the pids it recorded."""
    stopped = stack.down(get_settings())
    typer.echo(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


def stack_status(
    as_json: bool = typer.Option(False, "--json", help="A JSON list of {name, url, pid, healthy}."),
) -> None:
    """Health of each configured service, and the pid of the local stack's process for it."""
    _quiet_kafka_client()
    statuses = stack.status(get_settings())
    if as_json:
        typer.echo(json.dumps([asdict(s) for s in statuses]))
    else:
        _print_statuses(statuses)
    if not all(s.healthy for s in statuses):
        raise typer.Exit(1)


def doctor() -> None:
    """A real round trip through each configured service (Kafka, Triton, Influx); exits non-zero if any fails."""
    _quiet_kafka_client()
    results = run_checks(get_settings())
    for result in results:
        typer.echo(result.line())
    failed = [r.service for r in results if not r.ok]
    if failed:
        typer.echo(f"doctor: failing: {', '.join(failed)}", err=True)
        raise typer.Exit(1)


def topics_create() -> None:
    """Create the declared Kafka topics that do not exist yet on the configured broker."""
    settings: Settings = get_settings()
    created = asyncio.run(create_declared_topics(settings))
    typer.echo(f"created: {', '.join(created)}" if created else "all declared topics exist")
