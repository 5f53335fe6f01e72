"""The Grafana of docker-compose.yml (provisioned data source and DiffSentry dashboard) cannot run here: check that
its files are what Grafana reads, that it points at the compose InfluxDB, and that every Flux query asks for what
``operators.influx_sink`` writes, measurement by measurement."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, get_args

import pytest
import yaml

from core.contracts import Alert, AlertEventKind, Score
from operators import influx_sink

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "infra" / "grafana"
DATASOURCE_FILE = GRAFANA / "provisioning" / "datasources" / "influxdb.yaml"
PROVIDER_FILE = GRAFANA / "provisioning" / "dashboards" / "diffsentry.yaml"
DASHBOARD_FILE = GRAFANA / "dashboards" / "diffsentry.json"
COMPOSE_DEFAULT = re.compile(r"\$\{([A-Z_]+):-([^}]*)\}")
GRAFANA_VARIABLE = re.compile(r"\$\{([A-Za-z0-9_]+)\}")
# Columns every Flux table read from the store has.
FLUX_COLUMNS = {"_time", "_value", "_field", "_measurement", "_start", "_stop"}
# Written by the lifecycle part (operators/notifier.py, docs/design/console-and-alert-lifecycle.md): one point per
# AlertEvent in measurement "alert_events", its kind as field "kind", the alert's stream and id as tags.
ALERT_EVENTS = "alert_events"
ALERT_EVENTS_BY_DESIGN = ({"stream", "alert_id", "modality"}, {"kind"})


@dataclass(frozen=True)
class Written:
    """What the sink writes into one measurement."""

    tags: frozenset[str]
    fields: frozenset[str]


def _line_protocol_keys(line: str) -> tuple[str, Written]:
    head, rest = re.split(r"(?<!\\) ", line, maxsplit=1)
    field_set = rest.rsplit(" ", 1)[0]  # without the timestamp
    measurement, *tags = re.split(r"(?<!\\),", head)
    fields = re.findall(r'((?:[^=,\\]|\\.)+)=(?:"(?:[^"\\]|\\.)*"|[^,]*)(?:,|$)', field_set)
    return measurement, Written(frozenset(t.split("=", 1)[0] for t in tags), frozenset(fields))


def written_measurements() -> dict[str, Written]:
    """Measurement -> tag and field keys, read from the line protocol of points the sink makes for each modality
    (a score with contributions and a location, so every optional field is there) and for an alert."""
    lines = []
    for modality in ("sensor", "video"):
        score = Score(
            modality=modality,
            stream="s-1",
            event_time=10.0,
            score=2.0,
            threshold=1.0,
            is_anomaly=True,
            model="m",
            model_version="1",
            contributions={"Pressure": 0.7},
            location=(0.5, 0.25),
        )
        lines.append(influx_sink.score_point(score).to_line_protocol())
    alert = Alert(
        alert_id="al-1",
        modality="sensor",
        stream="s-1",
        state="firing",
        severity="critical",
        started_at=9.0,
        event_time=10.0,
        score=2.0,
        threshold=1.0,
        model="m",
        top_channels=["Pressure", "Flow rate"],
    )
    lines.append(influx_sink.alert_point(alert).to_line_protocol())
    written: dict[str, Written] = {}
    for line in lines:
        measurement, keys = _line_protocol_keys(line)
        known = written.get(measurement, Written(frozenset(), frozenset()))
        written[measurement] = Written(known.tags | keys.tags, known.fields | keys.fields)
    tags, fields = ALERT_EVENTS_BY_DESIGN
    written.setdefault(ALERT_EVENTS, Written(frozenset(tags), frozenset(fields)))
    return written


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def grafana(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]["grafana"]


@pytest.fixture(scope="module")
def datasource() -> dict[str, Any]:
    provisioning = yaml.safe_load(DATASOURCE_FILE.read_text())
    assert provisioning["apiVersion"] == 1
    [source] = provisioning["datasources"]
    return source


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD_FILE.read_text())


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> host path of the service's bind mounts (relative to the compose file)."""
    binds = [v.split(":") for v in service["volumes"] if v.startswith("./")]
    return {target: source for source, target, *_ in binds}


def _compose_value(value: str) -> str:
    return COMPOSE_DEFAULT.sub(lambda m: m.group(2), value)


