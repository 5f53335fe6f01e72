"""All configuration in one typed object.

Values come, in increasing priority, from defaults, the service addresses of a running local stack (its
state file ``<state_dir>/stack.json``, written by ``diffsentry stack up``), an optional YAML file named by
``DIFFSENTRY_CONFIG``, and ``DIFFSENTRY_*`` environment variables (nested fields use ``__``, e.g.
``DIFFSENTRY_KAFKA__BOOTSTRAP_SERVERS``). So a running local stack replaces only defaults: anything configured
explicitly, for example production addresses, always wins.

Where state goes, one rule: everything a run writes lies under ``state_dir`` (default ``.diffsentry`` in the current
directory) unless a path is set explicitly; :data:`STATE_PATHS` are the path settings derived from it when unset.
``data_dir`` is input (read only), taken from the repository root when relative.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from core.stack_state import running_stack_addresses
from triton_models.names import TsMode


class KafkaSettings(BaseModel):
    bootstrap_servers: str = "127.0.0.1:9092"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = None
    client_id: str = "diffsentry"
    consumer_group: str = "diffsentry-worker"
    # "tansu": the local stack's broker (its state file says so); turns on the client-side fixes of
    # infra/tansu_compat.py. Apache Kafka ("kafka") needs none.
    broker: Literal["kafka", "tansu"] = "kafka"


class TopicSettings(BaseModel):
    sensor_readings: str = "diffsentry.sensor-readings"
    video_frames: str = "diffsentry.video-frames"
    scores: str = "diffsentry.scores"
    alerts: str = "diffsentry.alerts"
    dead_letter: str = "diffsentry.dead-letter"
    partitions: int = 4
    replication_factor: int = 1

    def suffixed(self, suffix: str, **updates: Any) -> TopicSettings:
        """These topics, each name ending in ``-<suffix>``: the topics of one run of its own on a shared broker (a
        test, a benchmark run); ``updates`` set other fields (partitions)."""
        names = [name for name, field in type(self).model_fields.items() if field.annotation is str]
        return self.model_copy(update={name: f"{getattr(self, name)}-{suffix}" for name in names} | updates)


class TritonSettings(BaseModel):
    """``grpc_urls``: the Triton replicas the worker scores on, balanced over the healthy ones (operators/
    triton_stage.py); ``http_url``: the one server the local stack's model control and health checks talk to."""

    grpc_urls: list[str] = Field(default_factory=lambda: ["127.0.0.1:8001"], min_length=1)
    http_url: str = "127.0.0.1:8000"
    # One instance uses one core (one torch thread each): 2 fill the 2-core reference machine (the video model
    # serves 34 frames/s there against 18 with one).
    instance_count: int = Field(
        default=2, ge=1, description="instances of each model per Triton server (instance_group) in trained configs"
    )
    request_timeout_s: float = 10.0
    ts_model: str = "ts_diffusion"
    ts_model_version: str = ""
    video_model: str = "video_diffusion"
    video_model_version: str = ""

    @model_validator(mode="before")
    @classmethod
    def _one_way_to_name_the_servers(cls, values: Any) -> Any:
        if isinstance(values, dict) and "grpc_url" in values:
            raise ValueError("triton.grpc_url is gone: list the servers in triton.grpc_urls")
        return values


class InfluxSettings(BaseModel):
    url: str = "http://127.0.0.1:8086"
    token: str = "diffsentry-dev-token"
    org: str = "diffsentry"
    bucket: str = "diffsentry"
    # How to read points back (the write API is the same): InfluxDB answers Flux, VictoriaMetrics its export API.
    # "auto" asks the server's /health endpoint which one it is.
    flavor: Literal["auto", "influxdb", "victoriametrics"] = "auto"


class LocalStackSettings(BaseModel):
    """Ports of the local stack; 0 picks a free port at start."""

    kafka_port: int = 0
    triton_http_port: int = 0
    triton_grpc_port: int = 0
    triton_metrics_port: int = 0
    victoria_metrics_port: int = 0
    # S3 API of a durable stack's object store (`stack up --durable`); its internal listeners always take free ports.
    object_store_port: int = 0
    postgres_port: int = 0  # `stack up --with-postgres`
    start_timeout_s: float = 90.0
    stop_timeout_s: float = 20.0


