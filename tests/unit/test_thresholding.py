import numpy as np

from core.settings import ThresholdSettings
from operators.thresholding import Decision, Thresholder


def test_fixed_mode_uses_the_calibrated_threshold() -> None:
    thresholder = Thresholder(1.0)
    assert thresholder.apply("a", 0.5) == Decision(1.0, False)
    assert thresholder.apply("a", 1.5) == Decision(1.0, True)


def test_spot_raises_the_threshold_on_a_noisy_stream_and_keeps_a_quiet_one_at_calibration() -> None:
    rng = np.random.default_rng(0)
    config = ThresholdSettings(adaptation="spot", calibration_count=300, risk=1e-3)
    thresholder = Thresholder(1.0, config)
    noisy = rng.exponential(0.3, 3000)  # exceeds 1.0 ~4% of the time
    quiet = rng.exponential(0.05, 3000)
    noisy_flags = [thresholder.apply("noisy", float(x)).is_anomaly for x in noisy]
    for x in quiet:
        thresholder.apply("quiet", float(x))
    adapted = thresholder.threshold("noisy")
    # Exponential(0.3): the 1e-3 tail quantile is 0.3 * ln(1000) = 2.07
    assert 1.5 < adapted < 3.0
    assert thresholder.threshold("quiet") == 1.0  # floored at the calibration
    assert np.mean(noisy_flags[1000:]) < 0.01  # vs ~4% with the calibrated threshold
    assert thresholder.apply("noisy", 10.0).is_anomaly  # a real outlier still fires


def test_spot_without_floor_can_become_more_sensitive() -> None:
    rng = np.random.default_rng(1)
    thresholder = Thresholder(
        1.0, ThresholdSettings(adaptation="spot", calibration_count=200, floor_at_calibrated=False)
    )
    for x in rng.exponential(0.05, 2000):
        thresholder.apply("quiet", float(x))
    assert thresholder.threshold("quiet") < 0.6


def test_dspot_follows_a_drifting_baseline() -> None:
    rng = np.random.default_rng(2)
    config = ThresholdSettings(adaptation="dspot", calibration_count=200, drift_depth=20, floor_at_calibrated=False)
    dspot = Thresholder(1.0, config)
    scores = np.linspace(0, 3, 3000) + rng.normal(0, 0.05, 3000)
    flags = [dspot.apply("s", float(x)).is_anomaly for x in scores]
    assert sum(flags) < 0.01 * len(scores)
    assert 3.0 < dspot.threshold("s") < 3.6  # the threshold moved with the baseline
    assert dspot.apply("s", 5.0).is_anomaly


def test_anomalies_are_not_learnt_from() -> None:
    config = ThresholdSettings(adaptation="spot", calibration_count=50, floor_at_calibrated=False)
    thresholder = Thresholder(1.0, config)
    rng = np.random.default_rng(3)
    for x in rng.exponential(0.1, 500):
        thresholder.apply("a", float(x))
    before = thresholder.threshold("a")
    for _ in range(100):
        assert thresholder.apply("a", 50.0).is_anomaly
    assert thresholder.threshold("a") == before


def test_a_stream_the_model_does_not_know_learns_its_own_threshold_before_it_can_alarm() -> None:
    thresholder = Thresholder(1.0, ThresholdSettings(risk=0.01), known_streams=("pump-1",), learning_scores=100)
    assert thresholder.apply("pump-1", 3.0) == Decision(1.0, True)  # known: the model's calibration at once
    rng = np.random.default_rng(0)
    level = 2.5 + rng.normal(0, 0.1, 100)  # an unknown asset sits above the pooled threshold all the time
    decisions = [thresholder.apply("pump-9", float(x)) for x in level]
    assert all(d.learning and not d.is_anomaly for d in decisions)
    own = thresholder.threshold("pump-9")
    assert 2.6 < own < 3.0  # its own statistics now
    assert not thresholder.apply("pump-9", 2.55).is_anomaly
    assert thresholder.apply("pump-9", 4.0) == Decision(own, True)


def test_a_pooled_model_has_no_learning_period() -> None:
    thresholder = Thresholder(1.0, ThresholdSettings(), known_streams=(), learning_scores=100)
    assert thresholder.apply("anything", 2.0) == Decision(1.0, True)
