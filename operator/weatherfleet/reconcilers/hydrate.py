"""Every child of a set of CRs at once: what `weatherfleet render` prints and what a GitOps pipeline commits.

Pure. Unlike the operator, rendering knows nothing observed: no certificates, devices or passwords. So
Secrets are left out (their content must not go to git; the operator creates them in the cluster), owner
references are left out when the CRs have no uid, and releases count as verified (the operator checks
signatures against the registry before it opens a rollout).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

from ..models import FirmwareRelease, SensorFleet, WeatherSensor
from ..rollout import FleetPlan
from . import grafana
from .common import FLEET_LABEL, Object, labels, sorted_children
from .fleet import FleetObservation, fleet_for_sensor, members_of, reconcile_fleet, selects
from .plan import rollout_plan_configmap
from .sensor import sensor_children


@dataclass
class Resources:
    """The custom resources found in a folder (or anywhere else)."""

    sensors: list[WeatherSensor] = field(default_factory=list)
    fleets: list[SensorFleet] = field(default_factory=list)
    releases: list[FirmwareRelease] = field(default_factory=list)

    def members(self, fleet: SensorFleet) -> list[WeatherSensor]:
        """The fleet's members (`reconcilers.fleet.members_of`), sorted by device id."""
        return members_of(fleet, self.sensors, self.fleets)

    def release(self, namespace: str, name: str | None) -> FirmwareRelease | None:
        return next(
            (r for r in self.releases if r.metadata.namespace == namespace and r.metadata.name == name),
            None,
        )

    def sensor(self, device_id: str) -> WeatherSensor | None:
        return next((s for s in self.sensors if s.spec.device_id == device_id), None)


def consistency_problems(resources: Resources) -> list[str]:
    """What is wrong across resources, though each is valid on its own: duplicate names or device ids,
    sensors claimed by two fleets, fleets fighting over one broker's files."""
    problems: list[str] = []
    for kind, items in (
        ("WeatherSensor", resources.sensors),
        ("SensorFleet", resources.fleets),
        ("FirmwareRelease", resources.releases),
    ):
        names = Counter((o.metadata.namespace, o.metadata.name) for o in items)
        problems += [
            f"{kind} {ns}/{name} is defined {n} times" for (ns, name), n in sorted(names.items()) if n > 1
        ]
    devices = Counter((s.metadata.namespace, s.spec.device_id) for s in resources.sensors)
    problems += [
        f"deviceId {dev} is used by {n} WeatherSensors in namespace {ns}"
        for (ns, dev), n in sorted(devices.items())
        if n > 1
    ]
    for what, get in (
        ("aclConfigMap", lambda f: f.spec.broker.acl_config_map),
        ("credentialsSecret", lambda f: f.spec.broker.credentials_secret),
        ("broker host", lambda f: f.spec.broker.host),
    ):
        users = Counter((f.metadata.namespace, get(f)) for f in resources.fleets)
        problems += [
            f"{n} SensorFleets in namespace {ns} share the {what} {value!r}: one broker serves one fleet"
            for (ns, value), n in sorted(users.items())
            if n > 1
        ]
    for sensor in resources.sensors:
        claimed = [f.metadata.name for f in resources.fleets if selects(f, sensor)]
        if len(claimed) > 1:
            problems.append(
                f"WeatherSensor {sensor.metadata.namespace}/{sensor.metadata.name} is selected by more than one "
                f"SensorFleet: {', '.join(sorted(claimed))}"
            )
    return problems


def warnings(resources: Resources) -> list[str]:
    """Things worth saying that do not stop a render."""
    out = []
    releases = {(r.metadata.namespace, r.metadata.name) for r in resources.releases}
    for fleet in resources.fleets:
        name = fleet.spec.rollout.release
        if name and (fleet.metadata.namespace, name) not in releases:
            out.append(
                f"SensorFleet {fleet.metadata.namespace}/{fleet.metadata.name}: FirmwareRelease {name} not found; "
                "no rollout is planned"
            )
    for sensor in resources.sensors:
        if fleet_for_sensor(sensor, resources.fleets) is None:
            out.append(
                f"WeatherSensor {sensor.metadata.namespace}/{sensor.metadata.name}: no SensorFleet selects it; "
                "it gets no certificate and no broker access"
            )
    return out


def hydrate(
    resources: Resources,
    now: datetime,
    plan_namespace: str = "weatherfleet",
    previous: list[Object] | None = None,
) -> list[Object]:
    """All children of all resources, sorted, plus the rollout plan ConfigMap (`weatherfleet-rollout-plan`
    in `plan_namespace`, one key per fleet). Secrets are never part of the output.

    `previous` is the output of the previous render (what is deployed): Grafana deletes provisioned alert
    rules only when a file lists them under `deleteRules`, so each fleet's first alert file lists the rules
    its previous files had and it has no more, and a fleet that is gone leaves `<fleet>-alerts-retired`
    deleting all of its rules. Without `previous`, nothing is deleted."""
    previous = previous or []
    children: list[Object] = []
    plans: dict[str, FleetPlan] = {}
    by_ns_releases: dict[str, dict[str, FirmwareRelease]] = {}
    for release in resources.releases:
        by_ns_releases.setdefault(release.metadata.namespace, {})[release.metadata.name] = release
    for fleet in sorted(resources.fleets, key=lambda f: (f.metadata.namespace, f.metadata.name)):
        mine = resources.members(fleet)
        result = reconcile_fleet(
            fleet,
            FleetObservation(
                now=now,
                sensors=mine,
                fleets=resources.fleets,
                releases=by_ns_releases.get(fleet.metadata.namespace, {}),
                passwords=None,
                trust_unverified_releases=True,
                assume_telegram_token=True,
                provisioned_alerts=grafana.ProvisionedAlerts.from_configmaps(
                    grafana.fleet_alert_configmaps(previous, fleet.metadata.namespace, fleet.metadata.name)
                ),
            ),
        )
        children += result.children
        plans[result.plan_key] = result.plan
        for sensor in mine:
            children += sensor_children(sensor, fleet, broker_password=None)
    present = {(f.metadata.namespace, f.metadata.name) for f in resources.fleets}
    gone = sorted(
        {
            (o["metadata"].get("namespace", ""), (o["metadata"].get("labels") or {}).get(FLEET_LABEL, ""))
            for o in previous
            if o.get("kind") == "ConfigMap"
            and (o["metadata"].get("labels") or {}).get(grafana.ALERT_LABEL) == "1"
        }
        - present
    )
    for namespace, name in gone:
        if name:
            earlier = grafana.fleet_alert_configmaps(previous, namespace, name)
            children += grafana.retired_children(
                namespace, name, grafana.ProvisionedAlerts.from_configmaps(earlier), labels(name)
            )
    if plans:
        children.append(rollout_plan_configmap(plans, plan_namespace))
    return sorted_children([c for c in children if c["kind"] != "Secret"])
