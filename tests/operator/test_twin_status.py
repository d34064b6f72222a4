"""ConfigApplied and status.config from what the board reported (pure reconcile_sensor), and the heartbeat
period derived from noDataAfter."""

from __future__ import annotations

from datetime import UTC, datetime

from weatherfleet.messages import ConfigReport
from weatherfleet.models import SensorFleet, WeatherSensor
from weatherfleet.reconcilers.devicetwin import heartbeat_seconds
from weatherfleet.reconcilers.sensor import SensorObservation, reconcile_sensor

NOW = datetime(2026, 3, 1, tzinfo=UTC)
FLEET = SensorFleet.model_validate(
    {
        "metadata": {"name": "garden", "namespace": "ns"},
        "spec": {"selector": {}, "alerting": {"noDataAfter": "20s"}},
    }
)


def _sensor(**spec) -> WeatherSensor:
    base = {"deviceId": "dev-01", "location": "shed", "sensors": [{"type": "bme280"}], **spec}
    return WeatherSensor.model_validate(
        {"metadata": {"name": "shed", "namespace": "ns", "generation": 5}, "spec": base}
    )


def _applied(report: ConfigReport | None, fleet=FLEET):
    result = reconcile_sensor(_sensor(), fleet, SensorObservation(now=NOW, config=report))
    cond = next(c for c in result.status.conditions if c.type == "ConfigApplied")
    return cond, result.status.config, result.events


def test_config_applied_follows_the_boards_report() -> None:
    cond, config, _ = _applied(ConfigReport(generation=5))
    assert (cond.status, cond.reason, cond.message) == ("True", "Applied", "generation 5 applied")
    assert (config.desired_generation, config.applied_generation, config.last_error) == (5, 5, None)

    cond, config, events = _applied(
        ConfigReport(generation=4, rejected=5, error="driver scd30 not in this build")
    )
    assert (cond.status, cond.reason) == ("False", "Rejected")
    assert "driver scd30 not in this build" in cond.message and "keeps generation 4" in cond.message
    assert config.applied_generation == 4 and config.last_error == "driver scd30 not in this build"
    assert [e.reason for e in events if e.type == "Warning"] == ["ConfigRejected"]

    cond, config, _ = _applied(ConfigReport(generation=4))
    assert (cond.status, cond.reason) == ("False", "Pending") and config.last_error is None

    cond, config, _ = _applied(None)
    assert (cond.status, cond.reason) == ("Unknown", "NotReported") and config.applied_generation is None

    cond, config, _ = _applied(ConfigReport(generation=5), fleet=None)
    assert (cond.status, cond.reason) == ("Unknown", "NotInFleet") and config is None


def test_heartbeat_is_well_under_no_data_after() -> None:
    assert heartbeat_seconds(_sensor(), FLEET) == 5  # 20s / 4
    assert heartbeat_seconds(_sensor(), None) == 150  # the default 10m / 4
    long = SensorFleet.model_validate(
        {"metadata": {"name": "g"}, "spec": {"selector": {}, "alerting": {"noDataAfter": "2h"}}}
    )
    assert heartbeat_seconds(_sensor(), long) == 300  # capped
    assert heartbeat_seconds(_sensor(heartbeatSeconds=7), long) == 7  # the sensor's own setting


def test_a_cleared_retained_status_forgets_the_device() -> None:
    from weatherfleet.observe import FleetView

    view = FleetView()
    assert view.handle("sensors/dev-01/status", b'{"online": true, "firmware": "1.0.0"}', NOW)
    assert view.get("dev-01") is not None
    assert view.handle("sensors/dev-01/status", b"", NOW)  # what decommissioning publishes
    assert view.get("dev-01") is None and view.rejected == 0
    assert not view.handle("sensors/dev-01/status", b"", NOW)
