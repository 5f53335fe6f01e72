"""``diffsentry alerts|silences|maintenance ...``: the alert lifecycle through the REST API of ``diffsentry run``."""

from __future__ import annotations

import getpass
import re
import time
from datetime import datetime
from typing import Annotated, Any

import typer

from pipeline.api_client import ApiUrl, call_api

alerts_app = typer.Typer(no_args_is_help=True, help="List and acknowledge alerts.")
silences_app = typer.Typer(no_args_is_help=True, help="Silence alerts for a while (a silence always ends).")
maintenance_app = typer.Typer(no_args_is_help=True, help="Recurring maintenance windows that silence alerts.")

By = Annotated[str | None, typer.Option("--by", help="Who does it; default the login name.")]
Comment = Annotated[str, typer.Option(help="Why, for the people after you.")]
Stream = Annotated[str, typer.Option(help="Glob on the asset or camera id, e.g. 'pump-*'.")]
Modality = Annotated[str | None, typer.Option(help="sensor or video; default any.")]
SeverityOption = Annotated[str | None, typer.Option("--severity", help="warning or critical; default any.")]
Model = Annotated[str, typer.Option(help="Glob on the model name.")]

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """Seconds from ``90``, ``90s``, ``15m``, ``2h`` or ``1d``."""
    match = _DURATION.match(text.strip())
    if match is None or float(match.group(1)) <= 0:
        raise typer.BadParameter(f"expected a duration like 90s, 15m, 2h or 1d, got {text!r}")
    return float(match.group(1)) * _UNIT_S[match.group(2)]


