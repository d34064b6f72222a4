"""The CR folder drives the running local system the GitOps way: it is applied to the local API server,
where the operator gives a new sensor its certificate (issued by the cert-manager stand-in) and its ACL
entry (reloaded into the broker), and a board boots from them and publishes; a bad edit is reported and
not applied. And a missing system program is one clear line."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from otaflux.plan import read_fleet_plan
from weatherfleet.cli import main
from weatherfleet.local.options import UpOptions
from weatherfleet.local.system import LocalSystem
from weatherfleet.services.process import MissingDependency

from .conftest import FLEET, release, sensor, write_crs
from .processes import processes_of

pytestmark = pytest.mark.slow


def tick_until(system: LocalSystem, condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        system.tick()
        if condition():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def stored_since(system: LocalSystem, moment: datetime) -> set[str]:
    store = system.store()
    return {d for d, r in store.latest_readings().items() if r.time >= moment} if store else set()


def test_cr_edits_are_applied_while_running(tmp_path):
    crs = tmp_path / "crs"
    write_crs(crs, [FLEET, sensor("dev-01", "garden"), release("1.1.0")])
    system = LocalSystem(UpOptions(directory=crs, workdir=tmp_path / "wd"))
    try:
        system.start()
        start = datetime.now(UTC)
        tick_until(system, lambda: stored_since(system, start) == {"dev-01"}, 120, "dev-01 publishing")
        acl_path = system.workdir.mosquitto / "acl"
        assert "dev-02" not in acl_path.read_text()

        # "git pull": a second sensor appears in the folder
        write_crs(crs, [sensor("dev-02", "roof", ("bme280", "scd30"))], name="more.yaml")
        added = datetime.now(UTC)
        tick_until(
            system, lambda: {"dev-01", "dev-02"} <= stored_since(system, added), 120, "dev-02 publishing"
        )
        acl = acl_path.read_text()
        assert "user dev-02" in acl and "topic write sensors/dev-02/#" in acl
        assert system.broker.reloads >= 1  # the operator's new ACL reached Mosquitto by SIGHUP
        plan = read_fleet_plan(system.mount("otaflux", "rollout-plan") / "weatherfleet.garden.json")
        assert plan.devices == ["dev-01", "dev-02"]  # the operator's plan, as OtaFlux has it mounted

        # a bad edit: reported, nothing else changes
        (crs / "more.yaml").write_text(
            (crs / "more.yaml").read_text().replace("location: roof", "location: ''")
        )
        tick_until(system, lambda: bool(system.errors), 30, "the bad edit to be noticed")
        assert "more.yaml" in system.errors[0] and "location" in system.errors[0]
        assert [s.spec.device_id for s in system.resources.sensors] == ["dev-01", "dev-02"]
        assert "user dev-02" in acl_path.read_text()
        notes = [e.message for e in system.timeline.events() if e.kind == "note"]
        assert any("CR folder not applied" in n for n in notes)
    finally:
        system.stop()
    assert processes_of(tmp_path / "wd") == []


def test_a_missing_program_is_one_clear_line(cr_dir, tmp_path, capsys, monkeypatch):
    def missing(name: str, package: str) -> str:
        raise MissingDependency(f"{name} is not installed: run `sudo apt-get install -y {package}`")

    monkeypatch.setattr("weatherfleet.services.mosquitto.require_program", missing)
    code = main(
        ["up", "--dir", str(cr_dir), "--workdir", str(tmp_path / "wd"), "--no-live", "--duration", "1"]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 3
    assert err == ["error: mosquitto is not installed: run `sudo apt-get install -y mosquitto`"]
    assert processes_of(tmp_path / "wd") == []


def test_a_bad_cr_folder_stops_up_before_anything_starts(tmp_path, capsys):
    crs = tmp_path / "crs"
    write_crs(crs, [sensor("dev-01", "garden")])  # no fleet
    code = main(["up", "--dir", str(crs), "--workdir", str(tmp_path / "wd"), "--no-live", "--duration", "1"])
    assert code == 2
    assert "no SensorFleet" in capsys.readouterr().err
    assert processes_of(tmp_path / "wd") == []


def test_demo_refuses_to_wipe_a_folder_it_did_not_make(tmp_path, capsys):
    precious = tmp_path / "home"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    assert main(["demo", "--fast", "--workdir", str(precious)]) == 2
    assert "not a demo workdir" in capsys.readouterr().err
    assert (precious / "thesis.tex").read_text() == "years of work"
