"""Every query weatherfleet sends to InfluxDB 3 stays inside InfluxDB 3 Core's query file limit.

Core refuses a query that would read more Parquet files than `--query-file-limit` (default 432, about three
days of data: influxdb3_write `query_file_limit.unwrap_or(432)`), so a query over a whole table works on
installation day and fails a few days later. Each query must either be bounded in time (the dashboard's
range through `$__timeFilter(time)`, or `time >= now() - INTERVAL ...`) or read a last value / distinct
value cache (`last_cache('<table>', '<name>')`, `distinct_cache(...)`: memory, no file) that the init Job
creates on that table."""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import re
import subprocess
import sys

import gitops_build as gb
import pytest
import yaml

from weatherfleet.ingest.influx_store import InfluxStore
from weatherfleet.models import SensorFleet, WeatherSensor
from weatherfleet.reconcilers import grafana

TABLES = ("weather", "device_status", "ota_events")
_FROM = re.compile(r"\bFROM\s+(" + "|".join(TABLES) + r")\b", re.I)
_CACHE = re.compile(r"\b(last_cache|distinct_cache)\('(\w+)',\s*'(\w+)'\)")
_BOUND = re.compile(r"\$__timeFilter\(time\)|\btime\s*>=\s*(now\(\)|\$)")


def _init_caches() -> set[tuple[str, str, str]]:
    spec = importlib.util.spec_from_file_location(
        "influxdb3_init_caches", gb.GITOPS / "base" / "influxdb3" / "init" / "influxdb3_init.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return {("last_cache", c["table"], c["name"]) for c in module.LAST_CACHES} | {
        ("distinct_cache", c["table"], c["name"]) for c in module.DISTINCT_CACHES
    }


CACHES = _init_caches()


def unbounded(sql: str) -> list[str]:
    """Why this query could read a whole table (empty: it cannot). Each `FROM <table>` must be followed,
    before the next FROM, by a time bound; each cache function must name a cache the init Job makes."""
    problems = []
    starts = [m for m in _FROM.finditer(sql)]
    for n, match in enumerate(starts):
        end = starts[n + 1].start() if n + 1 < len(starts) else len(sql)
        following = sql[match.end() : end]
        nested_from = re.search(r"\bFROM\b", following, re.I)
        clause = following[: nested_from.start()] if nested_from else following
        if not _BOUND.search(clause):
            problems.append(f"FROM {match.group(1)} without a time bound in {sql!r}")
    for kind, table, name in _CACHE.findall(sql):
        if (kind, table, name) not in CACHES:
            problems.append(f"{kind}('{table}', '{name}') is no cache the init Job creates")
    if not starts and not _CACHE.search(sql):
        problems.append(f"reads nothing known: {sql!r}")
    return problems


def test_the_checker_catches_what_the_issue_found() -> None:
    """The queries as they were: the latest status per device over the whole table, the devices of a
    location over the whole table, the operator's latest readings and last-seen times."""
    old = [
        "SELECT device, online, firmware, time FROM (SELECT device, online, firmware, time, row_number() OVER "
        "(PARTITION BY device ORDER BY time DESC) AS rn FROM device_status WHERE device IN ('a')) WHERE rn = 1",
        "SELECT DISTINCT device FROM weather WHERE location IN ('roof') ORDER BY device",
        "SELECT * FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY device ORDER BY time DESC) AS rn FROM weather) "
        "WHERE rn = 1",
        "SELECT device, MAX(time) AS time FROM ota_events GROUP BY device",
        "SELECT * FROM last_cache('weather', 'no_such_cache')",
    ]
    assert all(unbounded(sql) for sql in old)


def _rendered() -> list[dict]:
    result = subprocess.run(
        [sys.executable, "-m", "weatherfleet.cli", "render", str(gb.GITOPS / "examples")],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
        cwd=gb.REPO,
    )
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def _dashboard_queries(board: dict) -> list[str]:
    queries = [t["rawSql"] for p in board["panels"] for t in p.get("targets", [])]
    queries += [v["query"] for v in board["templating"]["list"] if v.get("type") == "query"]
    return queries


def test_every_dashboard_panel_and_variable_is_bounded() -> None:
    rendered = _rendered()
    (dashboard,) = [o for o in rendered if grafana.DASHBOARD_LABEL in o["metadata"]["labels"]]
    (text,) = dashboard["data"].values()
    queries = _dashboard_queries(json.loads(text))
    assert len(queries) >= 9
    assert [p for sql in queries for p in unbounded(sql)] == []
    # the panels the issue named now read the caches
    assert any("distinct_cache(" in q for q in queries) and any("last_cache(" in q for q in queries)


def test_every_alert_rule_is_bounded() -> None:
    for obj in _rendered():
        if grafana.ALERT_LABEL not in obj["metadata"]["labels"]:
            continue
        for text in obj["data"].values():
            for group in json.loads(text).get("groups", []):
                for rule in group["rules"]:
                    assert unbounded(rule["data"][0]["model"]["rawSql"]) == []


class _Recorder:
    """Stands in for influxdb3-python's client: records the SQL, answers an empty table."""

    def __init__(self) -> None:
        self.sql: list[str] = []

    def query(self, sql: str, **_: object):
        import pyarrow as pa

        self.sql.append(sql)
        return pa.table({"device": pa.array([], pa.string()), "time": pa.array([], pa.timestamp("ns"))})


@pytest.mark.parametrize("within", [None, dt.timedelta(minutes=30)])
def test_the_operators_queries_are_bounded(within) -> None:
    recorder = _Recorder()
    store = InfluxStore("http://influxdb3:8181", "weather", "token")
    store.client = recorder  # type: ignore[assignment]
    store.latest_readings(within=within)
    store.last_seen(within=within)
    assert recorder.sql and [p for sql in recorder.sql for p in unbounded(sql)] == []


def test_the_operators_window_follows_no_data_after() -> None:
    from weatherfleet.controller.readings import MAX_WINDOW, MIN_WINDOW, query_window

    fleet = SensorFleet.model_validate(
        {
            "metadata": {"name": "f", "namespace": "n"},
            "spec": {"selector": {"matchLabels": {"f": "1"}}, "alerting": {"noDataAfter": "15m"}},
        }
    )

    def sensor(device: str, after: str | None = None) -> WeatherSensor:
        spec = {"deviceId": device, "location": "x", "sensors": [{"type": "bme280"}]}
        if after:
            spec["alerting"] = {"noDataAfter": after}
        return WeatherSensor.model_validate(
            {"metadata": {"name": device, "namespace": "n", "labels": {"f": "1"}}, "spec": spec}
        )

    assert query_window([sensor("a")], [fleet]) == dt.timedelta(minutes=30)  # twice the fleet's
    assert query_window([sensor("a"), sensor("b", "2h")], [fleet]) == dt.timedelta(hours=4)
    assert query_window([sensor("a", "1m")], []) == MIN_WINDOW
    assert query_window([sensor("a", "72h")], [fleet]) == MAX_WINDOW  # never past what Core will read
    assert query_window([], []) == MIN_WINDOW