class SensorSettings(BaseModel):
    """The sensor stream. ``assets`` is the asset registry: glob patterns of admitted asset ids; a reading of any
    other asset is dead-lettered as unknown. Empty (default): the ``streams`` listed in the ts model card, or every
    asset when the card lists none."""

    assets: list[str] = Field(default_factory=list)
    mode: TsMode | None = None  # None: the model card's default_mode
    allowed_lateness: int = Field(default=0, ge=0)  # slots a window waits for out-of-order readings
    min_observed_fraction: float = Field(default=0.5, ge=0.0, le=1.0)
    top_channels: int = Field(default=3, ge=0)  # per-channel contributions written with each score
    learning_windows: int = Field(
        default=200, ge=0, description="an admitted asset the model has no statistics of: scores without alerts first"
    )
    max_clock_jump_s: float = Field(
        default=7 * 86400.0, gt=0, description="a reading this far ahead of its asset's newest is dead-lettered"
    )
    idle_after_windows: float = Field(
        default=1.0, gt=0, description="an asset quiet this many windows of its partition's event time is flushed"
    )


class ThresholdSettings(BaseModel):
    """See operators/thresholding.py: ``fixed`` uses the model card's threshold; ``spot``/``dspot`` adapt it."""

    adaptation: Literal["fixed", "spot", "dspot"] = "fixed"
    risk: float = Field(default=1e-3, gt=0.0, lt=1.0)
    calibration_count: int = Field(default=500, ge=10)
    initial_quantile: float = Field(default=0.98, gt=0.0, lt=1.0)
    drift_depth: int = Field(default=50, ge=1)
    history: int = Field(default=5000, ge=100)
    floor_at_calibrated: bool = True
    min_excesses: int = Field(default=10, ge=2)


class StreamSettings(BaseModel):
    """The streaming worker: batching to Triton, resilience, the store sink, commits, metrics."""

    max_batch: int = Field(default=64, ge=1)
    max_wait_ms: float = Field(default=5.0, ge=0.0)
    max_concurrency: int = Field(default=4, ge=1)  # Triton requests in flight per model
    max_in_flight: int = Field(default=4096, ge=1)  # windows/stacks between emission and the store's ack
    breaker_failures: int = Field(default=3, ge=1)
    breaker_reset_s: float = Field(default=1.0, gt=0.0)
    unhealthy_after_s: float = Field(
        default=30.0, gt=0, description="/healthz answers 503 once Triton or the store has failed this long"
    )
    backoff_initial_s: float = Field(default=0.05, gt=0.0)
    backoff_max_s: float = Field(default=2.0, gt=0.0)
    sink_batch_size: int = Field(default=2000, ge=1)
    sink_flush_interval_ms: float = Field(default=5.0, ge=0.0)  # how long a partial batch waits for more points
    sink_timeout_ms: int = Field(default=5000, ge=100)
    commit_interval_s: float = Field(default=0.5, gt=0.0)
    shutdown_grace_s: float = Field(
        default=10.0, gt=0, description="after SIGTERM, how long in-flight work may take before it is left uncommitted"
    )
    fetch_max_records: int = Field(default=1000, ge=1)
    session_timeout_ms: int = Field(default=6000, ge=1000)  # tansu answers JoinGroup after ~session_timeout/2
    heartbeat_interval_ms: int = Field(default=1000, ge=100)
    dead_letter_max_payload: int = Field(
        default=64 * 1024, ge=1024, description="characters of a failed payload kept in its dead letter"
    )
    max_future_s: float = Field(
        default=86400.0, gt=0, description="event times this far ahead of the wall clock are dead-lettered"
    )
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(default=9464, ge=0)  # Prometheus /metrics and /healthz; 0 picks a free port
    threshold: ThresholdSettings = Field(default_factory=ThresholdSettings)


class AlertGroup(BaseModel):
    """Streams whose transitions are notified together, e.g. every sensor stream of one pump house."""

    name: str = Field(min_length=1, max_length=200)
    stream: str = Field(default="*", min_length=1, max_length=200, description="shell-style glob on the stream")
    modality: Literal["sensor", "video"] | None = None


