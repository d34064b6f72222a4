"""InfluxStore against the InfluxDB 3 stand-ins: exactly what influxdb3-python sends, and what comes back."""

from __future__ import annotations

import datetime as dt
import gzip

import pyarrow as pa
import pyarrow.flight as flight
import pytest
from influxdb3_standins import TOKEN

from weatherfleet.ingest import influx_store
from weatherfleet.ingest.deadletters import DeadLetterStore
from weatherfleet.ingest.influx_store import InfluxStore, read_token
from weatherfleet.ingest.pipeline import Delivery, Ingestor
from weatherfleet.ingest.records import Point
from weatherfleet.ingest.spool import Spool
from weatherfleet.ingest.store import StoreUnavailable

T0 = 1_764_000_000_000_000_000


def weather(device: str, time_ns: int, **fields: float) -> Point:
    return Point("weather", {"device": device, "location": "roof top", "firmware": "1.2.0"}, fields, time_ns)


def make_store(write_lp, flight_server=None, token: str = TOKEN) -> InfluxStore:
    """A store writing to the write_lp stand-in, or querying the Flight one (InfluxDB 3 serves both on
    one port; the two stand-ins cannot share one)."""
    host = f"http://127.0.0.1:{flight_server.port}" if flight_server else write_lp.url
    return InfluxStore(host, "weather", token)


def test_write_uses_v3_write_lp_with_gzip_bearer_token_and_ns_precision(write_lp) -> None:
    store = make_store(write_lp)
    points = [weather("dev-01", T0 + i, temperature=20.0 + i, humidity=40.5) for i in range(20)]
    result = store.write(points)
    assert result.written == 20 and result.rejected == []
    [request] = write_lp.requests
    assert request.path == "/api/v3/write_lp"
    assert request.query["db"] == "weather"
    assert request.query["precision"] == "nanosecond"
    assert "accept_partial" not in request.query  # the server default (true) is what we want
    assert "no_sync" not in request.query  # acknowledged after the WAL is persisted
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.headers["content-encoding"] == "gzip"
    assert gzip.decompress(request.raw_body).decode() == request.body
    assert request.body.split("\n") == [
        f"weather,device=dev-01,firmware=1.2.0,location=roof\\ top temperature={20.0 + i!r},humidity=40.5 {T0 + i}"
        for i in range(20)
    ]
    assert len(request.body) >= influx_store.GZIP_THRESHOLD  # a batch this size is gzipped
    assert request.status == 204
    assert write_lp.row_count("weather") == 20


def test_rewriting_the_same_points_keeps_one_row_each(write_lp) -> None:
    store = make_store(write_lp)
    points = [weather("dev-02", T0 + i, temperature=1.0) for i in range(5)]
    store.write(points)
    store.write(points)
    assert write_lp.row_count("weather") == 5


def test_partial_write_keeps_good_lines_and_returns_refused_ones(write_lp) -> None:
    store = make_store(write_lp)
    store.write([Point("ota_events", {"device": "dev-03", "event": "downloading"}, {"percent": 10}, T0)])
    # a string where the column is an integer: InfluxDB refuses that line only
    good = Point("ota_events", {"device": "dev-03", "event": "downloading"}, {"percent": 20}, T0 + 1)
    bad = Point("ota_events", {"device": "dev-03", "event": "downloading"}, {"percent": "half"}, T0 + 2)
    result = store.write([good, bad])
    assert result.written == 1
    [(point, reason)] = result.rejected
    assert point is bad
    assert "invalid column type for column 'percent'" in reason
    assert write_lp.requests[-1].status == 400
    assert write_lp.row_count("ota_events") == 2


