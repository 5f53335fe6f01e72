"""Prometheus metrics of the streaming worker (served on ``stream.metrics_port`` with the health endpoint)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

MESSAGES = Counter("diffsentry_messages_total", "Messages consumed", ["topic"])
DEAD_LETTERS = Counter("diffsentry_dead_letters_total", "Messages sent to the dead-letter topic", ["topic", "error"])
WINDOWS = Counter("diffsentry_windows_total", "Windows or frame stacks emitted for scoring", ["modality"])
SCORES = Counter("diffsentry_scores_total", "Scores written", ["modality", "anomaly"])
ALERTS = Counter("diffsentry_alerts_total", "Alert transitions", ["modality", "state"])
LATE = Counter("diffsentry_late_total", "Readings or frames dropped as late or stale", ["modality"])
CONSUMER_LAG = Gauge("diffsentry_consumer_lag", "High watermark minus position", ["topic", "partition"])
IN_FLIGHT = Gauge("diffsentry_in_flight", "Windows and stacks between scoring and the store's acknowledgement")
BATCH_SIZE = Histogram(
    "diffsentry_batch_size", "Items per Triton request", ["model"], buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256)
)
TRITON_LATENCY = Histogram("diffsentry_triton_latency_seconds", "Triton request round trip", ["model"])
TRITON_ERRORS = Counter("diffsentry_triton_errors_total", "Failed Triton requests", ["model", "kind"])
BREAKER_OPEN = Gauge("diffsentry_breaker_open", "1 while the circuit breaker to a service is not closed", ["service"])
SINK_LATENCY = Histogram("diffsentry_sink_write_seconds", "Store write round trip per flushed batch")
SINK_ERRORS = Counter("diffsentry_sink_errors_total", "Failed store writes (retried)")
SINK_BUFFERED = Gauge("diffsentry_sink_buffered_points", "Points waiting for the store")
END_TO_END = Histogram(
    "diffsentry_end_to_end_seconds",
    "Produce time of the newest input to store acknowledgement",
    ["modality"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30),
)
SKIPPED = Counter(
    "diffsentry_skipped_windows_total", "Windows not scored: fewer observed readings than sensors.min_observed_fraction"
)
RELEASED = Counter(
    "diffsentry_idle_streams_released_total", "Quiet streams flushed so they stop pinning offsets", ["modality"]
)
LEARNING = Counter("diffsentry_learning_scores_total", "Scores of streams in their learning period", ["modality"])
