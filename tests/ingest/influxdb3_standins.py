"""Stand-ins for InfluxDB 3 (no InfluxDB 3 server can run here). Small, but faithful at the boundary:

- `WriteLpStandIn`: HTTP `POST /api/v3/write_lp?db=&precision=&accept_partial=&no_sync=` as documented
  for InfluxDB 3 Core: token check (`Authorization: Bearer|Token <token>`), gzip request bodies
  (`Content-Encoding: gzip`), per-table column types (a field whose type differs from the first one seen
  is refused, as InfluxDB refuses schema conflicts), overwrite of the same series + timestamp, 204 on
  success, and the documented 400 answers: `{"error": "partial write of line protocol occurred", "data":
  [{"original_line", "line_number", "error_message"}]}` with accept_partial (the good lines are kept), or
  `{"error": "parsing failed for write_lp endpoint", "data": {...}}` without it (nothing is kept).
  `available = False` answers 503 like a server that is down for maintenance. `declare` makes the columns
  a `POST /api/v3/configure/table` would (the init Job's tables), with their types, before any write;
  `select` answers the columns of a table's rows as a query does, with InfluxDB 3's error for a column
  that no declaration or write has made ("Schema error: No field named ...").
- `FlightStandIn`: an Arrow Flight server whose DoGet takes the JSON ticket influxdb3-python sends
  (`{"database", "sql_query", "query_type", "params"}`), records it with the call's headers, and answers
  with the Arrow table a test registered for a query fragment.

Every request is recorded, so tests check exactly what the client sent."""

from __future__ import annotations

import gzip
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pyarrow as pa
import pyarrow.flight as flight

TOKEN = "apiv3_test-token-not-a-secret"


@dataclass
class RecordedWrite:
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    raw_body: bytes
    body: str
    status: int = 0


_SPLIT = re.compile(r'(?:[^\s"\\]|\\.|"(?:[^"\\]|\\.)*")+')
_COMMA = re.compile(r'(?:[^,"\\]|\\.|"(?:[^"\\]|\\.)*")+')


def _field_type(raw: str) -> tuple[str, object]:
    if raw.startswith('"'):
        return "string", raw[1:-1]
    if raw in ("t", "T", "true", "True", "TRUE", "f", "F", "false", "False", "FALSE"):
        return "bool", raw.lower().startswith("t")
    if raw.endswith("i"):
        return "int", int(raw[:-1])
    if raw.endswith("u"):
        return "uint", int(raw[:-1])
    return "float", float(raw)


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


