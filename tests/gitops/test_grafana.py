"""What Grafana and the k8s-sidecar make of the files the operator writes (grafana_files.py models both from
their sources): rules of removed sensors and fleets are deleted, no file replaces the organisation's
notification policy tree, dashboards land in the fleet's folder, user text survives variable expansion and
templating, and a fleet's Telegram contact point reaches Grafana with no hand-edited overlay."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import gitops_build as gb
import grafana_files as gf
import pytest
import yaml

from weatherfleet.models import SensorFleet, WeatherSensor
from weatherfleet.models.common import validation_messages
from weatherfleet.reconcilers import grafana
from weatherfleet.reconcilers.fleet import FleetObservation, reconcile_fleet

NOW = "2026-03-01T12:00:00+00:00"


def render(folder: Path, previous: Path | None = None) -> list[dict]:
    extra = ["--previous", str(previous)] if previous is not None else []
    result = subprocess.run(
        [sys.executable, "-m", "weatherfleet.cli", "render", str(folder), "--now", NOW, *extra],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=gb.REPO,
    )
    assert result.returncode == 0, result.stderr
    if previous is not None:
        previous.write_text(result.stdout)  # what a pipeline commits, and the next render reads
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def alert_folder(objects: list[dict], example: list[dict]) -> dict[str, str]:
    """The files the alerts sidecar of the example Grafana writes for these objects."""
    env = gf.sidecar_env(gb.find(example, "Deployment", "grafana"), grafana.ALERT_LABEL)
    return gf.sidecar_files(objects, env)


def rendered_folder(objects: list[dict], example: list[dict]) -> dict[str, str]:
    """As `alert_folder` for a render, which holds no Secret: the operator's contact point Secret of the
    example fleet is added while the fleet exists, as the cluster has it."""
    secrets = []
    for fleet_cm in (
        o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("-dashboard")
    ):
        fleet = _fleet() if fleet_cm["metadata"]["name"] == "garden-dashboard" else None
        if fleet is not None and not any(o["kind"] == "Secret" for o in objects):
            secrets.append(
                {
                    "kind": "Secret",
                    "metadata": {
                        "name": "garden-alerts-contact-point",
                        "namespace": "weatherfleet",
                        "labels": {grafana.ALERT_LABEL: "1"},
                    },
                    "stringData": {"c.json": json.dumps(grafana.contact_point_file(fleet, "1:x"))},
                }
            )
    return alert_folder(objects + secrets, example)


@pytest.fixture
def examples(tmp_path: Path) -> Path:
    folder = tmp_path / "crs"
    shutil.copytree(gb.GITOPS / "examples", folder)
    return folder


def _drop_sensor(folder: Path, device: str) -> None:
    path = folder / "sensors.yaml"
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d and d["spec"]["deviceId"] != device]
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))


def _uids(objects: list[dict]) -> dict[str, str]:
    """device -> rule uid in the rendered alert files."""
    out = {}
    for text in alert_folder_texts(objects):
        for group in yaml.safe_load(text).get("groups") or []:
            out.update({r["labels"]["device"]: r["uid"] for r in group["rules"]})
    return out


def alert_folder_texts(objects: list[dict]) -> list[str]:
    return [
        t
        for o in objects
        if o["kind"] == "ConfigMap" and grafana.ALERT_LABEL in o["metadata"].get("labels", {})
        for t in o["data"].values()
    ]


def test_a_removed_sensor_is_deleted_in_the_next_render_of_its_fleet(
    examples: Path, tmp_path: Path, example: list[dict]
) -> None:
    committed = tmp_path / "hydrated.yaml"  # absent: the first render
    first = render(examples, committed)
    uids = _uids(first)
    assert set(uids) == {"balcony-01", "greenhouse-01", "street-01"}
    state = gf.Grafana()
    state.provision(rendered_folder(first, example))
    assert set(state.rules) == set(uids.values())

    _drop_sensor(examples, "street-01")
    second = render(examples, committed)
    alerts = gb.find(second, "ConfigMap", "garden-alerts")
    (doc,) = [yaml.safe_load(t) for t in alerts["data"].values()]
    assert doc["deleteRules"] == [{"orgId": 1, "uid": uids["street-01"]}]
    assert uids["street-01"] not in {r["uid"] for r in doc["groups"][0]["rules"]}
    state.provision(rendered_folder(second, example))
    assert set(state.rules) == {uids["balcony-01"], uids["greenhouse-01"]}

    # Listed again in the render after (Grafana may only read a file at its next reload or start) ...
    third = render(examples, committed)
    assert gb.find(third, "ConfigMap", "garden-alerts") == alerts
    # ... until the sensor comes back: then its rule is provisioned, not deleted again.
    shutil.copy(gb.GITOPS / "examples" / "sensors.yaml", examples / "sensors.yaml")
    back = render(examples, committed)
    (doc,) = [yaml.safe_load(t) for t in gb.find(back, "ConfigMap", "garden-alerts")["data"].values()]
    assert "deleteRules" not in doc
    state.provision(rendered_folder(back, example))
    assert set(state.rules) == set(uids.values())


def test_a_removed_fleet_leaves_a_file_that_deletes_its_rules(
    examples: Path, tmp_path: Path, example: list[dict]
) -> None:
    committed = tmp_path / "hydrated.yaml"
    first = render(examples, committed)
    state = gf.Grafana()
    state.provision(rendered_folder(first, example))
    assert state.rules

    (examples / "fleet.yaml").unlink()
    second = render(examples, committed)
    retired = gb.find(second, "ConfigMap", "garden-alerts-retired")
    assert "ownerReferences" not in retired["metadata"]
    assert not [o for o in second if o["metadata"]["name"] in ("garden-alerts", "garden-dashboard")]
    state.provision(rendered_folder(second, example))
    assert state.rules == {}
    assert render(examples, committed) == second  # kept while the fleet stays away

    shutil.copy(gb.GITOPS / "examples" / "fleet.yaml", examples / "fleet.yaml")
    again = render(examples, committed)
    assert not [o for o in again if o["metadata"]["name"] == "garden-alerts-retired"]
    state.provision(rendered_folder(again, example))
    assert set(state.rules) == set(_uids(first).values())


def test_no_file_touches_the_organisations_notification_policy_tree(example: list[dict]) -> None:
    folder = rendered_folder(render(gb.GITOPS / "examples"), example)
    state = gf.Grafana()
    state.provision(folder)
    assert state.policy_trees == []


def _fleet(telegram: bool = True) -> SensorFleet:
    docs = yaml.safe_load_all((gb.GITOPS / "examples" / "fleet.yaml").read_text())
    (doc,) = [d for d in docs if d]
    if not telegram:
        doc["spec"]["alerting"].pop("telegram")
    return SensorFleet.model_validate(doc)


def _sensors(location: str | None = None) -> list[WeatherSensor]:
    docs = [d for d in yaml.safe_load_all((gb.GITOPS / "examples" / "sensors.yaml").read_text()) if d]
    if location is not None:
        for doc in docs:
            doc["spec"]["location"] = location
    return [WeatherSensor.model_validate(d) for d in docs]


def _operator_files(fleet: SensorFleet, sensors, token, previous, example) -> tuple[dict[str, str], list]:
    """The alerts sidecar's folder after the operator reconciled the fleet (as it does: previous files
    from the live ConfigMaps, the token from the fleet's Secret)."""
    result = reconcile_fleet(
        fleet,
        FleetObservation(
            now=datetime(2026, 3, 1, tzinfo=UTC),
            sensors=sensors,
            telegram_token=token,
            provisioned_alerts=grafana.ProvisionedAlerts.from_configmaps(
                grafana.fleet_alert_configmaps(previous, fleet.metadata.namespace, fleet.metadata.name)
            ),
        ),
    )
    return alert_folder(result.children, example), result.children


