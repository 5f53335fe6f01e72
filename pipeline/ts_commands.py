"""``diffsentry train ts``, ``evaluate ts`` and ``datasets skab``: thin CLI over ``triton_models.timeseries``
(heavy imports inside the commands keep ``diffsentry --help`` fast)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from core.settings import get_settings

if TYPE_CHECKING:
    from triton_models.timeseries.detector import ModelConfig, TimeSeriesDetector

Threads = Annotated[
    int, typer.Option(help="torch CPU threads; 1 is fastest on a shared 2-core box, 0 = torch default (all cores)")
]
Channels = Annotated[str | None, typer.Option(help="comma-separated channel columns (default: all)")]
Risk = Annotated[float, typer.Option(help="target false-alarm risk q of the POT threshold")]
MaskKind = Annotated[str, typer.Option(help="imputation masks: time | channel | both")]
ReconstructionStart = Annotated[float, typer.Option(help="reconstruction t0 / T")]


def _set_threads(threads: int) -> None:
    import torch

    if threads > 0:
        torch.set_num_threads(threads)


def _model_config(window: int, seed: int, reconstruction_start: float, mask_kind: str) -> ModelConfig:
    from triton_models.timeseries.detector import ModelConfig
    from triton_models.timeseries.scoring import ScoringConfig

    scoring = ScoringConfig(mask_kind=mask_kind, reconstruction_start=reconstruction_start)
    return ModelConfig(channels=[], window=window, seed=seed, scoring=scoring)


def train(
    data: Annotated[Path, typer.Option(help="csv file, folder of csv files, or benchmark folder")],
    out: Annotated[Path, typer.Option(help="Triton model repository to write ts_diffusion/ into")],
    channels: Channels = None,
    window: int = 32,
    epochs: int = 30,
    seed: int = 0,
    risk: Risk = 1e-3,
    mask_kind: MaskKind = "time",
    reconstruction_start: ReconstructionStart = 0.4,
    threads: Threads = 1,
) -> None:
    """Train the time-series diffusion detector on normal data and write it as a Triton model."""
    from triton_models.timeseries.data import training_tables
    from triton_models.timeseries.evaluation import plot_losses
    from triton_models.timeseries.repository import write_model_repository
    from triton_models.timeseries.training import fit_detector

    _set_threads(threads)
    tables = training_tables(data, channels.split(",") if channels else None)
    first = next(iter(tables.values()))
    config = _model_config(window, seed, reconstruction_start, mask_kind)
    config.channels = first.channels
    started = time.perf_counter()
    detector, report = fit_detector({name: t.values for name, t in tables.items()}, config, epochs, risk=risk)
    seconds = time.perf_counter() - started
    instances = get_settings().triton.instance_count
    directory = write_model_repository(detector, report, out, data.name, seconds, instances=instances)
    plot_losses(directory / "loss.png", report.losses)
    typer.echo(f"wrote {directory} (loss curve {directory / 'loss.png'})")


def evaluate(
    bench: Annotated[Path, typer.Argument(help="benchmark folder: <series>/train.csv [+ test.csv]")],
    out: Annotated[Path, typer.Option(help="results JSON")],
    plots: Annotated[Path | None, typer.Option(help="folder for score-vs-label PNGs")] = None,
    summary_png: Annotated[Path | None, typer.Option(help="one overview PNG (metrics + every series)")] = None,
    channels: Channels = None,
    window: int = 32,
    epochs: int = 30,
    seed: int = 0,
    risk: Risk = 1e-3,
    mask_kind: MaskKind = "time",
    reconstruction_start: ReconstructionStart = 0.4,
    model_out: Annotated[Path | None, typer.Option(help="also write the trained model repository here")] = None,
    model: Annotated[
        Path | None,
        typer.Option(help="score with this trained model repository instead of training one (training options unused)"),
    ] = None,
    threads: Threads = 1,
) -> None:
    """Train on every train.csv (or take --model), score every test.csv causally, report metrics against baselines;
    a generated benchmark (``generate ts``) also gets recall and delay per anomaly type and size."""
    from triton_models.timeseries.evaluation import evaluate_benchmark, evaluate_model, skab_headline
    from triton_models.timeseries.repository import write_model_repository

    _set_threads(threads)
    started = time.perf_counter()
    if model is not None:
        results = evaluate_model(bench, _load_detector(model), risk=risk, plots=plots, summary_png=summary_png)
    else:
        config = _model_config(window, seed, reconstruction_start, mask_kind)
        results, detector, report = evaluate_benchmark(
            bench,
            config,
            epochs,
            risk=risk,
            channels=channels.split(",") if channels else None,
            plots=plots,
            summary_png=summary_png,
        )
        if model_out is not None:
            seconds = results["training"]["seconds"]
            instances = get_settings().triton.instance_count
            write_model_repository(
                detector, report, model_out, bench.name, seconds, evaluation=results["best"], instances=instances
            )
    results["wall_seconds"] = time.perf_counter() - started
    results["command"] = "diffsentry evaluate ts " + " ".join(sys.argv[3:])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1, default=float))
    best = results["best"]
    typer.echo(
        f"best mode {best['mode']}: {skab_headline(best)}; AUPRC {best['auprc']:.3f} VUS-PR {best['vus_pr']:.3f}; "
        f"PCA AUPRC {results['baselines']['pca']['pooled']['auprc']:.3f}; wrote {out}"
    )


def _load_detector(repository: Path) -> TimeSeriesDetector:
    from triton_models.timeseries.detector import TimeSeriesDetector
    from triton_models.timeseries.repository import MODEL_NAME

    return TimeSeriesDetector.load(repository / MODEL_NAME / "1", device="cpu")


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(part) for part in text.split(",") if part)


def generate(
    model: Annotated[Path, typer.Option(help="trained model repository (holds ts_diffusion/)")],
    data: Annotated[Path, typer.Option(help="the plant's normal data: csv file, folder of csv files, or benchmark")],
    out: Annotated[Path, typer.Option(help="benchmark folder to write (+ acceptance.json, acceptance.png)")],
    kinds: Annotated[
        str, typer.Option(help="anomaly types: spike,level_shift,drift,stuck,noise,correlation")
    ] = "spike,level_shift,drift,stuck,noise,correlation",
    sizes: Annotated[str, typer.Option(help="sizes in training standard deviations of the channel")] = "2,4,8",
    duration: Annotated[int, typer.Option(help="rows of every anomaly but spikes")] = 60,
    spike_rows: int = 1,
    gap: Annotated[int, typer.Option(help="normal rows between anomalies; 0 = twice the model window")] = 0,
    seed: int = 0,
    threads: Threads = 1,
) -> None:
    """Inpaint labelled anomalies into the held-out normal rows of the plant, write them as a benchmark, and score
    it with the model at its deployed threshold: the acceptance report (recall and delay per type and size)."""
    from triton_models.timeseries.acceptance import REPORT_JSON, REPORT_PNG, acceptance_report, plot_acceptance
    from triton_models.timeseries.data import training_tables
    from triton_models.timeseries.evaluation import evaluate_model
    from triton_models.timeseries.generation import GenerationSettings, generate_benchmark

    _set_threads(threads)
    detector = _load_detector(model)
    tables = training_tables(data, detector.config.channels)
    settings = GenerationSettings(
        kinds=tuple(kinds.split(",")),
        sizes=_floats(sizes),
        duration=duration,
        spike_rows=spike_rows,
        gap=gap,
        seed=seed,
    )
    manifest = generate_benchmark(detector, tables, out, settings)
    results = evaluate_model(out, detector, modes=(detector.default_mode,))
    report = acceptance_report(results, manifest, str(model), str(data))
    (out / REPORT_JSON).write_text(json.dumps(report, indent=1, default=float))
    plot_acceptance(out / REPORT_PNG, report, out, manifest)
    for kind, per_size in report["anomaly_types"].items():
        recalls = ", ".join(f"{size}: {v['detected']}/{v['anomalies']}" for size, v in per_size.items())
        typer.echo(f"{kind:12s} detected {recalls}")
    typer.echo(f"wrote {out} ({len(manifest.anomalies)} anomalies), {out / REPORT_JSON}, {out / REPORT_PNG}")


def datasets_skab(
    skab: Annotated[Path, typer.Argument(help="SKAB folder (valve1/, valve2/, other/, anomaly-free/)")],
    out: Annotated[Path, typer.Option(help="benchmark folder to write")],
) -> None:
    """SKAB -> benchmark layout: first 400 rows of each labelled file train, rest test; anomaly-free train only."""
    from triton_models.timeseries.datasets import convert_skab

    names = convert_skab(skab, out)
    typer.echo(f"wrote {len(names)} series to {out}")
