"""The InfluxDB 3 init Job's script against stand-ins for the two APIs it talks to: InfluxDB 3 Core's
token, database, table and cache endpoints, and the Kubernetes Secrets API. (Neither InfluxDB 3 nor a kube-apiserver
can run here; the stand-ins answer as the real endpoints do for these calls, including the refusals.)
The script runs the way the Job runs it: as a standalone program, standard library only."""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import gitops_build as gb
import gitops_standins as standins
import pytest

from weatherfleet.services.process import free_port

SCRIPT = gb.GITOPS / "base" / "influxdb3" / "init" / "influxdb3_init.py"
SA_TOKEN = standins.SA_TOKEN


def _load_script():
    spec = importlib.util.spec_from_file_location("influxdb3_init", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["influxdb3_init"] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


init = _load_script()


# The request bodies of InfluxDB 3 Core 3.7 (influxdb3_types/src/http.rs): serde ignores unknown keys, so a
# misspelt one would silently fall back to the default; the stand-in refuses it instead.
TABLE_KEYS = {"db": str, "table": str, "tags": list, "fields": list}
LAST_CACHE_KEYS = {"db": str, "table": str, "name": str, "key_columns": list, "value_columns": list,
                   "count": int, "ttl": int}  # fmt: skip
DISTINCT_CACHE_KEYS = {"db": str, "table": str, "name": str, "columns": list, "max_cardinality": int,
                       "max_age": int}  # fmt: skip
REQUIRED = {
    "table": {"db", "table", "tags", "fields"},
    "last": {"db", "table"},
    "distinct": {"db", "table", "columns"},
}


FIELD_TYPES = {"utf8", "int64", "uint64", "float64", "bool"}  # influxdb3_types FieldType, lowercase


class InfluxStandIn:
    """InfluxDB 3 Core with authorization: the first admin token may be created without a token, after
    that every request needs it; creating an existing database, table or cache answers 409 (the catalog's
    AlreadyExists); a field's type is one of FieldType's (400 otherwise, as serde refuses an unknown
    variant); a cache needs its table (404 NotFound), last-cache key columns must be columns of it (400),
    distinct-cache columns tags or string fields (400); the count of a last cache is at least 1.
    `patch_table`: the server has `PATCH /api/v3/configure/table` (newer than 3.7, which answers 404):
    additive, a column already there at the same type is left alone, at another type refused (400)."""

    def __init__(self, patch_table: bool = False) -> None:
        self.patch_table = patch_table
        self.operator_token: str | None = None
        self.databases: set[str] = set()
        self.tables: dict[tuple[str, str], dict[str, str]] = {}  # (db, table) -> column -> type
        self.last_caches: dict[tuple[str, str, str], dict] = {}
        self.distinct_caches: dict[tuple[str, str, str], dict] = {}
        self.token_requests = 0

    @staticmethod
    def _shape(body: dict, keys: dict, required: set[str]) -> str | None:
        unknown = set(body) - set(keys)
        missing = required - set(body)
        wrong = [k for k, t in keys.items() if k in body and not isinstance(body[k], t)]
        if unknown or missing or wrong:
            return f"invalid request: unknown {sorted(unknown)}, missing {sorted(missing)}, mistyped {wrong}"
        return None

    def handle(self, method: str, path: str, headers, body: bytes) -> tuple[int, dict]:
        authorized = (
            self.operator_token is not None
            and headers.get("Authorization") == f"Bearer {self.operator_token}"
        )
        if method == "GET" and path == "/health":
            return (200, {"status": "pass"}) if authorized else (401, {"error": "unauthorized"})
        if method == "POST" and path == "/api/v3/configure/token/admin":
            self.token_requests += 1
            if self.operator_token is not None:
                return 401, {"error": "the operator token exists; authenticate"}
            self.operator_token = "apiv3_" + secrets.token_urlsafe(48)
            return 201, {"id": 0, "name": "_admin", "token": self.operator_token, "expiry": None}
        if method in ("POST", "PATCH") and path.startswith("/api/v3/configure/") and not authorized:
            return 401, {"error": "unauthorized"}
        if method == "POST" and path == "/api/v3/configure/database":
            name = json.loads(body)["db"]
            if name in self.databases:
                return 409, {"error": f"attempted to create resource that already exists: {name}"}
            self.databases.add(name)
            return 200, {}
        if method == "POST" and path == "/api/v3/configure/table":
            req = json.loads(body)
            if problem := self._shape(req, TABLE_KEYS, REQUIRED["table"]):
                return 400, {"error": problem}
            if req["db"] not in self.databases:
                return 404, {"error": "not found"}
            if (req["db"], req["table"]) in self.tables:
                return 409, {"error": "attempted to create a resource that already exists"}
            if any(set(f) != {"name", "type"} or f["type"] not in FIELD_TYPES for f in req["fields"]):
                return 400, {"error": f"invalid fields: {req['fields']}"}
            columns = {t: "tag" for t in req["tags"]} | {f["name"]: f["type"] for f in req["fields"]}
            self.tables[(req["db"], req["table"])] = columns | {"time": "time"}
            return 200, {}
        if method == "PATCH" and path == "/api/v3/configure/table" and self.patch_table:
            req = json.loads(body)
            columns = self.tables.get((req.get("db"), req.get("table")))
            if columns is None:
                return 404, {"error": "not found"}
            wanted = {t: "tag" for t in req.get("tags", [])} | {
                f["name"]: f["type"] for f in req.get("fields", [])
            }
            if any(name in columns and columns[name] != kind for name, kind in wanted.items()):
                return 400, {"error": "column exists with a different type"}
            columns.update(wanted)
            return 200, {}
        if method == "POST" and path in ("/api/v3/configure/last_cache", "/api/v3/configure/distinct_cache"):
            last = path.endswith("last_cache")
            req = json.loads(body)
            keys = LAST_CACHE_KEYS if last else DISTINCT_CACHE_KEYS
            if problem := self._shape(req, keys, REQUIRED["last" if last else "distinct"]):
                return 400, {"error": problem}
            columns = self.tables.get((req["db"], req["table"]))
            if columns is None:
                return 404, {"error": "not found"}
            wanted = req.get("key_columns", []) + req.get("value_columns", []) if last else req["columns"]
            if not wanted and not last:
                return 400, {"error": "no columns provided when creating distinct cache"}
            for column in wanted:
                kind = columns.get(column)
                if kind is None:
                    return 400, {"error": f"column {column} does not exist"}
                if not last and kind not in ("tag", "utf8"):
                    return 400, {"error": "invalid column type for distinct value cache"}
            if last and req.get("count", 1) < 1:
                return 400, {"error": "invalid cache size"}
            store = self.last_caches if last else self.distinct_caches
            key = (req["db"], req["table"], req["name"])
            if key in store:
                return 409, {"error": "attempted to create a resource that already exists"}
            store[key] = req
            return 201, {"table": req["table"], "name": req["name"]}
        return 404, {"error": "not found"}


@pytest.fixture
def influx() -> Iterator[tuple[InfluxStandIn, str]]:
    app = InfluxStandIn()
    for url in standins.serve(app):
        yield app, url


@pytest.fixture
def kube() -> Iterator[tuple[standins.KubeStandIn, str]]:
    app = standins.KubeStandIn()
    for url in standins.serve(app):
        yield app, url


def _settings(influx_url: str, kube_url: str, **overrides):
    values = {
        "influx_url": influx_url,
        "database": "weather",
        "secret_name": "influxdb3-token",
        "namespace": "weatherfleet",
        "kube_url": kube_url,
        "kube_token": SA_TOKEN,
        "kube_ca_file": None,
        "ready_timeout": 5.0,
        "retry_interval": 0.05,
    }
    return init.Settings(**(values | overrides))


def test_first_run_creates_token_secret_and_database(influx, kube) -> None:
    (influx_app, influx_url), (kube_app, kube_url) = influx, kube
    done = init.run(_settings(influx_url, kube_url))
    assert influx_app.operator_token is not None
    assert kube_app.token("weatherfleet", "influxdb3-token") == influx_app.operator_token
    assert influx_app.databases == {"weather"}
    assert any("created the operator token" in line for line in done)
    assert all(influx_app.operator_token not in line for line in done), "the token must never be logged"


def test_second_run_reuses_the_token_and_keeps_the_database(influx, kube) -> None:
    (influx_app, influx_url), (kube_app, kube_url) = influx, kube
    init.run(_settings(influx_url, kube_url))
    token = influx_app.operator_token
    done = init.run(_settings(influx_url, kube_url))
    assert influx_app.token_requests == 1
    assert kube_app.token("weatherfleet", "influxdb3-token") == token
    assert done == [
        "reused the operator token from Secret influxdb3-token",
        "database weather already exists",
        "table weather already exists (this InfluxDB cannot add fields: they come with writes)",
        "table device_status already exists (this InfluxDB cannot add fields: they come with writes)",
        "table ota_events already exists (this InfluxDB cannot add fields: they come with writes)",
        "kept last value cache weatherfleet_weather_last on weather",
        "kept last value cache weatherfleet_status_last on device_status",
        "kept distinct value cache weatherfleet_weather_devices on weather",
    ]


def test_lost_secret_fails_with_the_way_out(influx, kube) -> None:
    (_, influx_url), (kube_app, kube_url) = influx, kube
    init.run(_settings(influx_url, kube_url))
    kube_app.secrets.clear()
    with pytest.raises(init.InitError, match="regenerate"):
        init.run(_settings(influx_url, kube_url))
    assert kube_app.secrets == {}, "nothing half-made is left behind"


def test_a_secret_with_a_foreign_token_is_refused(influx, kube) -> None:
    (_, influx_url), (kube_app, kube_url) = influx, kube
    init.run(_settings(influx_url, kube_url))
    kube_app.secrets[("weatherfleet", "influxdb3-token")]["data"]["token"] = base64.b64encode(
        b"stale"
    ).decode()
    with pytest.raises(init.InitError, match="rejected"):
        init.run(_settings(influx_url, kube_url))


def test_kubernetes_refusal_is_reported(influx, kube) -> None:
    (_, influx_url), (_, kube_url) = influx, kube
    with pytest.raises(init.InitError, match="HTTP 401"):
        init.run(_settings(influx_url, kube_url, kube_token="wrong"))


def test_unreachable_influxdb_times_out_clearly(kube) -> None:
    _, kube_url = kube
    with pytest.raises(init.InitError, match="did not answer within 1s"):
        init.run(_settings(f"http://127.0.0.1:{free_port()}", kube_url, ready_timeout=1.0))


def test_runs_as_the_job_runs_it(influx, kube, tmp_path: Path) -> None:
    """A separate Python process, configured only by the Job's environment and the service-account
    files, exits 0 the first time and again the second time; a failure exits 1 with one clear line."""
    (influx_app, influx_url), (kube_app, kube_url) = influx, kube
    sa = tmp_path / "serviceaccount"
    sa.mkdir()
    (sa / "token").write_text(SA_TOKEN + "\n")
    (sa / "namespace").write_text("weatherfleet")
    env = {
        "PATH": os.environ.get("PATH", ""),
        "INFLUXDB3_URL": influx_url,
        "INFLUXDB3_DATABASE": "weather",
        "TOKEN_SECRET_NAME": "influxdb3-token",
        "KUBE_API_URL": kube_url,
        "SERVICE_ACCOUNT_DIR": str(sa),
        "READY_TIMEOUT_SECONDS": "5",
    }
    for _ in range(2):
        result = subprocess.run(
            [sys.executable, "-I", str(SCRIPT)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert influx_app.operator_token not in result.stdout + result.stderr
    assert kube_app.token("weatherfleet", "influxdb3-token") == influx_app.operator_token
    kube_app.secrets.clear()
    result = subprocess.run(
        [sys.executable, "-I", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 1
    assert result.stderr.startswith("influxdb3-init: error: InfluxDB already has an operator token")


def test_job_runs_the_script_it_mounts(infrastructure: list[dict]) -> None:
    job = gb.find(infrastructure, "Job", "influxdb3-init")
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    (mount,) = container["volumeMounts"]
    script_path = container["command"][-1]
    assert script_path == f"{mount['mountPath']}/{SCRIPT.name}"
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    config_map = gb.find(infrastructure, "ConfigMap", volume["configMap"]["name"])
    assert config_map["data"][SCRIPT.name] == SCRIPT.read_text()
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["INFLUXDB3_URL"] == "http://influxdb3:8181"
    role = gb.find(infrastructure, "Role", "influxdb3-init")
    named = [r for r in role["rules"] if "get" in r["verbs"]]
    assert named and all(r.get("resourceNames") == [env["TOKEN_SECRET_NAME"]] for r in named)


def test_tables_and_caches_are_made_for_what_reads_them(influx, kube) -> None:
    """The caches exist under the names the dashboards and the operator query, on tables made with the
    tags ingest writes, keyed by a column those tables have."""
    from weatherfleet.ingest import influx_store
    from weatherfleet.ingest.parsing import MessageParser
    from weatherfleet.reconcilers.grafana import datasource as grafana

    (influx_app, influx_url), (_, kube_url) = influx, kube
    init.run(_settings(influx_url, kube_url))
    parser = MessageParser()
    now = time.time_ns()
    samples = {
        "sensors/dev-01/measurements": f"weather,location=roof,firmware=1.0.0 temperature=21.5 {now}".encode(),
        "sensors/dev-01/status": b'{"online": true, "firmware": "1.0.0"}',
        "sensors/dev-01/ota": b'{"event": "installed", "version": "1.0.0"}',
    }
    written = {
        p.table: set(p.tags) for topic, body in samples.items() for p in parser.parse(topic, body, now)
    }
    assert {t: set(tags) for t, tags in init.TABLES.items()} == written
    assert {t for (_, t) in influx_app.tables} == set(written)
    last = {name: spec for (_, _, name), spec in influx_app.last_caches.items()}
    distinct = {name: spec for (_, _, name), spec in influx_app.distinct_caches.items()}
    assert last[influx_store.WEATHER_LAST_CACHE]["table"] == "weather"
    assert last[grafana.STATUS_LAST_CACHE]["table"] == grafana.STATUS_TABLE
    assert distinct[grafana.DEVICES_DISTINCT_CACHE]["columns"] == ["location", "device"]
    # the operator asks for at most a day; entries must live at least that long
    assert last[influx_store.WEATHER_LAST_CACHE]["ttl"] >= influx_store.RECENT.total_seconds()
    assert all("value_columns" not in spec for spec in last.values()), "every column, new fields included"


def test_a_cache_needs_its_table(influx) -> None:
    """Why the Job makes the tables: InfluxDB refuses a cache for a table nothing has written yet."""
    _, influx_url = influx
    settings = _settings(influx_url, "http://unused")
    token = init.InfluxDB(settings).create_operator_token()
    init.InfluxDB(settings).create_database(token)
    with pytest.raises(init.InitError, match="HTTP 404"):
        init.InfluxDB(settings).create_last_cache(init.LAST_CACHES[0], token)


def test_tables_hold_every_column_a_dashboard_names_typed_as_ingest_writes_it(influx, kube) -> None:
    """InfluxDB 3 answers a query naming a column no write has made with an error, so every column a
    dashboard query names (the OTA panel's percent included) is declared, with the type ingest writes."""
    import re

    from weatherfleet.ingest.parsing import MessageParser
    from weatherfleet.ingest.records import to_line_protocol
    from weatherfleet.messages import FIELDS, SENSOR_FIELDS
    from weatherfleet.models import SensorFleet, WeatherSensor
    from weatherfleet.reconcilers import grafana

    (influx_app, influx_url), (_, kube_url) = influx, kube
    init.run(_settings(influx_url, kube_url))
    assert set(init.WEATHER_QUANTITIES) == set(FIELDS)
    # the types: what the parser makes of every kind of message, in line protocol
    parser = MessageParser()
    now = time.time_ns()
    quantities = ",".join(f"{name}={(low + high) / 2!r}" for name, (_unit, low, high) in FIELDS.items())
    samples = {
        "sensors/dev-01/measurements": f"weather,location=roof {quantities} {now}".encode(),
        "sensors/dev-01/status": b'{"online": true, "firmware": "1.0.0"}',
        "sensors/dev-01/ota": b'{"event": "failed", "version": "1.0.0", "percent": 40, "reason": "crc"}',
    }
    kinds = {"i": "int64", '"': "utf8", "e": "bool"}  # by a line protocol value's last character
    written = {}
    for topic, body in samples.items():
        for point in parser.parse(topic, body, now):
            line = to_line_protocol(point)
            for name in point.fields:
                value = re.search(rf"[ ,]{name}=(\S+?)(?=,|\s)", line).group(1)
                written[(point.table, name)] = kinds.get(value[-1], "float64")
    declared = {(table, name): kind for table, fields in init.FIELDS.items() for name, kind in fields.items()}
    assert {key: written[key] for key in declared} == declared
    # the names: every column the dashboard's queries read from a table
    fleet = SensorFleet.model_validate(
        {"metadata": {"name": "f", "namespace": "n"}, "spec": {"selector": {"matchLabels": {"f": "1"}}}}
    )
    sensor = WeatherSensor.model_validate(
        {
            "metadata": {"name": "d", "namespace": "n", "labels": {"f": "1"}},
            "spec": {
                "deviceId": "d",
                "location": "x",
                "sensors": [{"type": t} for t in SENSOR_FIELDS],
            },
        }
    )
    board = grafana.build_dashboard(fleet, [sensor])
    named = set()  # (table, column) for every column ingest writes that a query on that table names
    for sql in [t["rawSql"] for p in board["panels"] for t in p.get("targets", [])]:
        words = set(re.findall(r"\w+", sql))
        for table, name in written:
            if re.search(rf"\b(FROM|last_cache\(')\s*{table}\b", sql) and name in words:
                named.add((table, name))
    assert {("ota_events", "percent"), ("weather", "co2"), ("device_status", "online")} <= named
    made = {(table, c) for (_, table), columns in influx_app.tables.items() for c in columns}
    assert named - made == set(), "a panel names a column the init Job does not declare"


@pytest.mark.parametrize("patch_table", [True, False])
def test_a_table_an_earlier_job_made_gets_the_fields_it_lacks(kube, patch_table: bool) -> None:
    """A table made before the fields were declared (tags only, and a field a write made): a server with
    `PATCH /api/v3/configure/table` gets the missing fields, the rest left alone; on 3.7, which has no such
    endpoint, the Job still succeeds and says why the fields are not there."""
    app = InfluxStandIn(patch_table=patch_table)
    _, kube_url = kube
    for influx_url in standins.serve(app):
        init.run(_settings(influx_url, kube_url))
        earlier = {"device": "tag", "event": "tag", "time": "time", "version": "utf8"}
        app.tables[("weather", "ota_events")] = dict(earlier)
        done = init.run(_settings(influx_url, kube_url))
    if patch_table:
        assert "table ota_events already exists" in done
        assert app.tables[("weather", "ota_events")] == earlier | {"percent": "int64", "reason": "utf8"}
    else:
        assert (
            "table ota_events already exists (this InfluxDB cannot add fields: they come with writes)" in done
        )
        assert app.tables[("weather", "ota_events")] == earlier


def test_a_run_failing_late_still_reports_what_it_made(influx, kube) -> None:
    """Steps are reported as they finish: when a cache cannot be made, the log still says that the
    operator token was created and stored (it cannot be made again without regenerating it)."""
    (influx_app, influx_url), (_, kube_url) = influx, kube
    refuse = influx_app.handle

    def handle(method: str, path: str, headers, body: bytes) -> tuple[int, dict]:
        if path == "/api/v3/configure/last_cache":
            return 500, {"error": "internal error"}
        return refuse(method, path, headers, body)

    influx_app.handle = handle
    reported: list[str] = []
    with pytest.raises(init.InitError, match="HTTP 500"):
        init.run(_settings(influx_url, kube_url), report=reported.append)
    assert reported[:2] == [
        "created the operator token and stored it in Secret influxdb3-token",
        "created database weather",
    ]
    assert "created table ota_events" in reported
