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
    from triton_models.timeseries.detector import ModelConfig

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
    threads: Threads = 1,
) -> None:
    """Train on every train.csv, score every test.csv causally, report metrics against baselines."""
    from triton_models.timeseries.evaluation import evaluate_benchmark, skab_headline
    from triton_models.timeseries.repository import write_model_repository

    _set_threads(threads)
    config = _model_config(window, seed, reconstruction_start, mask_kind)
    started = time.perf_counter()
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


def datasets_skab(
    skab: Annotated[Path, typer.Argument(help="SKAB folder (valve1/, valve2/, other/, anomaly-free/)")],
    out: Annotated[Path, typer.Option(help="benchmark folder to write")],
) -> None:
    """SKAB -> benchmark layout: first 400 rows of each labelled file train, rest test; anomaly-free train only."""
    from triton_models.timeseries.datasets import convert_skab

    names = convert_skab(skab, out)
    typer.echo(f"wrote {len(names)} series to {out}")
