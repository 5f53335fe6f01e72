"""The ``diffsentry`` command line: one entry point, one sub-command group per concern."""

from __future__ import annotations

import typer

from infra import cli as infra_commands
from pipeline import (
    alerts_cli,
    demo,
    ingest_sensors,
    run_command,
    subscriptions_cli,
    ts_commands,
    video_commands,
    video_ingest,
)

app = typer.Typer(no_args_is_help=True, add_completion=False, help="DiffSentry: streaming anomaly detection.")
stack_app = typer.Typer(no_args_is_help=True, help="Start, stop and inspect the local stack of real services.")
train_app = typer.Typer(no_args_is_help=True, help="Train diffusion models into the Triton model repository.")
evaluate_app = typer.Typer(no_args_is_help=True, help="Evaluate models on labelled data.")
generate_app = typer.Typer(no_args_is_help=True, help="Generate labelled anomalies for a plant with its trained model.")
datasets_app = typer.Typer(no_args_is_help=True, help="Convert public data sets to the benchmark layout.")
ingest_app = typer.Typer(no_args_is_help=True, help="Publish sensor readings or video frames to Kafka.")
topics_app = typer.Typer(no_args_is_help=True, help="Kafka topics declared in core/topics.py.")
app.add_typer(stack_app, name="stack")
app.add_typer(train_app, name="train")
app.add_typer(evaluate_app, name="evaluate")
app.add_typer(generate_app, name="generate")
app.add_typer(datasets_app, name="datasets")
app.add_typer(ingest_app, name="ingest")
app.add_typer(subscriptions_cli.app, name="subscriptions")
app.add_typer(alerts_cli.alerts_app, name="alerts")
app.add_typer(alerts_cli.silences_app, name="silences")
app.add_typer(alerts_cli.maintenance_app, name="maintenance")
app.add_typer(topics_app, name="topics")

stack_app.command("up")(infra_commands.stack_up)
stack_app.command("down")(infra_commands.stack_down)
stack_app.command("status")(infra_commands.stack_status)
topics_app.command("create")(infra_commands.topics_create)
app.command("doctor")(infra_commands.doctor)
app.command("run")(run_command.run)
app.command("demo")(demo.demo)
ingest_app.command("sensors")(ingest_sensors.sensors)

train_app.command("ts")(ts_commands.train)
evaluate_app.command("ts")(ts_commands.evaluate)
generate_app.command("ts")(ts_commands.generate)
datasets_app.command("skab")(ts_commands.datasets_skab)
ingest_app.command("video")(video_ingest.ingest)
train_app.command("video")(video_commands.train)
evaluate_app.command("video")(video_commands.evaluate)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
