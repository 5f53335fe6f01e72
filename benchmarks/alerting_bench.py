"""How fast alerting keeps up: AlertEngine.observe per score (memory vs durable sqlite state) and webhook delivery
to a local receiver at several concurrencies. Writes benchmarks/alerting.json and alerting.png.

    PYTHONPATH=. python benchmarks/alerting_bench.py
"""

from __future__ import annotations

import asyncio
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from core.contracts import Alert, DeadLetter, Score
from core.settings import AlertingSettings, DeliverySettings, Settings
from operators.alerting import AlertEngine, AlertStateStore, MemoryAlertStateStore, SqliteAlertStateStore
from operators.delivery import AlertDispatcher
from operators.notifications import transition_notification
from operators.outbound import OutboundPolicy
from operators.shared_state import SharedState
from operators.subscriptions import Delivery, SubscriptionSpec
from operators.webhook_receiver import WebhookReceiver
from triton_models.progress import progress_bar

RESULTS = Path(__file__).parent
STREAMS = 50
SCORES_PER_STREAM = 400
ALERTS = 400
CONCURRENCIES = (1, 4, 16)


def scores() -> list[Score]:
    """Every stream alternates calm and anomalous stretches, so the engine goes through all its phases."""
    out = []
    for t in range(SCORES_PER_STREAM):
        value = 1.6 if (t // 40) % 2 else 0.3
        for s in range(STREAMS):
            out.append(
                Score(
                    modality="sensor",
                    stream=f"pump-{s}",
                    event_time=float(t),
                    score=value,
                    threshold=1.0,
                    is_anomaly=value >= 1.0,
                    model="ts_diffusion",
                    model_version="1",
                    contributions={"Pressure": value, "Current": 0.1, "Temperature": 0.2},
                )
            )
    return out


def bench_engine(name: str, store: AlertStateStore, batch: list[Score]) -> dict[str, float]:
    engine = AlertEngine(AlertingSettings(for_s=5, resolve_for_s=5, cooldown_s=10), store)
    latencies = []
    alerts = 0
    for score in progress_bar(batch, desc=f"observe ({name})", mininterval=1.0):
        start = time.perf_counter()
        alerts += len(engine.observe(score))
        latencies.append(time.perf_counter() - start)
    total = sum(latencies)
    return {
        "scores": len(batch),
        "alerts": alerts,
        "scores_per_s": len(batch) / total,
        "p50_us": statistics.median(latencies) * 1e6,
        "p99_us": statistics.quantiles(latencies, n=100)[98] * 1e6,
    }


async def bench_delivery(concurrency: int, state_dir: Path) -> dict[str, float]:
    secret = "benchmark-secret-0123456789"
    receiver = WebhookReceiver(secret)
    url = await receiver.start()
    shared = SharedState.open(Settings(state_dir=state_dir / f"delivery-{concurrency}"))
    store, journal = shared.subscriptions, shared.journal
    store.create(SubscriptionSpec(name="bench", delivery=Delivery(webhook_url=url), secret=secret))

    async def no_dead_letters(letter: DeadLetter) -> None:
        raise AssertionError(letter.reason)

    dispatcher = AlertDispatcher(
        store,
        journal,
        settings=DeliverySettings(concurrency=concurrency),
        dead_letter=no_dead_letters,
        source_topic="bench",
        external_url="http://127.0.0.1:8088",
        outbound=OutboundPolicy(["127.0.0.1/32"]),  # the receiver listens on loopback
    )
    await dispatcher.start()
    # One alert per stream (a group of its own), so that per-group ordering does not serialise them.
    alerts = [
        Alert(
            alert_id=f"al-{i}",
            modality="sensor",
            stream=f"pump-{i}",
            state="firing",
            severity="warning",
            started_at=0.0,
            event_time=1.0,
            score=1.5,
            threshold=1.0,
            model="m",
        )
        for i in range(ALERTS)
    ]
    start = time.perf_counter()
    submit_s = []
    notifications = [transition_notification(alert) for alert in alerts]
    for notification in notifications:
        t0 = time.perf_counter()
        dispatcher.submit(notification)
        submit_s.append(time.perf_counter() - t0)
    await dispatcher.drain()
    elapsed = time.perf_counter() - start
    assert len(receiver.alerts) == ALERTS and receiver.counts.bad_signatures == 0
    await dispatcher.stop()
    await receiver.stop()
    shared.close()
    return {
        "concurrency": concurrency,
        "deliveries": ALERTS,
        "deliveries_per_s": ALERTS / elapsed,
        "submit_p50_us": statistics.median(submit_s) * 1e6,
        "submit_p99_us": statistics.quantiles(submit_s, n=100)[98] * 1e6,
    }


def main() -> None:
    batch = scores()
    with tempfile.TemporaryDirectory() as tmp:
        sqlite_store = SqliteAlertStateStore(Path(tmp) / "alerts.sqlite")
        engine = {
            "memory": bench_engine("memory", MemoryAlertStateStore(), batch),
            "sqlite": bench_engine("sqlite", sqlite_store, batch),
        }
        sqlite_store.close()
        delivery = [asyncio.run(bench_delivery(c, Path(tmp))) for c in progress_bar(CONCURRENCIES, desc="delivery")]
    results = {"machine": platform.platform(), "python": platform.python_version(), "engine": engine}
    results["delivery"] = delivery
    (RESULTS / "alerting.json").write_text(json.dumps(results, indent=2))

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    names = list(engine)
    left.bar(names, [engine[n]["scores_per_s"] for n in names], color=["#888", "#36c"])
    left.set_ylabel("scores / s (one core)")
    left.set_title("AlertEngine.observe, state kept in …")
    left.set_ylim(0, 1.15 * max(engine[n]["scores_per_s"] for n in names))
    for i, n in enumerate(names):
        left.annotate(f"p99 {engine[n]['p99_us']:.0f} µs", (i, engine[n]["scores_per_s"]), ha="center", va="bottom")
    right.bar([str(d["concurrency"]) for d in delivery], [d["deliveries_per_s"] for d in delivery], color="#c63")
    right.set_xlabel("delivery.concurrency")
    right.set_ylabel("signed webhooks / s to a local receiver")
    # The receiver shares the process and its event loop, so this is the CPU cost of a delivery, end to end.
    right.set_title("Webhooks (journalled, signed) to an in-process receiver", fontsize=10)
    fig.tight_layout()
    fig.savefig(RESULTS / "alerting.png", dpi=120)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
