"""Prometheus metrics of ingest, in a registry of their own (so tests and benchmarks can run several)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server


class IngestMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.messages_in = Counter(
            "weatherfleet_ingest_messages", "MQTT messages received, by kind", ["kind"], registry=r
        )
        self.rows_written = Counter(
            "weatherfleet_ingest_rows_written", "rows the store accepted, by table", ["table"], registry=r
        )
        self.dead_letters = Counter(
            "weatherfleet_ingest_dead_letters",
            "messages kept as dead letters, by source",
            ["source"],
            registry=r,
        )
        self.flagged_values = Counter(
            "weatherfleet_ingest_flagged_values",
            "readings with a value outside the physical range",
            registry=r,
        )
        self.batch_seconds = Histogram(
            "weatherfleet_ingest_batch_seconds",
            "time to make a batch durable (store write or spool)",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.store_errors = Counter(
            "weatherfleet_ingest_store_errors", "store writes that failed and were spooled", registry=r
        )
        self.spool_batches = Gauge(
            "weatherfleet_ingest_spool_batches", "batches waiting in the spool", registry=r
        )
        self.spool_points = Gauge(
            "weatherfleet_ingest_spool_points", "points waiting in the spool", registry=r
        )
        self.connected = Gauge(
            "weatherfleet_ingest_mqtt_connected", "1 while connected to the broker", registry=r
        )

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:
        start_http_server(port, addr=addr, registry=self.registry)
