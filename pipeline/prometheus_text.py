"""Reading the worker's Prometheus exposition (``/metrics``): counters, histogram buckets, quantiles.

Used by the demo's live summary and the end-to-end benchmark, which watch a worker from outside like an operator.
"""

from __future__ import annotations

INF = float("inf")


def parse_metrics(text: str) -> dict[str, float]:
    """``{'name{labels}': value}`` for every sample line."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def total(metrics: dict[str, float], name: str, labels: str = "") -> float:
    """Sum of the samples of ``name`` (optionally only those whose labels contain ``labels``)."""
    return sum(v for k, v in metrics.items() if (k == name or k.startswith(name + "{")) and labels in k)


def histogram(metrics: dict[str, float], name: str, labels: str = "") -> list[tuple[float, float]]:
    """(upper bound, cumulative count) pairs of one histogram, summed over label sets matching ``labels``."""
    prefix = f"{name}_bucket{{"
    buckets: dict[float, float] = {}
    for key, count in metrics.items():
        if key.startswith(prefix) and (not labels or labels in key):
            bound = key.split('le="')[1].split('"')[0]
            upper = INF if bound == "+Inf" else float(bound)
            buckets[upper] = buckets.get(upper, 0.0) + count
    return sorted(buckets.items())


def quantile(buckets: list[tuple[float, float]], q: float) -> float:
    """Prometheus-style quantile: linear interpolation inside the bucket holding the q-th observation."""
    if not buckets or buckets[-1][1] == 0:
        return float("nan")
    rank, lower, below = q * buckets[-1][1], 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == INF:
                return lower
            return lower + (bound - lower) * ((rank - below) / max(count - below, 1e-9))
        lower, below = bound, count
    return lower


def diff(after: list[tuple[float, float]], before: list[tuple[float, float]]) -> list[tuple[float, float]]:
    earlier = dict(before)
    return [(bound, count - earlier.get(bound, 0.0)) for bound, count in after]
