from pathlib import Path

import pytest

from core.contracts import Alert, Modality, Score, decode
from core.settings import AlertingSettings
from operators.alerting import AlertEngine, SqliteAlertStateStore, StreamState, alert_id_for, idempotency_key

SETTINGS = AlertingSettings(
    for_s=3.0, for_points=2, resolve_ratio=0.8, resolve_for_s=2.0, cooldown_s=10.0, critical_ratio=2.0, max_gap_s=30.0
)


def score(
    ts: float,
    value: float,
    *,
    stream: str = "pump-1",
    modality: Modality = "sensor",
    threshold: float = 1.0,
    contributions: dict[str, float] | None = None,
    location: tuple[float, float] | None = None,
) -> Score:
    return Score(
        modality=modality,
        stream=stream,
        event_time=ts,
        score=value,
        threshold=threshold,
        is_anomaly=value >= threshold,
        model="ts_diffusion",
        model_version="1",
        contributions=contributions or {},
        location=location,
    )


def run(engine: AlertEngine, scores: list[Score]) -> list[tuple[float, Alert]]:
    """Feeds scores in order; returns (score ts, alert) for every transition emitted."""
    return [(s.event_time, alert) for s in scores for alert in engine.observe(s)]


def series(start: float, values: list[float], **kwargs: object) -> list[Score]:
    return [score(start + i, v, **kwargs) for i, v in enumerate(values)]  # type: ignore[arg-type]


def test_fires_only_after_staying_anomalous_for_the_for_duration() -> None:
    engine = AlertEngine(SETTINGS)
    emitted = run(engine, series(100, [0.2, 1.5, 1.5, 1.5, 1.5, 1.5]))
    assert [(ts, a.state) for ts, a in emitted] == [(104.0, "firing")]
    alert = emitted[0][1]
    assert alert.started_at == 101.0
    assert alert.alert_id == alert_id_for("sensor/pump-1", 101.0)
    assert alert.severity == "warning"


def test_a_normal_score_while_pending_restarts_the_for_clock() -> None:
    engine = AlertEngine(SETTINGS)
    emitted = run(engine, series(0, [1.5, 1.5, 0.5, 1.5, 1.5, 1.5, 1.5]))
    assert [(ts, a.started_at) for ts, a in emitted] == [(6.0, 3.0)]


def test_for_points_counts_consecutive_scores_when_for_s_is_zero() -> None:
    engine = AlertEngine(SETTINGS.model_copy(update={"for_s": 0.0, "for_points": 3}))
    emitted = run(engine, series(0, [1.5, 1.5, 1.5]))
    assert [ts for ts, _ in emitted] == [2.0]


def test_hysteresis_keeps_firing_until_scores_stay_below_the_resolve_level() -> None:
    engine = AlertEngine(SETTINGS)
    # Fires at 3; 0.9 is under the threshold but above 0.8 (resolve level) so it holds; 0.5 at 10, 11 is not yet
    # resolve_for_s; 0.85 at 12 restarts the clock; 0.5 from 13 resolves at 15.
    values = [1.5] * 4 + [0.9] * 6 + [0.5, 0.5, 0.85, 0.5, 0.5, 0.5, 0.5]
    emitted = run(engine, series(0, values))
    assert [(ts, a.state) for ts, a in emitted] == [(3.0, "firing"), (15.0, "resolved")]
    firing, resolved = emitted[0][1], emitted[1][1]
    assert resolved.alert_id == firing.alert_id and resolved.started_at == firing.started_at == 0.0
    assert resolved.score == 0.5


def test_cooldown_delays_the_next_alert_after_a_resolve() -> None:
    engine = AlertEngine(SETTINGS)
    values = [1.5] * 4 + [0.1] * 3 + [1.5] * 15
    emitted = run(engine, series(0, values))
    assert [(ts, a.state) for ts, a in emitted] == [(3.0, "firing"), (6.0, "resolved"), (16.0, "firing")]
    second = emitted[2][1]
    assert second.alert_id != emitted[0][1].alert_id
    assert second.started_at == 7.0  # it went pending during the cooldown and fired when the cooldown ended


def test_severity_follows_the_peak_ratio_and_escalates_once_while_firing() -> None:
    engine = AlertEngine(SETTINGS)
    emitted = run(engine, series(0, [1.2, 1.3, 1.4, 1.5, 1.6, 2.5, 3.0, 2.6, 0.1, 0.1, 0.1]))
    assert [(ts, a.state, a.severity) for ts, a in emitted] == [
        (3.0, "firing", "warning"),
        (5.0, "firing", "critical"),
        (10.0, "resolved", "critical"),
    ]
    assert len({a.alert_id for _, a in emitted}) == 1
    assert len({idempotency_key(a) for _, a in emitted}) == 3
    assert engine.stats["escalated"] == 1


def test_a_critical_spike_while_pending_fires_critical() -> None:
    engine = AlertEngine(SETTINGS)
    emitted = run(engine, series(0, [1.1, 4.0, 1.1, 1.1]))
    assert [a.severity for _, a in emitted] == ["critical"]


