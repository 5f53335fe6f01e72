"""The acceptance report of a generated benchmark (``diffsentry generate ts``): recall and detection delay per
anomaly type and size at the deployed threshold, for a plant engineer; ``acceptance.json`` + ``acceptance.png``.

Every number comes from ``evaluation.evaluate_model`` on the written benchmark, the function ``diffsentry evaluate
ts --model`` runs, so that command reproduces them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from triton_models.timeseries.data import BenchManifest, read_benchmark

REPORT_JSON = "acceptance.json"
REPORT_PNG = "acceptance.png"


def acceptance_report(results: dict, manifest: BenchManifest, model: str, source: str) -> dict:
    """The report of the model's default mode (``results["best"]``) from the results of ``evaluate_model``."""
    mode = results["best"]["mode"]
    scored = results["modes"][mode]
    pooled = scored["pooled"]
    return {
        "model": model,
        "data": source,
        "mode": mode,
        "threshold": pooled["threshold"],
        "alarm_rule": "SCORE > 1.0 on the window ending at each row (the deployed, label-free per-stream threshold)",
        "detection": "an anomaly is detected when an alarm falls from its first row until window - 1 rows after its "
        "last; delay = rows from its first row to that first alarm",
        "sizes_unit": "the channel's standard deviation on the training rows (stuck: the sensor holds its reading)",
        "anomaly_types": scored["anomaly_types"],
        "normal_alarm_rate": pooled["clean_normal_alarm_rate"],
        "normal_alarm_rate_rows": "rows whose whole window is normal (no anomaly in the row or the window - 1 "
        "before it); these are the rows held out from the denoiser, on which the thresholds were calibrated, so the "
        "rate is in-sample for the threshold, not an out-of-sample false-alarm rate",
        "target_risk": pooled["threshold"]["details"]["default_stream"]["risk"],
        "streams": sorted(set(manifest.streams.values())),
        "settings": manifest.settings,
        "reproduce": f"diffsentry evaluate ts <bench> --model {model} --out <results.json>: modes.{mode}.anomaly_types",
    }


def plot_acceptance(path: Path, report: dict, bench: Path, manifest: BenchManifest) -> None:
    """Recall and median delay per type and size (bars), and one example per type: the forced sensor's generated
    reading with the anomaly shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    types = report["anomaly_types"]
    sizes = sorted({size for per_size in types.values() for size in per_size}, key=_size_order)
    fig = plt.figure(figsize=(15, 7.5))
    recall_ax, delay_ax = fig.add_subplot(2, 2, 1), fig.add_subplot(2, 2, 2)
    width = 0.8 / len(sizes)
    for i, size in enumerate(sizes):
        positions = np.arange(len(types)) + i * width
        recall = [types[kind][size]["recall"] if size in types[kind] else np.nan for kind in types]
        delay = [(types[kind].get(size) or {}).get("median_delay_rows") for kind in types]
        label = "held" if size == "held" else f"{size} sd"
        recall_ax.bar(positions, recall, width, label=label)
        delay_ax.bar(positions, [np.nan if d is None else d for d in delay], width, label=label)
    for ax, title in ((recall_ax, "recall (share of anomalies alarmed)"), (delay_ax, "median detection delay (rows)")):
        ax.set_xticks(np.arange(len(types)) + 0.4 - width / 2, list(types), fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=7)
    recall_ax.set_ylim(0, 1.05)
    fig.suptitle(
        f"model {Path(report['model']).name}, generated anomalies in {Path(report['data']).name}: "
        f"{report['mode']} mode at the deployed threshold; alarms on normal rows "
        f"{100 * report['normal_alarm_rate']:.2f} % "
        f"(in-sample for the threshold; target {report['target_risk']}); sizes in training sd",
        fontsize=10,
    )
    _plot_examples(fig, bench, manifest, list(types))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _plot_examples(fig, bench: Path, manifest: BenchManifest, kinds: list[str]) -> None:
    series = {s.name: s for s in read_benchmark(bench)}
    for index, kind in enumerate(kinds):
        candidates = [a for a in manifest.anomalies if a.kind == kind]
        anomaly = candidates[len(candidates) // 2]
        test = series[anomaly.series].test
        channel = test.channels.index(anomaly.channel)
        lo, hi = max(0, anomaly.start - 60), min(len(test.values), anomaly.stop + 60)
        ax = fig.add_subplot(2, len(kinds), len(kinds) + 1 + index)
        ax.axvspan(anomaly.start, anomaly.stop - 1, color="tab:red", alpha=0.15)
        ax.plot(np.arange(lo, hi), test.values[lo:hi, channel], lw=0.8)
        ax.set_title(
            f"{kind} ({anomaly.size if anomaly.size is not None else 'held'}) on {anomaly.channel}", fontsize=8
        )
        ax.tick_params(labelsize=6)


def _size_order(size: str) -> float:
    return float("inf") if size == "held" else float(size)
