"""The cross-plant benchmark suite of the time-series detector: one command, every detector, every data set.

Sets (each one ``diffsentry evaluate ts`` run with the defaults: a fresh model trained on its train.csv files, both
diffusion modes, the level z-score and PCA baselines in the same run, thresholds from held-out normal rows only):

- ``skab``: SKAB in the leaderboard protocol (``diffsentry datasets skab``);
- ``skab_normal``: out-of-sample false alarms on normal data only: SKAB's anomaly-free run, the first half as
  train.csv, the second half as test.csv (all rows normal); only the alarm rate means something here;
- ``drift``, ``few_rows``, ``wide``, ``wide_few``, ``binary``: the mixture plants of
  ``benchmarks/synthetic_plant.py`` (slow drift between the training and test periods, 500 training rows, 60
  sensors, 52 sensors with 500 training rows, binary flags; stuck sensors and broken correlations in all of them);
- ``shapes``: the synthetic plant whose anomalies leave the level put (frequency, noise burst, stuck, amplitude);
- ``commands``: telemetry of the spacecraft kind, one analog sensor beside 24 rarely firing command flags (some of
  which never fire in training); the anomalies are on the analog sensor only.

For every set and detector: AUROC, AUPRC, VUS-PR, SKAB F1/FAR/MAR, plain and point-adjusted F1, events found, and
the alarm rate on clean normal rows (rows whose whole window is normal) beside the calibrated target (the risk per
window); "mean over sets" averages the labelled sets (``skab_normal`` has no anomalies).

    python benchmarks/ts_suite.py --skab ../shared/data/skab --out /tmp/suite
    # commits: benchmarks/ts_suite.json, benchmarks/ts_suite.png (copied from --out)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.synthetic_plant import write_plant  # noqa: E402
from triton_models.timeseries.data import read_table, write_table  # noqa: E402
from triton_models.timeseries.datasets import convert_skab  # noqa: E402
from triton_models.timeseries.detector import ModelConfig  # noqa: E402
from triton_models.timeseries.evaluation import evaluate_benchmark  # noqa: E402

SETS = ("few_rows", "skab_normal", "binary", "drift", "wide", "wide_few", "shapes", "commands", "skab")
NORMAL_ONLY = ("skab_normal",)
RISK = 1e-3
METRICS = ("auroc", "auprc", "vus_pr", "f1", "point_adjusted_f1", "event_f1", "clean_normal_alarm_rate")


def build(name: str, skab: Path, data: Path) -> Path:
    """Writes set ``name`` in the benchmark layout under ``data``; returns its folder."""
    bench = data / name
    if name == "skab":
        convert_skab(skab, bench)
    elif name == "skab_normal":
        table = read_table(skab / "anomaly-free" / "anomaly-free.csv")
        half = len(table.values) // 2
        folder = bench / "anomaly-free"
        write_table(folder / "train.csv", table.timestamps[:half], table.channels, table.values[:half])
        labels = np.zeros(len(table.values) - half, dtype=int)
        write_table(folder / "test.csv", table.timestamps[half:], table.channels, table.values[half:], labels)
    else:
        write_plant(name, bench)
    return bench


def detectors(results: dict) -> dict[str, dict]:
    """Pooled metrics per detector: the default mode first, then the other mode, then the baselines."""
    best = results["best"]["mode"]
    ordered = {f"{best} (default)": results["modes"][best]["pooled"]}
    ordered |= {mode: v["pooled"] for mode, v in results["modes"].items() if mode != best}
    ordered |= {name: v["pooled"] for name, v in results["threshold_variants"].items()}
    ordered |= {name: v["pooled"] for name, v in results["baselines"].items()}
    return ordered


def summarise(results: dict) -> dict[str, dict]:
    return {
        name: {
            **{key: pooled[key] for key in METRICS},
            "skab": pooled["skab"],
            "threshold": pooled["threshold"],
            "events": pooled["events"],
            "events_detected": pooled["events_detected"],
        }
        for name, pooled in detectors(results).items()
    }


def mean_over_sets(per_set: dict[str, dict]) -> dict[str, dict]:
    labelled = [s for name, s in per_set.items() if name not in NORMAL_ONLY]
    names = labelled[0]["detectors"]
    return {
        detector: {key: float(np.nanmean([s["detectors"][detector][key] for s in labelled])) for key in METRICS}
        for detector in names
    }


def plot(path: Path, suite: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = list(suite["sets"])
    labelled = [s for s in sets if s not in NORMAL_ONLY]
    names = list(suite["sets"][sets[0]]["detectors"])
    # a block-conformal variant ranks exactly as its mode (same scores, another threshold): bars of the alarm rate only
    ranked = [name for name in names if not name.endswith("_block_conformal")]
    fig, axes = plt.subplots(1, 3, figsize=(18, 5))
    for ax, key in zip(axes[:2], ("auprc", "vus_pr"), strict=True):
        width = 0.8 / len(ranked)
        for i, name in enumerate(ranked):
            values = [suite["sets"][s]["detectors"][name][key] for s in labelled]
            values.append(suite["mean_over_sets"][name][key])
            ax.bar(np.arange(len(labelled) + 1) + i * width, values, width, label=name, color=f"C{names.index(name)}")
        ax.set_xticks(np.arange(len(labelled) + 1) + 0.4 - width / 2, [*labelled, "mean"], fontsize=8)
        ax.set_ylim(0, 1)
        ax.set_title(key.upper().replace("_", "-"))
    width = 0.8 / len(names)
    ax = axes[2]
    for i, name in enumerate(names):
        rates = [max(suite["sets"][s]["detectors"][name]["clean_normal_alarm_rate"] or 0, 1e-5) for s in sets]
        ax.bar(np.arange(len(sets)) + i * width, rates, width, label=name, color=f"C{i}")
    ax.axhline(RISK, color="black", ls="--", lw=0.8)
    ax.axhspan(RISK / 2, 2 * RISK, color="tab:green", alpha=0.15)
    ax.set_yscale("log")
    ax.set_xticks(np.arange(len(sets)) + 0.4 - width / 2, sets, fontsize=8)
    ax.set_title("alarm rate on clean normal rows (dashed: target risk; green: within 2x)", fontsize=9)
    fig.legend(*axes[2].get_legend_handles_labels(), loc="lower center", ncol=5, fontsize=8)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--skab", type=Path, required=True, help="SKAB folder (valve1/, valve2/, other/, anomaly-free/)"
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for the data, per-set results and the suite")
    parser.add_argument("--sets", default=",".join(SETS))
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument(
        "--summarise-only", action="store_true", help="rebuild ts_suite.json/png from the per-set JSON in --out"
    )
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    suite: dict = {"command": "python benchmarks/ts_suite.py " + " ".join(sys.argv[1:]), "risk": RISK, "sets": {}}
    for name in args.sets.split(","):
        if not args.summarise_only:
            started = time.perf_counter()
            bench = build(name, args.skab, args.out / "data")
            results, _, _ = evaluate_benchmark(bench, ModelConfig(channels=[]), args.epochs, risk=RISK, progress=False)
            results["suite_seconds"] = time.perf_counter() - started
            (args.out / f"{name}.json").write_text(json.dumps(results, indent=1, default=float))
        results = json.loads((args.out / f"{name}.json").read_text())
        suite["sets"][name] = {
            "data": results["data"],
            "seconds": results.get("suite_seconds", results["seconds_total"]),
            "detectors": summarise(results),
        }
        default = suite["sets"][name]["detectors"][f"{results['best']['mode']} (default)"]
        print(f"{name}: default AUPRC {default['auprc']:.3f}, clean alarm rate {default['clean_normal_alarm_rate']}")
    suite["mean_over_sets"] = mean_over_sets(suite["sets"])
    (args.out / "ts_suite.json").write_text(json.dumps(suite, indent=1, default=float))
    plot(args.out / "ts_suite.png", suite)
    print(f"wrote {args.out / 'ts_suite.json'}, {args.out / 'ts_suite.png'}")


if __name__ == "__main__":
    main()
