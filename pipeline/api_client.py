"""How the command line talks to the REST API of ``diffsentry run``: the bearer token from settings, errors as
one line on stderr and a non-zero exit."""

from __future__ import annotations

from typing import Annotated, Any

import httpx
import typer

from core.settings import get_settings

ApiUrl = Annotated[str | None, typer.Option(help="API base URL; default http://<api.host>:<api.port> from settings.")]


def call_api(
    method: str,
    path: str,
    api_url: str | None,
    body: dict[str, Any] | None = None,
    params: dict[str, str] | None = None,
) -> httpx.Response:
    settings = get_settings()
    base = api_url or f"http://{settings.api.host}:{settings.api.port}"
    try:
        response = httpx.request(
            method,
            base.rstrip("/") + path,
            json=body,
            params=params,
            headers={"Authorization": f"Bearer {settings.api.token}"},
        )
    except httpx.TransportError as error:
        typer.echo(f"cannot reach the API at {base} ({error}); is `diffsentry run` up?", err=True)
        raise typer.Exit(2) from error
    if response.is_error:
        try:
            answer = response.json()
            reason = "; ".join([answer["error"], *answer.get("reasons", [])])  # e.g. why a webhook URL is refused
        except (ValueError, KeyError, TypeError):
            reason = response.text
        typer.echo(f"{method} {path}: HTTP {response.status_code}: {reason}", err=True)
        raise typer.Exit(1)
    return response
