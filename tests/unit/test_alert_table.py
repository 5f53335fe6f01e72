"""The alerting tier's state store over a table (a dict here: faust's Table is a MutableMapping), and the choice of
the faust transport per broker."""

from typing import Any

from faust.transport.drivers import aiokafka as faust_aiokafka

from core.settings import KafkaSettings
from infra.tansu_compat import TansuTransport, transport_for
from operators.alert_table import TableAlertStateStore
from operators.alerting import AlertEngine, idempotency_key
from pipeline.worker import ScoresOnly
from tests.unit.test_alerting import SETTINGS, run, series


def test_a_stream_moved_to_another_engine_keeps_its_episode_and_resolves_there() -> None:
    table: dict[str, Any] = {}  # what the changelog restores on the new owner
    first = AlertEngine(SETTINGS, TableAlertStateStore(table))
    fired = run(first, series(100, [1.5, 1.5, 1.5, 1.5, 1.5]))
    assert [a.state for _, a in fired] == ["firing"]

    second = AlertEngine(SETTINGS, TableAlertStateStore(table))  # a new owner of the partition, same table
    assert run(second, series(100, [1.5, 1.5, 1.5, 1.5, 1.5])) == []  # re-delivered scores are late there
    resolved = run(second, series(105, [0.1, 0.1, 0.1, 0.1]))
    assert [(a.state, a.alert_id) for _, a in resolved] == [("resolved", fired[0][1].alert_id)]


def test_the_outbox_keeps_emitted_alerts_per_stream_until_acknowledged() -> None:
    table: dict[str, Any] = {}
    store = TableAlertStateStore(table)
    engine = AlertEngine(SETTINGS, store)
    ((_, alert),) = run(engine, series(100, [1.5, 1.5, 1.5, 1.5, 1.5]))
    run(engine, series(100, [1.0], stream="pump-2"))
    assert [idempotency_key(a) for a in store.outbox("sensor/pump-1")] == [idempotency_key(alert)]
    assert store.outbox("sensor/pump-2") == [] and store.outbox("sensor/never-seen") == []
    assert store.unpublished() == []  # leftovers are taken per stream, in the partition of its own scores

    dead_owner_table = dict(table)  # died before publishing: the next owner finds the alert with the state
    assert [a.alert_id for a in TableAlertStateStore(dead_owner_table).outbox("sensor/pump-1")] == [alert.alert_id]
    engine.acknowledge(alert)
    assert store.outbox("sensor/pump-1") == []
    assert store.load("sensor/pump-1") is not None and store.load("sensor/pump-1").phase == "firing"


def test_forget_rereads_states_another_instance_advanced() -> None:
    table: dict[str, Any] = {}
    mine, other = AlertEngine(SETTINGS, TableAlertStateStore(table)), AlertEngine(SETTINGS, TableAlertStateStore(table))
    run(mine, series(100, [0.1]))
    run(other, series(101, [1.5, 1.5, 1.5, 1.5, 1.5]))  # the partition was away; the other owner fired
    mine.forget()
    assert mine.state("sensor", "pump-1").phase == "firing"


def test_the_tansu_transport_only_for_tansu() -> None:
    assert transport_for(KafkaSettings(broker="tansu")) is TansuTransport
    assert transport_for(KafkaSettings()) is faust_aiokafka.Transport
    assert TansuTransport.Consumer is not faust_aiokafka.Transport.Consumer


def test_the_scoring_role_emits_no_alerts() -> None:
    scores_only = ScoresOnly()
    assert [scores_only.observe(s) for s in series(100, [5.0, 5.0, 5.0, 5.0, 5.0])] == [[]] * 5
    assert scores_only.recover() == []
