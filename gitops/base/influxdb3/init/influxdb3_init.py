"""One-shot set-up of InfluxDB 3 Core for weatherfleet, run as a Kubernetes Job after the StatefulSet.

1. wait until InfluxDB answers HTTP;
2. reuse the operator token from the Secret `influxdb3-token` (key `token`) when it exists, otherwise
   create it (`POST /api/v3/configure/token/admin`, allowed without a token only while none exists) and
   store it in that Secret at once;
3. create the database (`POST /api/v3/configure/database`); "already exists" counts as done;
4. create the tables ingest writes, with their tags and the fields the dashboards name
   (`POST /api/v3/configure/table`; other fields are added by the writes), because a cache can only be
   made for a table that exists, and InfluxDB answers a query naming a column no write has made yet with
   an error ("No field named percent"): without them a panel would fail until the first device reported
   that value. A table made by an earlier version of this Job gets the fields it lacks through
   `PATCH /api/v3/configure/table` (additive; a column of that type already there is left alone) where
   the server has it (InfluxDB 3 Core 3.7 has not: there the columns appear with their first write);
5. create the caches the dashboards and the operator read (see CACHES): InfluxDB 3 Core refuses any
   query that would read more Parquet files than its limit (432 by default, about three days of data),
   so "the latest value of every device" and "every device seen" must not scan a whole table. A last
   value cache keeps the newest row per key in memory (`SELECT ... FROM last_cache('<table>', '<name>')`),
   a distinct value cache the value combinations seen (`distinct_cache('<table>', '<name>')`). Both are
   fed by writes as they arrive (and from the write-ahead log on a restart, not from Parquet files), and
   forget entries older than their TTL / max age. An existing cache is left as it is ("already exists"
   counts as done): to change one, delete it (`influxdb3 delete last_cache|distinct_cache`) and sync.

Idempotent, so it may run on every sync. Standard library only: it runs in the project's image but
needs nothing from it. The token is never printed. When InfluxDB already has an operator token but the
Secret is gone, the token cannot be recovered: the Job fails with the command that regenerates it.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"

# The tables ingest writes and their tags (weatherfleet.ingest.parsing; a test keeps them equal).
TABLES = {
    "weather": ["device", "location", "firmware"],
    "device_status": ["device"],
    "ota_events": ["device", "event"],
}
# The fields a dashboard query names (weatherfleet.reconcilers.grafana), typed as ingest writes them
# (influxdb3_types FieldType: utf8, int64, uint64, float64, bool; a write of another type is refused, so a
# test keeps these equal to what the parser makes).
WEATHER_QUANTITIES = ("temperature", "humidity", "pressure", "co2", "pm25", "pm10")
FIELDS = {
    "weather": {name: "float64" for name in WEATHER_QUANTITIES},
    "device_status": {"online": "bool", "firmware": "utf8"},
    "ota_events": {"version": "utf8", "percent": "int64", "reason": "utf8"},
}
# The caches, as the bodies of `POST /api/v3/configure/last_cache` and `.../distinct_cache` (the field
# names of influxdb3_types::http::{LastCacheCreateRequest, DistinctCacheCreateRequest}); ttl and max_age
# in seconds. Read by (a test keeps the names equal):
# - weatherfleet_weather_last: the operator's lastReading (weatherfleet.ingest.influx_store), the newest
#   weather row per device; a day, the longest window the operator asks for.
# - weatherfleet_status_last: the dashboards' "Devices online" and "Firmware versions", the newest status
#   per device; a week, the longest range the dashboards are meant for.
# - weatherfleet_weather_devices: the dashboards' `device` variable, which devices report from which
#   location; a week.
LAST_CACHES = [
    {"table": "weather", "name": "weatherfleet_weather_last", "key_columns": ["device"], "count": 1,
     "ttl": 86400},
    {"table": "device_status", "name": "weatherfleet_status_last", "key_columns": ["device"], "count": 1,
     "ttl": 7 * 86400},
]  # fmt: skip
DISTINCT_CACHES = [
    {"table": "weather", "name": "weatherfleet_weather_devices", "columns": ["location", "device"],
     "max_age": 7 * 86400},
]  # fmt: skip


class InitError(Exception):
    """A failure the operator of the cluster must act on; the message says how."""


@dataclass(frozen=True)
class Settings:
    influx_url: str
    database: str
    secret_name: str
    namespace: str
    kube_url: str
    kube_token: str
    kube_ca_file: str | None
    ready_timeout: float = 300.0
    retry_interval: float = 2.0

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        sa_dir = env.get("SERVICE_ACCOUNT_DIR", SERVICE_ACCOUNT_DIR)
        kube_url = env.get("KUBE_API_URL") or "https://{}:{}".format(
            env.get("KUBERNETES_SERVICE_HOST", "kubernetes.default.svc"),
            env.get("KUBERNETES_SERVICE_PORT", "443"),
        )
        ca_file = os.path.join(sa_dir, "ca.crt")
        return cls(
            influx_url=env.get("INFLUXDB3_URL", "http://influxdb3:8181").rstrip("/"),
            database=env.get("INFLUXDB3_DATABASE", "weather"),
            secret_name=env.get("TOKEN_SECRET_NAME", "influxdb3-token"),
            namespace=env.get("POD_NAMESPACE") or _service_account_file(sa_dir, "namespace"),
            kube_url=kube_url.rstrip("/"),
            kube_token=env.get("KUBE_TOKEN") or _service_account_file(sa_dir, "token"),
            kube_ca_file=ca_file if os.path.exists(ca_file) else None,
            ready_timeout=float(env.get("READY_TIMEOUT_SECONDS", "300")),
        )


def _service_account_file(sa_dir: str, name: str) -> str:
    """What Kubernetes mounts for the pod's service account: `token`, `namespace`."""
    with open(os.path.join(sa_dir, name), encoding="ascii") as f:
        return f.read().strip()


