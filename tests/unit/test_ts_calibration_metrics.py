"""POT calibration on synthetic tails, and every metric on hand-made cases with known answers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from triton_models import metrics
from triton_models.timeseries.calibration import pot_threshold


@pytest.mark.parametrize("shape", [-0.1, 0.0, 0.2])
def test_pot_threshold_recovers_the_true_tail_quantile(shape: float) -> None:
    scores = stats.genpareto.rvs(shape, size=50_000, random_state=np.random.default_rng(0))
    threshold = pot_threshold(scores, risk=1e-4, initial_level=0.98)
    true = stats.genpareto.ppf(1 - 1e-4, shape)
    assert threshold.method == "pot"
    assert abs(threshold.value - true) / true < 0.2
    # the extrapolation goes beyond what the empirical quantile of 50k points can see reliably
    assert threshold.value > np.quantile(scores, 0.98)


def test_pot_falls_back_to_quantile_with_too_few_peaks() -> None:
    scores = np.linspace(0, 1, 200)
    threshold = pot_threshold(scores, risk=0.05, initial_level=0.98, min_peaks=20)
    assert threshold.method == "quantile"
    assert threshold.value == pytest.approx(0.95, abs=0.01)


def test_skab_metrics_on_known_counts() -> None:
    labels = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    predictions = np.array([1, 1, 1, 0, 1, 0, 0, 0, 0, 0])
    counts = metrics.confusion(labels, predictions)
    assert counts == {"tp": 3, "fp": 1, "fn": 1, "tn": 5}
    skab = metrics.skab_binary(counts)
    assert skab["f1"] == pytest.approx(3 / (3 + 1))
    assert skab["far"] == pytest.approx(100 / 6)
    assert skab["mar"] == pytest.approx(25.0)
    prf = metrics.precision_recall_f1(counts)
    assert prf == pytest.approx({"precision": 0.75, "recall": 0.75, "f1": 0.75})


def test_auroc_and_auprc_known_values() -> None:
    labels = np.array([0, 0, 1, 1])
    assert metrics.auroc(labels, np.array([0.1, 0.2, 0.8, 0.9])) == 1.0
    assert metrics.auroc(labels, np.array([0.9, 0.8, 0.2, 0.1])) == 0.0
    assert metrics.auroc(labels, np.array([0.1, 0.4, 0.35, 0.8])) == pytest.approx(0.75)
    assert metrics.auroc(labels, np.ones(4)) == pytest.approx(0.5)
    # ranking 1,0,1,0 (positives at ranks 1 and 3): AP = (1/1 + 2/3) / 2
    assert metrics.auprc(np.array([1, 0, 1, 0]), np.array([4, 3, 2, 1])) == pytest.approx((1 + 2 / 3) / 2)
    assert metrics.auprc(labels, np.ones(4)) == pytest.approx(0.5)


def test_vus_pr_equals_auprc_without_buffer_and_rewards_near_misses() -> None:
    labels = np.zeros(40, dtype=int)
    labels[20:25] = 1
    early = np.zeros(40)
    early[17:22] = 1.0  # alarms start 3 rows early
    assert metrics.vus_pr(labels, early, max_buffer=0, buffers=1) == pytest.approx(metrics.auprc(labels, early))
    assert metrics.vus_pr(labels, early, max_buffer=16) > metrics.auprc(labels, early)
    perfect = labels.astype(float)
    assert metrics.vus_pr(labels, perfect, max_buffer=16) <= 1.0
    assert metrics.vus_pr(labels, perfect, max_buffer=0, buffers=1) == pytest.approx(1.0)


def test_segments_point_adjust_events_and_delay() -> None:
    labels = np.array([0, 1, 1, 1, 0, 0, 1, 1, 0, 0])
    predictions = np.array([0, 0, 0, 1, 0, 1, 0, 0, 0, 0])
    assert metrics.segments(labels) == [(1, 4), (6, 8)]
    assert metrics.point_adjust(labels, predictions).astype(int).tolist() == [0, 1, 1, 1, 0, 1, 0, 0, 0, 0]
    events = metrics.event_counts(labels, predictions)
    assert events == {"events": 2, "detected": 1, "delay_sum": 2}
    # point precision 1/2, event recall 1/2
    assert metrics.event_f1(0.5, events["events"], events["detected"]) == pytest.approx(0.5)


def test_block_conformal_threshold_thins_overlapping_windows_and_states_its_bound() -> None:
    from triton_models.timeseries.calibration import block_conformal_threshold

    rng = np.random.default_rng(0)
    served = {"a": rng.normal(size=1000), "b": rng.normal(size=530)}
    bound = block_conformal_threshold(served, block_windows=10, risk=1e-3)
    assert bound.blocks == 100 + 53  # the 3 windows left over from b make no block
    assert bound.risk == pytest.approx(1 / 154)  # 153 blocks cannot bound a risk of 1e-3
    assert bound.value == pytest.approx(max(served["a"].max(), served["b"][:530].max()))
    looser = block_conformal_threshold(served, block_windows=10, risk=0.1)
    maxima = np.sort(np.concatenate([served["a"].reshape(100, 10).max(1), served["b"][:530].reshape(53, 10).max(1)]))
    assert looser.risk == 0.1 and looser.value == maxima[int(np.ceil(0.9 * 154)) - 1]
    # on fresh normal data the share of blocks whose maximum exceeds it is near the bound
    fresh = rng.normal(size=(20_000, 10)).max(axis=1)
    assert 0.05 < (fresh > looser.value).mean() < 0.15


def test_drift_adapted_scores_follow_a_slow_rise_but_not_an_anomaly() -> None:
    from triton_models.timeseries.calibration import drift_adapted_scores

    rng = np.random.default_rng(0)
    normal = 0.1 * rng.normal(size=3000) + np.linspace(0, 3, 3000)  # normal scores creeping up to 3x the threshold
    normal[2000:2100] += 5.0  # an anomaly on top
    adapted = drift_adapted_scores(normal, history=0.1 * rng.normal(size=200), depth=64)
    assert (normal[:2000] > 1).mean() > 0.4  # the fixed threshold alarms on the drifted normal rows
    assert (adapted[:2000] > 1).mean() < 0.01  # the adapted one does not
    assert (adapted[2000:2100] > 1).all()  # the anomaly alarms throughout: alarmed rows are not learned
    assert (adapted[2200:] > 1).mean() < 0.01
