"""Reading the worker's Prometheus exposition: totals by label, histogram buckets and quantiles."""

from __future__ import annotations

import math

from pipeline.prometheus_text import diff, histogram, parse_metrics, quantile, total

EXPOSITION = """# HELP diffsentry_scores_total Scores written
# TYPE diffsentry_scores_total counter
diffsentry_scores_total{anomaly="false",modality="sensor"} 90.0
diffsentry_scores_total{anomaly="true",modality="sensor"} 10.0
diffsentry_scores_total{anomaly="false",modality="video"} 5.0
diffsentry_scores_created{anomaly="false",modality="sensor"} 1.7e9
diffsentry_end_to_end_seconds_bucket{le="0.1",modality="sensor"} 50.0
diffsentry_end_to_end_seconds_bucket{le="1.0",modality="sensor"} 100.0
diffsentry_end_to_end_seconds_bucket{le="+Inf",modality="sensor"} 100.0
diffsentry_end_to_end_seconds_bucket{le="0.1",modality="video"} 0.0
diffsentry_end_to_end_seconds_bucket{le="1.0",modality="video"} 10.0
diffsentry_end_to_end_seconds_bucket{le="+Inf",modality="video"} 10.0
"""


def test_total_sums_one_family_filtered_by_label() -> None:
    metrics = parse_metrics(EXPOSITION)
    assert total(metrics, "diffsentry_scores_total") == 105.0  # not the _created samples
    assert total(metrics, "diffsentry_scores_total", 'modality="sensor"') == 100.0
    assert total(metrics, "diffsentry_missing_total") == 0.0


def test_histogram_merges_label_sets_and_quantile_interpolates() -> None:
    metrics = parse_metrics(EXPOSITION)
    sensor = histogram(metrics, "diffsentry_end_to_end_seconds", 'modality="sensor"')
    assert sensor == [(0.1, 50.0), (1.0, 100.0), (math.inf, 100.0)]
    assert quantile(sensor, 0.5) == 0.1
    assert math.isclose(quantile(sensor, 0.75), 0.55)
    both = histogram(metrics, "diffsentry_end_to_end_seconds")
    assert both == [(0.1, 50.0), (1.0, 110.0), (math.inf, 110.0)]
    assert math.isnan(quantile([], 0.5))


def test_diff_subtracts_an_earlier_snapshot() -> None:
    assert diff([(0.1, 5.0), (math.inf, 9.0)], [(0.1, 2.0), (math.inf, 3.0)]) == [(0.1, 3.0), (math.inf, 6.0)]