def test_alerts_carry_the_top_channels_and_the_location_of_the_worst_score() -> None:
    engine = AlertEngine(SETTINGS)
    worst = {"Pressure": 0.6, "Current": 0.1, "Temperature": 0.9, "Voltage": 0.3}
    scores = [score(0, 1.2, contributions={"Current": 1.0})]
    scores += [score(1, 1.8, contributions=worst, location=(0.25, 0.75))]
    scores += [score(t, 1.3, contributions={"Current": 1.0}) for t in (2, 3)]
    (_, alert), *_ = run(engine, scores)
    assert alert.top_channels == ["Temperature", "Pressure", "Voltage"]
    assert alert.location == (0.25, 0.75)
    assert decode(Alert, alert.to_json()) == alert


def test_late_and_repeated_scores_change_nothing() -> None:
    engine = AlertEngine(SETTINGS)
    run(engine, series(10, [0.1, 0.1]))
    assert run(engine, [score(5, 9.0), score(11, 9.0)]) == []  # both at or before the last event time (11)
    assert engine.state("sensor", "pump-1").phase == "ok"
    assert engine.stats["late"] == 2
    emitted = run(engine, [*series(12, [1.5, 1.5, 1.5]), score(13.5, 0.1), score(15, 1.5)])
    assert [(ts, a.started_at) for ts, a in emitted] == [(15.0, 12.0)]


def test_a_silence_longer_than_max_gap_restarts_the_for_clock() -> None:
    engine = AlertEngine(SETTINGS)
    emitted = run(engine, series(0, [1.5, 1.5]) + series(100, [1.5, 1.5, 1.5, 1.5]))
    assert [(ts, a.started_at) for ts, a in emitted] == [(103.0, 100.0)]


def test_streams_and_modalities_are_independent() -> None:
    engine = AlertEngine(SETTINGS)
    emitted = run(
        engine,
        series(0, [1.5] * 4, stream="pump-1")
        + series(0, [0.1] * 4, stream="pump-2")
        + series(0, [0.1] * 4, stream="pump-1", modality="video"),
    )
    assert [(a.modality, a.stream) for _, a in emitted] == [("sensor", "pump-1")]
    assert engine.state("video", "pump-1").phase == "ok"


def test_a_zero_threshold_is_critical_and_the_state_stays_json() -> None:
    engine = AlertEngine(SETTINGS.model_copy(update={"for_s": 0.0, "for_points": 1}))
    (_, alert), *_ = run(engine, [score(0, 0.5, threshold=0.0)])
    assert alert.severity == "critical"
    state = engine.state("sensor", "pump-1")
    assert StreamState.from_json(state.to_json()) == state


def test_the_same_scores_give_the_same_alert_ids_on_every_run() -> None:
    scores = series(0, [1.5] * 5 + [0.1] * 3)
    first, second = run(AlertEngine(SETTINGS), scores), run(AlertEngine(SETTINGS), scores)
    assert [a.alert_id for _, a in first] == [a.alert_id for _, a in second]
    assert len(first) == 2


@pytest.mark.parametrize("crash_after", [2, 4, 6, 9])
def test_a_restarted_worker_rereading_scores_emits_nothing_twice(tmp_path: Path, crash_after: int) -> None:
    """A worker dies after some scores; its successor re-reads everything from the start (no committed offset)."""
    scores = series(0, [1.5] * 6 + [0.1] * 4 + [1.5] * 14)
    reference = [idempotency_key(a) for _, a in run(AlertEngine(SETTINGS), scores)]
    assert len(reference) == 3

    path = tmp_path / "alerts.sqlite"
    store = SqliteAlertStateStore(path)
    before = run(AlertEngine(SETTINGS, store), scores[:crash_after])
    store.close()

    store = SqliteAlertStateStore(path)
    after = run(AlertEngine(SETTINGS, store), scores)
    store.close()
    keys = [idempotency_key(a) for _, a in before + after]
    assert keys == reference


def test_emitted_alerts_wait_in_the_outbox_until_acknowledged(tmp_path: Path) -> None:
    path = tmp_path / "alerts.sqlite"
    store = SqliteAlertStateStore(path)
    engine = AlertEngine(SETTINGS, store)
    (_, firing), *_ = run(engine, series(0, [1.5] * 4))
    store.close()

    store = SqliteAlertStateStore(path)
    engine = AlertEngine(SETTINGS, store)
    assert engine.unpublished() == [firing]  # the worker died before publishing it
    engine.acknowledge(firing)
    resolved = [a for _, a in run(engine, series(4, [0.1] * 3))]
    assert engine.unpublished() == resolved and [a.state for a in resolved] == ["resolved"]
    store.close()
    assert AlertEngine(SETTINGS, SqliteAlertStateStore(path)).unpublished() == resolved


def test_camera_streams_count_their_for_in_frames() -> None:
    engine = AlertEngine(SETTINGS.model_copy(update={"video_for_s": 0.0, "video_for_points": 3}))
    frames = [score(0.0 + i / 10, 2.0, modality="video") for i in range(3)]
    assert [len(engine.observe(frame)) for frame in frames] == [0, 0, 1]  # 3 frames, 0.2 s: fires
    sensor = AlertEngine(SETTINGS)
    assert [len(sensor.observe(score(i / 10, 2.0))) for i in range(3)] == [0, 0, 0]  # sensors still need for_s 3 s
