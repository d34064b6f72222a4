"""Prometheus metrics of the operator (served on WEATHERFLEET_METRICS_PORT)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

RECONCILES = Counter(
    "weatherfleet_reconciles_total", "Reconciliations by kind and outcome", ["kind", "outcome"]
)
RECONCILE_SECONDS = Histogram("weatherfleet_reconcile_seconds", "Time spent in one reconciliation", ["kind"])
API_WRITES = Counter("weatherfleet_api_writes_total", "Writes to the Kubernetes API", ["kind", "verb"])
QUEUE_DEPTH = Gauge("weatherfleet_workqueue_depth", "Keys waiting in the work queue")
DEVICES_OBSERVED = Gauge("weatherfleet_devices_observed", "Devices heard from over MQTT")
ROLLOUT_PERCENT = Gauge("weatherfleet_rollout_percent", "Open share of the candidate release", ["fleet"])
ROLLOUT_FAILED = Gauge("weatherfleet_rollout_failed_devices", "Devices that failed the rollout", ["fleet"])

_started: set[int] = set()


def serve(port: int) -> None:
    """Start the metrics endpoint once per process (a restarted operator in tests reuses it)."""
    if port and port not in _started:
        start_http_server(port)
        _started.add(port)
