"""All configuration in one typed object.

Values come, in increasing priority, from defaults, an optional YAML file named by ``DIFFSENTRY_CONFIG``,
and ``DIFFSENTRY_*`` environment variables (nested fields use ``__``, e.g. ``DIFFSENTRY_KAFKA__BOOTSTRAP_SERVERS``).
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict


class KafkaSettings(BaseModel):
    bootstrap_servers: str = "127.0.0.1:9092"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = None
    client_id: str = "diffsentry"
    consumer_group: str = "diffsentry-worker"


class TopicSettings(BaseModel):
    sensor_readings: str = "diffsentry.sensor-readings"
    video_frames: str = "diffsentry.video-frames"
    scores: str = "diffsentry.scores"
    alerts: str = "diffsentry.alerts"
    dead_letter: str = "diffsentry.dead-letter"
    partitions: int = 4
    replication_factor: int = 1


class TritonSettings(BaseModel):
    grpc_url: str = "127.0.0.1:8001"
    http_url: str = "127.0.0.1:8000"
    request_timeout_s: float = 10.0
    ts_model: str = "ts_diffusion"
    ts_model_version: str = ""
    video_model: str = "video_diffusion"
    video_model_version: str = ""


class InfluxSettings(BaseModel):
    url: str = "http://127.0.0.1:8086"
    token: str = "diffsentry-dev-token"
    org: str = "diffsentry"
    bucket: str = "diffsentry"


class VideoSettings(BaseModel):
    """Frames as the video model sees them; ingestion converts to this and the model card must agree."""

    width: int = 96
    height: int = 64
    fps: float = 10.0
    encoding: Literal["raw", "jpeg"] = "raw"
    jpeg_quality: int = 90


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DIFFSENTRY_", env_nested_delimiter="__", extra="ignore")

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    topics: TopicSettings = Field(default_factory=TopicSettings)
    triton: TritonSettings = Field(default_factory=TritonSettings)
    influx: InfluxSettings = Field(default_factory=InfluxSettings)
    video: VideoSettings = Field(default_factory=VideoSettings)
    state_dir: Path = Path(".diffsentry")
    model_repository: Path = Path(".diffsentry/model_repository")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _YamlFileSource(settings_cls))


class _YamlFileSource(PydanticBaseSettingsSource):
    """Reads the YAML file named by ``DIFFSENTRY_CONFIG``, if any."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._load().get(field_name), field_name, False

    def _load(self) -> dict[str, Any]:
        path = os.environ.get("DIFFSENTRY_CONFIG")
        if not path:
            return {}
        data = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"config file {path} must hold a mapping at the top level")
        return data

    def __call__(self) -> dict[str, Any]:
        return self._load()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
