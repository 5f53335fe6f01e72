"""End-to-end throughput and latency of the sensor pipeline on this machine's real local services.

Readings -> tansu -> ``diffsentry run`` (a separate worker process) -> Triton -> VictoriaMetrics, all on this host.

1. Capacity: a backlog of readings of many assets is produced first; the worker then drains it as fast as it can.
   Throughput = windows written per second while draining (worker start-up excluded).
2. Latency under load: readings are produced paced at 250 windows/s (half the 500 target), 500, and half the
   drain rate (``stride`` readings per window); the worker's histogram ``diffsentry_end_to_end_seconds`` (the
   producer's timestamp of the reading that completed a window -> the store's acknowledgement of its score) gives
   p50/p90/p99.

The model is the repository given by ``--models`` (default: the deterministic stand-in under tests/integration/models,
so this measures the pipeline, not a diffusion model). Writes benchmarks/results/e2e.json and e2e.png.

    PYTHONPATH=. python benchmarks/e2e.py [--assets 40] [--readings-per-asset 1000] [--latency-seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import matplotlib
import numpy as np
import yaml

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from aiokafka import AIOKafkaProducer
from tqdm import tqdm

from infra import stack as local_stack
from infra.state import running_stack_addresses
from operators.model_cards import card_path, load_ts_card
from pipeline.contracts import SensorReading
from pipeline.settings import ApiSettings, InfluxSettings, KafkaSettings, Settings, StreamSettings, TritonSettings
from pipeline.topics import create_declared_topics

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def parse_metrics(text: str) -> dict[str, float]:
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def histogram(metrics: dict[str, float], name: str, labels: str = "") -> list[tuple[float, float]]:
    """(upper bound, cumulative count) pairs of one histogram."""
    prefix = f"{name}_bucket{{"
    buckets = []
    for key, count in metrics.items():
        if key.startswith(prefix) and (not labels or labels in key):
            bound = key.split('le="')[1].split('"')[0]
            buckets.append((float("inf") if bound == "+Inf" else float(bound), count))
    return sorted(buckets)


def quantile(buckets: list[tuple[float, float]], q: float) -> float:
    """Prometheus-style quantile: linear interpolation inside the bucket holding the q-th observation."""
    total = buckets[-1][1]
    rank, lower, below = q * total, 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return lower
            return lower + (bound - lower) * ((rank - below) / max(count - below, 1e-9))
        lower, below = bound, count
    return lower


def diff(after: list[tuple[float, float]], before: list[tuple[float, float]]) -> list[tuple[float, float]]:
    earlier = dict(before)
    return [(bound, count - earlier.get(bound, 0.0)) for bound, count in after]


class WorkerProcess:
    def __init__(self, settings: Settings, work: Path) -> None:
        self.port = free_port()
        config = settings.model_dump(mode="json")
        config["stream"]["metrics_port"] = self.port
        self.config = work / "worker.yaml"
        self.config.write_text(yaml.safe_dump(config))
        self.log = work / "worker.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        env = {**os.environ, "DIFFSENTRY_CONFIG": str(self.config), "PYTHONPATH": str(ROOT)}
        with self.log.open("wb") as log:
            command = [sys.executable, "-m", "pipeline.cli", "run", "--log-level", "WARNING"]
            self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)

    async def metrics(self) -> dict[str, float]:
        async with httpx.AsyncClient(timeout=5) as client:
            response = await client.get(f"http://127.0.0.1:{self.port}/metrics")
        return parse_metrics(response.text)

    async def wait_ready(self) -> None:
        for _ in range(600):
            try:
                async with httpx.AsyncClient(timeout=1) as client:
                    if (await client.get(f"http://127.0.0.1:{self.port}/healthz")).status_code == 200:
                        return
            except httpx.HTTPError:
                pass
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(self.log.read_text()[-3000:])
            await asyncio.sleep(0.1)
        raise RuntimeError("worker not ready")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(60)


def scored(metrics: dict[str, float]) -> float:
    return sum(v for k, v in metrics.items() if k.startswith("diffsentry_scores_total{"))


def reading(asset: str, t: float, channels: tuple[str, ...], rng: np.random.Generator) -> bytes:
    """The JSON of a SensorReading, built without pydantic so that the load generator stays cheap."""
    values = dict(zip(channels, rng.normal(size=len(channels)).tolist(), strict=True))
    payload = {"asset": asset, "ts": t, "values": values, "version": 1, "schema": SensorReading.schema_name}
    return json.dumps(payload, separators=(",", ":")).encode()


async def produce_backlog(settings: Settings, channels: tuple[str, ...], assets: int, per_asset: int) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka.bootstrap_servers,
        linger_ms=20,
        max_batch_size=1 << 20,
        enable_idempotence=False,
    )
    await producer.start()
    rng = np.random.default_rng(0)
    try:
        pending = []
        for t in tqdm(range(per_asset), desc="backlog", unit="step"):
            for a in range(assets):
                asset = f"bench-{a}"
                pending.append(
                    await producer.send(
                        settings.topics.sensor_readings, reading(asset, 1e9 + t, channels, rng), key=asset.encode()
                    )
                )
            if len(pending) > 5000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


async def produce_paced(
    settings: Settings, channels: tuple[str, ...], assets: int, readings_per_s: float, seconds: float, t0: float
) -> int:
    """Round-robin over assets, each asset's event time advancing 1 s per reading, at ``readings_per_s``."""
    rng = np.random.default_rng(1)
    total = int(readings_per_s * seconds)
    payloads = [
        (f"paced-{i % assets}".encode(), reading(f"paced-{i % assets}", t0 + i // assets, channels, rng))
        for i in range(total)
    ]
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka.bootstrap_servers,
        linger_ms=1,
        max_batch_size=1 << 20,
        enable_idempotence=False,
    )
    await producer.start()
    start = time.monotonic()
    try:
        with tqdm(total=total, desc=f"paced {readings_per_s:.0f}/s", unit="reading") as progress:
            for sent, (key, payload) in enumerate(payloads):
                delay = start + sent / readings_per_s - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                await producer.send(settings.topics.sensor_readings, payload, key=key)
                if sent % 500 == 0:
                    progress.update(sent - progress.n)
        await producer.flush()
    finally:
        await producer.stop()
    return total


async def measure_latency(
    worker: WorkerProcess, settings: Settings, card, assets: int, windows_per_s: float, seconds: float, t0: float
) -> dict:
    """Produce paced at ``windows_per_s`` (x stride readings/s); the worker's end-to-end histogram over that run."""
    before = await worker.metrics()
    sent = await produce_paced(settings, card.channels, assets, windows_per_s * card.stride, seconds, t0)
    expected = scored(before) + assets * ((sent // assets - card.window) // card.stride + 1)
    for _ in range(240):
        after = await worker.metrics()
        if scored(after) >= expected:
            break
        await asyncio.sleep(0.25)
    latency = diff(
        histogram(after, "diffsentry_end_to_end_seconds", 'modality="sensor"'),
        histogram(before, "diffsentry_end_to_end_seconds", 'modality="sensor"'),
    )

    def mean_delta(name: str) -> float:
        def total(metrics: dict[str, float], suffix: str) -> float:
            return sum(v for k, v in metrics.items() if k.startswith(f"{name}_{suffix}"))

        count = total(after, "count") - total(before, "count")
        return (total(after, "sum") - total(before, "sum")) / max(count, 1)

    return {
        "target_windows_per_s": windows_per_s,
        "readings_sent": sent,
        "windows_scored": scored(after) - scored(before),
        "latency_p50_s": quantile(latency, 0.5),
        "latency_p90_s": quantile(latency, 0.9),
        "latency_p99_s": quantile(latency, 0.99),
        "latency_buckets": latency,
        "mean_triton_batch": mean_delta("diffsentry_batch_size"),
        "mean_triton_round_trip_s": mean_delta("diffsentry_triton_latency_seconds"),
        "mean_store_write_s": mean_delta("diffsentry_sink_write_seconds"),
        "load_average_1min_at_end": os.getloadavg()[0],
    }


async def main(args: argparse.Namespace) -> dict:
    models = Path(args.models).resolve()
    card = load_ts_card(card_path(models, "ts_diffusion"))
    work = Path(tempfile.mkdtemp(prefix="diffsentry-e2e-"))
    stack_settings = Settings(state_dir=work / "stack", model_repository=models)
    await asyncio.to_thread(local_stack.up, stack_settings)  # it runs its own event loop
    addresses = running_stack_addresses(stack_settings.state_dir)
    settings = Settings(
        kafka=KafkaSettings(bootstrap_servers=addresses["kafka"]["bootstrap_servers"], consumer_group="bench"),
        triton=TritonSettings(grpc_url=addresses["triton"]["grpc_url"]),
        influx=InfluxSettings(url=addresses["influx"]["url"]),
        stream=StreamSettings(session_timeout_ms=3000, max_batch=args.max_batch),
        model_repository=models,
        state_dir=work / "state",
        api=ApiSettings(port=0),
    )
    worker = WorkerProcess(settings, work)
    try:
        await create_declared_topics(settings)
        await produce_backlog(settings, card.channels, args.assets, args.readings_per_asset)
        per_asset = (args.readings_per_asset - card.window) // card.stride + 1
        expected = per_asset * args.assets
        worker.start()
        await worker.wait_ready()
        timeline: list[tuple[float, float]] = []
        started = time.monotonic()
        with tqdm(total=expected, desc="drain", unit="window") as progress:
            while True:
                count = scored(await worker.metrics())
                timeline.append((time.monotonic() - started, count))
                progress.update(int(count) - progress.n)
                if count >= expected or time.monotonic() - started > 600:
                    break
                await asyncio.sleep(0.25)
        moving = [(t, c) for t, c in timeline if 0 < c < expected]
        (t_first, c_first), (t_last, c_last) = moving[0], timeline[-1]
        capacity = (c_last - c_first) / max(t_last - t_first, 1e-9)
        drain_metrics = await worker.metrics()

        # Paced runs at half the 500 windows/s target, at the target, and at half the drain rate. The load generator
        # shares the 2 cores with the worker and the services, so paced rates are harsher than the drain.
        seconds, loads = args.latency_seconds, {}
        for name, rate in (("half_target", 250.0), ("target", 500.0), ("half_drain", capacity / 2)):
            loads[name] = await measure_latency(
                worker, settings, card, args.assets, rate, seconds, 2e9 + len(loads) * 1e8
            )
        batch = histogram(drain_metrics, "diffsentry_batch_size")
        batch_sum = sum(v for k, v in drain_metrics.items() if k.startswith("diffsentry_batch_size_sum"))
        batch_count = sum(v for k, v in drain_metrics.items() if k.startswith("diffsentry_batch_size_count"))
        result = {
            "machine": platform.platform(),
            "cpu_cores": os.cpu_count(),
            "python": platform.python_version(),
            "model_repository": str(models.relative_to(ROOT)) if models.is_relative_to(ROOT) else models.name,
            "model_card": {"window": card.window, "stride": card.stride, "channels": len(card.channels)},
            "assets": args.assets,
            "capacity": {
                "windows": expected,
                "readings": args.assets * args.readings_per_asset,
                "windows_per_s": capacity,
                "readings_per_s": capacity * card.stride,
                "mean_triton_batch": batch_sum / max(batch_count, 1),
                "batch_size_buckets": batch,
            },
            "paced": loads,
            "targets": {
                "windows_per_s": 500,
                "p99_s_at_half_load": 1.0,
                "half_load": "250 windows/s (half the target)",
            },
        }
        result["targets"]["met"] = capacity >= 500 and loads["half_target"]["latency_p99_s"] < 1.0
        plot(result, timeline)
        return result
    finally:
        worker.stop()
        await asyncio.to_thread(local_stack.down, stack_settings)


def plot(result: dict, timeline: list[tuple[float, float]]) -> None:
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    times, counts = zip(*timeline, strict=True)
    left.plot(times, counts)
    left.set_xlabel("seconds since the worker was ready")
    left.set_ylabel("windows scored and written")
    left.set_title(f"drain: {result['capacity']['windows_per_s']:.0f} windows/s")
    for label, run in result["paced"].items():
        buckets = run["latency_buckets"]
        total = buckets[-1][1] or 1
        finite = [(b, c / total) for b, c in buckets if b != float("inf")]
        right.step(
            [b for b, _ in finite],
            [f for _, f in finite],
            where="post",
            label=f"{label}: {run['target_windows_per_s']:.0f} w/s, p99 {run['latency_p99_s'] * 1000:.0f} ms",
        )
    right.axvline(1.0, color="red", linestyle="--", label="target p99 < 1 s")
    right.set_xscale("log")
    right.set_xlabel("produce -> written (s)")
    right.set_ylabel("fraction of windows (cumulative)")
    right.set_title("end-to-end latency")
    right.legend(fontsize=8)
    figure.tight_layout()
    RESULTS.mkdir(exist_ok=True)
    figure.savefig(RESULTS / "e2e.png", dpi=120)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=str(ROOT / "tests" / "integration" / "models"))
    parser.add_argument("--assets", type=int, default=40)
    parser.add_argument("--readings-per-asset", type=int, default=1000)
    parser.add_argument("--latency-seconds", type=float, default=20.0)
    parser.add_argument("--max-batch", type=int, default=64)
    outcome = asyncio.run(main(parser.parse_args()))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "e2e.json").write_text(json.dumps(outcome, indent=2, default=str))
    print(
        json.dumps({k: v for k, v in outcome.items() if k in ("capacity", "half_load", "targets")}, default=str)[:2000]
    )