def test_a_new_fleets_telegram_token_reaches_grafana_as_its_contact_point(example: list[dict]) -> None:
    fleet, sensors = _fleet(), _sensors()
    folder, children = _operator_files(fleet, sensors, "123456:AA$B", [], example)
    assert any(path.endswith("contact-point.json") for path in folder), "the sidecar must see the Secret"
    state = gf.Grafana()
    state.provision(folder)
    (point,) = state.contact_points.values()
    assert point["settings"]["bottoken"] == "123456:AA$B"  # `$$` in the file, one `$` after expansion
    assert point["settings"]["chatid"] == fleet.spec.alerting.telegram.chat_id
    assert {r.receiver for r in state.rules.values()} == {point["name"]}

    # Telegram switched off: rules stop routing, then the contact point goes (after the rules, no error).
    quiet_folder, _ = _operator_files(_fleet(telegram=False), sensors, None, children, example)
    state.provision(quiet_folder)
    assert state.contact_points == {} and {r.receiver for r in state.rules.values()} == {None}


def test_without_its_token_a_fleet_never_breaks_provisioning(example: list[dict]) -> None:
    """A rule routed to a contact point that does not exist stops Grafana's whole provisioning run, every
    other fleet's rules included: without the token the rules are not routed at all."""
    folder, _ = _operator_files(_fleet(), _sensors(), None, [], example)
    state = gf.Grafana()
    state.provision(folder)
    assert {r.receiver for r in state.rules.values()} == {None} and state.contact_points == {}