def _request(
    method: str,
    url: str,
    body: object | None = None,
    token: str | None = None,
    context: ssl.SSLContext | None = None,
    content_type: str = "application/json",
) -> tuple[int, bytes]:
    headers = {"Accept": "application/json"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = content_type
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=15, context=context) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def _columns(fields: dict[str, str]) -> list[dict[str, str]]:
    return [{"name": name, "type": kind} for name, kind in fields.items()]


class Kubernetes:
    """The two calls the Job needs: read the token Secret, create it."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._context = (
            ssl.create_default_context(cafile=settings.kube_ca_file) if settings.kube_ca_file else None
        )

    def _secrets_url(self, name: str | None = None) -> str:
        base = f"{self._settings.kube_url}/api/v1/namespaces/{self._settings.namespace}/secrets"
        return f"{base}/{name}" if name else base

    def read_token(self) -> str | None:
        status, body = _request(
            "GET",
            self._secrets_url(self._settings.secret_name),
            token=self._settings.kube_token,
            context=self._context,
        )
        if status == 404:
            return None
        if status != 200:
            raise InitError(f"reading Secret {self._settings.secret_name}: HTTP {status} {body[:200]!r}")
        data = json.loads(body).get("data") or {}
        if "token" not in data:
            raise InitError(f"Secret {self._settings.secret_name} exists but has no key `token`")
        return base64.b64decode(data["token"]).decode()

    def store_token(self, token: str) -> None:
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": self._settings.secret_name,
                "namespace": self._settings.namespace,
                "labels": {
                    "app.kubernetes.io/name": "influxdb3",
                    "app.kubernetes.io/part-of": "weatherfleet",
                    "app.kubernetes.io/managed-by": "influxdb3-init",
                },
            },
            "type": "Opaque",
            "data": {"token": base64.b64encode(token.encode()).decode()},
        }
        status, body = _request(
            "POST", self._secrets_url(), body=secret, token=self._settings.kube_token, context=self._context
        )
        if status not in (200, 201):
            raise InitError(f"creating Secret {self._settings.secret_name}: HTTP {status} {body[:200]!r}")


class InfluxDB:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def wait_ready(self) -> None:
        """Any HTTP answer (401 included) means the server is up; connection errors mean wait."""
        deadline = time.monotonic() + self._settings.ready_timeout
        while True:
            try:
                _request("GET", f"{self._settings.influx_url}/health")
                return
            except (urllib.error.URLError, ConnectionError, TimeoutError) as error:
                if time.monotonic() > deadline:
                    raise InitError(
                        f"InfluxDB at {self._settings.influx_url} did not answer within "
                        f"{self._settings.ready_timeout:.0f}s: {error}"
                    ) from error
                time.sleep(self._settings.retry_interval)

    def create_operator_token(self) -> str:
        status, body = _request("POST", f"{self._settings.influx_url}/api/v3/configure/token/admin")
        if status in (200, 201):
            token = json.loads(body).get("token")
            if not token:
                raise InitError("InfluxDB answered the token request without a token")
            return token
        if status in (401, 403, 409):
            raise InitError(
                f"InfluxDB already has an operator token, but Secret {self._settings.secret_name} is missing. "
                "Regenerate it with `influxdb3 create token --admin --regenerate --token <current>` "
                f"(or recreate the volume), then store it: kubectl -n {self._settings.namespace} create secret "
                f"generic {self._settings.secret_name} --from-literal=token=..."
            )
        raise InitError(f"creating the operator token: HTTP {status} {body[:200]!r}")

    def create_database(self, token: str) -> bool:
        """True when created now, False when it existed already."""
        status, body = _request(
            "POST",
            f"{self._settings.influx_url}/api/v3/configure/database",
            body={"db": self._settings.database},
            token=token,
        )
        if status in (200, 201, 204):
            return True
        if status == 409 or b"already exists" in body:
            return False
        if status in (401, 403):
            raise InitError(
                f"InfluxDB rejected the token from Secret {self._settings.secret_name} (HTTP {status}): "
                "the Secret does not hold this server's operator token"
            )
        raise InitError(f"creating database {self._settings.database}: HTTP {status} {body[:200]!r}")

    def _configure(self, what: str, path: str, body: dict, token: str, method: str = "POST") -> bool:
        """True when created now, False when it existed already (409)."""
        status, answer = _request(
            method, f"{self._settings.influx_url}/api/v3/configure/{path}", body=body, token=token
        )
        if status in (200, 201, 204):
            return status != 204  # 204: an identical one exists
        if status == 409:
            return False
        raise InitError(f"creating {what}: HTTP {status} {answer[:300]!r}")

    def create_table(self, table: str, tags: list[str], fields: dict[str, str], token: str) -> bool:
        body = {"db": self._settings.database, "table": table, "tags": tags, "fields": _columns(fields)}
        return self._configure(f"table {table}", "table", body, token)

    def add_fields(self, table: str, fields: dict[str, str], token: str) -> bool:
        """Adds the fields an existing table lacks; False when this server cannot (no such endpoint)."""
        body = {"db": self._settings.database, "table": table, "fields": _columns(fields)}
        try:
            self._configure(f"the fields of table {table}", "table", body, token, method="PATCH")
        except InitError as error:
            if "HTTP 404" in str(error) or "HTTP 405" in str(error):
                return False
            raise
        return True

    def create_last_cache(self, spec: dict, token: str) -> bool:
        body = {"db": self._settings.database, **spec}
        return self._configure(f"last value cache {spec['name']}", "last_cache", body, token)

    def create_distinct_cache(self, spec: dict, token: str) -> bool:
        body = {"db": self._settings.database, **spec}
        return self._configure(f"distinct value cache {spec['name']}", "distinct_cache", body, token)


def run(settings: Settings, report: Callable[[str], None] = lambda line: None) -> list[str]:
    """Perform the set-up; returns what was done, one line per step, each given to `report` once done (safe
    to log: no token in it), so that the log of a run failing at a later step still tells what it made."""
    done: list[str] = []

    def step(line: str) -> None:
        done.append(line)
        report(line)

    influx = InfluxDB(settings)
    kube = Kubernetes(settings)
    influx.wait_ready()
    token = kube.read_token()
    if token is None:
        token = influx.create_operator_token()
        kube.store_token(token)
        step(f"created the operator token and stored it in Secret {settings.secret_name}")
    else:
        step(f"reused the operator token from Secret {settings.secret_name}")
    if influx.create_database(token):
        step(f"created database {settings.database}")
    else:
        step(f"database {settings.database} already exists")
    for table, tags in TABLES.items():
        fields = FIELDS.get(table, {})
        if influx.create_table(table, tags, fields, token):
            step(f"created table {table}")
        elif not fields or influx.add_fields(table, fields, token):
            step(f"table {table} already exists")
        else:
            step(f"table {table} already exists (this InfluxDB cannot add fields: they come with writes)")
    for spec in LAST_CACHES:
        made = influx.create_last_cache(spec, token)
        step(f"{'created' if made else 'kept'} last value cache {spec['name']} on {spec['table']}")
    for spec in DISTINCT_CACHES:
        made = influx.create_distinct_cache(spec, token)
        step(f"{'created' if made else 'kept'} distinct value cache {spec['name']} on {spec['table']}")
    return done


def main() -> None:
    """Each step is printed when done; a failure exits 1 with one line on stderr (sys.exit with a text)."""
    try:
        run(Settings.from_env(), report=lambda line: print(f"influxdb3-init: {line}", flush=True))
    except (InitError, OSError) as error:
        sys.exit(f"influxdb3-init: error: {error}")


if __name__ == "__main__":
    main()
