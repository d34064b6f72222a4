"""InfluxDB 3 through influxdb3-python: writes on the v3 `/api/v3/write_lp` path, gzip, partial writes
accepted (refused lines come back as dead letters); queries in SQL over Arrow Flight, each bounded in time
(InfluxDB 3 Core refuses queries over more Parquet files than its limit) or answered from a cache.

Idempotence is InfluxDB's own: a point with the same series (table + tags) and timestamp overwrites."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import pyarrow as pa
from influxdb_client_3 import InfluxDBClient3, WriteOptions, WritePrecision, WriteType
from influxdb_client_3.exceptions import InfluxDB3ClientQueryError, InfluxDBPartialWriteError

from .. import messages
from .records import DEVICE_STATUS, OTA_EVENTS, WEATHER, Point, to_line_protocol
from .store import Reading, SeriesPoint, StoreUnavailable, Unstorable, WriteResult, from_ns

log = logging.getLogger(__name__)
WEATHER_FIELDS = tuple(messages.FIELDS)
# The last value cache of `weather` keyed by device, created by the InfluxDB init Job
# (gitops/base/influxdb3/init/influxdb3_init.py; a test keeps the two names equal).
WEATHER_LAST_CACHE = "weatherfleet_weather_last"
# How far back the operator's queries look by default. InfluxDB 3 Core refuses a query that would read more
# than its file limit (432 Parquet files by default, about three days of data): every query has a window.
RECENT = dt.timedelta(days=1)
# Write bodies from this size on are gzipped (the server's CPU for a smaller body buys next to nothing).
GZIP_THRESHOLD = 1024
# How long a write or a query may take before the store counts as unavailable (ingest spools, retries).
TIMEOUT_MS = 10_000


def read_token(env_value: str | None, token_file: Path | None) -> str:
    """The API token from an environment variable or a file (a mounted Secret); never logged."""
    if token_file is not None:
        token = Path(token_file).read_text().strip()
        if not token:
            raise ValueError(f"token file {token_file} is empty")
        return token
    if env_value:
        return env_value.strip()
    raise ValueError("no InfluxDB token: set INFLUX_TOKEN or --influx-token-file")


class InfluxStore:
    def __init__(self, host: str, database: str, token: str, *, ca_file: Path | None = None) -> None:
        """Writes and queries (Arrow Flight) both go to `host`: InfluxDB 3 serves Flight on its HTTP port."""
        self.database = database
        options = WriteOptions(
            write_type=WriteType.synchronous,
            write_precision=WritePrecision.NS,
            use_v2_api=False,  # the v3 endpoint: accept_partial and per-line errors
            accept_partial=True,
            no_sync=False,  # answer only after the WAL is persisted: then we may ack MQTT
            timeout=TIMEOUT_MS,
        )
        extra = {"ssl_ca_cert": str(ca_file)} if ca_file else {}
        self.client = InfluxDBClient3(
            host=host,
            database=database,
            token=token,
            auth_scheme="Bearer",
            enable_gzip=True,
            gzip_threshold=GZIP_THRESHOLD,
            write_client_options={"write_options": options},
            query_timeout=TIMEOUT_MS,
            **extra,
        )

    def write(self, points: list[Point]) -> WriteResult:
        if not points:
            return WriteResult(written=0)
        lines = [to_line_protocol(p) for p in points]
        try:
            self.client.write(record="\n".join(lines), write_precision=WritePrecision.NS)
        except InfluxDBPartialWriteError as error:
            # the good lines are written; the refused ones will never be accepted (schema conflict, bad
            # line): keep them as dead letters instead of retrying them forever
            rejected = []
            for line_error in error.line_errors:
                index = line_error.line_number - 1
                if 0 <= index < len(points):
                    rejected.append((points[index], f"InfluxDB refused line: {line_error.error_message}"))
            if not rejected:
                raise StoreUnavailable(
                    f"partial write without usable line numbers: {error.message}"
                ) from error
            return WriteResult(written=len(points) - len(rejected), rejected=rejected)
        except Exception as error:
            status = getattr(error, "status", None)
            if status == 400:  # the whole batch refused for its content: retrying the same batch cannot help
                reason = f"InfluxDB refused the batch: {getattr(error, 'message', error)}"
                if len(points) == 1:
                    return WriteResult(written=0, rejected=[(points[0], reason)])
                raise Unstorable(reason) from error  # ingest splits the batch to find the refused message
            if status in (401, 403, 404):
                log.error(
                    "InfluxDB refused writes (%s): check the token and database %r", status, self.database
                )
            raise StoreUnavailable(f"InfluxDB write failed: {_short(error)}") from error
        return WriteResult(written=len(points))

    # -- queries (SQL over Flight) ------------------------------------------------------------------

    def _query(self, sql: str, params: dict[str, str] | None = None) -> pa.Table:
        kwargs = {"query_parameters": params} if params else {}
        return self.client.query(sql, language="sql", mode="all", **kwargs)

    def _query_written(self, sql: str) -> pa.Table | None:
        """The answer, or None when the query's table does not exist yet: nothing was written to it."""
        try:
            return self._query(sql)
        except InfluxDB3ClientQueryError as error:
            if _missing_table(error):
                return None
            raise

    def latest_readings(self, within: dt.timedelta | None = None) -> dict[str, Reading]:
        """The latest reading of every device heard from within `within` (default RECENT). From the last
        value cache the InfluxDB init Job creates (memory only, no file is read); when it is missing, from
        the table, bounded to that window so the query stays under InfluxDB 3's file limit."""
        seconds = _seconds(within)
        try:
            table = self._query_written(
                f"SELECT * FROM last_cache('{WEATHER}', '{WEATHER_LAST_CACHE}') "
                f"WHERE time >= now() - INTERVAL '{seconds} seconds'"
            )
        except InfluxDB3ClientQueryError as error:
            if not _missing_cache(error):
                raise
            log.warning(
                "last value cache %s is missing (the InfluxDB init Job creates it): reading the table",
                WEATHER_LAST_CACHE,
            )
            table = self._query_written(
                f"SELECT * FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY device ORDER BY time DESC) "
                f"AS rn FROM {WEATHER} WHERE time >= now() - INTERVAL '{seconds} seconds') WHERE rn = 1"
            )
        if table is None:
            return {}
        readings = {}
        for row in _rows(table):
            values = {f: float(row[f]) for f in WEATHER_FIELDS if row.get(f) is not None}
            readings[row["device"]] = Reading(
                device=row["device"],
                time=from_ns(row["time"]),
                location=row.get("location"),
                firmware=row.get("firmware"),
                values=values,
                flagged=row.get("flagged"),
            )
        return readings

    def last_seen(self, within: dt.timedelta | None = None) -> dict[str, dt.datetime]:
        """When each device was last heard of within `within` (default RECENT), in any table."""
        seconds = _seconds(within)
        seen: dict[str, int] = {}
        for name in (WEATHER, DEVICE_STATUS, OTA_EVENTS):
            table = self._query_written(
                f"SELECT device, MAX(time) AS time FROM {name} "
                f"WHERE time >= now() - INTERVAL '{seconds} seconds' GROUP BY device"
            )
            for row in _rows(table) if table is not None else ():
                seen[row["device"]] = max(seen.get(row["device"], 0), row["time"])
        return {device: from_ns(time_ns) for device, time_ns in seen.items()}

    def series(self, device: str, field: str, start: dt.datetime, end: dt.datetime) -> list[SeriesPoint]:
        if field not in WEATHER_FIELDS:  # an identifier cannot be a query parameter: allow-list it
            raise ValueError(f"unknown field {field!r}: expected one of {', '.join(WEATHER_FIELDS)}")
        table = self._query(
            f"SELECT time, {field} FROM {WEATHER} WHERE device = $device AND time >= $start AND time < $end "
            f"AND {field} IS NOT NULL ORDER BY time",
            {"device": device, "start": _rfc3339(start), "end": _rfc3339(end)},
        )
        return [SeriesPoint(time=from_ns(row["time"]), value=float(row[field])) for row in _rows(table)]

    def close(self) -> None:
        self.client.close()


def _rows(table: pa.Table) -> list[dict]:
    """Rows as dicts with every timestamp column as integer nanoseconds (exact, no pandas needed)."""
    columns = {}
    for name in table.column_names:
        column = table.column(name)
        if pa.types.is_timestamp(column.type):
            column = column.cast(pa.timestamp("ns", column.type.tz)).cast(pa.int64())
        columns[name] = column.to_pylist()
    return [dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)]


def _rfc3339(moment: dt.datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError("use timezone-aware datetimes")
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _seconds(within: dt.timedelta | None) -> int:
    seconds = int((within or RECENT).total_seconds())
    if seconds <= 0:
        raise ValueError(f"a query window must be positive, got {within}")
    return seconds


def _missing_table(error: Exception) -> bool:
    text = str(error).lower()
    # "table 'x' not found" from a plain query; "provided table name is invalid" from a cache function
    return ("not found" in text and "table" in text) or "table name is invalid" in text


def _missing_cache(error: Exception) -> bool:
    """InfluxDB's answer to last_cache()/distinct_cache() naming a cache that does not exist."""
    return "could not find" in str(error).lower() and "cache" in str(error).lower()


def _short(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