class AlertingSettings(BaseModel):
    """The alert state machine, in event time (see README, "Alerts and subscriptions")."""

    for_s: float = Field(default=10.0, ge=0, description="a stream must stay anomalous this long before firing")
    for_points: int = Field(default=2, ge=1, description="...and for at least this many consecutive scores")
    # Cameras score many frames a second: their `for` counts frames. At the label-free threshold on the Ped2
    # development clips, 3 consecutive frames cut the false-positive rate from 0.10 to 0.01 at recall 0.84
    # (benchmarks/video_leave_clips_out.json, alert_for_frames).
    video_for_s: float = Field(default=0.0, ge=0, description="for_s of camera streams")
    video_for_points: int = Field(default=3, ge=1, description="for_points of camera streams (consecutive frames)")
    resolve_ratio: float = Field(default=0.8, gt=0, le=1, description="resolving needs score < threshold * this")
    resolve_for_s: float = Field(default=30.0, ge=0, description="...for this long")
    cooldown_s: float = Field(default=60.0, ge=0, description="no new alert on a stream this long after a resolve")
    critical_ratio: float = Field(default=2.0, gt=1, description="score / threshold at which severity is critical")
    max_gap_s: float = Field(default=120.0, gt=0, description="a longer silence restarts the for/resolve clocks")
    top_channels: int = Field(default=3, ge=0, description="contributing channels carried by an alert")
    # Notification policy (operators/notifier.py), in wall-clock time like Alertmanager's.
    group_wait_s: float = Field(
        default=0.0, ge=0, description="transitions of one group within this long go out as one notification"
    )
    repeat_interval_s: float | None = Field(
        default=4 * 3600.0, gt=0, description="a firing, unacknowledged alert notifies again this often (None: never)"
    )
    groups: list[AlertGroup] = Field(
        default_factory=list, description="named stream selectors; a stream in none is a group of its own"
    )

    def pending_rule(self, modality: str) -> tuple[float, int]:
        """(for_s, for_points) of a stream of ``modality``."""
        return (self.video_for_s, self.video_for_points) if modality == "video" else (self.for_s, self.for_points)


class AlertingTierSettings(BaseModel):
    """The alerting role (``diffsentry run --role alerting``): a faust-streaming app over the scores topic whose
    per-stream alert state is a faust Table, restored from its changelog to whichever instance owns a partition."""

    app_id: str = Field(
        default="diffsentry-alerting",
        min_length=1,
        description="the faust app id: its consumer group and the prefix of its changelog topic",
    )
    table_store: str = Field(
        default="memory://",
        description="faust store of the state table: memory:// restores from the changelog on every assignment",
    )
    session_timeout_s: float = Field(default=6.0, gt=0)  # tansu answers JoinGroup after ~session_timeout/2
    heartbeat_interval_s: float = Field(default=1.0, gt=0)


# The API refuses to serve with it unless api.allow_dev_token says this is a development set-up.
DEVELOPMENT_TOKEN = "diffsentry-dev-token"


class ApiSettings(BaseModel):
    """The REST API for subscriptions and the server-sent-events alert stream."""

    host: str = "127.0.0.1"
    port: int = 8088
    token: str = Field(default=DEVELOPMENT_TOKEN, min_length=1)
    allow_dev_token: bool = False
    session_ttl_s: float = Field(default=12 * 3600.0, gt=0, description="how long a console login lasts")
    # The console's snapshot of each video alert (its worst frame, map and box) under <state_dir>/snapshots.
    snapshot_keep: int = Field(default=500, ge=1, description="the newest this many alert snapshots are kept")
    snapshot_max_age_s: float = Field(default=30 * 24 * 3600.0, gt=0, description="older snapshots are removed")
    external_url: str | None = Field(
        default=None,
        description="the API's address as notification receivers should link to it; none: http://host:port",
    )

    def public_url(self) -> str:
        return (self.external_url or f"http://{self.host}:{self.port}").rstrip("/")


_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST_NAME = re.compile(rf"(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*\.?")


class DeliverySettings(BaseModel):
    """Webhook delivery: bounded concurrency, exponential backoff, then the dead-letter topic."""

    concurrency: int = Field(default=8, ge=1)
    timeout_s: float = Field(default=5.0, gt=0)
    max_attempts: int = Field(default=5, ge=1)
    backoff_base_s: float = Field(default=0.5, ge=0)
    backoff_max_s: float = Field(default=30.0, ge=0)
    backoff_jitter: float = Field(default=0.1, ge=0, le=1, description="each delay is scaled by 1 ± this at random")
    journal_retention_s: float = Field(
        default=7 * 24 * 3600.0, gt=0, description="finished deliveries older than this leave the journal"
    )
    allowed_targets: list[str] = Field(
        default_factory=list,
        description="CIDRs and host names webhooks may reach although they are not public (operators/outbound.py)",
    )
    secrets_key: str | None = Field(
        default=None,
        description="Fernet key encrypting webhook secrets at rest; none: webhook-secrets.key in the state dir "
        "(instances sharing a database need the same key)",
    )
    instance_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="who claims deliveries in a shared journal: unique per instance sharing a database, and the "
        "same across a restart (which then resumes its deliveries at once); none: <host name>:<process id>, unique "
        "for processes on one machine too (a restarted one takes its old claims over when their lease ends)",
    )
    claim_lease_s: float = Field(
        default=30.0,
        gt=0,
        description="an instance renews its delivery claims every third of this; a dead one's are taken over after it",
    )

    @field_validator("allowed_targets")
    @classmethod
    def _cidrs_or_host_names(cls, entries: list[str]) -> list[str]:
        for entry in entries:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                if not _HOST_NAME.fullmatch(entry):
                    raise ValueError(f"{entry!r} is neither a CIDR (or address) nor a host name") from None
        return entries

    def instance(self) -> str:
        """The instance id deliveries are claimed under."""
        return self.instance_id or f"{socket.gethostname()}:{os.getpid()}"