def test_the_grafana_service_waits_for_influxdb_and_mounts_provisioning_from_the_repository(
    grafana: dict[str, Any],
) -> None:
    assert grafana["depends_on"] == {"influxdb": {"condition": "service_healthy"}}
    mounts = _mounts(grafana)
    assert mounts["/etc/grafana/provisioning/datasources"] == "./infra/grafana/provisioning/datasources"
    assert mounts["/etc/grafana/provisioning/dashboards"] == "./infra/grafana/provisioning/dashboards"
    for source in mounts.values():
        assert (ROOT / source).is_dir(), f"{source} is mounted but not in the repository"
    assert all(v.endswith(":ro") for v in grafana["volumes"] if v.startswith("./"))
    assert "api/health" in " ".join(grafana["healthcheck"]["test"])
    assert _compose_value(grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD"]) != "admin"


def test_the_data_source_is_the_compose_influxdb_in_flux_with_the_workers_org_bucket_and_token(
    compose: dict[str, Any], grafana: dict[str, Any], datasource: dict[str, Any]
) -> None:
    env = {name: _compose_value(str(value)) for name, value in grafana["environment"].items()}
    text = DATASOURCE_FILE.read_text()
    assert set(GRAFANA_VARIABLE.findall(text)) <= set(env), "every variable the file reads is set for grafana"
    resolved = yaml.safe_load(GRAFANA_VARIABLE.sub(lambda m: env[m.group(1)], text))["datasources"][0]
    assert (datasource["type"], datasource["access"]) == ("influxdb", "proxy")
    assert datasource["jsonData"]["version"] == "Flux"
    influx = compose["services"]["influxdb"]
    influx_env = {name: _compose_value(str(value)) for name, value in influx["environment"].items()}
    port = {p.split(":")[-1] for p in influx["ports"]}
    assert resolved["url"] == f"http://influxdb:{port.pop()}"
    assert resolved["jsonData"]["organization"] == influx_env["DOCKER_INFLUXDB_INIT_ORG"]
    assert resolved["jsonData"]["defaultBucket"] == influx_env["DOCKER_INFLUXDB_INIT_BUCKET"]
    assert resolved["secureJsonData"]["token"] == influx_env["DOCKER_INFLUXDB_INIT_ADMIN_TOKEN"]
    worker_env = compose["services"]["scoring"]["environment"]  # the role that writes the scores
    assert all(env[name] == _compose_value(worker_env[name]) for name in GRAFANA_VARIABLE.findall(text))


def test_the_dashboard_provider_reads_the_mounted_dashboard_folder(grafana: dict[str, Any]) -> None:
    provisioning = yaml.safe_load(PROVIDER_FILE.read_text())
    assert provisioning["apiVersion"] == 1
    [provider] = provisioning["providers"]
    assert provider["type"] == "file" and provider["name"]
    folder = _mounts(grafana)[provider["options"]["path"]]
    assert (ROOT / folder / DASHBOARD_FILE.name).is_file()
    home = PurePosixPath(grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"])
    assert str(home.parent) == provider["options"]["path"] and home.name == DASHBOARD_FILE.name


def test_the_dashboard_has_an_identity_and_a_grid_of_panels(dashboard: dict[str, Any]) -> None:
    assert isinstance(dashboard["schemaVersion"], int) and dashboard["schemaVersion"] >= 36
    assert dashboard["uid"] == "diffsentry" and dashboard["title"] == "DiffSentry"
    panels = dashboard["panels"]
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)) and all(isinstance(i, int) for i in ids)
    for panel in panels:
        grid = panel["gridPos"]
        assert all(isinstance(grid[k], int) for k in ("h", "w", "x", "y")), panel["title"]
        assert grid["w"] > 0 and grid["h"] > 0 and grid["x"] + grid["w"] <= 24, panel["title"]
    by_type = {panel["type"] for panel in panels}
    assert {"timeseries", "state-timeline"} <= by_type


def test_every_query_uses_the_provisioned_data_source_and_the_stream_variable(
    dashboard: dict[str, Any], datasource: dict[str, Any]
) -> None:
    ref = {"type": "influxdb", "uid": datasource["uid"]}
    [variable] = dashboard["templating"]["list"]
    assert variable["name"] == "stream" and variable["type"] == "query" and variable["datasource"] == ref
    repeated = [panel for panel in dashboard["panels"] if panel.get("repeat")]
    assert [panel["repeat"] for panel in repeated] == ["stream"]  # one score chart per stream
    annotations = [a for a in dashboard["annotations"]["list"] if not a.get("builtIn")]
    assert {a["name"] for a in annotations} == {"Alert transitions", "Alert events"}
    for owner in [*dashboard["panels"], *annotations]:
        assert owner["datasource"] == ref, owner["name" if "name" in owner else "title"]
    for query in flux_queries(dashboard)[1:]:  # all but the variable's own
        assert "${stream:regex}" in query


