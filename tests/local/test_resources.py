"""The CR folder the local mode is driven by: loading, clear errors, --sensors clones, change detection."""

from __future__ import annotations

import os

import pytest

from weatherfleet.local.resources import ResourceError, fingerprint, load_resources, with_sensor_count

from .conftest import FLEET, sensor, write_crs


def test_loads_sensors_fleet_and_release(cr_dir):
    resources = load_resources(cr_dir)
    (fleet,) = resources.fleets
    assert [s.spec.device_id for s in resources.members(fleet)] == ["dev-01", "dev-02"]
    assert resources.release("weatherfleet", "firmware-1-1-0").spec.version == "1.1.0"


def test_bad_field_names_file_document_and_field(tmp_path):
    bad = sensor("dev-01", "garden")
    bad["spec"]["measurementIntervalSeconds"] = 0
    path = write_crs(tmp_path, [FLEET, bad])
    with pytest.raises(ResourceError) as error:
        load_resources(tmp_path)
    message = str(error.value)
    assert str(path) in message and "document 2" in message and "measurementIntervalSeconds" in message


def test_duplicate_device_id_is_refused(tmp_path):
    twin = sensor("dev-01", "roof")
    twin["metadata"]["name"] = "other"
    write_crs(tmp_path, [FLEET, sensor("dev-01", "garden"), twin])
    with pytest.raises(ResourceError, match="deviceId dev-01 is used by 2 WeatherSensors"):
        load_resources(tmp_path)


def test_a_folder_without_fleet_is_refused(tmp_path):
    write_crs(tmp_path, [sensor("dev-01", "garden")])
    with pytest.raises(ResourceError, match="no SensorFleet"):
        load_resources(tmp_path)


def test_sensor_count_clones_keep_labels_and_location(cr_dir):
    resources = with_sensor_count(load_resources(cr_dir), 5)
    ids = [s.spec.device_id for s in resources.sensors]
    assert ids == ["dev-01", "dev-02", "dev-01-s3", "dev-02-s4", "dev-01-s5"]
    assert len(resources.members(resources.fleets[0])) == 5
    assert resources.sensor("dev-02-s4").spec.location == "roof"
    assert [s.spec.device_id for s in with_sensor_count(load_resources(cr_dir), 1).sensors] == ["dev-01"]


def test_fingerprint_changes_when_a_file_is_written(cr_dir):
    before = fingerprint(cr_dir)
    assert fingerprint(cr_dir) == before
    path = cr_dir / "fleet.yaml"
    path.write_text(path.read_text() + "\n")
    os.utime(path, ns=(before[0][1] + 10**9, before[0][1] + 10**9))
    assert fingerprint(cr_dir) != before
