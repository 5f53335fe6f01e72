"""SKAB benchmark of the time-series diffusion detector: ``python benchmarks/ts_skab.py`` (from the repo root).

Converts ``../shared/data/skab`` to the benchmark layout (first 400 rows of each labelled file train, rest test),
runs ``diffsentry evaluate ts`` with its defaults, and writes ``benchmarks/ts_skab.json`` and
``benchmarks/ts_skab.png`` (pooled metrics of both modes and both baselines, and every test series' score).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from triton_models.timeseries.datasets import convert_skab  # noqa: E402
from triton_models.timeseries.detector import ModelConfig  # noqa: E402
from triton_models.timeseries.evaluation import evaluate_benchmark  # noqa: E402

SKAB = ROOT.parent / "shared" / "data" / "skab"


def main() -> None:
    if not SKAB.is_dir():
        sys.exit(f"SKAB not found at {SKAB} (expected ../shared/data/skab relative to the repository root)")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        bench = Path(tmp) / "skab"
        convert_skab(SKAB, bench)
        results, _, _ = evaluate_benchmark(bench, ModelConfig(channels=[]), epochs=30, keep_scores=True)
    results["wall_seconds"] = time.perf_counter() - started
    results["command"] = "python benchmarks/ts_skab.py"
    scores = results.pop("scores")
    (ROOT / "benchmarks" / "ts_skab.json").write_text(json.dumps(results, indent=1, default=float))
    plot(results, scores, ROOT / "benchmarks" / "ts_skab.png")
    best = results["best"]
    print(f"{best['mode']}: F1 {best['skab']['f1']:.3f} FAR {best['skab']['far']:.2f} MAR {best['skab']['mar']:.2f}")


def plot(results: dict, scores: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    detectors = {
        **{m: v["pooled"] for m, v in results["modes"].items()},
        **{b: v["pooled"] for b, v in results["baselines"].items()},
    }
    series = list(scores["labels"])
    rows = 2 + -(-len(series) // 4)
    fig = plt.figure(figsize=(16, 2.2 * rows))
    ax = fig.add_subplot(rows, 1, 1)
    keys = ["f1", "auroc", "auprc", "vus_pr", "event_f1"]
    width = 0.8 / len(detectors)
    for i, (name, pooled) in enumerate(detectors.items()):
        values = [pooled["skab"]["f1"] if k == "f1" else pooled[k] for k in keys]
        ax.bar(np.arange(len(keys)) + i * width, values, width, label=name)
    ax.set_xticks(np.arange(len(keys)) + 0.4 - width / 2, ["SKAB F1", "AUROC", "AUPRC", "VUS-PR", "event F1"])
    ax.set_ylim(0, 1)
    ax.legend(ncol=len(detectors), fontsize=8)
    best = results["best"]
    ax.set_title(
        f"SKAB (pooled over {len(series)} test parts); best mode {best['mode']}: F1 {best['skab']['f1']:.3f}, "
        f"FAR {best['skab']['far']:.1f} %, MAR {best['skab']['mar']:.1f} %, label-free POT threshold"
    )
    mode = best["mode"]
    threshold = best["threshold"]["value"]
    for index, name in enumerate(series):
        ax = fig.add_subplot(rows, 4, 9 + index)
        values, labels = scores[mode][name], scores["labels"][name]
        top = max(float(np.max(values)), threshold) * 1.05
        ax.fill_between(np.arange(len(values)), 0, labels * top, color="tab:red", alpha=0.15, step="mid")
        ax.plot(values, lw=0.6)
        ax.axhline(threshold, color="black", ls="--", lw=0.6)
        ax.set_ylim(0, top)
        ax.set_title(name, fontsize=8)
        ax.tick_params(labelsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=70)
    plt.close(fig)


if __name__ == "__main__":
    main()