@pytest.mark.parametrize("location", ["$HOME shed", "Shed ${PATH} & $$ 100%", "{{ .Value }} lab"])
def test_user_text_arrives_as_written(location: str, example: list[dict]) -> None:
    folder, _ = _operator_files(_fleet(), _sensors(location), "1:x", [], example)
    state = gf.Grafana()
    state.provision(folder, env={"HOME": "/root", "PATH": "/bin"})
    for rule in state.rules.values():
        assert rule.labels["location"] == location
        summary = gf.expand_template(rule.annotations["summary"], rule.labels)
        after = rule.title.rsplit(" for ", 1)[1]
        assert summary == f"No data from {rule.labels['device']} ({location}) for {after}"
        assert "$$" not in rule.annotations["summary"]
        assert all("$" not in m.get("rawSql", "") for m in rule.models)


def test_dashboards_land_in_the_fleets_folder_with_its_rules(example: list[dict]) -> None:
    deployment = gb.find(example, "Deployment", "grafana")
    env = gf.sidecar_env(deployment, grafana.DASHBOARD_LABEL)
    provider = yaml.safe_load(
        gb.find(example, "ConfigMap", "grafana-provisioning")["data"]["dashboards.yaml"]
    )
    (options,) = [p["options"] for p in provider["providers"]]
    assert options["foldersFromFilesStructure"] is True and options["path"] == env["FOLDER"]
    rendered = render(gb.GITOPS / "examples")
    (path,) = gf.sidecar_files(rendered, env)
    fleet = _fleet()
    assert gf.dashboard_folder(path, options["path"]) == fleet.spec.grafana.folder
    state = gf.Grafana()
    state.provision(rendered_folder(rendered, example))
    assert {r.folder for r in state.rules.values()} == {fleet.spec.grafana.folder}


@pytest.mark.parametrize("folder", ["Weather/Garden", ".hidden", "a\\b"])
def test_a_folder_is_one_path_segment(folder: str) -> None:
    """The sidecar joins the folder onto its directory and Grafana names the dashboard folder after the
    last segment, while rules split `/` into nested folders: such names would part dashboards and rules."""
    doc = _fleet().model_dump(by_alias=True)
    doc["spec"]["grafana"]["folder"] = folder
    with pytest.raises(ValueError) as refused:
        SensorFleet.model_validate(doc)
    ((path, message),) = validation_messages(refused.value)
    assert path == "spec.grafana.folder" and "is not a Grafana folder name" in message