def test_partial_write_lines_become_store_dead_letters_in_the_pipeline(write_lp, tmp_path) -> None:
    store = make_store(write_lp)
    store.write([Point("ota_events", {"device": "dev-04", "event": "failed"}, {"reason": "crc"}, T0)])
    dead = DeadLetterStore(tmp_path / "dead.db")
    acked: list[Delivery] = []
    ingestor = Ingestor(store, Spool(tmp_path / "spool"), dead, ack=acked.extend)
    now = T0 + 10**9
    ok = b'{"event": "failed", "reason": "crc mismatch", "time": 1764000000}'
    # an earlier writer made `version` an integer column: InfluxDB refuses our string for it, for good
    write_lp.column_types[("ota_events", "version")] = "int"
    conflict = b'{"event": "installed", "version": "1.3.0", "time": 1764000001}'
    ingestor.submit(Delivery("sensors/dev-04/ota", ok, now, 1))
    ingestor.submit(Delivery("sensors/dev-04/ota", conflict, now, 2))
    ingestor.start()
    try:
        _wait(lambda: len(acked) == 2)
    finally:
        ingestor.stop()
    [letter] = dead.list()
    assert letter.source == "store" and "invalid column type for column 'version'" in letter.reason
    # the original message, on its own topic, so that it can be looked at and sent again
    assert (letter.topic, letter.payload) == ("sensors/dev-04/ota", conflict)
    assert ingestor.metrics.dead_letters.labels("store")._value.get() == 1


def test_unavailable_server_raises_store_unavailable(write_lp) -> None:
    write_lp.available = False
    with pytest.raises(StoreUnavailable, match="InfluxDB write failed"):
        make_store(write_lp).write([weather("dev-05", T0, temperature=1.0)])


def test_wrong_token_is_unavailable_not_data_loss(write_lp) -> None:
    with pytest.raises(StoreUnavailable):
        make_store(write_lp, token="wrong").write([weather("dev-05", T0, temperature=1.0)])
    assert write_lp.requests[-1].status == 401
    assert write_lp.row_count("weather") == 0


def test_unreachable_server_raises_store_unavailable(write_lp) -> None:
    url = write_lp.url
    write_lp.stop()
    store = InfluxStore(url, "weather", TOKEN)
    with pytest.raises(StoreUnavailable):
        store.write([weather("dev-05", T0, temperature=1.0)])


def test_token_from_file_wins_over_environment(tmp_path) -> None:
    secret = tmp_path / "token"
    secret.write_text("from-file\n")
    assert read_token("from-env", secret) == "from-file"
    assert read_token("from-env", None) == "from-env"
    with pytest.raises(ValueError, match="no InfluxDB token"):
        read_token(None, None)


# -- queries over Flight ------------------------------------------------------------------------------


def _ts(values: list[int]) -> pa.Array:
    return pa.array(values, pa.timestamp("ns", "UTC"))


def _latest_table(rn: bool = False) -> pa.Table:
    columns = {
        "time": _ts([T0 + 5, T0 + 7]),
        "device": ["dev-01", "dev-02"],
        "location": ["roof", "cellar"],
        "firmware": ["1.2.0", "1.1.0"],
        "temperature": [21.5, None],
        "co2": [None, 415.0],
        "flagged": [None, "humidity=140.0"],
    }
    if rn:
        columns["rn"] = pa.array([1, 1], pa.uint64())
    return pa.table(columns)