def parse_time(text: str) -> float:
    """Seconds since the epoch from an ISO 8601 time (local time if it names no zone) or a number."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError as error:
        raise typer.BadParameter(f"expected an ISO 8601 time or seconds since the epoch, got {text!r}") from error


def _by(by: str | None) -> str:
    return by or getpass.getuser()


def _matchers(stream: str, modality: str | None, severity: str | None, model: str) -> dict[str, Any]:
    return {"stream": stream, "modality": modality, "severity": severity, "model": model}


def _when(epoch: float | None) -> str:
    return "-" if epoch is None else datetime.fromtimestamp(epoch).astimezone().isoformat(timespec="seconds")


@alerts_app.command("list")
def alerts_list(
    all_: Annotated[bool, typer.Option("--all", help="Resolved alerts too, not only firing ones.")] = False,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 100,
    api_url: ApiUrl = None,
) -> None:
    """Alerts, newest first, with what was done about them."""
    params = {"status": "all" if all_ else "active", "limit": str(limit)}
    alerts = call_api("GET", "/v1/alerts", api_url, params=params).json()["alerts"]
    for alert in alerts:
        ack = alert["acknowledgement"]
        detail = f"  acknowledged by {ack['by']} until {_when(ack['expires_at'])}" if ack else ""
        if alert["silenced_by"]:
            detail += f"  silenced by {', '.join(alert['silenced_by'])}"
        typer.echo(
            f"{alert['alert_id']}  {alert['status']:<12} {alert['severity']:<8} {alert['modality']}/{alert['stream']}"
            f"  since {_when(alert['started_at'])}{detail}"
        )
    if not alerts:
        typer.echo("no alerts")


@alerts_app.command("ack")
def alerts_ack(
    alert_id: Annotated[str, typer.Argument(help="The id that `alerts list` shows.")],
    by: By = None,
    comment: Comment = "",
    expires_in: Annotated[
        str | None, typer.Option(help="Notify again after this long (e.g. 30m) if it still fires.")
    ] = None,
    api_url: ApiUrl = None,
) -> None:
    """Acknowledge a firing alert: no escalation or repeat notifications while acknowledged; its resolve still is."""
    body = {"by": _by(by), "comment": comment, "expires_in_s": parse_duration(expires_in) if expires_in else None}
    view = call_api("POST", f"/v1/alerts/{alert_id}/ack", api_url, body).json()
    typer.echo(f"acknowledged {alert_id} until {_when(view['acknowledgement']['expires_at'])}")


@alerts_app.command("unack")
def alerts_unack(
    alert_id: Annotated[str, typer.Argument(help="The id that `alerts list` shows.")],
    by: By = None,
    api_url: ApiUrl = None,
) -> None:
    """Withdraw an acknowledgement."""
    call_api("DELETE", f"/v1/alerts/{alert_id}/ack", api_url, params={"by": _by(by)})
    typer.echo(f"unacknowledged {alert_id}")


@silences_app.command("list")
def silences_list(
    state: Annotated[str, typer.Option(help="active, pending, expired or all.")] = "all", api_url: ApiUrl = None
) -> None:
    """Silences with their matchers and state."""
    silences = call_api("GET", "/v1/silences", api_url, params={"state": state}).json()["silences"]
    for s in silences:
        m = s["matchers"]
        typer.echo(
            f"{s['id']}  {s['state']:<8} {_when(s['starts_at'])} .. {_when(s['ends_at'])}  stream={m['stream']}"
            f" modality={m['modality'] or 'any'} severity={m['severity'] or 'any'} model={m['model']}"
            f"  by {s['created_by']}: {s['comment']}"
        )
    if not silences:
        typer.echo("no silences")


@silences_app.command("add")
def silences_add(
    stream: Stream = "*",
    modality: Modality = None,
    severity: SeverityOption = None,
    model: Model = "*",
    duration: Annotated[str | None, typer.Option(help="How long from now (or --starts-at), e.g. 2h.")] = None,
    ends_at: Annotated[str | None, typer.Option(help="When it ends: ISO 8601 or seconds since the epoch.")] = None,
    starts_at: Annotated[str | None, typer.Option(help="When it starts; default now.")] = None,
    by: By = None,
    comment: Comment = "",
    api_url: ApiUrl = None,
) -> None:
    """Silence matching alerts: their transitions are recorded, not delivered. Needs --duration or --ends-at."""
    if (duration is None) == (ends_at is None):
        typer.echo("give one of --duration or --ends-at: a silence always ends", err=True)
        raise typer.Exit(2)
    start = parse_time(starts_at) if starts_at else None
    end = parse_time(ends_at) if ends_at else (start or time.time()) + parse_duration(duration or "")
    body = {
        "matchers": _matchers(stream, modality, severity, model),
        "starts_at": start,
        "ends_at": end,
        "created_by": _by(by),
        "comment": comment,
    }
    silence = call_api("POST", "/v1/silences", api_url, body).json()
    typer.echo(f"{silence['id']}  {silence['state']} until {_when(silence['ends_at'])}")


@silences_app.command("expire")
def silences_expire(
    silence_id: Annotated[str, typer.Argument(help="The id that `silences list` shows.")],
    by: By = None,
    api_url: ApiUrl = None,
) -> None:
    """End a silence now (it stays in the history)."""
    call_api("DELETE", f"/v1/silences/{silence_id}", api_url, params={"by": _by(by)})
    typer.echo(f"expired {silence_id}")


@maintenance_app.command("list")
def maintenance_list(api_url: ApiUrl = None) -> None:
    """Maintenance windows and their schedules."""
    windows = call_api("GET", "/v1/maintenance-windows", api_url).json()["maintenance_windows"]
    for w in windows:
        m = w["matchers"]
        days = ",".join(str(day) for day in w["weekdays"])
        typer.echo(
            f"{w['id']}  {w['name']!r}  weekdays={days} {w['start']}-{w['end']} {w['timezone']}"
            f"  stream={m['stream']} modality={m['modality'] or 'any'} severity={m['severity'] or 'any'}"
            f" model={m['model']}"
        )
    if not windows:
        typer.echo("no maintenance windows")


@maintenance_app.command("add")
def maintenance_add(
    name: Annotated[str, typer.Argument(help="A name for people, e.g. 'Sunday shutdown'.")],
    weekdays: Annotated[str, typer.Option(help="Comma-separated, Monday=0 .. Sunday=6, e.g. 5,6.")],
    start: Annotated[str, typer.Option(help="Local start time HH:MM.")],
    end: Annotated[str, typer.Option(help="Local end time HH:MM; at or before --start runs past midnight.")],
    timezone: Annotated[str, typer.Option(help="IANA time zone, e.g. Europe/Berlin.")] = "UTC",
    stream: Stream = "*",
    modality: Modality = None,
    severity: SeverityOption = None,
    model: Model = "*",
    by: By = None,
    comment: Comment = "",
    api_url: ApiUrl = None,
) -> None:
    """A recurring window during which matching alerts are silenced."""
    try:
        days = [int(day) for day in weekdays.split(",")]
    except ValueError as error:
        raise typer.BadParameter(f"expected weekdays like 5,6, got {weekdays!r}") from error
    body = {
        "name": name,
        "matchers": _matchers(stream, modality, severity, model),
        "weekdays": days,
        "start": start,
        "end": end,
        "timezone": timezone,
        "created_by": _by(by),
        "comment": comment,
    }
    window = call_api("POST", "/v1/maintenance-windows", api_url, body).json()
    typer.echo(f"{window['id']}  {window['name']!r}")


@maintenance_app.command("delete")
def maintenance_delete(
    window_id: Annotated[str, typer.Argument(help="The id that `maintenance list` shows.")],
    by: By = None,
    api_url: ApiUrl = None,
) -> None:
    """Delete a maintenance window."""
    call_api("DELETE", f"/v1/maintenance-windows/{window_id}", api_url, params={"by": _by(by)})
    typer.echo(f"deleted {window_id}")