def flux_queries(dashboard: dict[str, Any]) -> list[str]:
    """The stream variable's query first, then every panel's and annotation's."""
    [variable] = dashboard["templating"]["list"]
    queries = [variable["query"]]
    queries += [target["query"] for panel in dashboard["panels"] for target in panel["targets"]]
    queries += [a["target"]["query"] for a in dashboard["annotations"]["list"] if not a.get("builtIn")]
    return queries


def referenced(query: str) -> tuple[set[str], set[str], set[str], set[tuple[str, str]]]:
    """Measurements, fields, record members (``r.x``: tags, or fields after a pivot) and (measurement, tag) pairs
    of schema calls that a Flux query names."""
    measurements = set(re.findall(r'r\._measurement == "([^"]+)"', query))
    schema_pairs = set(re.findall(r'measurement: "([^"]+)", tag: "([^"]+)"', query))
    measurements |= {m for m, _ in schema_pairs}
    fields = set(re.findall(r'r\._field == "([^"]+)"', query))
    members = set(re.findall(r"\br\.(\w+)", query)) - FLUX_COLUMNS
    for columns in re.findall(r"(?:keep|group|sort)\(columns: \[([^\]]*)\]", query):
        members |= set(re.findall(r'"(\w+)"', columns)) - FLUX_COLUMNS
    return measurements, fields, members, schema_pairs


def test_every_flux_query_asks_only_for_what_the_sink_writes(dashboard: dict[str, Any]) -> None:
    written = written_measurements()
    assert set(influx_sink.MEASUREMENTS.values()) | {influx_sink.ALERTS_MEASUREMENT} <= set(written)
    seen: set[str] = set()
    for query in flux_queries(dashboard):
        measurements, fields, members, schema_pairs = referenced(query)
        assert measurements, f"a query reads no particular measurement:\n{query}"
        assert "range(start: v.timeRangeStart" in query or "start: v.timeRangeStart" in query, query
        unknown = measurements - set(written)
        assert not unknown, f"{unknown} is not written by operators/influx_sink.py:\n{query}"
        tags = set().union(*(written[m].tags for m in measurements))
        all_fields = set().union(*(written[m].fields for m in measurements))
        assert fields <= all_fields, f"{fields - all_fields} no such field:\n{query}"
        assert members <= tags | all_fields, f"{members - tags - all_fields} neither tag nor field:\n{query}"
        for measurement, tag in schema_pairs:
            assert tag in written[measurement].tags, f"{measurement} has no tag {tag}"
        seen |= measurements
    assert seen == set(written), "every measurement the sink writes is on the dashboard"


def test_the_stream_variable_lists_each_modalitys_stream_tag(dashboard: dict[str, Any]) -> None:
    _, _, _, pairs = referenced(flux_queries(dashboard)[0])
    expected = {(influx_sink.MEASUREMENTS[m], influx_sink.STREAM_TAGS[m]) for m in influx_sink.MEASUREMENTS}
    assert pairs == expected


def test_the_score_chart_plots_score_and_threshold_of_both_modalities(dashboard: dict[str, Any]) -> None:
    [chart] = [panel for panel in dashboard["panels"] if panel.get("repeat") == "stream"]
    [query] = [target["query"] for target in chart["targets"]]
    measurements, fields, members, _ = referenced(query)
    assert measurements == set(influx_sink.MEASUREMENTS.values())
    assert fields == {"score", "threshold"}
    assert set(influx_sink.STREAM_TAGS.values()) <= members


def test_the_event_annotation_leaves_transitions_to_the_alert_annotation(dashboard: dict[str, Any]) -> None:
    [events] = [a for a in dashboard["annotations"]["list"] if a["name"] == "Alert events"]
    excluded = set(re.findall(r'r\._value != "(\w+)"', events["target"]["query"]))
    assert excluded == {"fired", "escalated", "resolved"}
    assert excluded <= set(get_args(AlertEventKind))
    for annotation in dashboard["annotations"]["list"]:
        if not annotation.get("builtIn"):
            mappings = annotation["mappings"]
            assert {mappings[k]["value"] for k in ("text", "tags")} == {"text", "tags"}
            assert "text:" in annotation["target"]["query"] and "tags:" in annotation["target"]["query"]