def test_latest_readings_come_from_the_last_value_cache_within_a_window(write_lp, flight_server) -> None:
    flight_server.when("last_cache(", _latest_table())
    readings = make_store(write_lp, flight_server).latest_readings(within=dt.timedelta(minutes=30))
    [query] = flight_server.queries
    assert query.ticket["database"] == "weather"
    assert query.ticket["query_type"] == "sql"
    sql = query.ticket["sql_query"]
    assert "FROM last_cache('weather', 'weatherfleet_weather_last')" in sql
    assert "time >= now() - INTERVAL '1800 seconds'" in sql
    assert query.headers["authorization"] == [f"Bearer {TOKEN}"]
    assert readings["dev-01"].values == {"temperature": 21.5}
    assert readings["dev-01"].time == dt.datetime.fromtimestamp(T0 // 10**9, dt.UTC)
    assert readings["dev-02"].values == {"co2": 415.0}
    assert readings["dev-02"].flagged == "humidity=140.0"
    assert readings["dev-02"].location == "cellar"


def test_without_the_cache_the_table_is_read_within_the_window(write_lp, flight_server) -> None:
    # InfluxDB's answer to last_cache() naming a cache that does not exist (DataFusion plan error)
    flight_server.when(
        "last_cache(",
        flight.FlightServerError("Error during planning: could not find cache for the given arguments"),
    )
    flight_server.when("ROW_NUMBER()", _latest_table(rn=True))
    readings = make_store(write_lp, flight_server).latest_readings()
    _cached, scan = flight_server.queries
    assert "PARTITION BY device ORDER BY time DESC" in scan.ticket["sql_query"]
    assert "WHERE time >= now() - INTERVAL '86400 seconds'" in scan.ticket["sql_query"]  # a day by default
    assert set(readings) == {"dev-01", "dev-02"}


def test_latest_readings_before_anything_was_written(write_lp, flight_server) -> None:
    flight_server.when(
        "last_cache(", flight.FlightServerError("Error during planning: provided table name is invalid")
    )
    assert make_store(write_lp, flight_server).latest_readings() == {}


def test_last_seen_takes_the_latest_of_all_tables_and_skips_missing_ones(write_lp, flight_server) -> None:
    flight_server.when("FROM weather", pa.table({"device": ["dev-01"], "time": _ts([T0])}))
    flight_server.when(
        "FROM device_status", pa.table({"device": ["dev-01", "dev-02"], "time": _ts([T0 + 10**9, T0])})
    )
    flight_server.when("FROM ota_events", flight.FlightServerError("table 'ota_events' not found"))
    seen = make_store(write_lp, flight_server).last_seen()
    assert seen == {
        "dev-01": dt.datetime.fromtimestamp(T0 // 10**9 + 1, dt.UTC),
        "dev-02": dt.datetime.fromtimestamp(T0 // 10**9, dt.UTC),
    }
    assert [q.ticket["sql_query"].split("FROM ")[1].split()[0] for q in flight_server.queries] == [
        "weather",
        "device_status",
        "ota_events",
    ]
    assert all(
        "WHERE time >= now() - INTERVAL '86400 seconds'" in q.ticket["sql_query"]
        for q in flight_server.queries
    )


def test_series_passes_values_as_query_parameters(write_lp, flight_server) -> None:
    flight_server.when(
        "SELECT time, pressure", pa.table({"time": _ts([T0, T0 + 60 * 10**9]), "pressure": [1013.2, 1012.9]})
    )
    start = dt.datetime(2025, 11, 24, tzinfo=dt.UTC)
    end = dt.datetime(2025, 11, 25, 12, tzinfo=dt.UTC)
    series = make_store(write_lp, flight_server).series("dev-01' OR '1'='1", "pressure", start, end)
    [query] = flight_server.queries
    assert query.ticket["params"] == {
        "device": "dev-01' OR '1'='1",
        "start": "2025-11-24T00:00:00.000000Z",
        "end": "2025-11-25T12:00:00.000000Z",
    }
    assert "$device" in query.ticket["sql_query"] and "dev-01'" not in query.ticket["sql_query"]
    assert [p.value for p in series] == [1013.2, 1012.9]
    with pytest.raises(ValueError, match="unknown field"):
        make_store(write_lp, flight_server).series("dev-01", "time; DROP TABLE weather", start, end)


def _wait(condition, timeout: float = 30.0) -> None:
    from weatherfleet.services.process import wait_until

    wait_until(condition, timeout, "condition")


def test_influxdb_outage_spools_and_replays_into_influxdb(write_lp, tmp_path) -> None:
    from weatherfleet.ingest.batching import BatchPolicy
    from weatherfleet.services.process import wait_until

    acked: list[Delivery] = []
    ingestor = Ingestor(
        make_store(write_lp),
        Spool(tmp_path / "spool"),
        DeadLetterStore(tmp_path / "dead.db"),
        policy=BatchPolicy(max_rows=4, max_delay=0.1, retry_interval=0.2),
        ack=acked.extend,
    )
    write_lp.available = False
    ingestor.start()
    try:
        for i in range(10):
            payload = f"weather,device=dev-06 pm25={i}.5 {T0 + i}".encode()
            ingestor.submit(Delivery("sensors/dev-06/measurements", payload, T0 + 10**9, i))
        wait_until(lambda: len(acked) == 10, 30, "acks while InfluxDB answers 503")
        assert ingestor.spool.points == 10 and write_lp.row_count("weather") == 0
        assert {r.status for r in write_lp.requests} == {503}
        write_lp.available = True
        wait_until(lambda: not ingestor.spool, 30, "the spool to drain into InfluxDB")
    finally:
        ingestor.stop()
    assert write_lp.row_count("weather") == 10
    written = [line for r in write_lp.requests if r.status == 204 for line in r.body.split("\n")]
    assert [int(line.rsplit(" ", 1)[1]) for line in written] == [T0 + i for i in range(10)]  # in order


# -- the OTA panel's columns, from the device's message to the dashboard's query -----------------------


def _init_job():
    import importlib.util
    import sys
    from pathlib import Path

    script = Path(__file__).parents[2] / "gitops" / "base" / "influxdb3" / "init" / "influxdb3_init.py"
    spec = importlib.util.spec_from_file_location("influxdb3_init_for_ingest", script)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def _ota_panel() -> dict:
    """The fleet dashboard's "OTA events" panel."""
    from weatherfleet.models import SensorFleet, WeatherSensor
    from weatherfleet.reconcilers import grafana

    fleet = SensorFleet.model_validate(
        {"metadata": {"name": "f", "namespace": "n"}, "spec": {"selector": {"matchLabels": {"f": "1"}}}}
    )
    sensor = WeatherSensor.model_validate(
        {
            "metadata": {"name": "dev-01", "namespace": "n", "labels": {"f": "1"}},
            "spec": {"deviceId": "dev-01", "location": "roof", "sensors": [{"type": "bme280"}]},
        }
    )
    board = grafana.build_dashboard(fleet, [sensor])
    [panel] = [p for p in board["panels"] if p["title"] == "OTA events"]
    return panel


def _ota_panel_columns() -> list[str]:
    """The columns the "OTA events" panel selects from ota_events."""
    import re

    select = re.match(r"SELECT (.+?) FROM ota_events\b", _ota_panel()["targets"][0]["rawSql"])
    assert select is not None
    return [c.strip() for c in select.group(1).split(",")]


def test_the_ota_panel_shows_the_download_percent(write_lp) -> None:
    """A device's progress event, parsed and written by ingest into the tables the init Job declared,
    comes back in the panel's columns with its percent; before any event the query is valid."""
    from weatherfleet.ingest.parsing import MessageParser

    init = _init_job()
    write_lp.declare(init.TABLES, init.FIELDS)
    columns = _ota_panel_columns()
    assert "percent" in columns
    percent_unit = {
        "matcher": {"id": "byName", "options": "percent"},
        "properties": [{"id": "unit", "value": "percent"}],
    }
    assert percent_unit in _ota_panel()["fieldConfig"]["overrides"]  # shown as 40%
    assert write_lp.select("ota_events", columns) == []  # no "No field named percent" on a fresh install
    now = T0 + 10**9
    message = b'{"event": "downloading", "version": "1.3.0", "percent": 40, "time": 1764000000.25}'
    points = MessageParser().parse("sensors/dev-01/ota", message, now)
    result = make_store(write_lp).write(points)
    assert result.written == 1 and result.rejected == []  # the declared type is the type ingest writes
    assert write_lp.select("ota_events", columns) == [
        {
            "time": 1_764_000_000_250_000_000,
            "device": "dev-01",
            "event": "downloading",
            "version": "1.3.0",
            "percent": 40,
            "reason": None,
        }
    ]


def test_without_the_declaration_the_panel_fails_until_a_percent_is_written(write_lp) -> None:
    """Why the init Job declares the fields: InfluxDB 3 refuses a query naming a column never written."""
    columns = _ota_panel_columns()
    make_store(write_lp).write(
        [Point("ota_events", {"device": "dev-01", "event": "installed"}, {"version": "1.3.0"}, T0)]
    )
    with pytest.raises(ValueError, match="No field named percent"):
        write_lp.select("ota_events", columns)