class WriteLpStandIn:
    def __init__(self, token: str, databases: tuple[str, ...] = ("weather",)) -> None:
        self.token, self.databases = token, set(databases)
        self.requests: list[RecordedWrite] = []
        self.rows: dict[tuple, dict[str, object]] = {}  # (db, table, tags, time) -> fields
        self.column_types: dict[tuple[str, str], str] = {}  # (table, field) -> kind
        self.tags: dict[str, set[str]] = {}  # table -> tag columns
        self.available = True
        self._lock = threading.Lock()
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args) -> None:
                pass

            def do_POST(self) -> None:
                standin._handle(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> WriteLpStandIn:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def declare(self, tags: dict[str, list[str]], fields: dict[str, dict[str, str]]) -> None:
        """Tables as the configure API makes them: tags, and fields of a FieldType (utf8, int64, ...)."""
        kinds = {"utf8": "string", "int64": "int", "uint64": "uint", "float64": "float", "bool": "bool"}
        with self._lock:
            for table, names in tags.items():
                self.tags.setdefault(table, set()).update(names)
            for table, columns in fields.items():
                for name, kind in columns.items():
                    self.column_types[(table, name)] = kinds[kind]

    def select(self, table: str, columns: list[str], database: str = "weather") -> list[dict[str, object]]:
        """`SELECT <columns> FROM <table>`: every row, oldest first, a missing value as None."""
        with self._lock:
            known = {"time"} | self.tags.get(table, set()) | {c for t, c in self.column_types if t == table}
            for column in columns:
                if column not in known:
                    raise ValueError(f"Schema error: No field named {column}")
            rows = []
            for (db, name, tags, stamp), fields in sorted(self.rows.items(), key=lambda item: item[0][3]):
                if (db, name) == (database, table):
                    values = {"time": stamp, **dict(tags), **fields}
                    rows.append({c: values.get(c) for c in columns})
            return rows

    def row_count(self, table: str) -> int:
        with self._lock:
            return sum(1 for key in self.rows if key[1] == table)

    def _answer(
        self, handler: BaseHTTPRequestHandler, record: RecordedWrite, status: int, body: object = None
    ) -> None:
        record.status = status
        data = json.dumps(body).encode() if body is not None else b""
        handler.send_response(status)
        if data:
            handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        url = urlparse(handler.path)
        raw = handler.rfile.read(int(handler.headers.get("Content-Length", "0")))
        headers = {k.lower(): v for k, v in handler.headers.items()}
        body = gzip.decompress(raw) if headers.get("content-encoding") == "gzip" else raw
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        record = RecordedWrite(url.path, query, headers, raw, body.decode())
        with self._lock:
            self.requests.append(record)
        if url.path != "/api/v3/write_lp":
            return self._answer(handler, record, 404, {"error": f"no route {url.path}"})
        if not self.available:
            return self._answer(handler, record, 503, {"error": "service unavailable"})
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme not in ("Bearer", "Token") or token != self.token:
            return self._answer(handler, record, 401, {"error": "the request was not authenticated"})
        database = query.get("db")
        if database not in self.databases:
            return self._answer(handler, record, 404, {"error": f"database not found: {database}"})
        accept_partial = query.get("accept_partial", "true") != "false"
        with self._lock:
            accepted, errors = [], []
            types = dict(self.column_types)
            for number, line in enumerate(record.body.split("\n"), 1):
                if not line.strip():
                    continue
                try:
                    accepted.append(self._parse(database, line, types))
                except ValueError as error:
                    errors.append({"original_line": line, "line_number": number, "error_message": str(error)})
            if errors and not accept_partial:
                return self._answer(
                    handler, record, 400, {"error": "parsing failed for write_lp endpoint", "data": errors[0]}
                )
            self.column_types = types
            for key, fields in accepted:
                self.rows.setdefault(key, {}).update(fields)  # same series + time: fields overwrite
        if errors:
            return self._answer(
                handler, record, 400, {"error": "partial write of line protocol occurred", "data": errors}
            )
        return self._answer(handler, record, 204)

    def _parse(self, database: str, line: str, types: dict) -> tuple[tuple, dict]:
        parts = _SPLIT.findall(line)
        if len(parts) not in (2, 3):
            raise ValueError("invalid line protocol: expected measurement, fields and an optional timestamp")
        head = _COMMA.findall(parts[0])
        table = _unescape(head[0])
        tags = []
        for tag in head[1:]:
            key, sep, value = tag.partition("=")
            if not sep:
                raise ValueError(f"invalid tag {tag!r}")
            tags.append((_unescape(key), _unescape(value)))
        fields = {}
        for item in _COMMA.findall(parts[1]):
            key, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"invalid field {item!r}")
            kind, parsed = _field_type(value)
            column = (table, _unescape(key), kind)
            known = types.get((table, _unescape(key)))
            if known is not None and known != kind:
                raise ValueError(
                    f"invalid column type for column '{_unescape(key)}', expected iox::column_type::field::{known}, "
                    f"got iox::column_type::field::{kind}"
                )
            types[column[:2]] = kind
            fields[_unescape(key)] = parsed
        stamp = int(parts[2]) if len(parts) == 3 else 0
        self.tags.setdefault(table, set()).update(key for key, _ in tags)
        return (database, table, tuple(sorted(tags)), stamp), fields


@dataclass
class RecordedQuery:
    ticket: dict
    headers: dict[str, list[str]]


class _HeaderCapture(flight.ServerMiddlewareFactory):
    def __init__(self) -> None:
        self.last: dict[str, list[str]] = {}

    def start_call(self, info, headers):
        self.last = {k: list(v) for k, v in headers.items()}
        return None


@dataclass
class FlightStandIn:
    token: str
    answers: list[tuple[str, pa.Table | Exception]] = field(default_factory=list)
    queries: list[RecordedQuery] = field(default_factory=list)

    def start(self) -> FlightStandIn:
        capture = _HeaderCapture()
        standin = self

        class Server(flight.FlightServerBase):
            def do_get(self, context, ticket):
                data = json.loads(ticket.ticket.decode())
                standin.queries.append(RecordedQuery(data, capture.last))
                if capture.last.get("authorization") != [f"Bearer {standin.token}"]:
                    raise flight.FlightUnauthenticatedError("invalid token")
                return flight.RecordBatchStream(standin.answer(data["sql_query"]))

        self.server = Server("grpc+tcp://127.0.0.1:0", middleware={"capture": capture})
        self.port = self.server.port
        self._thread = threading.Thread(target=self.server.serve, daemon=True)
        self._thread.start()
        return self

    def answer(self, sql: str) -> pa.Table:
        for fragment, result in self.answers:
            if fragment in sql:
                if isinstance(result, Exception):
                    raise result
                return result
        raise flight.FlightServerError(f"no answer registered for {sql!r}")

    def when(self, fragment: str, result: pa.Table | Exception | Callable) -> None:
        self.answers.append((fragment, result))

    def stop(self) -> None:
        self.server.shutdown()
