"""Triton-served ``ts_diffusion`` scoring vs in-process torch, per mode and batch size.

Needs a running tritonserver that serves the model repository (``diffsentry stack up``; the model loaded), e.g.::

    diffsentry train ts --data ../shared/data/skab/anomaly-free/anomaly-free.csv --out <repo>
    python benchmarks/ts_triton.py --model-repository <repo> --grpc-url 127.0.0.1:8001

Writes ``benchmarks/ts_triton.json`` and ``benchmarks/ts_triton.png``. Both sides use one torch thread (the Triton
instance's TORCH_NUM_THREADS); the Triton side sends ``--concurrency`` requests at a time so dynamic batching can
merge them. Also records the largest score difference between the two (must stay below 1e-4).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from triton_models.names import MODE, POOLED_STREAM, SCORE, STREAM, TS_MODES, WINDOW  # noqa: E402
from triton_models.timeseries.detector import TimeSeriesDetector  # noqa: E402
from triton_models.timeseries.repository import MODEL_NAME  # noqa: E402


def _inputs(grpcclient, windows: np.ndarray, mode: str) -> list:
    inputs = [
        grpcclient.InferInput(WINDOW, list(windows.shape), "FP32"),
        grpcclient.InferInput(STREAM, [len(windows), 1], "BYTES"),
        grpcclient.InferInput(MODE, [len(windows), 1], "BYTES"),
    ]
    inputs[0].set_data_from_numpy(windows)
    inputs[1].set_data_from_numpy(np.array([POOLED_STREAM] * len(windows), dtype=object).reshape(-1, 1))
    inputs[2].set_data_from_numpy(np.array([mode] * len(windows), dtype=object).reshape(-1, 1))
    return inputs


async def _triton(url: str, batches: list[np.ndarray], mode: str, concurrency: int) -> tuple[float, list[np.ndarray]]:
    import tritonclient.grpc.aio as grpcclient

    client = grpcclient.InferenceServerClient(url)
    semaphore = asyncio.Semaphore(concurrency)

    async def one(windows: np.ndarray) -> np.ndarray:
        async with semaphore:
            result = await client.infer(MODEL_NAME, _inputs(grpcclient, windows, mode))
            return result.as_numpy(SCORE)[:, 0]

    try:
        await one(batches[0])  # warm-up
        started = time.perf_counter()
        scores = await asyncio.gather(*(one(b) for b in batches))
        return time.perf_counter() - started, scores
    finally:
        await client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-repository", type=Path, required=True)
    parser.add_argument("--grpc-url", default="127.0.0.1:8001")
    parser.add_argument("--batch-sizes", default="1,8,64")
    parser.add_argument("--windows", type=int, default=256, help="windows scored per mode and batch size")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "ts_triton.json")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    detector = TimeSeriesDetector.load(args.model_repository / MODEL_NAME / "1", device="cpu")
    length, channels = detector.config.window, len(detector.config.channels)
    windows = np.random.default_rng(0).normal(size=(args.windows, length, channels)).astype(np.float32)
    center, scale = detector.normalizer.params(POOLED_STREAM)
    windows = (windows * scale + center).astype(np.float32)  # plausible raw values
    results: dict = {"windows": args.windows, "window": length, "channels": channels, "runs": []}
    for mode in TS_MODES:
        for batch in (int(b) for b in args.batch_sizes.split(",")):
            batches = [windows[i : i + batch] for i in range(0, len(windows), batch)]
            started = time.perf_counter()
            local = [detector.score(b, [POOLED_STREAM] * len(b), [mode] * len(b))[SCORE] for b in batches]
            local_seconds = time.perf_counter() - started
            remote_seconds, remote = asyncio.run(_triton(args.grpc_url, batches, mode, args.concurrency))
            difference = float(np.max(np.abs(np.concatenate(local) - np.concatenate(remote))))
            run = {
                "mode": mode,
                "batch_size": batch,
                "in_process_windows_per_s": len(windows) / local_seconds,
                "triton_windows_per_s": len(windows) / remote_seconds,
                "max_abs_score_difference": difference,
            }
            results["runs"].append(run)
            print(json.dumps(run))
    args.out.write_text(json.dumps(results, indent=1))
    plot(results, args.out.with_suffix(".png"))


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(TS_MODES), figsize=(10, 3.5))
    for ax, mode in zip(axes, TS_MODES, strict=True):
        runs = [r for r in results["runs"] if r["mode"] == mode]
        positions = np.arange(len(runs))
        ax.bar(positions - 0.2, [r["in_process_windows_per_s"] for r in runs], 0.4, label="in-process torch")
        ax.bar(positions + 0.2, [r["triton_windows_per_s"] for r in runs], 0.4, label="Triton (grpc, dyn. batching)")
        ax.set_xticks(positions, [str(r["batch_size"]) for r in runs])
        ax.set_xlabel("windows per request")
        ax.set_ylabel("windows / s")
        ax.set_title(f"{mode} (1 torch thread, CPU)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    main()
