"""Scoring throughput against the number of scoring worker processes and Triton replicas, on this machine.

Each run: W ``diffsentry run`` processes (``pipeline.worker_process``, exactly as deployed) in one consumer group
over a readings topic of 6 partitions (so 1, 2 and 3 workers get equal shares), scoring on T tritonservers
(``triton.grpc_urls``: the local stack's and, for T = 2, a second one on other ports, ``start_triton_replica``)
that serve the demo's small trained ``ts_diffusion`` (SKAB, window 32, stride 1, 1 instance per server). The
backlog (12 streams, 2 per partition) is produced before the workers start; throughput = windows written to the
store per second (the workers' ``diffsentry_scores_total``) from the moment every worker consumes until the backlog
is drained. CPU seconds per process group over that interval show where the cores go.

The workers run ``--role scoring`` (no alerting in them: that is the alerting tier's job).

    PYTHONPATH=. nice -n 10 python benchmarks/scaling.py   # writes benchmarks/scaling.json and benchmarks/scaling.png
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from aiokafka.partitioner import DefaultPartitioner

from benchmarks.e2e import produce_backlog
from core.settings import (
    ApiSettings,
    InfluxSettings,
    KafkaSettings,
    SensorSettings,
    Settings,
    StreamSettings,
    TopicSettings,
    TritonSettings,
)
from core.stack_state import KAFKA, TRITON, VICTORIA_METRICS, StackState
from infra import stack as local_stack
from infra.kafka import create_declared_topics
from infra.services import grpc_url, start_triton_replica, stop_service
from operators.model_cards import card_path, load_ts_card
from pipeline.demo_models import DemoModels, train_ts
from pipeline.prometheus_text import total
from pipeline.worker_process import WorkerProcess
from triton_models.progress import write as progress_write

RESULTS = Path(__file__).parent
PARTITIONS = 6
STREAMS_PER_PARTITION = 2
TICKS = os.sysconf("SC_CLK_TCK")


def balanced_streams(partitions: int, per_partition: int) -> list[str]:
    """Asset ids whose keys the producer's default partitioner spreads evenly: ``per_partition`` on each."""
    partitioner, counts, streams = DefaultPartitioner(), Counter(), []
    index = 0
    while len(streams) < partitions * per_partition:
        name = f"bench-{index}"
        partition = partitioner(name.encode(), list(range(partitions)), list(range(partitions)))
        if counts[partition] < per_partition:
            counts[partition] += 1
            streams.append(name)
        index += 1
    return streams


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and of its children that it has waited for."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return sum(int(value) for value in fields[11:15]) / TICKS  # utime, stime, cutime, cstime


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (Triton's python backend stubs are its children)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (FileNotFoundError, ProcessLookupError, IndexError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, every process of every user included."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return (sum(values) - idle) / TICKS, sum(values) / TICKS


def group_cpu(groups: dict[str, list[int]]) -> dict[str, float]:
    return {name: sum(cpu_seconds(pid) for root in pids for pid in descendants(root)) for name, pids in groups.items()}


def run_settings(stack: dict, models: Path, work: Path, run: str, triton_urls: list[str]) -> Settings:
    topics = TopicSettings().suffixed(run, partitions=PARTITIONS)
    return Settings(
        kafka=KafkaSettings(bootstrap_servers=stack["kafka"], consumer_group=f"scaling-{run}"),
        topics=topics,
        triton=TritonSettings(grpc_urls=triton_urls),
        influx=InfluxSettings(url=stack["store"]),
        sensors=SensorSettings(assets=["*"]),
        stream=StreamSettings(metrics_port=0, session_timeout_ms=3000),
        model_repository=models,
        state_dir=work / f"state-{run}",
        api=ApiSettings(port=0, allow_dev_token=True),
    )


async def scored(workers: list[WorkerProcess]) -> float:
    counts = await asyncio.gather(*(w.metrics() for w in workers))
    return sum(total(m, "diffsentry_scores_total", 'modality="sensor"') for m in counts)


async def one_run(
    stack: dict, models: Path, work: Path, card, workers: int, triton_pids: list[int], urls: list[str], windows: int
) -> dict:
    run = f"w{workers}-t{len(urls)}-{uuid.uuid4().hex[:6]}"
    settings = run_settings(stack, models, work, run, urls)
    streams = balanced_streams(PARTITIONS, STREAMS_PER_PARTITION)
    per_stream = windows // len(streams) + card.window - 1
    expected = len(streams) * ((per_stream - card.window) // card.stride + 1)
    await create_declared_topics(settings)
    await produce_backlog(settings, card.channels, streams, per_stream)
    (work / run).mkdir()
    processes = [
        WorkerProcess(settings.model_copy(update={"state_dir": work / run / f"worker-{i}"}), work / run, role="scoring")
        for i in range(workers)
    ]
    try:
        for process in processes:
            process.start()
        await asyncio.gather(*(p.wait_ready(180) for p in processes))
        groups = {
            "scoring workers": [p.pid for p in processes if p.pid],
            "triton (servers and model stubs)": triton_pids,
            "broker (tansu)": [stack["pids"][KAFKA]],
            "store (VictoriaMetrics)": [stack["pids"][VICTORIA_METRICS]],
        }
        cpu_before, machine_before, started = group_cpu(groups), machine_busy(), time.monotonic()
        count_before = await scored(processes)
        count = count_before
        while count < expected and time.monotonic() - started < 600:
            await asyncio.sleep(0.5)
            count = await scored(processes)
        seconds = time.monotonic() - started
        cpu_after, machine_after = group_cpu(groups), machine_busy()
        per_worker = [total(await p.metrics(), "diffsentry_scores_total", 'modality="sensor"') for p in processes]
    finally:
        for process in processes:
            process.stop()
    busy = (machine_after[0] - machine_before[0]) / max(machine_after[1] - machine_before[1], 1e-9)
    result = {
        "scoring_workers": workers,
        "triton_servers": len(urls),
        "windows": expected,
        "windows_measured": count - count_before,
        "drained": count >= expected,
        "seconds": seconds,
        "windows_per_s": (count - count_before) / max(seconds, 1e-9),
        "windows_per_worker": per_worker,
        "cores_used": {name: (cpu_after[name] - cpu_before[name]) / seconds for name in groups},
        "machine_busy_fraction": busy,  # of all cores, every process on the machine (other users' too)
        "load_average_1min": os.getloadavg()[0],
    }
    progress_write(f"scaling run {json.dumps(result)}")
    return result


async def main(args: argparse.Namespace) -> dict:
    work = Path(tempfile.mkdtemp(prefix="diffsentry-scaling-"))
    models = work / "models"
    # One instance per server (not the default 2): T replicas are then T cores of Triton.
    base = Settings(state_dir=work / "train", model_repository=models, triton=TritonSettings(instance_count=1))
    trained_at = time.perf_counter()
    await asyncio.to_thread(train_ts, base, DemoModels())
    train_seconds = time.perf_counter() - trained_at
    card = load_ts_card(card_path(models, "ts_diffusion"))
    stack_settings = Settings(state_dir=work / "stack", model_repository=models)
    await asyncio.to_thread(local_stack.up, stack_settings)
    replica = None
    try:
        services = StackState.load(stack_settings.state_dir).services
        stack = {
            "kafka": services[KAFKA].url,
            "store": services[VICTORIA_METRICS].url,
            "pids": {name: record.pid for name, record in services.items()},
        }
        first = f"127.0.0.1:{services[TRITON].ports['grpc']}"
        replica = await asyncio.to_thread(start_triton_replica, models, work / "triton-2")
        runs = []
        for tritons in (1, 2):
            urls = [first, grpc_url(replica)][:tritons]
            pids = [services[TRITON].pid, replica.pid][:tritons]
            for workers in (1, 2, 3):
                runs.append(await one_run(stack, models, work, card, workers, pids, urls, args.windows))
    finally:
        if replica is not None:
            stop_service(replica, 20.0)
        await asyncio.to_thread(local_stack.down, stack_settings)
    return {
        "command": "PYTHONPATH=. nice -n 10 python benchmarks/scaling.py",
        "workers_role": "scoring",
        "machine": platform.platform(),
        "cpu_cores": os.cpu_count(),
        "python": platform.python_version(),
        "model": {
            "name": "ts_diffusion (the demo's, trained for this run)",
            "train_seconds": train_seconds,
            "window": card.window,
            "stride": card.stride,
            "channels": len(card.channels),
            "mode": card.default_mode,
            "triton": "python backend, KIND_CPU, 1 instance per server (triton.instance_count), 1 torch thread",
        },
        "topic_partitions": PARTITIONS,
        "streams": PARTITIONS * STREAMS_PER_PARTITION,
        "stream_settings": {
            "max_batch": StreamSettings().max_batch,
            "max_concurrency": StreamSettings().max_concurrency,
        },
        "runs": runs,
    }


def plot(result: dict) -> None:
    figure, (throughput, cores) = plt.subplots(1, 2, figsize=(12, 4.5))
    runs = result["runs"]
    for tritons, marker in ((1, "o-"), (2, "s-")):
        mine = [r for r in runs if r["triton_servers"] == tritons]
        throughput.plot(
            [r["scoring_workers"] for r in mine],
            [r["windows_per_s"] for r in mine],
            marker,
            label=f"{tritons} Triton server{'s' if tritons > 1 else ''}",
        )
    throughput.set_xticks([1, 2, 3])
    throughput.set_ylim(bottom=0)
    throughput.set_xlabel("scoring worker processes (one consumer group, 6 partitions)")
    throughput.set_ylabel("windows scored and stored per second")
    throughput.set_title("throughput (trained ts_diffusion, 12 streams)")
    throughput.legend()
    labels = [f"{r['scoring_workers']}w/{r['triton_servers']}t" for r in runs]
    bottom = [0.0] * len(runs)
    for group in runs[0]["cores_used"]:
        values = [r["cores_used"][group] for r in runs]
        cores.bar(labels, values, bottom=bottom, label=group)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    cores.plot(labels, [r["machine_busy_fraction"] * result["cpu_cores"] for r in runs], "k_", ms=30, mew=2,
               label="whole machine busy (all users)")  # fmt: skip
    cores.axhline(result["cpu_cores"], color="red", linestyle="--", label=f"{result['cpu_cores']} cores")
    cores.set_xlabel("workers / Triton servers")
    cores.set_ylabel("cores used during the drain")
    cores.set_ylim(0, result["cpu_cores"] * 1.45)
    cores.set_title("where the CPU goes")
    cores.legend(fontsize=7, loc="upper left", ncol=2)
    figure.suptitle(f"DiffSentry scaling on {result['cpu_cores']} CPU cores; workers: --role {result['workers_role']}")
    figure.tight_layout()
    figure.savefig(RESULTS / "scaling.png", dpi=110)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=12000, help="backlog per run")
    outcome = asyncio.run(main(parser.parse_args()))
    (RESULTS / "scaling.json").write_text(json.dumps(outcome, indent=2))
    plot(outcome)
    print(
        json.dumps([{k: r[k] for k in ("scoring_workers", "triton_servers", "windows_per_s")} for r in outcome["runs"]])
    )