class DatabaseSettings(BaseModel):
    """Where subscriptions, silences, acknowledgements, the alert registry and the delivery journal live."""

    url: str | None = Field(
        default=None,
        description="a SQLAlchemy URL, postgresql+psycopg://user@host:port/db for several instances; "
        "none: the sqlite file <state_dir>/state.sqlite (one instance)",
    )


class VideoSettings(BaseModel):
    """Frames as the video model sees them; ingestion converts to this and the model card must agree."""

    width: int = 144
    height: int = 96
    fps: float = 10.0
    encoding: Literal["raw", "jpeg"] = "raw"
    jpeg_quality: int = 90
    idle_after_s: float = Field(
        default=5.0, gt=0, description="a camera quiet this long of its partition's event time is released"
    )


# Path settings that default to a place under state_dir: field -> its path relative to state_dir.
STATE_PATHS = {"model_repository": "model_repository"}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DIFFSENTRY_", env_nested_delimiter="__", extra="ignore")

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    topics: TopicSettings = Field(default_factory=TopicSettings)
    triton: TritonSettings = Field(default_factory=TritonSettings)
    influx: InfluxSettings = Field(default_factory=InfluxSettings)
    sensors: SensorSettings = Field(default_factory=SensorSettings)
    stream: StreamSettings = Field(default_factory=StreamSettings)
    alerting: AlertingSettings = Field(default_factory=AlertingSettings)
    alerting_tier: AlertingTierSettings = Field(default_factory=AlertingTierSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    delivery: DeliverySettings = Field(default_factory=DeliverySettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    stack: LocalStackSettings = Field(default_factory=LocalStackSettings)
    video: VideoSettings = Field(default_factory=VideoSettings)
    state_dir: Path = Path(".diffsentry")
    # Public data sets (SKAB, Ped2) for the demo and tests; relative paths are taken from the repository root.
    data_dir: Path = Path("../shared/data")
    # None (the default): <state_dir>/model_repository (STATE_PATHS); always a Path once the settings are built.
    model_repository: Path = Field(default=None)  # type: ignore[assignment]

    @model_validator(mode="before")
    @classmethod
    def _derive_state_paths(cls, values: Any) -> Any:
        """Path settings not set explicitly (absent, None or empty) lie under ``state_dir``."""
        if not isinstance(values, dict):
            return values
        state_dir = Path(values.get("state_dir") or cls.model_fields["state_dir"].default)
        unset = {name: state_dir / part for name, part in STATE_PATHS.items() if values.get(name) in (None, "")}
        return {**values, **unset}

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        yaml_settings = _YamlFileSource(settings_cls)
        return (
            init_settings,
            env_settings,
            yaml_settings,
            _LocalStackSource(settings_cls, init_settings, yaml_settings),
        )


def _load_yaml_config() -> dict[str, Any]:
    path = os.environ.get("DIFFSENTRY_CONFIG")
    if not path:
        return {}
    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"config file {path} must hold a mapping at the top level")
    return data


class _YamlFileSource(PydanticBaseSettingsSource):
    """Reads the YAML file named by ``DIFFSENTRY_CONFIG``, if any."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return _load_yaml_config().get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return _load_yaml_config()


class _LocalStackSource(PydanticBaseSettingsSource):
    """The addresses of the services of a running local stack, read from its state file in ``state_dir``."""

    def __init__(
        self,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        yaml_settings: _YamlFileSource,
    ) -> None:
        super().__init__(settings_cls)
        self._init_settings = init_settings
        self._yaml_settings = yaml_settings

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self().get(field_name), field_name, False

    def _state_dir(self) -> Path:
        # state_dir itself is configured like any other field; the stack's addresses cannot decide it.
        for value in (
            self._init_settings().get("state_dir"),
            os.environ.get("DIFFSENTRY_STATE_DIR"),
            self._yaml_settings().get("state_dir"),
        ):
            if value:
                return Path(value)
        return self.settings_cls.model_fields["state_dir"].default

    def __call__(self) -> dict[str, Any]:
        return running_stack_addresses(self._state_dir())


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
