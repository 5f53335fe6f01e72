"""The demo's results and its closing summary: what was scored and stored per modality, the alerts the subscriber
received, what was stopped and kept, and (with ``--keep``) the console and where to query it all, each URL checked
to answer."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlencode

import httpx
import typer

from core.contracts import Alert
from core.settings import Settings
from operators.webhook_receiver import ReceiverCounts
from pipeline.prometheus_text import histogram, quantile, total
from pipeline.worker_process import WorkerProcess

MODALITIES = ("sensor", "video")


@dataclass
class Latency:
    """What the worker scored of one modality, and its produce-to-stored latency (``diffsentry_end_to_end_seconds``)."""

    scored: float = 0
    p50_s: float = float("nan")
    p99_s: float = float("nan")

    @classmethod
    def read(cls, metrics: dict[str, float], modality: str) -> Latency:
        label = f'modality="{modality}"'
        buckets = histogram(metrics, "diffsentry_end_to_end_seconds", label)
        scored = total(metrics, "diffsentry_scores_total", label)
        return cls(scored, quantile(buckets, 0.5), quantile(buckets, 0.99))


@dataclass
class Snapshot:
    messages: float = 0
    modalities: dict[str, Latency] = field(default_factory=lambda: {m: Latency() for m in MODALITIES})
    alerts: float = 0
    resolved: float = 0
    dead_letters: float = 0
    deliveries: dict[str, int] = field(default_factory=dict)

    @classmethod
    def read(cls, metrics: dict[str, float], deliveries: dict[str, int]) -> Snapshot:
        return cls(
            messages=total(metrics, "diffsentry_messages_total"),
            modalities={m: Latency.read(metrics, m) for m in MODALITIES},
            alerts=total(metrics, "diffsentry_alerts_total", 'state="firing"'),
            resolved=total(metrics, "diffsentry_alerts_total", 'state="resolved"'),
            dead_letters=total(metrics, "diffsentry_dead_letters_total"),
            deliveries=deliveries,
        )

    @property
    def scored(self) -> float:
        return sum(m.scored for m in self.modalities.values())

    def line(self) -> str:
        """The live summary: one short line."""
        d = self.deliveries
        per_modality = " | ".join(f"{name} {m.scored:.0f} p99 {m.p99_s:.2f} s" for name, m in self.modalities.items())
        return (
            f"{per_modality} | alerts {self.alerts:.0f} firing {self.resolved:.0f} resolved | webhooks "
            f"{d.get('delivered', 0)} delivered {d.get('pending', 0)} pending | dead letters {self.dead_letters:.0f}"
        )


@dataclass
class DemoRun:
    """What one replay produced; the worker may still run (``--keep``)."""

    run: str
    settings: Settings
    worker: WorkerProcess
    asset: str
    camera: str
    expected: dict[str, int]
    snapshot: Snapshot
    stored_windows: int
    last_event_ms: int | None
    alerts: list[Alert]
    receiver_counts: ReceiverCounts
    replay_seconds: float

    @property
    def delivered(self) -> bool:
        return any(a.state == "firing" for a in self.alerts) and self.receiver_counts.bad_signatures == 0


def console_url(api_url: str) -> str:
    """The operator's console, served by the worker's API (log in with the API token)."""
    return f"{api_url}/console/"


def console_login(token: str) -> str:
    return f"(log in with the API token {token})"


@dataclass(frozen=True)
class Link:
    """A URL the summary prints with ``note``; ``owner`` is what serves it (``stack`` or ``worker``); ``token``, when
    set, is sent as the bearer token."""

    label: str
    url: str
    owner: str
    token: str | None = None
    note: str = ""

    def check(self, timeout_s: float = 10.0) -> str:
        """``answers`` when a GET returns 2xx (after redirects: the console sends a browser without a session to
        its login page), else why not."""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            response = httpx.get(self.url, headers=headers, timeout=timeout_s, follow_redirects=True)
        except httpx.HTTPError as error:
            return f"NO ANSWER ({type(error).__name__})"
        return "answers" if response.is_success else f"NO ANSWER (HTTP {response.status_code})"


def links(run: DemoRun) -> list[Link]:
    """The console, then where the scores, the alerts, the API and the metrics are; the store's URLs as
    VictoriaMetrics takes them."""
    store, settings = run.settings.influx.url, run.settings
    sensor = f'sensor_scores_score{{asset="{run.asset}"}}'
    query = {"query": sensor} | ({"time": f"{run.last_event_ms / 1000:.3f}"} if run.last_event_ms else {})
    video, alerts = f'video_scores_score{{camera="{run.camera}"}}', '{__name__=~"alerts_.*"}'
    triton = settings.triton.http_url if "://" in settings.triton.http_url else f"http://{settings.triton.http_url}"
    return [
        Link("console", console_url(run.worker.api_url), "worker", note=console_login(settings.api.token)),
        Link("sensor scores", f"{store}/api/v1/export?match[]={quote(sensor)}", "stack"),
        Link("PromQL", f"{store}/api/v1/query?{urlencode(query)}", "stack"),
        Link("video scores", f"{store}/api/v1/export?match[]={quote(video)}", "stack"),
        Link("alerts", f"{store}/api/v1/export?match[]={quote(alerts)}", "stack"),
        Link("Triton", f"{triton}/v2/models/{settings.triton.ts_model}/ready", "stack"),
        Link("metrics", f"{run.worker.metrics_url}/metrics", "worker"),
        Link("API", f"{run.worker.api_url}/v1/deliveries", "worker", settings.api.token, "(bearer token)"),
    ]


def _event_time(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds))


def report(run: DemoRun, stack_kept: bool, stack_started: bool, keep: bool, state_dir: Path) -> bool:
    """The summary, at the end of the output; True when every printed URL answered."""
    s, settings = run.snapshot, run.settings
    flux = (
        f'from(bucket: "{settings.influx.bucket}") |> range(start: 0) |> filter(fn: (r) => '
        f'r._measurement == "sensor_scores" and r.asset == "{run.asset}" and r._field == "score")'
    )
    sensor, video = s.modalities["sensor"], s.modalities["video"]
    d = s.deliveries
    counts = run.receiver_counts
    typer.echo(f"\nSummary ({run.run}, replay and scoring {run.replay_seconds:.0f} s)")
    typer.echo(
        f"  sensor {run.asset}: {sensor.scored:.0f}/{run.expected['sensor']} windows scored, "
        f"{run.stored_windows} in the store; produce -> stored p50 {sensor.p50_s:.2f} s, p99 {sensor.p99_s:.2f} s"
    )
    typer.echo(
        f"  video {run.camera}: {video.scored:.0f}/{run.expected['video']} frames scored (sent at "
        f"{settings.video.fps:g} fps); produce -> stored p50 {video.p50_s:.2f} s, p99 {video.p99_s:.2f} s"
    )
    typer.echo(
        f"  alerts {s.alerts:.0f} firing, {s.resolved:.0f} resolved; webhooks {d.get('delivered', 0)} delivered, "
        f"{d.get('dead_lettered', 0)} dead-lettered; dead letters {s.dead_letters:.0f}"
    )
    typer.echo(
        f"  the subscriber received {len(run.alerts)} alerts in {counts.accepted} notifications, signatures verified "
        f"({counts.bad_signatures} bad, "
        f"{counts.duplicates} duplicates):"
    )
    for alert in run.alerts:
        where = ", ".join(alert.top_channels) if alert.top_channels else ""
        if alert.location is not None:
            where = f"at x {alert.location[0]:.2f}, y {alert.location[1]:.2f} of the frame"
        typer.echo(
            f"    {alert.state} {alert.severity} {alert.stream} at {_event_time(alert.event_time)} (event time): score "
            f"{alert.score:.2f}, threshold {alert.threshold:.2f}; {where}"
        )

    worker_kept = run.worker.running()
    stopped = [] if worker_kept else [f"the worker (pid {run.worker.pid})"]
    stopped.append("the webhook receiver" + (" (its subscription deleted)" if worker_kept else ""))
    if not stack_kept:
        stopped.append(f"the local stack (its data stays in {state_dir})")
    typer.echo(f"  stopped: {', '.join(stopped)}")
    kept = []
    if stack_kept:
        kept.append("the local stack" + ("" if stack_started else " (it ran before the demo)"))
    if worker_kept:
        kept.append(f"the worker and its console (pid {run.worker.pid}, log {run.worker.log})")
    all_answer = True
    if kept:
        down = "diffsentry stack down"
        if state_dir != Settings.model_fields["state_dir"].default.resolve():
            down = f"DIFFSENTRY_STATE_DIR={state_dir} {down}"
        typer.echo(f"  kept running: {', '.join(kept)}; `{down}` stops {'them' if len(kept) > 1 else 'it'}")
        for link in links(run):
            if (link.owner == "worker" and not worker_kept) or (link.owner == "stack" and not stack_kept):
                continue
            verdict = link.check()
            all_answer &= verdict == "answers"
            note = f" {link.note}" if link.note else ""
            typer.echo(f"    {link.label + ':':15}{link.url}{note}  {verdict}")
        if stack_kept:
            typer.echo(f"    on real InfluxDB (Flux): {flux}")
    if not keep:
        typer.echo(
            "  `diffsentry demo --keep` leaves the stack and the worker running, the console with them, and prints "
            "where to query the scores, the alerts, the API and the metrics"
        )
    return all_answer
