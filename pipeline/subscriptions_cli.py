"""``diffsentry subscriptions add|list|remove``: manage alert subscriptions through the REST API."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from pipeline.api_client import ApiUrl, call_api

app = typer.Typer(no_args_is_help=True, help="Manage alert subscriptions (through the REST API of `diffsentry run`).")


@app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="A name for people.")],
    stream: Annotated[str, typer.Option(help="Glob on the asset or camera id, e.g. 'pump-*'.")] = "*",
    modality: Annotated[str | None, typer.Option(help="sensor or video; default any.")] = None,
    min_severity: Annotated[str, typer.Option(help="info, warning or critical.")] = "warning",
    webhook: Annotated[str | None, typer.Option(help="URL that receives signed POSTs.")] = None,
    webhook_format: Annotated[
        str, typer.Option(help="diffsentry (the Notification JSON) or alertmanager (its webhook body).")
    ] = "diffsentry",
    apprise: Annotated[
        list[str] | None, typer.Option(help="An apprise URL (slack://..., mailtos://..., ntfys://...); repeatable.")
    ] = None,
    sse: Annotated[bool, typer.Option("--sse", help="Deliver on GET /v1/alerts/stream?subscription=ID.")] = False,
    secret: Annotated[
        str | None, typer.Option(envvar="DIFFSENTRY_WEBHOOK_SECRET", help="HMAC secret; generated if omitted.")
    ] = None,
    api_url: ApiUrl = None,
) -> None:
    """Create a subscription; prints it (with the secret when the server generated one: shown only now)."""
    body: dict[str, Any] = {
        "name": name,
        "selector": {"stream": stream, "modality": modality, "min_severity": min_severity},
        "delivery": {
            "webhook_url": webhook,
            "webhook_format": webhook_format,
            "apprise_urls": apprise or [],
            "sse": sse,
        },
    }
    if secret is not None:
        body["secret"] = secret
    created = call_api("POST", "/v1/subscriptions", api_url, body).json()
    typer.echo(json.dumps(created, indent=2))
    if "secret" in created:
        typer.echo("Keep the secret now: it is never shown again.", err=True)


@app.command("list")
def list_(api_url: ApiUrl = None) -> None:
    """List subscriptions (secrets are never shown)."""
    subscriptions = call_api("GET", "/v1/subscriptions", api_url).json()["subscriptions"]
    for s in subscriptions:
        selector, delivery = s["selector"], s["delivery"]
        webhook = delivery["webhook_url"] and f"{delivery['webhook_url']} ({delivery['webhook_format']})"
        channels = ", ".join(filter(None, [webhook, *delivery["apprise_urls"], "sse" if delivery["sse"] else None]))
        typer.echo(
            f"{s['id']}  {'on ' if s['enabled'] else 'off'}  {s['name']!r}  stream={selector['stream']}"
            f" modality={selector['modality'] or 'any'} min_severity={selector['min_severity']}  -> {channels}"
        )
    if not subscriptions:
        typer.echo("no subscriptions")


@app.command("remove")
def remove(
    subscription_id: Annotated[str, typer.Argument(help="The id that `list` shows.")], api_url: ApiUrl = None
) -> None:
    """Delete a subscription."""
    call_api("DELETE", f"/v1/subscriptions/{subscription_id}", api_url)
    typer.echo(f"removed {subscription_id}")
